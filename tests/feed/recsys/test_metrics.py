"""Ranking metrics on cases small enough to check by hand."""

import math

import pytest

from clipfeed.feed.recsys.metrics import coverage, evaluate, ndcg_at_k, novelty, recall_at_k


def test_recall_counts_hits_in_the_top_k_over_all_relevant():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"b", "d", "z"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"b", "d", "z"}, 4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, set(), 4) == 0.0


def test_ndcg_discounts_by_rank_and_normalises_by_the_ideal_list():
    # one relevant item at rank 2: DCG = 1/log2(3), ideal = 1
    assert ndcg_at_k(["x", "a"], {"a"}, 2) == pytest.approx(1 / math.log2(3))
    # hits at ranks 1 and 3 of two relevant: (1 + 1/2) / (1 + 1/log2(3))
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}, 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)
    # a hit beyond K does not count
    assert ndcg_at_k(["x", "y", "a"], {"a"}, 2) == 0.0


def test_coverage_and_novelty():
    recs = {"u1": ["a", "b"], "u2": ["b", "c"]}
    assert coverage(recs, 10, 2) == pytest.approx(0.3)
    assert coverage(recs, 10, 1) == pytest.approx(0.2)
    # 3 training users; a seen by 2, b by 0, c by 1: -log2((n+1)/4)
    users_per_item = {"a": 2, "c": 1}
    expected = (-math.log2(3 / 4) - math.log2(1 / 4) - math.log2(1 / 4) - math.log2(2 / 4)) / 4
    assert novelty(recs, users_per_item, 3, 2) == pytest.approx(expected)


def test_evaluate_averages_over_users_with_relevant_items():
    recs = {"u1": ["a", "b"], "u2": ["c", "d"], "u3": ["a"]}
    relevant = {"u1": {"a"}, "u2": {"z"}, "u3": set()}
    result = evaluate(recs, relevant, k=2, catalogue_size=4, users_per_item={}, n_users=2)
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["ndcg@2"] == pytest.approx(0.5)
    assert result["coverage"] == pytest.approx(1.0)  # u1 and u2 lists cover a, b, c, d
