"""Top-K ranking metrics for the offline evaluation (binary relevance).

- Recall@K = hits in the top K / number of relevant items.
- NDCG@K   = DCG of the top K (gain 1 per hit, discount 1/log2(rank + 1)) / the best possible DCG
             for that many relevant items (min(|relevant|, K) hits at the top).
- Coverage = distinct items recommended to anyone / catalogue size.
- Novelty  = mean self-information −log2(p(i)) of the recommended items, p(i) being the share of
             training users who interacted with i (add-one smoothed): higher = less obvious.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

_DISCOUNT = 1.0 / np.log2(np.arange(2, 1002))


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for item in ranked[:k] if item in relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(_DISCOUNT[i] for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = _DISCOUNT[:min(len(relevant), k)].sum()
    return float(dcg / ideal)


def coverage(recommendations: Mapping[str, Sequence[str]], catalogue_size: int, k: int) -> float:
    if catalogue_size <= 0:
        return 0.0
    distinct = set()
    for items in recommendations.values():
        distinct.update(items[:k])
    return len(distinct) / catalogue_size


def novelty(recommendations: Mapping[str, Sequence[str]], users_per_item: Mapping[str, int], n_users: int,
            k: int) -> float:
    values = [-np.log2((users_per_item.get(item, 0) + 1) / (n_users + 1))
              for items in recommendations.values() for item in items[:k]]
    return float(np.mean(values)) if values else 0.0


def evaluate(recommendations: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], *, k: int,
             catalogue_size: int, users_per_item: Mapping[str, int], n_users: int) -> dict[str, float]:
    """Average Recall@K / NDCG@K over the users that have relevant items; coverage and novelty
    over the same users' lists."""
    users = [u for u in relevant if relevant[u]]
    recs = {u: list(recommendations.get(u, ())) for u in users}
    return {
        f"recall@{k}": float(np.mean([recall_at_k(recs[u], relevant[u], k) for u in users])) if users else 0.0,
        f"ndcg@{k}": float(np.mean([ndcg_at_k(recs[u], relevant[u], k) for u in users])) if users else 0.0,
        "coverage": coverage(recs, catalogue_size, k),
        "novelty": novelty(recs, users_per_item, n_users, k),
    }
