"""A seeded synthetic platform with a known behaviour model.

Users have latent tastes over topics; creators have a topic focus and a quality level; videos
have a topic mix (mostly their creator's), a quality, a duration, hashtags and a caption derived
from their topics, a sound, and optionally a media vector standing in for the spine's content
features (`SimConfig.media_signal`) and no text at all for a share of them (`untagged_share`).
`respond` says what a user does with a video — completion follows affinity × quality × length,
a skip is leaving within 2 s, likes/shares/comments/follows happen only after a completion — so
evaluations (offline here, online through the HTTP API in
the feed tests) measure recommendations against a ground truth we control.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from clipfeed.feed.recsys.dataset import InteractionLog, ItemMeta

_EPOCH = 1_700_000_000.0
_DAY = 86_400.0
SKIP_WINDOW_MS = 2000
_GENERIC_TAGS = ("fyp", "viral", "trend", "daily")
_GENERIC_WORDS = ("today", "my", "new", "best", "watch", "this", "look", "try", "you", "we")
_SYLLABLES = ("ka", "lo", "mi", "ru", "sen", "ta", "vo", "zi", "pe", "dan", "ol", "ne", "shu", "ar", "bex", "ti")


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    users: int = 500
    videos: int = 2000
    creators: int = 400
    topics: int = 20
    sounds: int = 150
    # Dirichlet concentration of user tastes: small = users love one or two topics.
    taste_concentration: float = 0.15
    # How much a creator's videos follow the creator's topic focus (vs. a random mix).
    creator_focus: float = 0.85
    interactions_per_user: int = 80
    days: float = 30.0
    # Organic exposure mix when generating a log: popular / random / taste-driven.
    exposure_mix: tuple[float, float, float] = (0.35, 0.25, 0.40)
    # Media vectors (0: none). How a video looks and sounds follows its topics (each topic has its
    # own look, e.g. cooking is warm and slow, gaming fast and saturated), its creator's house style
    # and its own accident: media = media_signal x topic look + creator style + noise, the last two
    # of fixed strength, so this is the topic's share of what the features say.
    media_signal: float = 0.0
    # Share of videos uploaded without caption or hashtags (their topics still drive behaviour).
    untagged_share: float = 0.0


@dataclass
class Platform:
    cfg: SimConfig
    user_ids: list[str]
    creator_ids: list[str]
    video_ids: list[str]
    user_taste: np.ndarray        # [U, T], rows sum to 1
    user_bias: np.ndarray         # [U] general propensity to finish videos
    creator_topics: np.ndarray    # [C, T]
    creator_quality: np.ndarray   # [C]
    video_creator: np.ndarray     # [V] creator index
    video_topics: np.ndarray      # [V, T], rows sum to 1
    video_quality: np.ndarray     # [V] in (0, 1)
    video_duration: np.ndarray    # [V] seconds
    video_popularity: np.ndarray  # [V] organic exposure probability (sums to 1)
    video_hashtags: list[tuple[str, ...]]
    video_sound: list[str]
    video_caption: list[str]
    video_created: np.ndarray     # [V] unix seconds
    topic_tags: list[str]
    video_media: np.ndarray | None = None  # [V, D] when SimConfig.media_signal > 0
    _unit_taste: np.ndarray = field(repr=False, default=None)
    _unit_topics: np.ndarray = field(repr=False, default=None)

    def __post_init__(self):
        self._unit_taste = self.user_taste / np.linalg.norm(self.user_taste, axis=1, keepdims=True)
        self._unit_topics = self.video_topics / np.linalg.norm(self.video_topics, axis=1, keepdims=True)

    def affinity(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Cosine of taste and topic mix, in [0, 1]: the ground-truth match."""
        return np.einsum("ij,ij->i", self._unit_taste[users], self._unit_topics[videos])

    def item_meta(self) -> dict[str, ItemMeta]:
        media = self.video_media
        return {vid: ItemMeta(creator_id=self.creator_ids[self.video_creator[i]], hashtags=self.video_hashtags[i],
                              sound_id=self.video_sound[i], duration_s=float(self.video_duration[i]),
                              caption=self.video_caption[i], created_ts=float(self.video_created[i]),
                              media=media[i] if media is not None else None)
                for i, vid in enumerate(self.video_ids)}


@dataclass(frozen=True)
class Response:
    watch_ms: int
    completed: bool
    replay: bool
    skipped: bool
    liked: bool
    shared: bool
    commented: bool
    followed: bool

    @property
    def weight(self) -> float:
        return float(signal_weight(np.array([self.completed]), np.array([self.replay]), np.array([self.liked]),
                                   np.array([self.shared]), np.array([self.commented]), np.array([self.followed]),
                                   np.array([self.watch_ms]), np.array([1000.0]))[0])


def signal_weight(completed, replay, liked, shared, commented, followed, watch_ms, duration_ms) -> np.ndarray:
    """The completion-weighted implicit signal (the same recipe the online event log uses):
    a completion counts 1, engagement after it adds, a partial watch counts a little, a skip 0."""
    partial = 0.25 * np.clip(np.asarray(watch_ms, float) / np.maximum(np.asarray(duration_ms, float), 1.0), 0, 1)
    full = (1.0 + 0.5 * np.asarray(replay) + 1.0 * np.asarray(liked) + 2.0 * np.asarray(shared)
            + 0.5 * np.asarray(commented) + 1.0 * np.asarray(followed))
    skipped = np.asarray(watch_ms) < SKIP_WINDOW_MS
    return np.where(np.asarray(completed), full, np.where(skipped, 0.0, partial))


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=rng.integers(2, 4)))


def simulate_platform(cfg: SimConfig) -> Platform:
    rng = np.random.default_rng(cfg.seed)
    T = cfg.topics
    topic_tags = [f"{_word(rng)}{k}" for k in range(T)]
    topic_words = [[_word(rng) for _ in range(8)] for _ in range(T)]

    user_taste = rng.dirichlet(np.full(T, cfg.taste_concentration), size=cfg.users) + 1e-4
    user_taste /= user_taste.sum(axis=1, keepdims=True)
    user_bias = rng.normal(0.0, 0.4, size=cfg.users)

    primary = rng.integers(0, T, size=cfg.creators)
    creator_topics = rng.dirichlet(np.full(T, 0.3), size=cfg.creators) * (1 - cfg.creator_focus)
    creator_topics[np.arange(cfg.creators), primary] += cfg.creator_focus
    creator_quality = rng.beta(4, 4, size=cfg.creators)

    # Creators differ in output: some are prolific, none dominates a topic.
    creator_weight = rng.pareto(2.5, size=cfg.creators) + 1.0
    video_creator = rng.choice(cfg.creators, size=cfg.videos, p=creator_weight / creator_weight.sum())
    noise = rng.dirichlet(np.full(T, 0.2), size=cfg.videos)
    video_topics = 0.8 * creator_topics[video_creator] + 0.2 * noise
    video_topics /= video_topics.sum(axis=1, keepdims=True)
    video_quality = np.clip(creator_quality[video_creator] + rng.normal(0, 0.12, cfg.videos), 0.02, 0.98)
    video_duration = np.clip(rng.lognormal(np.log(18.0), 0.5, cfg.videos), 5.0, 60.0).round(1)
    # Organic popularity: better videos travel further, with a heavy-tailed luck factor.
    luck = rng.pareto(1.2, size=cfg.videos) + 1.0
    video_popularity = luck * np.exp(2.0 * video_quality)
    video_popularity /= video_popularity.sum()

    sound_topic = rng.integers(0, T, size=cfg.sounds)
    sounds_by_topic = [np.flatnonzero(sound_topic == k) for k in range(T)]
    hashtags, sounds, captions = [], [], []
    for v in range(cfg.videos):
        top = np.argsort(video_topics[v])[::-1]
        tags = [topic_tags[top[0]]]
        if video_topics[v, top[1]] > 0.15:
            tags.append(topic_tags[top[1]])
        if rng.random() < 0.3:
            tags.append(str(rng.choice(_GENERIC_TAGS)))
        hashtags.append(tuple(tags))
        pool = sounds_by_topic[top[0]]
        s = int(rng.choice(pool)) if len(pool) and rng.random() < 0.6 else int(rng.integers(cfg.sounds))
        sounds.append(f"s{s}")
        words = list(rng.choice(topic_words[top[0]], size=rng.integers(2, 5))) + \
            list(rng.choice(_GENERIC_WORDS, size=rng.integers(1, 3)))
        rng.shuffle(words)
        captions.append(" ".join(words))
    video_created = _EPOCH - rng.uniform(0, cfg.days, cfg.videos) * _DAY
    # Options draw from a stream of their own: a platform made without them is the same as ever.
    extra = np.random.default_rng([cfg.seed, 1])
    video_media = None
    if cfg.media_signal > 0:
        from clipfeed.media.content_features import FEATURE_NAMES

        width = len(FEATURE_NAMES)
        topic_look = extra.normal(0.0, 1.0, (T, width))
        creator_style = extra.normal(0.0, 0.7, (cfg.creators, width))
        video_media = (cfg.media_signal * video_topics @ topic_look + creator_style[video_creator]
                       + extra.normal(0.0, 1.0, (cfg.videos, width))).astype(np.float32)
    if cfg.untagged_share > 0:
        for v in np.flatnonzero(extra.random(cfg.videos) < cfg.untagged_share):
            hashtags[v], captions[v] = (), ""

    return Platform(cfg=cfg, user_ids=[f"u{i}" for i in range(cfg.users)],
                    creator_ids=[f"c{i}" for i in range(cfg.creators)], video_ids=[f"v{i}" for i in range(cfg.videos)],
                    user_taste=user_taste, user_bias=user_bias, creator_topics=creator_topics,
                    creator_quality=creator_quality, video_creator=video_creator, video_topics=video_topics,
                    video_quality=video_quality, video_duration=video_duration, video_popularity=video_popularity,
                    video_hashtags=hashtags, video_sound=sounds, video_caption=captions, video_created=video_created,
                    topic_tags=topic_tags, video_media=video_media)


def completion_probability(platform: Platform, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """The behaviour model's core: affinity × quality × length on a logistic scale."""
    aff = platform.affinity(users, videos)
    logit = (-1.2 + 5.0 * (aff - 0.35) + 3.0 * (platform.video_quality[videos] - 0.5)
             - 0.7 * np.log(platform.video_duration[videos] / 15.0) + platform.user_bias[users])
    return 1.0 / (1.0 + np.exp(-logit))


def respond_many(platform: Platform, users: np.ndarray, videos: np.ndarray, rng: np.random.Generator) -> dict:
    """Vectorised `respond` for arrays of (user index, video index) pairs."""
    users = np.asarray(users, dtype=np.int64)
    videos = np.asarray(videos, dtype=np.int64)
    n = len(users)
    p = completion_probability(platform, users, videos)
    aff = platform.affinity(users, videos)
    q = platform.video_quality[videos]
    duration_ms = platform.video_duration[videos] * 1000.0
    completed = rng.random(n) < p
    skipped = ~completed & (rng.random(n) < 0.75 * (1.0 - p))
    replay = completed & (rng.random(n) < 0.3 * aff * q)
    partial_ms = np.maximum(rng.uniform(0.1, 0.95, n) * duration_ms, SKIP_WINDOW_MS + 1)
    skip_ms = rng.uniform(200, SKIP_WINDOW_MS - 1, n)
    watch_ms = np.where(completed, duration_ms * (1 + replay), np.where(skipped, skip_ms, partial_ms))
    liked = completed & (rng.random(n) < 0.05 + 0.5 * aff * q)
    shared = completed & (rng.random(n) < 0.01 + 0.12 * aff * q)
    commented = completed & (rng.random(n) < 0.02 + 0.08 * aff)
    followed = completed & (rng.random(n) < 0.01 + 0.08 * aff * q)
    return {"watch_ms": watch_ms.astype(np.int64), "completed": completed, "replay": replay, "skipped": skipped,
            "liked": liked, "shared": shared, "commented": commented, "followed": followed,
            "duration_ms": duration_ms}


def expected_watch_ms(platform: Platform, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """The mean of `respond_many`'s watch_ms for each (user, video) pair, in closed form: what a
    feed that showed these pairs is worth before the dice are rolled (a measure without the
    outcome noise of one sampled session)."""
    users = np.asarray(users, dtype=np.int64)
    videos = np.asarray(videos, dtype=np.int64)
    p = completion_probability(platform, users, videos)
    aff = platform.affinity(users, videos)
    duration_ms = platform.video_duration[videos] * 1000.0
    completed_ms = duration_ms * (1.0 + np.clip(0.3 * aff * platform.video_quality[videos], 0.0, 1.0))
    skip_chance = 0.75 * (1.0 - p)
    mean_skip_ms = (200.0 + SKIP_WINDOW_MS - 1) / 2
    # A partial watch is max(U(0.1, 0.95) · duration, SKIP_WINDOW_MS + 1): the mean of that clipped uniform.
    low, high, floor = 0.1 * duration_ms, 0.95 * duration_ms, float(SKIP_WINDOW_MS + 1)
    inside = np.clip(floor, low, high)
    mean_partial_ms = (floor * (inside - low) + (high ** 2 - inside ** 2) / 2) / (high - low)
    return (p * completed_ms
            + (1.0 - p) * (skip_chance * mean_skip_ms + (1.0 - skip_chance) * mean_partial_ms))


def ground_truth(platform: Platform, recs: Mapping[str, Sequence[str]], k: int) -> dict[str, float]:
    """What each user's top `k` is worth by the behaviour model itself (simulated platforms only):
    `watch_s@k`, the expected seconds watched of those k videos, and `completion@k`, their mean
    completion probability, averaged over the users. Unlike recall/NDCG on a held-out log, this
    does not reward predicting what the organic process would show next, only what a viewer gets."""
    user_of = {u: i for i, u in enumerate(platform.user_ids)}
    video_of = {v: i for i, v in enumerate(platform.video_ids)}
    users, videos, owner = [], [], []
    for n, (user, ranked) in enumerate(recs.items()):
        for video in ranked[:k]:
            users.append(user_of[user])
            videos.append(video_of[video])
            owner.append(n)
    if not recs or not users:
        return {f"watch_s@{k}": 0.0, f"completion@{k}": 0.0}
    users, videos, owner = np.array(users), np.array(videos), np.array(owner)
    watch_s = np.bincount(owner, weights=expected_watch_ms(platform, users, videos) / 1000, minlength=len(recs))
    completion = np.bincount(owner, weights=completion_probability(platform, users, videos), minlength=len(recs))
    listed = np.maximum(np.bincount(owner, minlength=len(recs)), 1)
    return {f"watch_s@{k}": float(watch_s.mean()), f"completion@{k}": float((completion / listed).mean())}


def respond(platform: Platform, user_index: int, video_index: int, rng: np.random.Generator, *,
            now: float | None = None) -> Response:
    """What user `user_index` does when shown video `video_index` (`now` is accepted for callers
    that track time; the behaviour model is stationary)."""
    r = respond_many(platform, np.array([user_index]), np.array([video_index]), rng)
    return Response(watch_ms=int(r["watch_ms"][0]), completed=bool(r["completed"][0]), replay=bool(r["replay"][0]),
                    skipped=bool(r["skipped"][0]), liked=bool(r["liked"][0]), shared=bool(r["shared"][0]),
                    commented=bool(r["commented"][0]), followed=bool(r["followed"][0]))


def _exposures(platform: Platform, u: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct videos user u would organically see: popular + random + taste-driven."""
    cfg = platform.cfg
    V = len(platform.video_ids)
    n = min(n, V)
    chosen: dict[int, None] = {}
    tries = 0
    while len(chosen) < n and tries < 10:
        m = 2 * (n - len(chosen)) + 4
        kind = rng.choice(3, size=m, p=np.asarray(cfg.exposure_mix) / sum(cfg.exposure_mix))
        popular = rng.choice(V, size=m, p=platform.video_popularity)
        uniform = rng.integers(0, V, size=m)
        topics = rng.choice(cfg.topics, size=m, p=platform.user_taste[u])
        for j in range(m):
            if kind[j] == 0:
                v = popular[j]
            elif kind[j] == 1:
                v = uniform[j]
            else:
                v = _video_of_topic(platform, topics[j], rng)
            chosen.setdefault(int(v), None)
            if len(chosen) >= n:
                break
        tries += 1
    return np.fromiter(chosen, dtype=np.int64)


def _video_of_topic(platform: Platform, topic: int, rng: np.random.Generator) -> int:
    pools = platform.__dict__.setdefault("_topic_pools", None)
    if pools is None:
        top = platform.video_topics.argmax(axis=1)
        pools = []
        for k in range(platform.cfg.topics):
            members = np.flatnonzero(top == k)
            w = platform.video_popularity[members]
            pools.append((members, w / w.sum() if len(members) else w))
        platform.__dict__["_topic_pools"] = pools
    members, weights = pools[topic]
    if not len(members):
        return int(rng.integers(0, len(platform.video_ids)))
    # Flatten the popularity skew inside a topic: taste-driven discovery reaches the long tail.
    return int(rng.choice(members, p=weights)) if rng.random() < 0.5 else int(rng.choice(members))


def generate_log(platform: Platform, *, interactions_per_user: int | None = None,
                 rng: np.random.Generator | None = None) -> InteractionLog:
    """Replay the organic exposure of every user through the behaviour model, over `cfg.days`."""
    cfg = platform.cfg
    rng = rng or np.random.default_rng(cfg.seed + 1)
    per_user = interactions_per_user or cfg.interactions_per_user
    users, videos, stamps = [], [], []
    for u in range(len(platform.user_ids)):
        n = max(5, int(per_user * rng.uniform(0.5, 1.5)))
        seen = _exposures(platform, u, n, rng)
        users.append(np.full(len(seen), u))
        videos.append(seen)
        stamps.append(_EPOCH + np.sort(rng.uniform(0, cfg.days * _DAY, len(seen))))
    u_idx = np.concatenate(users)
    v_idx = np.concatenate(videos)
    ts = np.concatenate(stamps).round()
    r = respond_many(platform, u_idx, v_idx, rng)
    weight = signal_weight(r["completed"], r["replay"], r["liked"], r["shared"], r["commented"], r["followed"],
                           r["watch_ms"], r["duration_ms"])
    flags = {name: r[name] for name in ("completed", "liked", "shared", "commented", "followed", "skipped")}
    flags["watch_ms"] = r["watch_ms"]
    uid = np.array(platform.user_ids, dtype=object)[u_idx]
    vid = np.array(platform.video_ids, dtype=object)[v_idx]
    return InteractionLog(uid, vid, ts, weight, r["completed"] | r["liked"], flags, platform.item_meta())
