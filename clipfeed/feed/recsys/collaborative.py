"""Collaborative filtering: ALS (`implicit`, CPU) on completion-weighted signals, with an ANN
index (faiss) over the item vectors.

Ids are strings on the outside; rows/columns inside. Retrieval is by inner product, the score
ALS optimises. The index is exact (flat) for small catalogues and HNSW above
`hnsw_threshold` items, where a flat scan would cost milliseconds per query.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def _one_blas_thread():
    """implicit's ALS is slower with a multi-threaded BLAS underneath (it warns); pin it to 1."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, "blas")
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy/sklearn stacks
        import contextlib

        return contextlib.nullcontext()


class CollaborativeModel:
    FORMAT = "clipfeed-als/1"

    def __init__(self, *, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0, hnsw_threshold: int = 50_000):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.hnsw_threshold = hnsw_threshold
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.user_index: dict[str, int] = {}
        self.item_index: dict[str, int] = {}
        self.user_factors = np.zeros((0, factors), dtype=np.float32)
        self.item_factors = np.zeros((0, factors), dtype=np.float32)
        self._ann = None
        self._gram: np.ndarray | None = None

    # -- training ---------------------------------------------------------------------------

    def fit(self, users: Sequence[str], items: Sequence[str], weights: Sequence[float]) -> CollaborativeModel:
        """Train on (user, item, weight) triples; weights are the completion-weighted signals
        (duplicates are summed; non-positive weights are ignored)."""
        from implicit.cpu.als import AlternatingLeastSquares

        w = np.asarray(weights, dtype=np.float32)
        keep = w > 0
        users = np.asarray(users, dtype=object)[keep]
        items = np.asarray(items, dtype=object)[keep]
        w = w[keep]
        self.user_ids = sorted(set(users.tolist()))
        self.item_ids = sorted(set(items.tolist()))
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {v: i for i, v in enumerate(self.item_ids)}
        rows = np.fromiter((self.user_index[u] for u in users), dtype=np.int32, count=len(users))
        cols = np.fromiter((self.item_index[v] for v in items), dtype=np.int32, count=len(items))
        matrix = sp.csr_matrix((w, (rows, cols)), shape=(len(self.user_ids), len(self.item_ids)), dtype=np.float32)
        matrix.sum_duplicates()
        if matrix.nnz == 0:
            self.user_factors = np.zeros((len(self.user_ids), self.factors), dtype=np.float32)
            self.item_factors = np.zeros((len(self.item_ids), self.factors), dtype=np.float32)
        else:
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                            alpha=self.alpha, iterations=self.iterations, random_state=self.seed,
                                            num_threads=1, calculate_training_loss=False)
            with _one_blas_thread():
                model.fit(matrix, show_progress=False)
            self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
            self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._ann = None
        self._gram = None
        return self

    # -- vectors ----------------------------------------------------------------------------

    def user_vector(self, user_id: str) -> np.ndarray | None:
        i = self.user_index.get(user_id)
        return None if i is None else self.user_factors[i]

    def item_vector(self, video_id: str) -> np.ndarray | None:
        i = self.item_index.get(video_id)
        return None if i is None else self.item_factors[i]

    def item_vectors(self, video_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(matrix [n, factors], known mask [n]); unknown ids get zero rows."""
        idx = np.array([self.item_index.get(v, -1) for v in video_ids], dtype=np.int64)
        known = idx >= 0
        out = np.zeros((len(video_ids), self.factors), dtype=np.float32)
        out[known] = self.item_factors[idx[known]]
        return out, known

    def scores(self, vector: np.ndarray | None, video_ids: Sequence[str]) -> np.ndarray:
        """vector · item vector per id; NaN where the id (or the vector) is unknown."""
        out = np.full(len(video_ids), np.nan, dtype=np.float32)
        if vector is None:
            return out
        mat, known = self.item_vectors(video_ids)
        out[known] = mat[known] @ vector.astype(np.float32)
        return out

    def fold_in(self, video_ids: Sequence[str], weights: Sequence[float]) -> np.ndarray | None:
        """A user vector from a handful of (recent) items, solving the ALS user step exactly:
        x = (YᵀY + Yᵤᵀ(Cᵤ − I)Yᵤ + λI)⁻¹ Yᵤᵀ Cᵤ p. Cost: one factors×factors solve."""
        pairs = [(self.item_index[v], float(w)) for v, w in zip(video_ids, weights)
                 if v in self.item_index and w > 0]
        if not pairs:
            return None
        idx = np.array([p[0] for p in pairs])
        conf = 1.0 + self.alpha * np.array([p[1] for p in pairs], dtype=np.float32)
        Y = self.item_factors[idx]
        if self._gram is None:
            self._gram = self.item_factors.T @ self.item_factors
        A = self._gram + (Y.T * (conf - 1.0)) @ Y + self.regularization * np.eye(self.factors, dtype=np.float32)
        b = Y.T @ conf
        return np.linalg.solve(A, b).astype(np.float32)

    # -- retrieval --------------------------------------------------------------------------

    def _index(self):
        if self._ann is None:
            self._ann = _build_index(self.item_factors, self.hnsw_threshold)
        return self._ann

    def rows(self, video_ids: Iterable[str], memo: dict[str, int] | None = None) -> np.ndarray:
        """The index rows of the known ids among `video_ids` (an exclusion to reuse across
        queries; `memo`: see rows_of)."""
        return rows_of(self.item_index, video_ids, memo)

    def nearest(self, vector: np.ndarray, k: int, exclude: Iterable[str] = (), *,
                excluded_rows: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The k items with the largest inner product with `vector`, none of `exclude` (ids) or
        `excluded_rows` (from `rows`)."""
        if vector is None or not self.item_ids or k <= 0:
            return []
        excluded = self.rows(exclude)
        if excluded_rows is not None:
            excluded = np.concatenate([excluded, excluded_rows])
        return _search(self._index(), vector, k, excluded, self.item_ids, self.item_factors)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        import faiss

        index_bytes = faiss.serialize_index(self._index()) if self.item_ids else np.zeros(0, np.uint8)
        meta = np.array([self.FORMAT, str(self.factors), str(self.regularization), str(self.alpha),
                         str(self.iterations), str(self.hnsw_threshold)])
        buffer = io.BytesIO()
        np.savez(buffer, meta=meta, user_ids=np.array(self.user_ids, dtype=str),
                 item_ids=np.array(self.item_ids, dtype=str), user_factors=self.user_factors,
                 item_factors=self.item_factors, index=np.asarray(index_bytes, dtype=np.uint8))
        Path(path).write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> CollaborativeModel:
        import faiss

        with np.load(Path(path), allow_pickle=False) as data:
            meta = data["meta"].tolist()
            if not meta or meta[0] != cls.FORMAT:
                raise ValueError(f"not a clipfeed collaborative model: {path}")
            model = cls(factors=int(meta[1]), regularization=float(meta[2]), alpha=float(meta[3]),
                        iterations=int(meta[4]), hnsw_threshold=int(meta[5]))
            model.user_ids = data["user_ids"].tolist()
            model.item_ids = data["item_ids"].tolist()
            model.user_factors = np.ascontiguousarray(data["user_factors"], dtype=np.float32)
            model.item_factors = np.ascontiguousarray(data["item_factors"], dtype=np.float32)
            index_bytes = data["index"]
        if model.item_factors.shape != (len(model.item_ids), model.factors):
            raise ValueError("collaborative model arrays do not match their ids")
        model.user_index = {u: i for i, u in enumerate(model.user_ids)}
        model.item_index = {v: i for i, v in enumerate(model.item_ids)}
        if len(index_bytes):
            model._ann = faiss.deserialize_index(index_bytes)
            if model._ann.ntotal != len(model.item_ids):
                raise ValueError("collaborative index does not match its items")
        return model


def _build_index(vectors: np.ndarray, hnsw_threshold: int):
    """Inner-product ANN index: exact below the threshold, HNSW (M=32) above it."""
    import faiss

    faiss.omp_set_num_threads(1)
    dim = vectors.shape[1]
    if len(vectors) < hnsw_threshold:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def rows_of(index_of: dict[str, int], ids: Iterable[str], memo: dict[str, int] | None = None) -> np.ndarray:
    """The rows of the ids `index_of` knows, in an int64 array (unknown ids are skipped).

    `memo` (id -> row, -1 for unknown) keeps the answers for the next call: a viewer's excluded
    ids (thousands of seen videos for a heavy user) are mostly the same from one of their
    rankings to the next, and a lookup in a dict of a few thousand stays in the CPU's caches
    where one in the index of a whole catalogue misses them (3,000 ids at 673k items: 0.5-2.3 ms,
    from a memo 0.2 ms)."""
    if memo is None:
        get = index_of.get
        return np.fromiter((row for row in map(get, ids) if row is not None), dtype=np.int64)
    if len(memo) > MEMO_LIMIT:
        memo.clear()
    ids = list(ids)
    for video_id in [v for v in ids if v not in memo]:
        memo[video_id] = index_of.get(video_id, -1)
    rows = np.fromiter(map(memo.__getitem__, ids), dtype=np.int64, count=len(ids))
    return rows[rows >= 0]


MEMO_LIMIT = 20_000  # ids a rows_of memo holds before it starts over (a viewer's exclusions are ~5k)
WIDER_SEARCH = 4  # an HNSW answer under half of k is searched once more with this many times the beam


def _search(index, vector: np.ndarray, k: int, excluded_rows: np.ndarray, ids: list[str],
            vectors: np.ndarray) -> list[tuple[str, float]]:
    """The k rows with the largest inner product with `vector`, best first, none of
    `excluded_rows`. The exclusion is applied inside the search, so k results are k usable ones:
    asking for k plus every excluded id (a heavy user's thousands of seen videos, mostly near
    their own vector) had HNSW answer thousands of results, short of what was asked at 673k
    items (~1,800 at most), each then filtered in Python, and had the exact index keep a heap
    of them all."""
    import faiss

    k = min(k, len(ids))
    if k <= 0:
        return []
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    if isinstance(index, faiss.IndexFlat):
        # Exact: one matrix-vector product, the excluded rows masked, a partition for the top k.
        everything = vectors @ query[0]
        if len(excluded_rows):
            everything[excluded_rows] = -np.inf
        top = np.argpartition(-everything, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        top = top[np.lexsort((top, -everything[top]))]  # best first, ties by row
        top = top[np.isfinite(everything[top])]
        return [(ids[row], score) for score, row in zip(everything[top].tolist(), top.tolist())]
    selector, reachable = None, len(ids)
    if len(excluded_rows):
        # A bitmap of the rows the search may return (one bit per item: 84 KB at 673k items,
        # built in ~0.05 ms; a hashed batch of 3,000 excluded rows took 0.1-0.35 ms).
        allowed = np.ones(len(ids), dtype=bool)
        allowed[excluded_rows] = False
        reachable = int(np.count_nonzero(allowed))
        bitmap = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(ids), faiss.swig_ptr(bitmap))

    def search(beam: int) -> list[tuple[str, float]]:
        scores, rows = index.search(query, k, params=faiss.SearchParametersHNSW(sel=selector, efSearch=beam))
        return [(ids[row], score) for score, row in zip(scores[0].tolist(), rows[0].tolist()) if row >= 0]

    beam = max(index.hnsw.efSearch, k)
    found = search(beam)
    if 2 * len(found) < min(k, reachable):
        # The beam bounds what a filtered search explores: where the excluded rows crowd the
        # query's neighbourhood it can come back short, and a wider search fills it. Only when
        # under half of k came back: the wider search costs up to WIDER_SEARCH times as much (a
        # 14 ms content search at 1M videos, against a 15 ms source budget), and the other
        # sources fill a queue that is a little short.
        found = search(beam * WIDER_SEARCH)
    return found
