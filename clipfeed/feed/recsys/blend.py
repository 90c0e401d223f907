"""clipfeed's ranking for logs without metadata (MovieLens `u.data`: user item rating timestamp).

Without creators, hashtags or captions the content, affinity and following sources are empty, and
the metadata ranker sees little more than ALS already knows (it measured 1.01 × ALS). What such a
log still holds, as per-user signals over the items the user has not seen:

- collaborative views of the positives that err differently: a bag of ALS fits (the tuned ALS
  hyperparameters, different random starts: averaging removes the start's noise, the one thing
  that measured a consistent gain over a well-tuned single ALS), item-kNN (cosine co-occurrence
  neighbours) and EASE (a closed-form linear item-item model, Steck 2019: B = I − P·diag(1/diag P)
  with P = (XᵀX + λI)⁻¹, diag B = 0, scores X·B);
- what the platform will show next: an item's exposures (every row is one, positive or not) and
  its exposures and positives in the most recent part of the log (trends);
- what the user did last: their history weighted by recency (each interaction, positive or not,
  0.5^(later interactions / half-life)) times an item-item model of what is watched together —
  cosine neighbours (`recent_knn`) or EASE (`recent_ease`), both over every interaction, since
  what someone chooses to watch says what they watch next whatever they thought of it. On
  MovieLens 100k these are the strongest signals by far (people rate in sessions, by era and
  genre); on the simulator's logs the order carries nothing and they get weight 0;
- a hard-cluster "topic" model: the items are clustered (k-means, 3 seeds, on each bagged ALS
  fit's normalised item vectors), and an item scores log P(its cluster | the user's positives, smoothed)
  + log(its share of its cluster's positives); averaged over the bag like ALS. Where tastes
  concentrate on a few themes (the simulator's users love one or two of 20 topics) the
  cluster share pools a user's few positives per theme instead of spreading them over a
  16-dimensional vector; it is the one signal besides the ALS bag that measured a consistent
  gain (see the README).

Each signal is standardised per user over the unseen items (a z-score, so the scales are
comparable) and they are added with weights. Everything that is chosen — EASE's λ, the cluster
count, the recency half-lives and the weights (coordinate ascent over a small grid, from the best
single signal) — is chosen on inner temporal splits of the TRAINING data only (per user: the first
70 / 80 / 90 % of their training interactions predict the rest; the three cuts' per-user NDCGs are
pooled). The test part of an evaluation is never looked at. A weight change is kept only if it
gains at least `MIN_GAIN` and one standard error of the paired per-user differences: with one inner
split of ~500 users, a weight that gained 4 % there lost 3 % on the test part of a development log,
and the same change swung from +4 % to −2 % between neighbouring cuts of one log.

Tried and dropped (no gain over the tuned ALS on development logs, seeds other than the reported
ones): a LightGBM lambdarank over these signals, an explicit factorisation of P(positive | shown)
over the exposed pairs, EASE over all exposures, and similarity to the user's skipped items; on the
simulator's logs, whose histories are exchangeable (bench/recsys_headroom.py), sequence signals
(the last items only, item → next item transitions, recency-decayed popularity; the
recency-weighted neighbours above lose there too and are weighted 0 by the inner cuts),
non-positive exposures as weak positive or negative ALS feedback, ALS sharing item factors with the
exposure matrix, bags larger than 8; for the cluster signal: refining the k-means labels by the
users' cluster-share likelihood (+1 % at k = 20, collapses into few clusters at k = 10 or 40), PLSA
instead of hard clusters, non-positive exposures in the users' cluster shares, the three cluster
counts averaged, a popularity mixture inside the log.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.cluster.vq import kmeans2

from clipfeed.feed.recsys.baselines import ALS, Interactions, ItemKNN, cosine_neighbours
from clipfeed.feed.recsys.dataset import InteractionLog, temporal_split

SIGNALS = ("als_bag", "cluster", "itemknn", "ease", "recent_knn", "recent_ease", "exposure", "recent_exposure",
           "recent_positive")
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0)   # weights tried per signal (only the ratios matter)
MIN_GAIN = 0.005                      # relative inner-split NDCG gain a weight change must bring
EASE_LAMBDAS = (50.0, 150.0, 400.0, 1000.0)
EASE_MAX_ITEMS = 12_000               # above this the dense item×item inverse is too big: no EASE
CLUSTER_COUNTS = (10, 20, 40)         # k-means cluster counts tried (the inner split picks one)
CLUSTER_PRIOR = 0.5                   # pseudo-positives per cluster in a user's cluster shares
KMEANS_RESTARTS = 3                   # k-means clusterings (different seeds) per bagged ALS fit, all averaged
ALS_BAG = 8                           # ALS fits averaged (random starts seed, seed+1000, ...)
HALF_LIVES = (2.0, 5.0, 10.0, 20.0)   # recency half-lives tried, in a user's later interactions
RECENT_FRACTION = 0.1                 # "recent": the last 10 % of the log's time span
TUNING_USERS = 1500                   # users scored on the inner splits, all cuts together (a sample on big logs)
INNER_CUTS = (0.7, 0.8, 0.9)          # inner temporal splits the choices are scored on, pooled
GAIN_STANDARD_ERRORS = 1.0            # a weight change must gain this many standard errors too
ASCENT_PASSES = 2
BATCH = 256                           # users scored at once (bounds the dense users × items blocks)


def item_clusters(item_vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels of the items' directions (ALS scores are inner products, so the norm is
    mostly popularity; an item no one engaged with has a zero vector and lands anywhere)."""
    unit = item_vectors / (np.linalg.norm(item_vectors, axis=1, keepdims=True) + 1e-9)
    with warnings.catch_warnings():
        # an empty cluster is harmless: no item scores from it
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        _, labels = kmeans2(unit.astype(np.float64), k, seed=seed, minit="++")
    return labels


def cluster_scores(positives: np.ndarray, labels: np.ndarray, item_positives: np.ndarray, k: int) -> np.ndarray:
    """users × items: log P(item's cluster | user) + log(item's share of its cluster's positives).
    `positives` is the users' dense 0/1 rows, `item_positives` every item's positive count."""
    per_cluster = np.zeros((positives.shape[0], k))
    for c in range(k):
        per_cluster[:, c] = positives[:, labels == c].sum(axis=1)
    share = (per_cluster + CLUSTER_PRIOR) / (per_cluster.sum(axis=1, keepdims=True) + CLUSTER_PRIOR * k)
    smoothed = item_positives + 0.5
    within = smoothed / np.bincount(labels, weights=smoothed, minlength=k)[labels]
    return np.log(share[:, labels]) + np.log(within)[None, :]


def recency_rows(log: InteractionLog, data: Interactions, half_life: float) -> sp.csr_matrix:
    """users × items: each of a user's interactions weighted 0.5 ** (their interactions after it /
    `half_life`), so the latest counts 1 and one `half_life` interactions back counts ½ (an item
    met twice adds both)."""
    ordered = log.sorted()
    users = ordered.user.astype(str)
    if not len(users):
        return sp.csr_matrix(data.matrix.shape, dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    later = np.repeat(ends, ends - starts) - 1 - np.arange(len(users))
    rows = np.fromiter((data.user_index[u] for u in users), dtype=np.int64, count=len(users))
    cols = np.fromiter((data.item_index[v] for v in ordered.item), dtype=np.int64, count=len(users))
    weights = np.power(0.5, later / half_life).astype(np.float32)
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=data.matrix.shape)
    matrix.sum_duplicates()
    return matrix


def ease_weights(X: sp.spmatrix, lam: float) -> np.ndarray:
    """EASE's item×item matrix for the user×item matrix X (closed form, zero diagonal)."""
    gram = np.asarray((X.T @ X).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    P = np.linalg.inv(gram)
    B = -P / np.diag(P)[None, :]
    B[np.diag_indices_from(B)] = 0.0
    return B.astype(np.float32)


class _Signals:
    """The fitted signals over one log; `block(users)` gives their per-user z-scores."""

    def __init__(self, log: InteractionLog, catalogue: Sequence[str], als_params: dict, seed: int,
                 ease_lambdas: Sequence[float] = (), cluster_counts: Sequence[int] = (),
                 half_lives: Sequence[float] = ()):
        self.bag = [ALS(dict(als_params), tune=False, seed=seed + 1000 * b).fit(log, catalogue)
                    for b in range(ALS_BAG)]
        self.knn = ItemKNN().fit(log, catalogue)
        self.data: Interactions = self.bag[0].data
        n = len(self.data.items)
        positives = self.data.matrix.copy()
        positives.data = (positives.data > 0).astype(np.float32)
        positives.eliminate_zeros()
        self.positives = positives.tocsr()
        # EASE for every candidate λ (tuning picks one; the final fit is given just that one)
        use_ease = 0 < n <= EASE_MAX_ITEMS
        self.ease = {lam: ease_weights(self.positives, lam) for lam in ease_lambdas} if use_ease else {}
        self.ease_lambda = next(iter(self.ease), None)
        # what users watch next after what they watched last: item-item models of every interaction
        self.history = {h: recency_rows(log, self.data, h) for h in half_lives}
        self.knn_half_life = self.ease_half_life = next(iter(self.history), None)
        self.seen_neighbours = cosine_neighbours(self.data.seen) if half_lives else None
        self.seen_ease = {lam: ease_weights(self.data.seen, lam) for lam in self.ease} if half_lives else {}
        # item clusters for every candidate count, one clustering per bagged ALS fit
        self.item_positives = np.asarray(self.positives.sum(axis=0)).ravel()
        self.clusters = {k: [item_clusters(self._item_vectors(m), k, seed + b + 1000 * r)
                             for b, m in enumerate(self.bag) for r in range(KMEANS_RESTARTS)]
                         for k in cluster_counts if 0 < k < n}
        self.cluster_count = next(iter(self.clusters), None)
        col = np.fromiter((self.data.item_index[v] for v in log.item), dtype=np.int64, count=len(log))
        recent = log.ts >= np.quantile(log.ts, 1.0 - RECENT_FRACTION) if len(log) else np.zeros(0, bool)
        self.global_scores = {
            "exposure": np.log1p(np.bincount(col, minlength=n).astype(np.float64)),
            "recent_exposure": np.log1p(np.bincount(col[recent], minlength=n).astype(np.float64)),
            "recent_positive": np.log1p(np.bincount(col[recent & log.positive], minlength=n).astype(np.float64)),
        }

    @staticmethod
    def _item_vectors(model: ALS) -> np.ndarray:
        """The fit's item vectors in catalogue order (zeros for items it never saw)."""
        rows = model._catalogue_rows
        vectors = np.zeros((len(rows), model.model.item_factors.shape[1]), dtype=np.float32)
        vectors[rows >= 0] = model.model.item_factors[rows[rows >= 0]]
        return vectors

    def options(self, attribute: str) -> Sequence:
        """The fitted choices of a tunable setting (`block`'s keyword of that name)."""
        return {"ease_lambda": self.ease, "cluster_count": self.clusters, "knn_half_life": self.history,
                "ease_half_life": self.history}[attribute]

    def block(self, users: Sequence[str], ease_lambda: float | None = None, cluster_count: int | None = None,
              knn_half_life: float | None = None, ease_half_life: float | None = None,
              names: Collection[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({signal: users × items z-scores}, seen mask) for a batch of users; only `names`, if given."""
        n = len(self.data.items)
        rows = np.array([self.data.user_index.get(u, -1) for u in users], dtype=np.int64)
        known, unknown = np.maximum(rows, 0), rows < 0

        def dense(m: sp.csr_matrix) -> np.ndarray:
            out = m[known].toarray() if len(users) else np.zeros((0, n))
            out[unknown] = 0.0
            return out

        def wanted(name: str) -> bool:
            return names is None or name in names

        seen = dense(self.data.seen) > 0
        z = {name: _zscore(np.broadcast_to(s, (len(users), n)), seen)
             for name, s in self.global_scores.items() if wanted(name)}
        if wanted("itemknn"):
            z["itemknn"] = _zscore(np.stack([_or_zeros(self.knn.scores_for(u), n) for u in users]), seen)
        if wanted("als_bag"):
            z["als_bag"] = _zscore(sum(_zscore(np.stack([_or_zeros(m.scores_for(u), n) for u in users]), seen)
                                       for m in self.bag), seen)
        lam = self.ease_lambda if ease_lambda is None else ease_lambda
        if lam in self.ease and wanted("ease"):
            z["ease"] = _zscore(dense(self.positives) @ self.ease[lam], seen)
        h = self.knn_half_life if knn_half_life is None else knn_half_life
        if h in self.history and wanted("recent_knn"):
            z["recent_knn"] = _zscore(np.asarray((self.history[h][known] @ self.seen_neighbours).todense())
                                      * ~unknown[:, None], seen)
        h = self.ease_half_life if ease_half_life is None else ease_half_life
        if h in self.history and lam in self.seen_ease and wanted("recent_ease"):
            z["recent_ease"] = _zscore(dense(self.history[h]) @ self.seen_ease[lam], seen)
        k = self.cluster_count if cluster_count is None else cluster_count
        if k in self.clusters and wanted("cluster"):
            positives = dense(self.positives)
            z["cluster"] = _zscore(sum(_zscore(cluster_scores(positives, labels, self.item_positives, k), seen)
                                       for labels in self.clusters[k]), seen)
        return z, seen


def _or_zeros(scores: np.ndarray | None, n: int) -> np.ndarray:
    if scores is None:
        return np.zeros(n)
    return np.where(np.isfinite(scores), scores, 0.0)


def _zscore(m: np.ndarray, seen: np.ndarray) -> np.ndarray:
    unseen = ~seen
    count = np.maximum(unseen.sum(axis=1, keepdims=True), 1)
    mean = np.where(unseen, m, 0.0).sum(axis=1, keepdims=True) / count
    var = np.where(unseen, (m - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count
    return (m - mean) / (np.sqrt(var) + 1e-9)


def _combine(z: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    total = np.zeros(next(iter(z.values())).shape)
    for name, w in weights.items():
        if w and name in z:
            total += w * z[name]
    return total


def _top_k(total: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    total = np.where(seen, -np.inf, total)
    k = min(k, total.shape[1])
    top = np.argpartition(-total, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(total, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _ndcg_per_user(top: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per row (the metrics module's definition) of ranked rows `top` against a users × items
    boolean relevance matrix whose every row has a relevant item."""
    if not len(top):
        return np.zeros(0)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    hits = np.take_along_axis(relevant, top[:, :k], axis=1)
    dcg = (hits * discount[:hits.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(relevant.sum(axis=1), k) - 1]
    return dcg / ideal


def _ndcg_rows(top: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean NDCG@k over the rows (see `_ndcg_per_user`)."""
    return float(np.mean(_ndcg_per_user(top, relevant, k))) if len(top) else 0.0


def _significant_gain(candidate: np.ndarray, current: np.ndarray) -> bool:
    """Whether the paired per-user NDCGs `candidate` beat `current` by at least MIN_GAIN (relative)
    and by at least GAIN_STANDARD_ERRORS standard errors of the mean paired difference: on one
    inner split of ~500 users a 2–4 % gain is within the noise (measured: the same weight change
    gains +4 % on one cut of a log and loses 2 % on the next)."""
    diff = candidate - current
    gain = diff.mean()
    if gain <= MIN_GAIN * current.mean():
        return False
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return gain > GAIN_STANDARD_ERRORS * se


class _InnerCut:
    """One inner temporal split of the training data: per user, the first `fraction` of their
    training interactions fit the signals, the rest are the relevance labels."""

    def __init__(self, train: InteractionLog, catalogue: Sequence[str], fraction: float, blend: SignalBlend,
                 index: int):
        inner = temporal_split(train, fraction)
        users = sorted(u for u, rel in inner.relevant.items() if rel)
        cap = max(1, TUNING_USERS // len(INNER_CUTS))
        if len(users) > cap:
            users = sorted(np.random.default_rng(blend.seed + index).choice(users, cap, replace=False).tolist())
        self.users = users
        if not users:
            return
        self.signals = _Signals(inner.train, catalogue, blend.als_params, blend.seed + 100 * index,
                                EASE_LAMBDAS, CLUSTER_COUNTS, HALF_LIVES)
        item_index = self.signals.data.item_index
        self.relevant = np.zeros((len(users), len(self.signals.data.items)), dtype=bool)
        for r, u in enumerate(users):
            self.relevant[r, [item_index[v] for v in inner.relevant[u]]] = True
        self.z, self.seen = self.signals.block(users)


class SignalBlend:
    name = "clipfeed"

    def __init__(self, *, als_params: dict, seed: int = 0, k: int = 20):
        self.als_params = dict(als_params)
        self.seed = seed
        self.k = k
        self.weights: dict[str, float] = {"als_bag": 1.0}
        self.ease_lambda: float | None = None
        self.cluster_count: int | None = None
        self.knn_half_life: float | None = None
        self.ease_half_life: float | None = None
        self.inner_ndcg: dict[str, float] = {}

    def fit(self, train: InteractionLog, catalogue: Sequence[str]) -> SignalBlend:
        self._tune(train, catalogue)
        used = {name for name, w in self.weights.items() if w}
        lambdas = (self.ease_lambda,) if self.ease_lambda is not None and used & {"ease", "recent_ease"} else ()
        counts = (self.cluster_count,) if self.cluster_count is not None and "cluster" in used else ()
        half_lives = tuple(dict.fromkeys(h for name, h in (("recent_knn", self.knn_half_life),
                                                           ("recent_ease", self.ease_half_life))
                                         if name in used and h is not None))
        self.signals = _Signals(train, catalogue, self.als_params, self.seed, lambdas, counts, half_lives)
        if half_lives:
            self.signals.knn_half_life = self.knn_half_life
            self.signals.ease_half_life = self.ease_half_life
        return self

    def _tune(self, train: InteractionLog, catalogue: Sequence[str]) -> None:
        cuts = [cut for cut in (_InnerCut(train, catalogue, fraction, self, i) for i, fraction in enumerate(INNER_CUTS))
                if cut.users]
        if not cuts:
            return

        def per_user(weights: dict[str, float], z_of=lambda cut: cut.z) -> np.ndarray:
            """Every cut's per-user NDCG, pooled (one entry per user and cut)."""
            return np.concatenate([_ndcg_per_user(_top_k(_combine(z_of(cut), weights), cut.seen, self.k),
                                                  cut.relevant, self.k) for cut in cuts])

        # EASE's λ, the cluster count and the half-lives: each the best on its own signal, over
        # all the cuts (recent_ease after λ, which it uses too)
        for name, options, attribute in (("ease", EASE_LAMBDAS, "ease_lambda"),
                                         ("cluster", CLUSTER_COUNTS, "cluster_count"),
                                         ("recent_knn", HALF_LIVES, "knn_half_life"),
                                         ("recent_ease", HALF_LIVES, "ease_half_life")):
            best = -1.0
            for option in options:
                if not all(option in cut.signals.options(attribute) for cut in cuts):
                    continue
                chosen = {"ease_lambda": self.ease_lambda} if name == "recent_ease" else {}
                z_option = {id(cut): cut.signals.block(cut.users, **chosen, **{attribute: option}, names={name})[0]
                            for cut in cuts}
                if not all(name in z for z in z_option.values()):
                    continue
                if (s := per_user({name: 1.0}, lambda cut: z_option[id(cut)]).mean()) > best:
                    best = s
                    setattr(self, attribute, option)
                    for cut in cuts:
                        cut.z[name] = z_option[id(cut)][name]
        names = [name for name in SIGNALS if all(name in cut.z for cut in cuts)]
        # From the best single signal, one weight at a time over the grid; a change is kept only
        # if its gain beats both MIN_GAIN and the noise of the paired per-user differences.
        singles = {name: per_user({name: 1.0}) for name in names}
        self.inner_ndcg = {name: float(v.mean()) for name, v in singles.items()}
        anchor = max(self.inner_ndcg, key=self.inner_ndcg.get)
        weights = {name: 0.0 for name in names}
        weights[anchor] = 1.0
        current = singles[anchor]
        for _ in range(ASCENT_PASSES):
            changed = False
            for name in weights:
                if name == anchor:
                    continue
                for w in WEIGHT_GRID:
                    if w == weights[name]:
                        continue
                    candidate = per_user({**weights, name: w})
                    if _significant_gain(candidate, current):
                        current, weights[name], changed = candidate, w, True
            if not changed:
                break
        self.inner_ndcg["blend"] = float(current.mean())
        self.weights = weights

    def totals(self, users: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(users × catalogue blended scores, seen mask) for a batch of users."""
        z, seen = self.signals.block(list(users))
        return _combine(z, self.weights), seen

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        items, out = self.signals.data.items, {}
        for start in range(0, len(users), BATCH):
            batch = list(users[start:start + BATCH])
            z, seen = self.signals.block(batch)
            for u, row in zip(batch, _top_k(_combine(z, self.weights), seen, k)):
                out[u] = [items[i] for i in row]
        return out
