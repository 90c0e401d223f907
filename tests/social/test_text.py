"""Hashtag and mention parsing (pure functions)."""

from __future__ import annotations

import pytest

from clipfeed.social.text import MAX_TAG, normalize_tag, parse_hashtags, parse_mentions


@pytest.mark.parametrize("text, tags", [
    ("#café au lait", ["café"]),
    ("#日本 と #東京", ["日本", "東京"]),
    ("#Ünïcödé #ÜNÏCÖDÉ #ünïcödé", ["ünïcödé"]),
    ("#Straße #STRASSE", ["strasse"]),                 # full case folding, not lower()
    ("#ｆｕｌｌｗｉｄｔｈ ＃ｔａｇ", ["fullwidth", "tag"]),  # NFKC
    ("#हिन्दी #русский #عربي", ["हिन्दी", "русский", "عربي"]),  # combining marks stay in the tag
    ("#snake_case #with2024 #2024", ["snake_case", "with2024"]),  # digits alone are not a tag
    ("a#b C# x#y", []),                                # glued to a word: not a tag
    ("#one,#two.#three!", ["one", "two", "three"]),
    ("https://example.org/page#section www.site.com/#top example.com/a#b", []),
    ("&#123; &#x27;", []),
    ("# alone ## double", []),
    ("(#paren) #end", ["paren", "end"]),
    ("", []),
])
def test_hashtags(text, tags):
    assert parse_hashtags(text) == tags


def test_tag_length_and_normalize():
    assert parse_hashtags("#" + "a" * MAX_TAG) == ["a" * MAX_TAG]
    assert parse_hashtags("#" + "a" * (MAX_TAG + 1)) == []
    assert normalize_tag("#CAFÉ") == "café"
    assert normalize_tag("café") == "café"
    assert normalize_tag("two words") is None
    assert normalize_tag("<script>") is None
    assert normalize_tag("123") is None


@pytest.mark.parametrize("text, handles", [
    ("hi @Maya.Moves and @bob_1", ["maya.moves", "bob_1"]),
    ("thanks @maya.", ["maya"]),                       # sentence dot is not part of the handle
    ("mail bob@example.com or @ab", []),               # email, too short
    ("@abc@def", []),
    ("@" + "a" * 24 + " @" + "b" * 25, ["a" * 24]),    # over 24 characters is not a handle
    ("＠fullwidth", ["fullwidth"]),
    ("see https://x.com/@someone", []),
    ("@dup @DUP @dup", ["dup"]),
    ("@café", []),                                     # not the handle alphabet
])
def test_mentions(text, handles):
    assert parse_mentions(text) == handles
