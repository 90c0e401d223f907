"""The ranker: predicts, per candidate, the probability of completion, like, share and follow.

`LightGBMRanker` learns one binary model per head; `HeuristicRanker` is the hand-made default
served when no model has been published (or the published one cannot be loaded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from clipfeed.feed.recsys.features import FEATURE_INDEX, FEATURE_NAMES

HEADS: tuple[str, ...] = ("completion", "like", "share", "follow")


@runtime_checkable
class Ranker(Protocol):
    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """X: [n, len(FEATURE_NAMES)] from build_features -> {head: probabilities [n]}."""
        ...


def weighted_score(preds: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The final score: a weighted sum of the heads (weights come from Settings)."""
    total = None
    for head, w in weights.items():
        if head in preds and w:
            total = preds[head] * w if total is None else total + preds[head] * w
    if total is None:
        return np.zeros(len(next(iter(preds.values()))), dtype=np.float32)
    return total


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


class HeuristicRanker:
    """No training: personal signals (collaborative, content, affinities, follows) plus the
    video's smoothed rates. Good enough to serve a new deployment before the first training."""

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        c = FEATURE_INDEX
        personal = (2.0 * X[:, c["collab_score"]] + 1.5 * X[:, c["short_term_score"]] + 1.5 * X[:, c["content_sim"]]
                    + 1.0 * np.tanh(X[:, c["creator_affinity"]]) + 0.8 * np.tanh(X[:, c["hashtag_affinity_max"]])
                    + 0.5 * np.tanh(X[:, c["sound_affinity"]]) + 0.8 * X[:, c["follows_creator"]]
                    - 1.5 * X[:, c["recently_seen"]] + 0.15 * X[:, c["n_sources"]])
        completion = _sigmoid(-1.0 + personal + 4.0 * (X[:, c["completion_rate"]] - 0.35)
                              + 0.3 * X[:, c["velocity_log"]] - 0.02 * X[:, c["duration_s"]])
        like = completion * X[:, c["like_rate"]] * (1.0 + np.tanh(X[:, c["creator_affinity"]]))
        share = completion * X[:, c["share_rate"]]
        follow = completion * 0.02 * (1.0 - X[:, c["follows_creator"]]) * (1.0 + np.tanh(X[:, c["creator_affinity"]]))
        return {"completion": completion.astype(np.float32), "like": like.astype(np.float32),
                "share": share.astype(np.float32), "follow": follow.astype(np.float32)}


def _group_sizes(groups: np.ndarray) -> np.ndarray:
    """Row group ids (contiguous runs) -> the run lengths LightGBM expects."""
    groups = np.asarray(groups)
    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return np.diff(np.r_[starts, len(groups)])


class LightGBMRanker:
    """One LightGBM binary model per head. A head whose training labels are all equal is stored
    as a constant (LightGBM cannot fit it), so a quiet platform still gets a usable model."""

    FORMAT = "clipfeed-lgbm-ranker/1"

    def __init__(self, *, num_leaves: int = 15, learning_rate: float = 0.03, n_estimators: int = 300,
                 min_child_samples: int = 50, seed: int = 0, threads: int = 1):
        self.params = {"objective": "binary", "num_leaves": num_leaves, "learning_rate": learning_rate,
                       "min_data_in_leaf": min_child_samples, "feature_fraction": 0.9, "bagging_fraction": 0.9,
                       "bagging_freq": 1, "lambda_l2": 1.0, "seed": seed, "num_threads": threads,
                       "verbose": -1, "deterministic": True, "force_row_wise": True}
        self.n_estimators = n_estimators
        self.boosters: dict = {}
        self.constants: dict[str, float] = {}
        self.ranking_heads: set[str] = set()
        self.feature_names: tuple[str, ...] = FEATURE_NAMES

    def fit(self, X: np.ndarray, labels: dict[str, np.ndarray], *, valid: tuple[np.ndarray, dict] | None = None,
            groups: np.ndarray | None = None, valid_groups: np.ndarray | None = None) -> LightGBMRanker:
        """One binary model per head. With `groups` (a request/user id per row, rows of a group
        contiguous) the completion head is trained with LambdaRank instead, which optimises
        NDCG within each user's candidate list; its raw score is squashed to (0, 1)."""
        import lightgbm as lgb

        self.boosters, self.constants, self.ranking_heads = {}, {}, set()
        for head in HEADS:
            y = np.asarray(labels.get(head, np.zeros(len(X))), dtype=np.float32)
            positives = float(y.sum())
            if positives < 5 or positives > len(y) - 5:
                self.constants[head] = float(y.mean()) if len(y) else 0.0
                continue
            ranking = head == "completion" and groups is not None
            params = dict(self.params)
            if head != "completion":
                # like/share/follow labels are a few percent of completions: keep those trees small.
                params.update(num_leaves=min(7, params["num_leaves"]),
                              min_data_in_leaf=max(100, params["min_data_in_leaf"]))
            if ranking:
                params.update(objective="lambdarank", eval_at=[20], lambdarank_truncation_level=40)
                self.ranking_heads.add(head)
            train = lgb.Dataset(X, y, feature_name=list(self.feature_names), free_raw_data=True,
                                group=_group_sizes(groups) if ranking else None)
            callbacks, valid_sets = [], []
            if valid is not None and head in valid[1] and 0 < valid[1][head].sum() < len(valid[1][head]):
                valid_sets = [lgb.Dataset(valid[0], np.asarray(valid[1][head], dtype=np.float32), reference=train,
                                          group=_group_sizes(valid_groups) if ranking else None)]
                callbacks = [lgb.early_stopping(30, verbose=False)]
            self.boosters[head] = lgb.train(params, train, num_boost_round=self.n_estimators,
                                            valid_sets=valid_sets or None, callbacks=callbacks)
        return self

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for head in HEADS:
            if head in self.ranking_heads:
                out[head] = _sigmoid(self.boosters[head].predict(X, num_threads=1)).astype(np.float32)
            elif head in self.boosters:
                out[head] = self.boosters[head].predict(X, num_threads=1).astype(np.float32)
            else:
                out[head] = np.full(len(X), self.constants.get(head, 0.0), dtype=np.float32)
        return out

    def save(self, path: str | Path) -> None:
        doc = {"format": self.FORMAT, "feature_names": list(self.feature_names), "constants": self.constants,
               "ranking_heads": sorted(self.ranking_heads),
               "boosters": {head: b.model_to_string() for head, b in self.boosters.items()}}
        Path(path).write_text(json.dumps(doc))

    @classmethod
    def load(cls, path: str | Path) -> LightGBMRanker:
        import lightgbm as lgb

        doc = json.loads(Path(path).read_text())
        if doc.get("format") != cls.FORMAT:
            raise ValueError(f"not a clipfeed ranker file: {path}")
        if tuple(doc["feature_names"]) != FEATURE_NAMES:
            # Features changed since this model was trained: serving it would be silent skew.
            raise ValueError("ranker was trained on a different feature set")
        ranker = cls()
        ranker.constants = {k: float(v) for k, v in doc["constants"].items()}
        ranker.ranking_heads = set(doc.get("ranking_heads", ()))
        ranker.boosters = {head: lgb.Booster(model_str=s) for head, s in doc["boosters"].items()}
        return ranker
