"""The re-ranking rules on their own: creator spacing, and nothing stranded that could be placed."""

from __future__ import annotations

import random
from collections import Counter

from clipfeed.feed.reranking import Ranked, diversify, respects_creator_rules


def test_a_creator_holding_most_of_the_rest_leads_so_nothing_is_stranded():
    # Best first: B, then A's two. Greedy by score alone serves B, A and must drop the last A.
    items = [Ranked("b1", "B", 0.9), Ranked("a1", "A", 0.8), Ranked("a2", "A", 0.7)]
    out = diversify(items)
    assert [i.video_id for i in out] == ["a1", "b1", "a2"]


def test_every_item_is_served_whenever_the_rules_allow_it():
    for seed in range(500):
        rng = random.Random(seed)
        creators = rng.randint(2, 5)
        items = sorted((Ranked(f"v{i}", f"c{rng.randrange(creators)}", rng.random()) for i in range(rng.randint(3, 9))),
                       key=lambda item: -item.score)
        out = diversify(items)
        assert respects_creator_rules([i.creator_id for i in out]), seed
        if max(Counter(i.creator_id for i in items).values()) <= 2:  # placeable under both rules
            assert len(out) == len(items), seed


def test_the_rules_hold_even_when_that_leaves_items_out():
    items = [Ranked(f"a{i}", "A", 1 - i / 10) for i in range(5)] + [Ranked("b1", "B", 0.1)]
    out = diversify(items)
    assert respects_creator_rules([i.creator_id for i in out])
    assert len(out) == 3  # A, B, A: a third A would be the third in ten


def test_ranked_items_are_out_of_the_collectors_walk_and_still_freed():
    import gc
    import weakref

    from clipfeed.feed.reranking import out_of_collections

    class Creator(str):  # a str that can be watched by a weak reference
        pass

    creator = Creator("c1")
    watch = weakref.ref(creator)
    items = out_of_collections([Ranked(f"v{i}", creator, 1.0 - i / 10, ("tag",), ("trending",)) for i in range(5)])
    assert items and not any(gc.is_tracked(item) for item in items)
    # Still ordinary values: diversify reads them, and dropping them frees what they hold.
    assert [r.video_id for r in diversify(items, limit=1)] == ["v0"]
    del creator, items
    assert watch() is None
