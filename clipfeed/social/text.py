"""Hashtags and @mentions in captions and comments: a small Unicode-aware scanner.

Rules (the text is NFKC-normalized first, so full-width '＃' and '＠' count too):

- ``#tag``: letters, combining marks, decimal digits and '_' of any script (plus the zero-width
  joiners some scripts need), with at least one non-digit (``#2024`` alone is not a tag, as on
  most platforms). The tag is NFKC case-folded (``#Café`` == ``#CAFÉ`` == ``#café``) and at most
  100 characters; longer runs are not tags. A '#' glued to a preceding word character is not a
  tag (``a#b``, ``C#``), nor is one inside a URL (``https://x.org/#top``) or an HTML entity.
- ``@handle``: the account handle alphabet ``[a-z0-9._]``, 3-24 characters, case-insensitive;
  trailing dots are sentence punctuation (``@maya.`` mentions ``maya``). An '@' preceded by a
  word character (``bob@example.com``) or inside a URL is not a mention.

Both functions return each item once, in order of first appearance.
"""

from __future__ import annotations

import re
import unicodedata

MAX_TAG = 100
HANDLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._")
MIN_HANDLE, MAX_HANDLE = 3, 24
MAX_ITEMS = 30  # per text: a caption cannot notify or tag without bound

_JOINERS = frozenset("\u200c\u200d")
# Spans where '#' and '@' are part of an address, not a tag or mention.
_URL = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}/\S*")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _is_tag_char(char: str) -> bool:
    if char == "_" or char in _JOINERS:
        return True
    category = unicodedata.category(char)
    return category[0] in "LM" or category == "Nd"


def _is_word_char(char: str) -> bool:
    return _is_tag_char(char) or unicodedata.category(char)[0] == "N"


def _prepare(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")

    def blank(match: re.Match) -> str:
        return " " * len(match.group(0))

    return _EMAIL.sub(blank, _URL.sub(blank, text))


def normalize_tag(raw: str) -> str | None:
    """The stored form of a tag (no '#', NFKC case-folded) or None when it is not a valid tag."""
    text = unicodedata.normalize("NFKC", (raw or "").strip()).lstrip("#")
    if not text or not all(_is_tag_char(c) for c in text):
        return None
    tag = unicodedata.normalize("NFKC", text.casefold()).strip("\u200c\u200d")
    if not tag or len(tag) > MAX_TAG or all(unicodedata.category(c) == "Nd" for c in tag):
        return None
    if not all(_is_tag_char(c) for c in tag):
        return None
    return tag


def parse_hashtags(text: str) -> list[str]:
    prepared = _prepare(text)
    found: dict[str, None] = {}
    index = prepared.find("#")
    while index != -1 and len(found) < MAX_ITEMS:
        end = index + 1
        before = prepared[index - 1] if index else ""
        if not before or not (_is_word_char(before) or before in "&#/@"):
            while end < len(prepared) and _is_tag_char(prepared[end]):
                end += 1
            tag = normalize_tag(prepared[index + 1:end]) if end > index + 1 else None
            if tag is not None:
                found.setdefault(tag)
        index = prepared.find("#", max(end, index + 1))
    return list(found)


def parse_mentions(text: str) -> list[str]:
    prepared = _prepare(text)
    found: dict[str, None] = {}
    index = prepared.find("@")
    while index != -1 and len(found) < MAX_ITEMS:
        end = index + 1
        before = prepared[index - 1] if index else ""
        if not before or not (_is_word_char(before) or before in "@/.+-"):
            while end < len(prepared) and prepared[end].lower() in HANDLE_CHARS:
                end += 1
            after = prepared[end] if end < len(prepared) else ""
            handle = prepared[index + 1:end].lower().rstrip(".")
            if not (after and (_is_word_char(after) or after == "@")) and MIN_HANDLE <= len(handle) <= MAX_HANDLE:
                found.setdefault(handle)
        index = prepared.find("@", max(end, index + 1))
    return list(found)
