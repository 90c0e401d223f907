"""Collaborative model (ALS + faiss), content index, features, rankers and the model registry."""

import asyncio

import numpy as np
import pytest

from clipfeed.feed.recsys.collaborative import CollaborativeModel
from clipfeed.feed.recsys.content import ContentIndex, Embedder, HashingEmbedder, video_text
from clipfeed.feed.recsys.features import FEATURE_NAMES, CreatorState, UserState, VideoState, build_features
from clipfeed.feed.recsys.ranker import HEADS, HeuristicRanker, LightGBMRanker, Ranker, weighted_score
from clipfeed.feed.recsys.registry import ModelRegistry, ModelUnavailable, NothingToRollBack
from clipfeed.feed.recsys.simulator import SimConfig, generate_log, simulate_platform
from clipfeed.storage import LocalStore

SMALL = SimConfig(seed=5, users=80, videos=300, creators=60, interactions_per_user=40)


@pytest.fixture(scope="module")
def sim():
    platform = simulate_platform(SMALL)
    return platform, generate_log(platform)


@pytest.fixture(scope="module")
def collab(sim):
    _, log = sim
    return CollaborativeModel(factors=16, iterations=8).fit(log.user, log.item, log.weight)


def test_collaborative_retrieves_the_users_taste(sim, collab):
    platform, log = sim
    seen = set(log.item[log.user == "u0"].tolist())
    found = collab.nearest(collab.user_vector("u0"), 20, exclude=seen)
    assert len(found) == 20 and not seen & {v for v, _ in found}
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    # over all users, what ALS retrieves matches their (hidden) taste far better than chance
    rng = np.random.default_rng(0)
    retrieved, chance = [], []
    for user in range(SMALL.users):
        rows = np.array([int(v[1:]) for v, _ in collab.nearest(collab.user_vector(f"u{user}"), 10)])
        retrieved.append(platform.affinity(np.full(len(rows), user), rows).mean())
        chance.append(platform.affinity(np.full(10, user), rng.integers(0, SMALL.videos, 10)).mean())
    assert np.mean(retrieved) > 2 * np.mean(chance)
    assert collab.user_vector("nobody") is None and collab.item_vector("nothing") is None


def test_a_long_exclusion_list_gets_the_same_neighbours_as_a_short_one(collab):
    """The exact index answers with numpy, the excluded rows masked: the same ranking as
    faiss's own, excluded ids skipped, however many are excluded."""
    vec = collab.user_vector("u1")
    scores, rows = collab._index().search(vec.reshape(1, -1), len(collab.item_ids))  # faiss itself
    everything = [(collab.item_ids[row], score) for score, row in zip(scores[0].tolist(), rows[0].tolist())]
    assert len(everything) == len(collab.item_ids)
    excluded = {v for i, (v, _) in enumerate(everything) if i % 10}  # the best one included
    expected = [(v, s) for v, s in everything if v not in excluded][:10]
    found = collab.nearest(vec, 10, exclude=excluded)
    assert [v for v, _ in found] == [v for v, _ in expected]
    assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-4)
    # More wanted than is left: everything that is left, nothing excluded.
    assert {v for v, _ in collab.nearest(vec, 10_000, exclude=excluded)} == set(collab.item_ids) - excluded


def test_hnsw_returns_k_unseen_items_when_the_seen_ones_crowd_the_users_neighbourhood():
    """A heavy user has seen thousands of the items nearest their vector: the ANN search must
    still return k items, none of them seen, from the best of the rest."""
    from clipfeed.feed.recsys.collaborative import _build_index

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16)).astype(np.float32)
    vectors = (centres[rng.integers(0, 40, 20_000)] + 0.3 * rng.normal(size=(20_000, 16))).astype(np.float32)
    model = CollaborativeModel(factors=16, hnsw_threshold=1_000)
    model.item_ids = [f"v{i}" for i in range(len(vectors))]
    model.item_index = {v: i for i, v in enumerate(model.item_ids)}
    model.item_factors = vectors
    model._ann = _build_index(vectors, model.hnsw_threshold)
    assert type(model._ann).__name__ == "IndexHNSWFlat"
    query = centres[0] + 0.1 * rng.normal(size=16).astype(np.float32)
    exact = np.argsort(-(vectors @ query), kind="stable")
    seen = {f"v{row}" for row in exact[:3_000]}  # every item nearer than the 3,000th
    found = model.nearest(query, 100, exclude=seen)
    assert len(found) == 100 and not seen & {v for v, _ in found}
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    # Approximate, but from the top of what is left (asking for k plus every seen id and
    # filtering afterwards came back with 8 items here).
    rank_among_unseen = {f"v{row}": i for i, row in enumerate(exact[3_000:])}
    assert max(rank_among_unseen[v] for v, _ in found) < 0.15 * len(rank_among_unseen)
    # The same exclusion given as rows (what the collaborative source computes once per ranking).
    assert model.nearest(query, 100, excluded_rows=model.rows(seen)) == found


def test_fold_in_recovers_a_users_vector_from_their_items(sim, collab):
    _, log = sim
    mask = (log.user == "u1") & (log.weight > 0)
    folded = collab.fold_in(log.item[mask].tolist(), log.weight[mask].tolist())
    trained = collab.user_vector("u1")
    cosine = folded @ trained / (np.linalg.norm(folded) * np.linalg.norm(trained))
    assert cosine > 0.9
    assert collab.fold_in(["unknown"], [1.0]) is None


def test_collaborative_save_load_and_hnsw_agree_with_flat(sim, collab, tmp_path):
    _, log = sim
    path = tmp_path / "collab.bin"
    collab.save(path)
    loaded = CollaborativeModel.load(path)
    vec = collab.user_vector("u2")
    assert loaded.nearest(vec, 10) == collab.nearest(vec, 10)
    hnsw = CollaborativeModel(factors=16, iterations=8, hnsw_threshold=10).fit(log.user, log.item, log.weight)
    assert type(hnsw._index()).__name__ == "IndexHNSWFlat"
    flat_ids = {v for v, _ in collab.nearest(vec, 10)}
    hnsw_ids = {v for v, _ in hnsw.nearest(hnsw.user_vector("u2"), 10)}
    assert len(flat_ids & hnsw_ids) >= 7  # same data and seed: HNSW finds (almost) the exact neighbours
    path.write_bytes(b"garbage")
    with pytest.raises(Exception):
        CollaborativeModel.load(path)


def test_content_index_finds_videos_sharing_hashtags():
    embedder = HashingEmbedder()
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed(["dance #dance", "", "cooking pasta #food"])
    assert np.allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1.0) and not vectors[1].any()
    index = ContentIndex().build(["a", "b", "c", "d"], [video_text("my moves", ["dance"]),
                                                        video_text("pasta night", ["food", "cooking"]),
                                                        video_text("more dancing", ["dance", "fyp"]),
                                                        video_text("a cat", ["cats"])])
    assert index.nearest(index.vector("a"), 1, exclude=["a"])[0][0] == "c"
    profile = index.profile(["b"], [1.0])
    assert index.nearest(profile, 1, exclude=["b"])[0][0] != "a"


def _candidates(n=300):
    rng = np.random.default_rng(0)
    videos = [VideoState(f"v{i}", f"c{i % 7}", (f"t{i % 5}",), f"s{i % 3}", 10 + i % 20, 3600.0 * i,
                         impressions=int(rng.integers(0, 500)), views=int(rng.integers(0, 400)),
                         completions=int(rng.integers(0, 200)), likes=3, shares=1, comments=0, velocity=2.0,
                         text_vector=rng.normal(size=8).astype(np.float32)) for i in range(n)]
    user = UserState("u", recent=[("v1", 2.0, 10.0)], creator_affinity={"c1": 3.0}, hashtag_affinity={"t2": 1.5},
                     sound_affinity={"s0": 0.5}, follows=frozenset({"c3"}), event_count=12,
                     content_vector=rng.normal(size=8).astype(np.float32))
    creators = {f"c{i}": CreatorState(f"c{i}", followers=i * 10, completion_rate=0.4, video_count=5) for i in range(7)}
    return user, videos, creators


def test_build_features_is_one_row_per_candidate_with_the_named_columns():
    user, videos, creators = _candidates()
    X = build_features(user, videos, creators, collab_scores=np.linspace(0, 1, 300), now=0.0,
                       source_ids=[{"trending"} if i % 2 else {"collaborative", "content"} for i in range(300)])
    assert X.shape == (300, len(FEATURE_NAMES)) and X.dtype == np.float32
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert X[1, col["creator_affinity"]] == 3.0 and X[8, col["creator_affinity"]] == 3.0
    assert X[3, col["follows_creator"]] == 1.0 and X[4, col["follows_creator"]] == 0.0
    assert X[2, col["hashtag_affinity_max"]] == 1.5 and X[1, col["recently_seen"]] == 1.0
    assert X[0, col["src_collaborative"]] == 1.0 and X[0, col["n_sources"]] == 2 and X[1, col["src_trending"]] == 1
    assert X[:, col["collab_missing"]].sum() == 0
    none = build_features(UserState("new"), videos, {}, collab_scores=None, source_ids=None, now=0.0)
    assert none[:, col["collab_missing"]].all() and not np.isnan(none).any()
    assert build_features(user, [], creators, collab_scores=None, source_ids=None, now=0.0).shape == (0, len(FEATURE_NAMES))


def test_rankers_predict_every_head_and_lightgbm_round_trips(tmp_path):
    user, videos, creators = _candidates()
    X = build_features(user, videos, creators, collab_scores=np.linspace(0, 1, 300), source_ids=None, now=0.0)
    heuristic = HeuristicRanker()
    assert isinstance(heuristic, Ranker)
    preds = heuristic.predict(X)
    assert set(preds) == set(HEADS) and all(len(p) == 300 for p in preds.values())
    score = weighted_score(preds, {"completion": 1.0, "like": 2.0})
    assert np.allclose(score, preds["completion"] + 2 * preds["like"])
    # a learnable target: completion follows the collaborative score
    labels = {"completion": (X[:, 0] > 0.5).astype(np.float32), "like": (X[:, 0] > 0.8).astype(np.float32),
              "share": np.zeros(300, np.float32), "follow": np.zeros(300, np.float32)}
    ranker = LightGBMRanker(n_estimators=40, min_child_samples=5).fit(X, labels)
    p = ranker.predict(X)["completion"]
    assert p[X[:, 0] > 0.6].mean() > p[X[:, 0] < 0.4].mean() + 0.3
    assert np.all(ranker.predict(X)["share"] == 0.0)  # a head without positives is a constant
    ranker.save(tmp_path / "r.bin")
    again = LightGBMRanker.load(tmp_path / "r.bin")
    for head in HEADS:
        assert np.allclose(again.predict(X)[head], ranker.predict(X)[head])


def test_registry_promotes_only_what_beats_the_untrained_default_on_its_own_holdout(tmp_path, collab):
    """`must_beat` (e.g. the heuristic ranker's score on the new model's holdout) is a second bar
    beside the current version's recorded score."""
    registry = ModelRegistry(LocalStore(tmp_path / "blobs"), refresh_s=0)

    async def scenario():
        # Nothing promoted yet, but the default scored higher on this holdout: not promoted.
        _v1, promoted1 = await registry.publish("collab", collab, {"ndcg@20": 0.30}, compare_on="ndcg@20",
                                                must_beat=0.31)
        assert promoted1 is False and await registry.current("collab") is None
        v2, promoted2 = await registry.publish("collab", collab, {"ndcg@20": 0.05}, compare_on="ndcg@20",
                                               must_beat=0.04)
        # Better than the default on its holdout, but not better than the current version.
        _v3, promoted3 = await registry.publish("collab", collab, {"ndcg@20": 0.045}, compare_on="ndcg@20",
                                                must_beat=0.04)
        v4, promoted4 = await registry.publish("collab", collab, {"ndcg@20": 0.06}, compare_on="ndcg@20",
                                               must_beat=0.04)
        assert (promoted2, promoted3, promoted4) == (True, False, True)
        assert (await registry.current("collab"))[0] == v4
        assert [e["current"] for e in await registry.list("collab")] == [False, False, False, True]

    asyncio.run(scenario())


def test_registry_promotes_only_better_models_lists_and_rolls_back(tmp_path, collab):
    registry = ModelRegistry(LocalStore(tmp_path / "blobs"), refresh_s=0)

    async def scenario():
        assert await registry.current("collab") is None
        v1, promoted1 = await registry.publish("collab", collab, {"ndcg@20": 0.10}, compare_on="ndcg@20")
        v2, promoted2 = await registry.publish("collab", collab, {"ndcg@20": 0.08}, compare_on="ndcg@20")
        v3, promoted3 = await registry.publish("collab", collab, {"ndcg@20": 0.12}, compare_on="ndcg@20")
        assert (promoted1, promoted2, promoted3) == (True, False, True)
        version, model = await registry.current("collab")
        assert version == v3 and isinstance(model, CollaborativeModel)
        assert (await registry.current("collab"))[1] is model  # cached by version
        listed = await registry.list("collab")
        assert [e["version"] for e in listed] == [v1, v2, v3]
        assert [e["current"] for e in listed] == [False, False, True]
        assert listed[1]["metrics"] == {"ndcg@20": 0.08}
        assert await registry.rollback("collab") == v1
        assert (await registry.current("collab"))[0] == v1
        with pytest.raises(NothingToRollBack):
            await registry.rollback("collab")
        # another process (a new registry on the same store) sees the same served version
        assert (await ModelRegistry(LocalStore(tmp_path / "blobs")).current("collab"))[0] == v1
        # a corrupt artifact is reported as unavailable, not as a crash
        (tmp_path / "blobs" / "models" / "collab" / f"{v1}.bin").write_bytes(b"\x00not a model")
        fresh = ModelRegistry(LocalStore(tmp_path / "blobs"), refresh_s=0)
        with pytest.raises(ModelUnavailable):
            await fresh.current("collab")
        (tmp_path / "blobs" / "models" / "collab" / f"{v1}.bin").unlink()
        with pytest.raises(ModelUnavailable):
            await ModelRegistry(LocalStore(tmp_path / "blobs")).current("collab")
        with pytest.raises(ValueError):
            await registry.publish("collab", collab, {"recall": 1.0}, compare_on="ndcg@20")
        with pytest.raises(ValueError):
            await registry.list("nonsense")

    asyncio.run(scenario())


def test_a_ranker_trained_on_outcomes_orders_what_was_shown_better_than_one_trained_on_future_exposure():
    """"Future" labels (what a user does later, unexposed candidates as negatives: `clipfeed
    eval`'s, and the served default before) reward predicting what the user will be shown;
    "outcome" labels (`clipfeed train`'s default) only what they did with what they were shown. Measured on what the holdout users were shown, and by the
    simulator's ground truth of their top 20 (bench/ranker_objectives.py, seed 11)."""
    from clipfeed.feed.recsys.evaluation import ServedPipelineCase
    from clipfeed.feed.recsys.pipeline import ClipfeedRecommender
    from clipfeed.feed.recsys.simulator import ground_truth

    case = ServedPipelineCase.simulate(11)
    measured = {}
    for labels in ("future", "outcome"):
        model = case.pipeline(labels)
        assert isinstance(model.ranker, LightGBMRanker)
        measured[labels] = (model.exposed_auc(case.split.test, case.users),
                            ground_truth(case.platform, model.recommend(case.users, 20), 20)["completion@20"])
    (future_auc, future_completion), (outcome_auc, outcome_completion) = measured["future"], measured["outcome"]
    assert 0.5 < future_auc < outcome_auc, measured
    assert outcome_completion > future_completion, measured
    with pytest.raises(ValueError, match="ranker_labels"):
        ClipfeedRecommender(ranker_labels="clicks")
