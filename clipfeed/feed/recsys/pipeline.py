"""The full clipfeed pipeline, offline: multi-source candidates -> `build_features` -> the
LightGBM ranker -> weighted-sum score -> diversity re-ranking.

`LogState` turns a (training) log into exactly the states the online feature store serves
(UserState / VideoState / CreatorState), so the ranker learns offline from the same features it
is served with. `ClipfeedRecommender` is evaluated beside the baselines: its ranker is trained on
the last part of each user's training interactions (labels) with every source fitted on the
part before it, then the sources are refitted on all of the training data for the final ranking.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipfeed.feed.recsys.baselines import ALS, Interactions, ItemKNN, top_k_excluding, top_k_in_place
from clipfeed.feed.recsys.collaborative import CollaborativeModel
from clipfeed.feed.recsys.content import ContentIndex, metadata_index
from clipfeed.feed.recsys.dataset import InteractionLog, sample_users, temporal_split
from clipfeed.feed.recsys.features import CreatorState, UserState, VideoState, build_features
from clipfeed.feed.recsys.ranker import HEADS, HeuristicRanker, LightGBMRanker, Ranker, weighted_score

DEFAULT_WEIGHTS = {"completion": 1.0, "like": 2.0, "share": 3.0, "follow": 4.0}
# Per-source candidate counts (the online sources have the same names, see features.SOURCE_NAMES).
SOURCE_SIZES = {"collaborative": 150, "short_term": 60, "itemknn": 150, "content": 80, "trending": 150,
                "affinity": 80, "following": 30}
TRENDING_HALF_LIFE_S = 3 * 86_400.0
RECENT_ITEMS = 50
SHORT_TERM_ITEMS = 10
CONTENT_ITEMS = 20
# What a skip (left within 2 s) subtracts from a user's affinity to the creator/hashtags/sound.
SKIP_PENALTY = 0.3


@dataclass
class Sources:
    """Fitted retrieval models over one log. Any of them may be None (e.g. no metadata)."""

    collab: CollaborativeModel | None
    itemknn: ItemKNN | None
    content: ContentIndex | None


class LogState:
    """Users, videos and creators as the feature store would hold them at the end of `log`."""

    def __init__(self, log: InteractionLog, catalogue: Sequence[str], *, sources: Sources, now: float | None = None,
                 skip_penalty: float = SKIP_PENALTY, velocity_half_life_s: float = TRENDING_HALF_LIFE_S,
                 velocity_weights: dict[str, float] | None = None, short_term_items: int = SHORT_TERM_ITEMS,
                 content_items: int = CONTENT_ITEMS, online_sources: bool = False):
        """`online_sources`: name candidates only as the online sources do (the short-term
        collaborative list counts as "collaborative"), for rankers that will be served.
        `velocity_weights` (per event kind: view, like, comment, share): a video's velocity as the
        online feature store counts it, for rankers that will be served; without them, its
        positive interactions. `short_term_items`, `content_items`: how many of the user's newest
        positive rows make the short-term collaborative vector and the content profile."""
        self.skip_penalty = skip_penalty
        self.velocity_half_life_s = velocity_half_life_s
        self.velocity_weights = velocity_weights
        self.short_term_items, self.content_items = short_term_items, content_items
        self.short_term_name = "collaborative" if online_sources else "short_term"
        self.log = log
        self.catalogue = list(catalogue)
        self.sources = sources
        self.now = float(log.ts.max()) if now is None and len(log) else float(now or 0.0)
        self.meta = log.items or {}
        self._video_states: dict[int, VideoState] = {}
        self.data = Interactions(log, self.catalogue)
        self._build_videos()
        self._build_users()

    # -- videos and creators -------------------------------------------------------------------

    def _build_videos(self) -> None:
        log, n = self.log, len(self.catalogue)
        col = np.fromiter((self.data.item_index[v] for v in log.item), dtype=np.int64, count=len(log))
        flag = log.flags.get
        skipped = flag("skipped", np.zeros(len(log), bool))
        completed = flag("completed", log.positive)

        def count(mask) -> np.ndarray:
            return np.bincount(col, weights=np.asarray(mask, np.float64), minlength=n)

        self.impressions = np.bincount(col, minlength=n).astype(np.float64)
        self.views = count(~skipped)
        self.completions = count(completed)
        self.likes = count(flag("liked", np.zeros(len(log), bool)))
        self.shares = count(flag("shared", np.zeros(len(log), bool)))
        self.comments = count(flag("commented", np.zeros(len(log), bool)))
        decay = np.exp2(-(self.now - log.ts) / self.velocity_half_life_s)
        if self.velocity_weights is None:
            signal = np.asarray(log.positive, np.float64)
        else:  # one (user, video) row: its view unless skipped, like, comment, share
            w = self.velocity_weights
            signal = (w.get("view", 0.0) * ~skipped + w.get("like", 0.0) * flag("liked", np.zeros(len(log), bool))
                      + w.get("comment", 0.0) * flag("commented", np.zeros(len(log), bool))
                      + w.get("share", 0.0) * flag("shared", np.zeros(len(log), bool)))
        self.velocity = np.bincount(col, weights=signal * decay, minlength=n)
        self.trending = top_k_excluding(self.velocity, np.zeros(0, np.int64), SOURCE_SIZES["trending"] * 3)

        self.creator_of = [self.meta[v].creator_id if v in self.meta else "" for v in self.catalogue]
        followed = flag("followed", np.zeros(len(log), bool))
        creator_followers: dict[str, set] = defaultdict(set)
        for u, v in zip(log.user[followed], log.item[followed]):
            creator_followers[self.creator_of[self.data.item_index[v]]].add(u)
        by_creator: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(self.creator_of):
            if c:
                by_creator[c].append(i)
        self.videos_of_creator = {c: np.array(ix) for c, ix in by_creator.items()}
        self.creators = {
            c: CreatorState(c, followers=len(creator_followers.get(c, ())),
                            completion_rate=float(self.completions[ix].sum() / max(self.views[ix].sum(), 1.0)),
                            video_count=len(ix))
            for c, ix in self.videos_of_creator.items()}
        by_tag: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(self.catalogue):
            for tag in self.meta[v].hashtags if v in self.meta else ():
                by_tag[tag].append(i)
        self.videos_of_tag = {t: np.array(ix) for t, ix in by_tag.items()}
        self._performance: np.ndarray | None = None
        self._ranked_pools: dict[tuple[str, str], np.ndarray] = {}

    def video_states(self, rows: np.ndarray) -> list[VideoState]:
        # Built on first use: the candidates of a few thousand users touch a fraction of a
        # million-video catalogue.
        cache = self._video_states
        return [cache.get(i) or cache.setdefault(i, self._video_state(i)) for i in rows.tolist()]

    def _video_state(self, i: int) -> VideoState:
        content = self.sources.content
        vid = self.catalogue[i]
        m = self.meta.get(vid)
        return VideoState(
            video_id=vid, creator_id=self.creator_of[i], hashtags=m.hashtags if m else (),
            sound_id=m.sound_id if m else None, duration_s=m.duration_s if m else 15.0,
            age_s=max(self.now - m.created_ts, 0.0) if m and m.created_ts else 0.0,
            impressions=int(self.impressions[i]), views=int(self.views[i]), completions=int(self.completions[i]),
            likes=int(self.likes[i]), shares=int(self.shares[i]), comments=int(self.comments[i]),
            velocity=float(self.velocity[i]), text_vector=content.vector(vid) if content else None)

    # -- users -----------------------------------------------------------------------------------

    def _build_users(self) -> None:
        log = self.log
        ordered = np.lexsort((log.ts, log.user.astype(str)))
        users = log.user[ordered]
        bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
        self._user_rows = {users[s]: ordered[s:e] for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(users)])
                           } if len(users) else {}
        self._user_cache: dict[str, UserState] = {}
        self._nearest: dict[str, dict[str, np.ndarray]] = {}  # see prefetch
        self._knn_user: str | None = None
        self._knn: np.ndarray | None = None

    def user_state(self, user: str) -> UserState:
        cached = self._user_cache.get(user)
        if cached is not None:
            return cached
        log, rows = self.log, self._user_rows.get(user, np.zeros(0, np.int64))
        rows = rows[::-1]  # newest first
        skipped = log.flags["skipped"][rows] if "skipped" in log.flags else np.zeros(len(rows), bool)
        followed = log.flags["followed"][rows] if "followed" in log.flags else np.zeros(len(rows), bool)
        if "affinity_creator" in log.flags:
            # A log read from the event table carries the online store's own affinity deltas
            # per (user, video) row and its event counts: the user as the served ranker sees them.
            by_creator, by_tag, by_sound = (log.flags[f"affinity_{key}"][rows] for key in ("creator", "hashtag", "sound"))
            event_count = int(log.flags["events"][rows].sum())
        else:
            by_creator = by_tag = by_sound = log.weight[rows] - self.skip_penalty * skipped
            event_count = len(rows)
        creator_aff: dict[str, float] = defaultdict(float)
        tag_aff: dict[str, float] = defaultdict(float)
        sound_aff: dict[str, float] = defaultdict(float)
        follows = set()
        for vid, c, h, s, f in zip(log.item[rows], by_creator.tolist(), by_tag.tolist(), by_sound.tolist(), followed):
            m = self.meta.get(vid)
            if m is None:
                continue
            creator_aff[m.creator_id] += c
            for t in m.hashtags:
                tag_aff[t] += h
            if m.sound_id:
                sound_aff[m.sound_id] += s
            if f:
                follows.add(m.creator_id)
        # A log read from the event table says how much each row weighs in the history as the
        # store keeps it (no follow events); else the row's weight.
        weights = log.flags.get("recent_weight", log.weight)
        recent = [(v, float(w), float(t)) for v, w, t in
                  zip(log.item[rows[:RECENT_ITEMS]], weights[rows[:RECENT_ITEMS]], log.ts[rows[:RECENT_ITEMS]])]
        positives = [(v, w) for v, w, _ in recent if w > 0]
        short_term = None
        if self.sources.collab is not None and positives:
            ids, ws = zip(*positives[:self.short_term_items])
            short_term = self.sources.collab.fold_in(ids, ws)
        content_vector = None
        if self.sources.content is not None and positives:
            ids, ws = zip(*positives[:self.content_items])
            content_vector = self.sources.content.profile(ids, ws)
        state = UserState(user_id=user, recent=recent, creator_affinity=dict(creator_aff),
                          hashtag_affinity=dict(tag_aff), sound_affinity=dict(sound_aff), follows=frozenset(follows),
                          event_count=event_count, short_term_vector=short_term, content_vector=content_vector)
        self._user_cache[user] = state
        return state

    # -- candidates ------------------------------------------------------------------------------

    def candidates(self, user: str) -> tuple[np.ndarray, list[set[str]]]:
        """Catalogue rows proposed by the sources for `user` (unseen only), with their sources."""
        seen = set(self.data.seen_items(user).tolist())
        found: dict[int, set[str]] = defaultdict(set)
        index = self.data.item_index

        def add(name: str, rows) -> None:
            taken = 0
            for r in rows:
                r = int(r)
                if r in seen:
                    continue
                found[r].add(name)
                taken += 1
                if taken >= SOURCE_SIZES.get(name, SOURCE_SIZES["short_term"]):
                    break

        state = self.user_state(user)
        seen_ids = [self.catalogue[r] for r in seen]
        collab, knn, content = self.sources.collab, self.sources.itemknn, self.sources.content
        prefetched = self._nearest.get(user, {})
        if collab is not None:
            vec = collab.user_vector(user)
            if "collaborative" in prefetched:
                add("collaborative", prefetched["collaborative"])
            elif vec is not None:
                add("collaborative", (index[v] for v, _ in collab.nearest(vec, SOURCE_SIZES["collaborative"], seen_ids)
                                      if v in index))
            if "short_term" in prefetched:
                add(self.short_term_name, prefetched["short_term"])
            elif state.short_term_vector is not None:
                add(self.short_term_name, (index[v] for v, _ in collab.nearest(state.short_term_vector,
                                                                         SOURCE_SIZES["short_term"], seen_ids)
                                   if v in index))
        if knn is not None:
            scores = self.knn_scores(user)
            if scores is not None:
                add("itemknn", top_k_excluding(scores, np.fromiter(seen, np.int64, len(seen)), SOURCE_SIZES["itemknn"]))
        if "content" in prefetched:
            add("content", prefetched["content"])
        elif content is not None and state.content_vector is not None:
            add("content", (index[v] for v, _ in content.nearest(state.content_vector, SOURCE_SIZES["content"], seen_ids)
                            if v in index))
        add("trending", self.trending)
        affinity_rows = self._affinity_rows(state, SOURCE_SIZES["affinity"] + len(seen))
        if len(affinity_rows):
            add("affinity", affinity_rows)
        if state.follows:
            pool = np.concatenate([self.videos_of_creator.get(c, np.zeros(0, np.int64)) for c in state.follows])
            add("following", pool[np.argsort(-self.velocity[pool], kind="stable")])
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        return rows, [found[r] for r in rows]

    def prefetch(self, users: Sequence[str]) -> None:
        """The collaborative (long- and short-term) and content neighbours of many users at once,
        exact, by matrix products over blocks of users. For a few thousand users this costs less
        than what `candidates` does alone: an ANN index built per state (minutes over a million
        videos) and one query per user. Small catalogues get the same lists (their index is
        exact); big ones, the exact lists the served HNSW approximates."""
        collab, content = self.sources.collab, self.sources.content
        queries: dict[str, list[tuple[str, np.ndarray]]] = {"collaborative": [], "short_term": [], "content": []}
        for user in users:
            state = self.user_state(user)
            if collab is not None:
                vec = collab.user_vector(user)
                if vec is not None:
                    queries["collaborative"].append((user, vec))
                if state.short_term_vector is not None:
                    queries["short_term"].append((user, state.short_term_vector))
            if content is not None and state.content_vector is not None:
                queries["content"].append((user, state.content_vector))
        for name, asked in queries.items():
            if not asked:
                continue
            model = content if name == "content" else collab
            vectors, ids = (model.vectors, model.ids) if name == "content" else (model.item_factors, model.item_ids)
            # The model's rows as catalogue rows (-1: not in the catalogue).
            as_row = np.array([self.data.item_index.get(v, -1) for v in ids], dtype=np.int64)
            model_row = np.full(len(self.catalogue), -1, dtype=np.int64)
            model_row[as_row[as_row >= 0]] = np.flatnonzero(as_row >= 0)
            k = SOURCE_SIZES[name]
            block = max(1, (1 << 24) // max(len(ids), 1))
            for start in range(0, len(asked), block):
                chunk = asked[start:start + block]
                scores = np.stack([q for _, q in chunk]).astype(np.float32) @ vectors.T
                for (user, _), s in zip(chunk, scores):
                    seen = model_row[self.data.seen_items(user)]
                    top = top_k_in_place(s, seen[seen >= 0], k)
                    top = top[as_row[top] >= 0]
                    self._nearest.setdefault(user, {})[name] = as_row[top]

    def _affinity_rows(self, state: UserState, limit: int) -> np.ndarray:
        """The `limit` best-performing videos of the user's top creators and hashtags (callers
        skip the seen ones: asking for the source's size plus the seen count loses nothing)."""
        pools = []
        for name, _ in sorted(state.creator_affinity.items(), key=lambda kv: -kv[1])[:3]:
            if state.creator_affinity[name] > 0 and name in self.videos_of_creator:
                pools.append(self._best_of(("creator", name), self.videos_of_creator[name])[:limit])
        for tag, _ in sorted(state.hashtag_affinity.items(), key=lambda kv: -kv[1])[:3]:
            if state.hashtag_affinity[tag] > 0 and tag in self.videos_of_tag:
                pools.append(self._best_of(("tag", tag), self.videos_of_tag[tag])[:limit])
        if not pools:
            return np.zeros(0, np.int64)
        pool = np.unique(np.concatenate(pools))
        return pool[np.argsort(-self._performance[pool], kind="stable")][:limit]

    def _best_of(self, key: tuple[str, str], rows: np.ndarray) -> np.ndarray:
        """`rows` (ascending) best-performing first, ties by row; sorted once per creator or tag
        (a popular hashtag holds tens of thousands of videos, sorted for every user before)."""
        ranked = self._ranked_pools.get(key)
        if ranked is None:
            if self._performance is None:
                rate = (self.completions + 3.5) / (self.views + 10.0)
                self._performance = rate * np.log1p(self.views + 1)
            ranked = self._ranked_pools[key] = rows[np.argsort(-self._performance[rows], kind="stable")]
        return ranked

    def knn_scores(self, user: str) -> np.ndarray | None:
        if self._knn_user != user:
            self._knn_user, self._knn = user, self.sources.itemknn.scores_for(user)
        return self._knn

    def features(self, user: str, rows: np.ndarray, sources: list[set[str]]) -> np.ndarray:
        state = self.user_state(user)
        videos = self.video_states(rows)
        ids = [self.catalogue[r] for r in rows]
        collab = self.sources.collab
        collab_scores = short_scores = knn_scores = None
        if self.sources.itemknn is not None:
            all_knn = self.knn_scores(user)
            if all_knn is not None:
                knn_scores = all_knn[rows]
        if collab is not None:
            collab_scores = collab.scores(collab.user_vector(user), ids)
            short_scores = collab.scores(state.short_term_vector, ids)
        return build_features(state, videos, self.creators, collab_scores=collab_scores, source_ids=sources,
                              now=self.now, short_term_scores=short_scores, itemknn_scores=knn_scores)


_UNSET = object()


def content_index(log: InteractionLog, catalogue: Sequence[str]) -> ContentIndex | None:
    """The served content index (text + media vectors) of the catalogue's videos that have
    metadata (None without any: a u.data log)."""
    return metadata_index(log.items, catalogue) if log.items else None


def fit_sources(log: InteractionLog, catalogue: Sequence[str], *, als_params: dict, seed: int = 0,
                use_itemknn: bool = True, content=_UNSET, collab: CollaborativeModel | None = None,
                use_collab: bool = True) -> Sources:
    """`content`: a prebuilt `content_index` for this catalogue and metadata (it depends on no
    interaction, so the inner cuts of one log can share it); `collab`: an ALS model already
    fitted on `log` with `als_params`; `use_collab=False`: none (as a deployment serves before
    its first training)."""
    if not use_collab:
        collab = None
    elif collab is None:
        collab = CollaborativeModel(seed=seed, **als_params).fit(log.user, log.item, log.weight)
    knn = ItemKNN().fit(log, catalogue) if use_itemknn else None
    return Sources(collab, knn, content_index(log, catalogue) if content is _UNSET else content)


def diversify(ranked: Sequence[str], creator_of: Mapping[str, str], *, window: int = 10, per_window: int = 2,
              limit: int | None = None) -> list[str]:
    """Greedy re-rank: never the same creator twice in a row, at most `per_window` times in any
    `window` consecutive slots. An item that cannot be placed yet waits for a later slot; if
    nothing fits, the best waiting item is placed (better a repeat than a short page)."""
    out: list[str] = []
    pending = list(ranked)
    limit = len(pending) if limit is None else min(limit, len(pending))
    while len(out) < limit and pending:
        recent = [creator_of.get(v, "") for v in out[-(window - 1):]] if window > 1 else []
        pick = 0
        for j, v in enumerate(pending):
            c = creator_of.get(v, "")
            if not c or ((not out or creator_of.get(out[-1], "") != c) and recent.count(c) < per_window):
                pick = j
                break
        out.append(pending.pop(pick))
    return out


# The ranker's weight against the blend's. The grid stops at 1: the inner split overrates the
# ranker-heavy end. On the test part of every --simulate development seed (10-13, 2026-11-27)
# NDCG at weight 2 was below that at 1 (-2.9, -2.3, -0.6, -0.9 %), the ranker alone far below
# (-8.9, -8.1, -8.3, -5.1 %), while the inner split rated weight 2 within 1 % of the best and
# chose it on test seed 0 (1.060 x ALS there; 1.116 at weight 1).
HYBRID_WEIGHTS = (0.25, 0.5, 1.0)


def _labels(later: InteractionLog, seen_before: Mapping[str, set]) -> dict[str, dict[str, dict[str, bool]]]:
    """user -> item -> head -> label, from the interactions after the ranker's feature cut."""
    flags = later.flags
    heads = {"completion": later.positive,
             "like": flags.get("liked", later.weight > 1.0),
             "share": flags.get("shared", np.zeros(len(later), bool)),
             "follow": flags.get("followed", np.zeros(len(later), bool))}
    out: dict[str, dict[str, dict[str, bool]]] = defaultdict(dict)
    for j, (u, v) in enumerate(zip(later.user, later.item)):
        if v in seen_before.get(u, ()):
            continue
        entry = out[u].setdefault(v, {h: False for h in HEADS})
        for h in HEADS:
            entry[h] = entry[h] or bool(heads[h][j])
    return out


class ClipfeedRecommender:
    name = "clipfeed"

    def __init__(self, *, weights: Mapping[str, float] | None = None, seed: int = 0, label_fractions: Sequence[float] = (0.25, 0.45),
                 negatives_per_user: int = 60, n_estimators: int = 150, use_itemknn: bool = True,
                 als_params: dict | None = None, diversity: bool = True, learn_to_rank: bool = True,
                 state_options: Mapping | None = None, blend_without_metadata: bool = False,
                 hybrid_blend: bool = False, max_users: int | None = None, content=_UNSET,
                 ranker_labels: str = "future", use_collab: bool = True):
        """`state_options` go to every LogState (e.g. the online event weights for training).
        `blend_without_metadata`: on a log without item metadata, rank with `blend.SignalBlend`
        (offline evaluation of u.data logs; the served ranker always has the videos' metadata).
        `hybrid_blend`: also fit `blend.SignalBlend` and add it to the ranker's standardised score,
        the ranker's weight chosen on an inner temporal split of train (offline evaluation; the
        online feed does not compute the blend's signals).
        `max_users`: the ranker learns from at most this many users' labels (a seeded sample,
        `dataset.sample_users`); its sources are still fitted on every user's interactions.
        `content`: a prebuilt `content_index` of the catalogue (else built once, on first fit).
        `ranker_labels` (`clipfeed train` passes CLIPFEED_FEED_RANKER_LABELS, "outcome" by
        default; `clipfeed eval`, scored on held-out NDCG, keeps "future"): "future": a user's
        candidates at an inner cut, labelled by what the log shows them doing later, unexposed
        ones as negatives — so the ranker also learns which items the user will be shown;
        "outcome": only what they were shown after the cut, labelled by what they did with it
        (P(completion | shown); bench/ranker_objectives.py).
        `use_collab=False`: no collaborative model in the sources and features."""
        if ranker_labels not in ("future", "outcome"):
            raise ValueError(f"ranker_labels must be 'future' or 'outcome', not {ranker_labels!r}")
        self.max_users = max_users
        self.content = content
        self.ranker_labels = ranker_labels
        self.blend_without_metadata = blend_without_metadata
        self.hybrid_blend = hybrid_blend
        self.hybrid_weight: float | None = None
        self.state_options = dict(state_options or {})
        self.learn_to_rank = learn_to_rank
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.seed = seed
        self.label_fractions = tuple(label_fractions)
        self.negatives_per_user = negatives_per_user
        self.n_estimators = n_estimators
        self.use_itemknn = use_itemknn
        self.use_collab = use_collab
        self.als_params = als_params
        self.diversity = diversity
        self.ranker: Ranker = HeuristicRanker()

    def fit(self, train: InteractionLog, catalogue: Sequence[str], *, collab: CollaborativeModel | None = None
            ) -> ClipfeedRecommender:
        """`collab`: the ALS model of `train` with `als_params`, if the caller already has it."""
        if self.als_params is None:
            self.als_params = ALS(seed=self.seed).fit(train, catalogue).params
        self.blend = None
        if self.blend_without_metadata and not train.items:
            # No metadata (a u.data log): the metadata-driven sources and features are empty and
            # the learned ranker measured no better than ALS; blend what the log does hold.
            from clipfeed.feed.recsys.blend import SignalBlend

            self.blend = SignalBlend(als_params=self.als_params, seed=self.seed).fit(train, catalogue)
            return self
        if self.hybrid_blend:
            self.hybrid_weight = self._tune_hybrid(train, catalogue)
            from clipfeed.feed.recsys.blend import SignalBlend

            self.blend_signals = SignalBlend(als_params=self.als_params, seed=self.seed).fit(train, catalogue)
        self.ranker = self.train_ranker(train, catalogue)
        self.state = LogState(train, catalogue, sources=self._fit_sources(train, catalogue, collab),
                              **self.state_options)
        return self

    def _fit_sources(self, log: InteractionLog, catalogue: Sequence[str], collab: CollaborativeModel | None = None
                     ) -> Sources:
        if self.content is _UNSET:
            self.content = content_index(log, catalogue)
        return fit_sources(log, catalogue, als_params=self.als_params, seed=self.seed, use_itemknn=self.use_itemknn,
                           content=self.content, collab=collab, use_collab=self.use_collab)

    def _tune_hybrid(self, train: InteractionLog, catalogue: Sequence[str]) -> float:
        """The weight of the ranker's (per-user standardised) score against the signal blend's,
        chosen by NDCG@20 on an inner temporal split of `train` (both fitted on its first 80 %)."""
        from clipfeed.feed.recsys.blend import TUNING_USERS, SignalBlend
        from clipfeed.feed.recsys.metrics import ndcg_at_k

        inner = temporal_split(train, 0.8)
        users = sorted(u for u, rel in inner.relevant.items() if rel)
        if not users:
            return np.inf  # nothing to weigh them on: the ranker alone, as before any tuning
        if len(users) > TUNING_USERS:
            users = sorted(np.random.default_rng(self.seed).choice(users, TUNING_USERS, replace=False).tolist())
        sub = ClipfeedRecommender(weights=self.weights, seed=self.seed, label_fractions=self.label_fractions,
                                  negatives_per_user=self.negatives_per_user, n_estimators=self.n_estimators,
                                  use_itemknn=self.use_itemknn, als_params=self.als_params, diversity=self.diversity,
                                  learn_to_rank=self.learn_to_rank, state_options=self.state_options,
                                  max_users=self.max_users, content=self.content, ranker_labels=self.ranker_labels,
                                  use_collab=self.use_collab)
        sub.fit(inner.train, catalogue)
        sub.blend_signals = SignalBlend(als_params=self.als_params, seed=self.seed).fit(inner.train, catalogue)

        per_user, ranker_scores = sub._ranker_scores(users)

        def score(w: float) -> float:
            sub.hybrid_weight = w
            if w == np.inf:
                recs = sub.recommend(users, 20)
            else:
                recs = sub._recommend_hybrid(users, 20, per_user, ranker_scores)
            return float(np.mean([ndcg_at_k(recs[u], inner.relevant[u], 20) for u in users]))

        scores = {w: score(w) for w in HYBRID_WEIGHTS}
        self.hybrid_inner_ndcg = scores
        return max(HYBRID_WEIGHTS, key=lambda w: (scores[w], w))  # ties: more of the ranker

    def ranker_dataset(self, train: InteractionLog, catalogue: Sequence[str]
                       ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Features of every user's candidates at inner cuts of `train`, labelled by what the user
        did after the cut. Several cuts (`label_fractions`) multiply the scarce positive labels.
        Returns (X, labels per head, group id per row; rows of a group are contiguous)."""
        blocks, ys, groups = [], {h: [] for h in HEADS}, []
        group = 0
        for cut, fraction in enumerate(self.label_fractions):
            X, y, g = self._cut_dataset(train, catalogue, fraction, seed=self.seed + cut)
            if len(X):
                blocks.append(X)
                for h in HEADS:
                    ys[h].append(y[h])
                groups.append(g + group)
                group += int(g.max()) + 1
        if not blocks:
            return np.zeros((0, 0), np.float32), {}, np.zeros(0, np.int64)
        return np.vstack(blocks), {h: np.concatenate(ys[h]) for h in HEADS}, np.concatenate(groups)

    def _cut_dataset(self, train: InteractionLog, catalogue: Sequence[str], label_fraction: float, *, seed: int):
        inner = temporal_split(train, 1.0 - label_fraction)
        state = LogState(inner.train, catalogue, sources=self._fit_sources(inner.train, catalogue),
                         **self.state_options)
        # Labels (and so candidates and features) only for a sample of the labelled users.
        users = sample_users(inner.test.user.tolist(), self.max_users, seed=self.seed)
        before = inner.train.take(inner.train.of_users(users)) if self.max_users is not None else inner.train
        later = inner.test.take(inner.test.of_users(users)) if self.max_users is not None else inner.test
        seen_before: dict[str, set] = defaultdict(set)
        for u, v in zip(before.user, before.item):
            seen_before[u].add(v)
        labels = _labels(later, seen_before)
        rng = np.random.default_rng(seed)
        blocks, ys, groups = [], {h: [] for h in HEADS}, []
        state.prefetch([u for u in sorted(labels) if u in state._user_rows])
        for g, user in enumerate(sorted(labels)):
            if user not in state._user_rows:
                continue
            rows, sources = state.candidates(user)
            user_labels = labels[user]
            if self.ranker_labels == "outcome":
                # What the user was shown after the cut, labelled by what they did with it; the
                # source flags of those that a source would have proposed at the cut.
                source_of = {int(r): names for r, names in zip(rows, sources)}
                index = state.data.item_index
                rows = np.array(sorted(index[v] for v in user_labels if v in index), dtype=np.int64)
                sources = [source_of.get(int(r), set()) for r in rows]
            if not len(rows):
                continue
            ids = [catalogue[r] for r in rows]
            pos = np.array([user_labels.get(v, {}).get("completion", False) for v in ids])
            if not pos.any():
                continue
            # Keep every positive and exposed item, sample the rest: most candidates are unlabeled.
            exposed = np.array([v in user_labels for v in ids])
            other = np.flatnonzero(~exposed)
            keep = np.concatenate([np.flatnonzero(exposed),
                                   rng.choice(other, size=min(len(other), self.negatives_per_user), replace=False)])
            keep.sort()
            blocks.append(state.features(user, rows[keep], [sources[i] for i in keep]))
            for h in HEADS:
                ys[h].append(np.array([user_labels.get(ids[i], {}).get(h, False) for i in keep], dtype=np.float32))
            groups.append(np.full(len(keep), g))
        if not blocks:
            return np.zeros((0, 0), np.float32), {}, np.zeros(0, np.int64)
        return np.vstack(blocks), {h: np.concatenate(ys[h]) for h in HEADS}, np.concatenate(groups)

    def train_ranker(self, train: InteractionLog, catalogue: Sequence[str]) -> Ranker:
        X, y, groups = self.ranker_dataset(train, catalogue)
        if len(X) == 0 or y["completion"].sum() < 10:
            return HeuristicRanker()
        # Hold out a fifth of the users for early stopping.
        valid_users = np.random.default_rng(self.seed).random(groups.max() + 1) < 0.2
        is_valid = valid_users[groups]
        ranker = LightGBMRanker(n_estimators=self.n_estimators, seed=self.seed)
        ranker.fit(X[~is_valid], {h: v[~is_valid] for h, v in y.items()},
                   valid=(X[is_valid], {h: v[is_valid] for h, v in y.items()}),
                   groups=groups[~is_valid] if self.learn_to_rank else None,
                   valid_groups=groups[is_valid] if self.learn_to_rank else None)
        return ranker

    def exposed_auc(self, later: InteractionLog, users: Sequence[str]) -> float:
        """How well the ranker orders what each user was actually shown after the fit: per user,
        the chance that a later positive of theirs scores above a later non-positive (ties half),
        averaged over users with both (0.5 when none has). Unlike NDCG over every unseen item,
        it does not reward predicting which items the user will be shown, only what they do once
        shown."""
        state = self.state
        shown: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        index = state.data.item_index
        for u, v, positive in zip(later.user, later.item, later.positive):
            if v in index:
                shown[u].append((index[v], bool(positive)))
        aucs = []
        for user in users:
            pairs = shown.get(user)
            if user not in state._user_rows or not pairs:
                continue
            labels = np.array([positive for _, positive in pairs])
            if labels.all() or not labels.any():
                continue
            candidate_rows, sources = state.candidates(user)
            source_of = {int(r): names for r, names in zip(candidate_rows, sources)}
            rows = np.array([r for r, _ in pairs], dtype=np.int64)
            X = state.features(user, rows, [source_of.get(int(r), set()) for r in rows])
            score = weighted_score(self.ranker.predict(X), self.weights)
            above = score[labels][:, None] - score[~labels][None, :]
            aucs.append(float((above > 0).mean() + 0.5 * (above == 0).mean()))
        return float(np.mean(aucs)) if aucs else 0.5  # no user with both: no better than chance

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        if getattr(self, "blend", None) is not None:
            return self.blend.recommend(users, k)
        state = self.state
        per_user, scores = self._ranker_scores(users)
        if self.hybrid_weight is not None and self.hybrid_weight != np.inf:
            return self._recommend_hybrid(users, k, per_user, scores)
        out, offset = {}, 0
        for user, rows in zip(users, per_user):
            s = scores[offset:offset + len(rows)]
            offset += len(rows)
            ranked = [state.catalogue[rows[i]] for i in np.argsort(-s, kind="stable")]
            if len(ranked) < k:  # thin candidate set: fill from popularity
                have = set(ranked) | {state.catalogue[r] for r in state.data.seen_items(user)}
                ranked += [state.catalogue[r] for r in state.trending if state.catalogue[r] not in have][:k - len(ranked)]
            if self.diversity:
                creator_of = {v: state.creator_of[state.data.item_index[v]] for v in ranked[:3 * k]}
                ranked = diversify(ranked[:3 * k], creator_of, limit=k)
            out[user] = ranked[:k]
        return out

    def _ranker_scores(self, users: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Every user's candidate rows and the ranker's weighted score of each (concatenated)."""
        state = self.state
        per_user, blocks = [], []
        state.prefetch(users)
        for user in users:
            rows, sources = state.candidates(user)
            per_user.append(rows)
            if len(rows):
                blocks.append(state.features(user, rows, sources))
        # One ranker call for everyone: LightGBM's per-call overhead dominates small batches.
        scores = weighted_score(self.ranker.predict(np.vstack(blocks)), self.weights) if blocks else np.zeros(0)
        return per_user, scores

    def _recommend_hybrid(self, users: Sequence[str], k: int, per_user: list[np.ndarray], scores: np.ndarray
                          ) -> dict[str, list[str]]:
        """The blend's total (a sum of per-user z-scores over every unseen item) plus the ranker's
        score standardised over the user's candidates times `hybrid_weight`; items that are not
        candidates get the lowest candidate's ranker term. Then the same diversity re-ranking."""
        state, w = self.state, self.hybrid_weight
        offsets = np.cumsum([0, *map(len, per_user)])
        out = {}
        for start in range(0, len(users), 256):
            batch = list(users[start:start + 256])
            total, seen = self.blend_signals.totals(batch)
            for j, user in enumerate(batch):
                rows = per_user[start + j]
                s = scores[offsets[start + j]:offsets[start + j + 1]]
                bonus = np.zeros(total.shape[1])
                if len(rows):
                    rz = (s - s.mean()) / (s.std() + 1e-9)
                    bonus[:] = rz.min()
                    bonus[rows] = rz
                final = np.where(seen[j], -np.inf, total[j] + w * bonus)
                top = top_k_excluding(final, np.zeros(0, np.int64), min(3 * k, int((~seen[j]).sum())))
                ranked = [state.catalogue[r] for r in top]
                if self.diversity:
                    creator_of = {v: state.creator_of[state.data.item_index[v]] for v in ranked}
                    ranked = diversify(ranked, creator_of, limit=k)
                out[user] = ranked[:k]
        return out
