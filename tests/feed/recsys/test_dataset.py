"""Interaction logs: the temporal split and the MovieLens u.data loader."""

import numpy as np
import pytest

from clipfeed.feed.recsys.dataset import InteractionLog, load_udata, sample_users, temporal_split


def _log(rows):
    users, items, ts, weight, positive = zip(*rows)
    return InteractionLog(np.array(users, dtype=object), np.array(items, dtype=object), np.array(ts, float),
                          np.array(weight, np.float32), np.array(positive, bool))


def test_temporal_split_puts_each_users_first_80_percent_in_time_into_train():
    rows = [("u1", f"i{t}", float(t), 1.0, True) for t in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]  # shuffled in time
    rows += [("u2", "a", 100.0, 1.0, True), ("u2", "b", 50.0, 1.0, False), ("u2", "c", 75.0, 1.0, True),
             ("u2", "d", 60.0, 1.0, True), ("u2", "e", 90.0, 1.0, True)]
    rows += [("u3", "only", 1.0, 1.0, True)]
    split = temporal_split(_log(rows))
    train_u1 = sorted(split.train.ts[split.train.user == "u1"])
    test_u1 = sorted(split.test.ts[split.test.user == "u1"])
    assert train_u1 == [1, 2, 3, 4, 5, 6, 7, 8] and test_u1 == [9, 10]
    assert max(train_u1) < min(test_u1)
    # u2: 5 interactions -> 4 train (b, d, c, e by time), 1 test (a at t=100)
    assert sorted(split.test.item[split.test.user == "u2"]) == ["a"]
    # a single interaction stays in train
    assert list(split.train.item[split.train.user == "u3"]) == ["only"]
    assert split.relevant == {"u1": {"i9", "i10"}, "u2": {"a"}}


def test_relevant_items_are_positive_and_unseen_in_train():
    rows = [("u", "x", 1, 1, True), ("u", "y", 2, 1, True), ("u", "z", 3, 1, True), ("u", "w", 4, 1, True),
            ("u", "x", 5, 1, True), ("u", "n", 6, 0, False), ("u", "p", 7, 1, True), ("u", "q", 8, 1, True),
            ("u", "r", 9, 1, True), ("u", "s", 10, 1, True)]
    split = temporal_split(_log(rows), 0.5)  # test: x (seen before), n (negative), p, q, r, s
    assert split.relevant["u"] == {"p", "q", "r", "s"}


def test_user_sample_is_bounded_seeded_and_mostly_kept_as_users_join():
    users = [f"user{i}" for i in range(1000)]
    sample = sample_users(users, 100, seed=3)
    assert len(sample) == 100 and set(sample) <= set(users) and sample == sorted(sample)
    assert sample_users(reversed(users), 100, seed=3) == sample  # the order of the input does not matter
    assert sample_users(users, 100, seed=4) != sample
    assert sample_users(users[:50], 100) == sorted(users[:50])  # fewer users than the bound: all of them
    # 10 % more users: a sampled user leaves the sample only for a newcomer that hashes lower.
    grown = sample_users(users + [f"new{i}" for i in range(100)], 100, seed=3)
    kept = set(grown) & set(sample)
    assert set(grown) - kept <= {f"new{i}" for i in range(100)}
    assert len(kept) >= 75


def test_udata_loader_reads_ratings_four_and_above_as_positive(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t4\t891717742\n22\t377\t5\t878887116\n244\t51\t2\t880606923\n")
    log = load_udata(path)
    assert list(log.user) == ["196", "186", "22", "244"]
    assert list(log.positive) == [False, True, True, False]
    assert list(log.weight) == [0.0, 1.0, 2.0, 0.0]
    assert log.ts[0] == 881250949


def test_udata_loader_rejects_a_malformed_line(tmp_path):
    path = tmp_path / "bad.data"
    path.write_text("1\t2\t5\t100\n1\t2\n")
    with pytest.raises(ValueError, match="bad.data:2"):
        load_udata(path)


def test_columns_must_have_equal_length():
    with pytest.raises(ValueError):
        InteractionLog(np.array(["u"], object), np.array(["a", "b"], object), np.zeros(1), np.zeros(1), np.zeros(1))
