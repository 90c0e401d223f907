"""Query text: the same word split and folding as the indexes, and a bounded edit distance.

Both indexes split text into runs of letters and digits ('_', '#', '@', punctuation and spaces
separate words) and lower-case them; SQLite's FTS5 tokenizer also folds diacritics
(``remove_diacritics 2``), PostgreSQL's ``simple`` configuration keeps them, so queries are folded
the same way as the backend they are sent to.
"""

from __future__ import annotations

import re
import unicodedata

MAX_TERMS = 8
MAX_TERM_CHARS = 40
_WORD = re.compile(r"[^\W_]+")


def fold(text: str, *, strip_accents: bool) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        text = unicodedata.normalize("NFC", text)
    return text


def query_terms(q: str, *, strip_accents: bool) -> list[str]:
    """The distinct words of a query, in order, at most MAX_TERMS of at most MAX_TERM_CHARS."""
    seen: list[str] = []
    for word in _WORD.findall(fold(q, strip_accents=strip_accents)):
        word = word[:MAX_TERM_CHARS]
        if word not in seen:
            seen.append(word)
        if len(seen) == MAX_TERMS:
            break
    return seen


def max_typos(term: str) -> int:
    """Edits tolerated for a word of this length: none below 4 characters, 1 up to 5, then 2."""
    if len(term) < 4:
        return 0
    return 1 if len(term) <= 5 else 2


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (insert, delete, substitute, swap two neighbours),
    or limit + 1 as soon as it is certain to exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    if a == b:
        return 0
    previous2: list[int] | None = None
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        best = current[0]
        ca = a[i - 1]
        for j in range(1, len(b) + 1):
            cb = b[j - 1]
            cost = 0 if ca == cb else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if previous2 is not None and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
            if value < best:
                best = value
        if best > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1] if previous[-1] <= limit else limit + 1


def prefix_upper_bound(prefix: str) -> str:
    """A string greater than every string that starts with `prefix` (binary/"C" collation)."""
    return prefix + "\U0010ffff"
