"""Content-based retrieval: text vectors of caption + hashtags (+ the spine's media features when
stored), and an inner-product index over them.

The default `HashingEmbedder` needs no model weights and no torch: signed feature hashing of
words, hashtags (weighted double) and character trigrams into 128 dims, L2-normalised. A
sentence-embedding model can replace it behind the same `Embedder` protocol.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from clipfeed.feed.recsys.collaborative import _build_index, _search, rows_of
from clipfeed.feed.recsys.dataset import ItemMeta

_WORD = re.compile(r"[#@]?\w+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, rows L2-normalised (zero rows for empty text)."""
        ...


class HashingEmbedder:
    def __init__(self, dim: int = 128, trigrams: bool = True):
        self.dim = dim
        self.trigrams = trigrams

    def _features(self, text: str) -> Iterable[tuple[str, float]]:
        for token in _WORD.findall(text.casefold()):
            if token.startswith("#"):
                yield "t:" + token[1:], 2.0
                token = token[1:]
            elif token.startswith("@"):
                yield "m:" + token[1:], 1.0
                continue
            yield "w:" + token, 1.0
            if self.trigrams and len(token) > 3:
                padded = f"<{token}>"
                for i in range(len(padded) - 2):
                    yield "c:" + padded[i:i + 3], 0.3

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in self._features(text or ""):
                h = zlib.crc32(feature.encode())
                out[row, h % self.dim] += weight if (h >> 31) & 1 else -weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def video_text(caption: str | None, hashtags: Iterable[str] = ()) -> str:
    """The text a video is embedded from: its caption plus its hashtags as #tags."""
    tags = " ".join(f"#{t}" for t in hashtags)
    return f"{caption or ''} {tags}".strip()


class TextVectorCache:
    """The text vectors of the previous build, by video id and text: a catalog refresh embeds only
    the videos that are new or whose text changed. Embedding is Python (~5 s for 50k captions),
    run in the index builder's thread, which shares the interpreter lock with the event loop that
    serves pages; most of a catalog is the same from one refresh to the next. Holds the vectors
    of the latest build only. One build at a time."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[str, np.ndarray]] = {}
        self.embedded = 0  # texts embedded by the latest build (the rest were reused)

    def vectors(self, video_ids: Sequence[str], texts: Sequence[str], embedder: Embedder) -> np.ndarray:
        out = np.zeros((len(video_ids), embedder.dim), dtype=np.float32)
        stale = []
        for row, (video_id, text) in enumerate(zip(video_ids, texts)):
            cached = self._by_id.get(video_id)
            if cached is not None and cached[0] == text:
                out[row] = cached[1]
            else:
                stale.append(row)
        if stale:
            out[stale] = embedder.embed([texts[row] for row in stale])
        self.embedded = len(stale)
        self._by_id = {video_id: (text, out[row]) for row, (video_id, text) in enumerate(zip(video_ids, texts))}
        return out


def served_index(video_ids: Sequence[str], captions: Sequence[str], hashtags: Sequence[Iterable[str]],
                 media: np.ndarray | None = None, text_cache: TextVectorCache | None = None) -> ContentIndex | None:
    """The index the API serves from, which `clipfeed train` builds the same way so the ranker
    learns the content similarity it is served: each video's caption and hashtags embedded,
    beside its media vector (`clipfeed.media.content_features`: how it looks and sounds) where
    it has one — `media` has a row per video, NaN rows for videos without. None when no video
    has text or media."""
    texts = [video_text(caption, tags) for caption, tags in zip(captions, hashtags)]
    has_media = media is not None and len(media) and bool(np.isfinite(media).all(axis=1).any())
    if not any(texts) and not has_media:
        return None
    index = ContentIndex()
    text_vectors = text_cache.vectors(video_ids, texts, index.embedder) if text_cache is not None else None
    return index.build(list(video_ids), texts, media if has_media else None, text_vectors=text_vectors)


def metadata_index(items: Mapping[str, ItemMeta], video_ids: Sequence[str]) -> ContentIndex | None:
    """`served_index` over the videos' metadata as an interaction log carries it (`ItemMeta`):
    what `clipfeed train` and `clipfeed eval` build, so both see the index the API serves."""
    ids = [v for v in video_ids if v in items]
    vectors = [items[v].media for v in ids]
    width = next((len(vector) for vector in vectors if vector is not None), 0)
    media = None
    if width:
        missing = np.full(width, np.nan, dtype=np.float32)
        media = np.array([missing if vector is None or len(vector) != width else vector for vector in vectors],
                         dtype=np.float32)
    return served_index(ids, [items[v].caption for v in ids], [items[v].hashtags for v in ids], media)


class ContentIndex:
    """Video vectors and an ANN index over them. Vectors are the text embedding, optionally
    concatenated with (normalised, down-weighted) media features."""

    def __init__(self, embedder: Embedder | None = None, *, media_weight: float = 0.5, hnsw_threshold: int = 50_000):
        self.embedder = embedder or HashingEmbedder()
        self.media_weight = media_weight
        self.hnsw_threshold = hnsw_threshold
        self.ids: list[str] = []
        self.index_of: dict[str, int] = {}
        self.vectors = np.zeros((0, self.embedder.dim), dtype=np.float32)
        self._ann = None

    def build(self, video_ids: Sequence[str], texts: Sequence[str], media_features: np.ndarray | None = None,
              *, text_vectors: np.ndarray | None = None) -> ContentIndex:
        """`text_vectors`: the texts already embedded (TextVectorCache)."""
        vectors = self.embedder.embed(texts) if text_vectors is None else np.array(text_vectors, dtype=np.float32)
        if media_features is not None and len(media_features):
            # Each feature standardised over the videos that have a vector (NaN rows: none; they
            # keep a zero media part), so that no one unit (Hz, dB, cuts per minute) dominates.
            media = np.asarray(media_features, dtype=np.float32)
            present = np.isfinite(media).all(axis=1)
            known = media[present] if present.any() else np.zeros((1, media.shape[1]), dtype=np.float32)
            media = np.where(present[:, None], (media - known.mean(axis=0)) / (known.std(axis=0) + 1e-6), 0.0)
            media = media.astype(np.float32)
            norms = np.linalg.norm(media, axis=1, keepdims=True)
            np.divide(media, norms, out=media, where=norms > 0)
            vectors = np.hstack([vectors, self.media_weight * media])
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            np.divide(vectors, norms, out=vectors, where=norms > 0)
        self.ids = list(video_ids)
        self.index_of = {v: i for i, v in enumerate(self.ids)}
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._ann = None
        return self

    def vector(self, video_id: str) -> np.ndarray | None:
        i = self.index_of.get(video_id)
        return None if i is None else self.vectors[i]

    def profile(self, video_ids: Sequence[str], weights: Sequence[float] | None = None) -> np.ndarray | None:
        """A user's content vector: the weighted mean of the vectors of what they engaged with."""
        idx, ws = [], []
        for j, v in enumerate(video_ids):
            i = self.index_of.get(v)
            w = 1.0 if weights is None else float(weights[j])
            if i is not None and w > 0:
                idx.append(i)
                ws.append(w)
        if not idx:
            return None
        vec = np.average(self.vectors[idx], axis=0, weights=ws).astype(np.float32)
        n = float(np.linalg.norm(vec))
        return vec / n if n > 0 else None

    def prepare(self) -> ContentIndex:
        """Build the ANN index now rather than on the first query. The feed builds its index in a
        thread and calls this there: an HNSW build over 50k vectors takes seconds, which the
        first `nearest` call would otherwise spend on the event loop, stalling every page."""
        if self._ann is None and self.ids:
            self._ann = _build_index(self.vectors, self.hnsw_threshold)
        return self

    def nearest(self, vector: np.ndarray, k: int, exclude: Iterable[str] = (),
                memo: dict[str, int] | None = None) -> list[tuple[str, float]]:
        """The k videos nearest `vector`, none of `exclude` (`memo`: see collaborative.rows_of)."""
        if vector is None or not self.ids or k <= 0:
            return []
        self.prepare()
        return _search(self._ann, vector, k, rows_of(self.index_of, exclude, memo), self.ids, self.vectors)
