"""Interaction logs, their loaders (simulator, MovieLens `u.data`) and the temporal split.

An `InteractionLog` is columnar (numpy arrays of equal length): `user`, `item` (string ids), `ts`
(seconds), `weight` (the completion-weighted signal, 0 for a skip), `positive` (what counts as a
hit in evaluation), and optional per-event flags (completed, liked, shared, followed, skipped,
watch_ms). `items` optionally carries per-video metadata (creator, hashtags, sound, duration,
caption) when the source has it; MovieLens has none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FLAG_NAMES = ("completed", "liked", "shared", "commented", "followed", "skipped")


@dataclass(frozen=True)
class ItemMeta:
    creator_id: str
    hashtags: tuple[str, ...] = ()
    sound_id: str | None = None
    duration_s: float = 15.0
    caption: str = ""
    created_ts: float = 0.0
    # The video's content-feature vector (clipfeed.media.content_features) when it has one.
    media: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class InteractionLog:
    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    weight: np.ndarray
    positive: np.ndarray
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    items: dict[str, ItemMeta] | None = None

    def __post_init__(self):
        self.user = np.asarray(self.user, dtype=object)
        self.item = np.asarray(self.item, dtype=object)
        self.ts = np.asarray(self.ts, dtype=np.float64)
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.positive = np.asarray(self.positive, dtype=bool)
        n = len(self.user)
        for name, arr in [("item", self.item), ("ts", self.ts), ("weight", self.weight),
                          ("positive", self.positive), *self.flags.items()]:
            if len(arr) != n:
                raise ValueError(f"column {name} has {len(arr)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, mask_or_index: np.ndarray) -> InteractionLog:
        return InteractionLog(self.user[mask_or_index], self.item[mask_or_index], self.ts[mask_or_index],
                              self.weight[mask_or_index], self.positive[mask_or_index],
                              {k: v[mask_or_index] for k, v in self.flags.items()}, self.items)

    def of_users(self, users: Iterable[str]) -> np.ndarray:
        """Mask of the rows of `users`."""
        wanted = set(users)
        return np.fromiter((u in wanted for u in self.user), dtype=bool, count=len(self))

    def sorted(self) -> InteractionLog:
        """Ordered by (user, ts), stable, so per-user slices are contiguous and chronological."""
        order = np.lexsort((self.ts, self.user.astype(str)))
        return self.take(order)

    @property
    def all_items(self) -> list[str]:
        if self.items:
            return sorted(set(self.items) | set(self.item.tolist()))
        return sorted(set(self.item.tolist()))

    def write_udata(self, path: str | Path) -> None:
        """Write in the MovieLens u.data layout: user item rating timestamp, tab-separated.
        Ratings: 5 for a positive with extra engagement, 4 for a positive, 3 for a partial
        watch, 1 for a skip — so `load_udata` (rating ≥ 4 positive) reads the same positives."""
        rating = np.where(self.positive, 4, np.where(self.weight > 0, 3, 1))
        if "liked" in self.flags:
            rating = np.where(self.positive & self.flags["liked"], 5, rating)
        with open(path, "w") as out:
            for u, i, r, t in zip(self.user, self.item, rating, self.ts):
                out.write(f"{u}\t{i}\t{int(r)}\t{int(t)}\n")


def load_udata(path: str | Path) -> InteractionLog:
    """MovieLens `u.data`: `user item rating timestamp`, tab- (or whitespace-) separated.
    Rating ≥ 4 is a positive; the weight is the rating above 3 (so 4 → 1, 5 → 2, else 0)."""
    users, items, ratings, stamps = [], [], [], []
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4:
                raise ValueError(f"{path}:{line_no}: expected 'user item rating timestamp'")
            users.append(parts[0])
            items.append(parts[1])
            ratings.append(float(parts[2]))
            stamps.append(float(parts[3]))
    r = np.asarray(ratings, dtype=np.float32)
    return InteractionLog(np.array(users, dtype=object), np.array(items, dtype=object), np.asarray(stamps),
                          np.maximum(r - 3.0, 0.0), r >= 4.0)


def sample_users(users: Iterable[str], limit: int | None, *, seed: int = 0) -> list[str]:
    """At most `limit` of `users` (sorted), chosen by a seeded hash of the id rather than by
    position: the users kept are those with the lowest hashes, so a later run over a grown user
    base keeps mostly the same users (metrics of successive models stay comparable)."""
    users = sorted(set(users))
    if limit is None or len(users) <= limit:
        return users
    salt = str(seed).encode()

    def rank(user: str) -> bytes:
        return hashlib.blake2b(user.encode(), digest_size=8, salt=salt[:16]).digest()

    return sorted(sorted(users, key=rank)[:limit])


@dataclass
class Split:
    train: InteractionLog
    test: InteractionLog  # the later interactions; evaluation ranks every item unseen in train
    # user -> set of positive test items that were not seen in train (the relevance sets)
    relevant: dict[str, set[str]]


def temporal_split(log: InteractionLog, train_fraction: float = 0.8) -> Split:
    """Per user: the first `train_fraction` of their interactions in time -> train, the rest ->
    test. Users with fewer than 2 interactions stay entirely in train."""
    ordered = log.sorted()
    users = ordered.user.astype(str)
    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(users)]])
    is_train = np.ones(len(users), dtype=bool)
    for s, e in zip(starts, ends):
        n = e - s
        if n >= 2:
            cut = s + max(1, min(n - 1, int(np.floor(n * train_fraction))))
            is_train[cut:e] = False
    train, test = ordered.take(is_train), ordered.take(~is_train)
    seen: dict[str, set[str]] = {}
    for u, i in zip(train.user, train.item):
        seen.setdefault(u, set()).add(i)
    relevant: dict[str, set[str]] = {}
    for u, i, p in zip(test.user, test.item, test.positive):
        if p and i not in seen.get(u, ()):
            relevant.setdefault(u, set()).add(i)
    return Split(train, test, relevant)
