"""Ranker features: one function builds them offline (from a replayed log) and online (from the
feature store), so training and serving cannot drift apart.

`build_features` is vectorised: the only per-candidate Python is a few dict lookups, so ~300
candidates take well under a couple of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Candidate-source names the features know about. A source not in this list still counts in
# `n_sources`; online and offline code should use these names so the flags line up.
SOURCE_NAMES: tuple[str, ...] = (
    "following", "collaborative", "short_term", "content", "itemknn", "trending", "affinity", "exploration",
)


@dataclass
class UserState:
    """What the feature store knows about one user at request time."""

    user_id: str
    # (video_id, weight, ts) newest first; weight is the completion-weighted signal of the event.
    recent: list[tuple[str, float, float]] = field(default_factory=list)
    creator_affinity: dict[str, float] = field(default_factory=dict)
    hashtag_affinity: dict[str, float] = field(default_factory=dict)
    sound_affinity: dict[str, float] = field(default_factory=dict)
    follows: frozenset[str] = frozenset()
    event_count: int = 0
    # Fold-in of recent items into the collaborative space (CollaborativeModel.fold_in).
    short_term_vector: np.ndarray | None = None
    # Mean content (text) vector of recently completed/liked videos (ContentIndex space); optional.
    content_vector: np.ndarray | None = None


@dataclass
class VideoState:
    """Per-video counters and metadata at request time."""

    video_id: str
    creator_id: str
    hashtags: tuple[str, ...] = ()
    sound_id: str | None = None
    duration_s: float = 15.0
    age_s: float = 0.0
    impressions: int = 0
    views: int = 0
    completions: int = 0
    likes: int = 0
    shares: int = 0
    comments: int = 0
    # Time-decayed engagement velocity (events per hour, decayed); whatever trending computes.
    velocity: float = 0.0
    text_vector: np.ndarray | None = None


@dataclass
class CreatorState:
    creator_id: str
    followers: int = 0
    completion_rate: float = 0.0  # completed views / views over the creator's videos
    video_count: int = 0
    views: int = 0  # what completion_rate was counted over


FEATURE_NAMES: tuple[str, ...] = (
    "collab_score",          # long-term user vector · item vector (0 when unknown)
    "collab_missing",        # 1 when no collaborative score was available
    "short_term_score",      # short-term (fold-in) vector · item vector
    "content_sim",           # cosine(user content vector, video text vector)
    "creator_affinity",
    "hashtag_affinity_max",
    "hashtag_affinity_sum",
    "creator_affinity_rate",  # creator affinity / the user's event count (how focused the user is)
    "hashtag_affinity_rate",
    "sound_affinity",
    "follows_creator",
    "recently_seen",         # the video is in the user's recent history (re-watch)
    "user_events_log",
    "duration_s",
    "age_hours_log",
    "impressions_log",
    "views_log",
    "completion_rate",       # smoothed per-video completion rate
    "like_rate",
    "share_rate",
    "comment_rate",
    "velocity_log",
    "creator_followers_log",
    "creator_completion_rate",
    "creator_videos_log",
    "itemknn_score",         # offline pipeline only (item-kNN is not an online source); 0 online
    *(f"src_{name}" for name in SOURCE_NAMES),
    "n_sources",
)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Beta-prior smoothing of per-video rates so a video with 1 view is not "100 % completion".
_PRIOR_VIEWS = 10.0
_PRIOR_COMPLETION = 0.35
_PRIOR_LIKE = 0.05
_PRIOR_SHARE = 0.01
_PRIOR_COMMENT = 0.01


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def build_features(
    user: UserState,
    videos: list[VideoState],
    creators: dict[str, CreatorState],
    *,
    collab_scores: np.ndarray | None,
    source_ids: list[set[str]] | None,
    now: float,
    short_term_scores: np.ndarray | None = None,
    itemknn_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Return a float32 matrix [len(videos), len(FEATURE_NAMES)].

    `collab_scores[i]` / `short_term_scores[i]`: the user's long/short-term vector dotted with
    video i's item vector (NaN where the video has no item vector). `source_ids[i]`: the names
    (see SOURCE_NAMES) of the candidate sources that proposed video i. `now` is only used for
    symmetry with callers that compute age themselves; ages come from `VideoState.age_s`.
    """
    n = len(videos)
    X = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
    if n == 0:
        return X
    col = FEATURE_INDEX

    if collab_scores is not None:
        cs = np.asarray(collab_scores, dtype=np.float32)
        missing = np.isnan(cs)
        X[:, col["collab_score"]] = np.where(missing, 0.0, cs)
        X[:, col["collab_missing"]] = missing
    else:
        X[:, col["collab_missing"]] = 1.0
    if short_term_scores is not None:
        X[:, col["short_term_score"]] = np.nan_to_num(np.asarray(short_term_scores, dtype=np.float32))

    if user.content_vector is not None:
        dim = user.content_vector.shape[0]
        mat = np.zeros((n, dim), dtype=np.float32)
        for i, v in enumerate(videos):
            if v.text_vector is not None and v.text_vector.shape[0] == dim:
                mat[i] = v.text_vector
        norms = np.linalg.norm(mat, axis=1)
        norms[norms == 0] = 1.0
        X[:, col["content_sim"]] = (mat @ _unit(user.content_vector.astype(np.float32))) / norms

    ca, ha, sa = user.creator_affinity, user.hashtag_affinity, user.sound_affinity
    X[:, col["creator_affinity"]] = [ca.get(v.creator_id, 0.0) for v in videos]
    if ha:
        tag_scores = [[ha.get(t, 0.0) for t in v.hashtags] or [0.0] for v in videos]
        X[:, col["hashtag_affinity_max"]] = [max(s) for s in tag_scores]
        X[:, col["hashtag_affinity_sum"]] = [sum(s) for s in tag_scores]
    if sa:
        X[:, col["sound_affinity"]] = [sa.get(v.sound_id, 0.0) if v.sound_id else 0.0 for v in videos]
    if user.follows:
        X[:, col["follows_creator"]] = [v.creator_id in user.follows for v in videos]
    if user.recent:
        recent_ids = {r[0] for r in user.recent}
        X[:, col["recently_seen"]] = [v.video_id in recent_ids for v in videos]
    X[:, col["user_events_log"]] = np.log1p(max(user.event_count, 0))
    per_event = 1.0 / max(user.event_count, 1)
    X[:, col["creator_affinity_rate"]] = X[:, col["creator_affinity"]] * per_event
    X[:, col["hashtag_affinity_rate"]] = X[:, col["hashtag_affinity_max"]] * per_event
    if itemknn_scores is not None:
        X[:, col["itemknn_score"]] = np.nan_to_num(np.asarray(itemknn_scores, dtype=np.float32))

    counters = np.array(
        [(v.duration_s, v.age_s, v.impressions, v.views, v.completions, v.likes, v.shares, v.comments, v.velocity)
         for v in videos], dtype=np.float64)
    duration, age, impressions, views, completions, likes, shares, comments, velocity = counters.T
    X[:, col["duration_s"]] = duration
    X[:, col["age_hours_log"]] = np.log1p(np.maximum(age, 0.0) / 3600.0)
    X[:, col["impressions_log"]] = np.log1p(np.maximum(impressions, 0.0))
    X[:, col["views_log"]] = np.log1p(np.maximum(views, 0.0))
    denom = views + _PRIOR_VIEWS
    X[:, col["completion_rate"]] = (completions + _PRIOR_COMPLETION * _PRIOR_VIEWS) / denom
    X[:, col["like_rate"]] = (likes + _PRIOR_LIKE * _PRIOR_VIEWS) / denom
    X[:, col["share_rate"]] = (shares + _PRIOR_SHARE * _PRIOR_VIEWS) / denom
    X[:, col["comment_rate"]] = (comments + _PRIOR_COMMENT * _PRIOR_VIEWS) / denom
    X[:, col["velocity_log"]] = np.log1p(np.maximum(velocity, 0.0))

    empty = CreatorState("")
    cstats = np.array([(c.followers, c.completion_rate, c.video_count)
                       for c in (creators.get(v.creator_id, empty) for v in videos)], dtype=np.float64)
    X[:, col["creator_followers_log"]] = np.log1p(np.maximum(cstats[:, 0], 0.0))
    X[:, col["creator_completion_rate"]] = cstats[:, 1]
    X[:, col["creator_videos_log"]] = np.log1p(np.maximum(cstats[:, 2], 0.0))

    if source_ids is not None:
        first = col[f"src_{SOURCE_NAMES[0]}"]
        source_col = {name: first + i for i, name in enumerate(SOURCE_NAMES)}
        rows, cols = [], []
        for i, names in enumerate(source_ids):
            for name in names:
                j = source_col.get(name)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        X[rows, cols] = 1.0
        X[:, col["n_sources"]] = [len(s) for s in source_ids]
    return X
