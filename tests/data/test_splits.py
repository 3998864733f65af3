"""Splits, k-core and sessionization on hand-made interactions with the expected results written out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.splits import (
    Split,
    auto_validation_users,
    k_core,
    leave_one_out,
    sessionize,
    temporal_split,
    temporal_split_by_quantile,
)

ML_100K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"


def build(events: list[tuple[str, str, int]], **universes: np.ndarray) -> Interactions:
    users, items, times = zip(*events, strict=True) if events else ((), (), ())
    return Interactions.from_events(
        user_ids=np.array(users, dtype=object if not users else None),
        item_ids=np.array(items, dtype=object if not items else None),
        timestamps=np.array(times, dtype=np.int64),
        **universes,
    )


def sequences(inter: Interactions) -> dict[str, list[str]]:
    """Each user's items by external id, oldest first; users without events are left out."""
    return {
        str(inter.user_ids[u]): [str(inter.item_ids[i]) for i in inter.history(u)]
        for u in range(inter.n_users)
        if inter.lengths()[u] > 0
    }


def timed_sequences(inter: Interactions) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for u in range(inter.n_users):
        lo, hi = inter.user_ptr[u], inter.user_ptr[u + 1]
        if hi > lo:
            out[str(inter.user_ids[u])] = [
                (str(inter.item_ids[i]), int(t))
                for i, t in zip(inter.items[lo:hi], inter.timestamps[lo:hi], strict=True)
            ]
    return out


def assert_one_index_space(split: Split, source: Interactions) -> None:
    for part in (split.train, split.valid, split.test, split.test_history):
        assert part.user_ids is source.user_ids
        assert part.item_ids is source.item_ids


# ---------------------------------------------------------------------------------------------- leave-one-out
LOO_EVENTS = [
    ("a", "i1", 10),
    ("a", "i2", 20),
    ("a", "i3", 30),
    ("a", "i4", 40),
    ("a", "i5", 50),
    ("b", "i2", 5),
    ("b", "i1", 15),  # same time as the next event: input order breaks the tie, so i3 is last
    ("b", "i3", 15),
    ("c", "i4", 1),
    ("c", "i5", 2),
    ("d", "i1", 100),
]


def test_leave_one_out_hand_example() -> None:
    inter = build(LOO_EVENTS, user_universe=np.array(["a", "b", "c", "d", "e"]))
    split = leave_one_out(inter)

    assert sequences(split.train) == {"a": ["i1", "i2", "i3"], "b": ["i2"], "c": ["i4", "i5"], "d": ["i1"]}
    assert sequences(split.valid) == {"a": ["i4"], "b": ["i1"]}
    assert sequences(split.test) == {"a": ["i5"], "b": ["i3"]}
    assert sequences(split.test_history) == {
        "a": ["i1", "i2", "i3", "i4"],
        "b": ["i2", "i1"],
        "c": ["i4", "i5"],
        "d": ["i1"],
    }
    assert split.protocol == {
        "split": "leave-one-out",
        "min_events": 3,
        "n_users_evaluated": 2,
        "n_users_train_only": 2,  # c and d; e has no events at all
        "validation_users": 2,
        "n_train_events": 7,
        "n_valid_targets": 2,
        "n_test_targets": 2,
    }
    assert_one_index_space(split, inter)


def test_leave_one_out_min_events_moves_short_users_to_train() -> None:
    split = leave_one_out(build(LOO_EVENTS), min_events=4)
    # b has 3 events < 4: everything stays in train.
    assert sequences(split.train) == {
        "a": ["i1", "i2", "i3"],
        "b": ["i2", "i1", "i3"],
        "c": ["i4", "i5"],
        "d": ["i1"],
    }
    assert sequences(split.valid) == {"a": ["i4"]}
    assert sequences(split.test) == {"a": ["i5"]}
    assert split.protocol["n_users_evaluated"] == 1
    assert split.protocol["n_users_train_only"] == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 20)), max_size=40))
def test_leave_one_out_partitions_events_and_test_history_is_train_plus_valid(
    rows: list[tuple[int, int, int]],
) -> None:
    inter = build([(f"u{u}", f"i{i}", t) for u, i, t in rows])
    split = leave_one_out(inter)
    assert split.train.n_events + split.valid.n_events + split.test.n_events == inter.n_events
    train, valid, test = (
        timed_sequences(split.train),
        timed_sequences(split.valid),
        timed_sequences(split.test),
    )
    history = timed_sequences(split.test_history)
    for user, events in timed_sequences(inter).items():
        if len(events) >= 3:
            assert train[user] == events[:-2]
            assert valid[user] == [events[-2]]
            assert test[user] == [events[-1]]
            assert history[user] == train[user] + valid[user]
        else:
            assert train[user] == events
            assert user not in valid and user not in test
            assert history[user] == events


def load_ml_100k() -> Interactions:
    if not ML_100K.exists():
        pytest.skip(f"{ML_100K} is not present")
    table = np.loadtxt(ML_100K, delimiter="\t", skiprows=1, dtype=np.float64)
    return Interactions.from_events(
        user_ids=table[:, 0].astype(np.int64),
        item_ids=table[:, 1].astype(np.int64),
        timestamps=table[:, 3].astype(np.int64),
    )


def test_leave_one_out_on_ml_100k() -> None:
    inter = load_ml_100k()
    assert (inter.n_users, inter.n_items, inter.n_events) == (943, 1682, 100_000)
    split = leave_one_out(inter)
    assert split.test.n_events == 943
    assert split.valid.n_events == 943
    assert split.train.n_events == 100_000 - 2 * 943
    assert split.test_history.n_events == 100_000 - 943
    assert split.protocol["n_users_train_only"] == 0
    assert np.all(split.test.lengths() == 1)
    # every test target is at least as late as everything in its user's test history
    last_history_time = split.test_history.timestamps[split.test_history.user_ptr[1:] - 1]
    assert np.all(split.test.timestamps >= last_history_time)
    assert_one_index_space(split, inter)


def test_leave_one_out_validation_sample_moves_the_others_validation_events_into_train() -> None:
    inter = build(LOO_EVENTS)
    full = leave_one_out(inter)
    split = leave_one_out(inter, validation_users=1, seed=3)
    held = set(sequences(split.valid))
    assert len(held) == 1 and held <= {"a", "b"}
    other = ({"a", "b"} - held).pop()
    # The held user's validation target stays out of train; the other user's joins its training events.
    assert sequences(split.valid) == {user: sequences(full.valid)[user] for user in held}
    for user in held:
        assert sequences(split.train)[user] == sequences(full.train)[user]
    assert sequences(split.train)[other] == sequences(full.test_history)[other]
    # Test targets and the test history do not move.
    assert sequences(split.test) == sequences(full.test)
    assert sequences(split.test_history) == sequences(full.test_history)
    assert split.train.n_events + split.valid.n_events + split.test.n_events == inter.n_events
    assert split.protocol["validation_users"] == 1
    assert split.protocol["n_valid_events_in_train"] == 1
    assert split.protocol["n_train_events"] == 8
    assert split.protocol["validation_seed"] == 3
    # The same seed gives the same sample; a sample as large as the users changes nothing.
    assert sequences(leave_one_out(inter, validation_users=1, seed=3).valid) == sequences(split.valid)
    assert sequences(leave_one_out(inter, validation_users=5).train) == sequences(full.train)
    assert_one_index_space(split, inter)


def test_auto_validation_users_is_a_tenth_with_a_floor() -> None:
    assert auto_validation_users(943) == 943  # small sets: everyone validates, nothing changes
    assert auto_validation_users(2_000) == 2_000
    assert auto_validation_users(15_000) == 2_000
    assert auto_validation_users(22_363) == 2_236
    assert auto_validation_users(40_226) == 4_023
    inter = load_ml_100k()
    assert sequences(leave_one_out(inter, validation_users="auto").train) == sequences(
        leave_one_out(inter).train
    )


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "all", "10%"])
def test_leave_one_out_rejects_bad_validation_users(bad: object) -> None:
    with pytest.raises(ValueError, match="validation_users"):
        leave_one_out(build(LOO_EVENTS), validation_users=bad)  # type: ignore[arg-type]


def test_leave_one_out_rejects_min_events_below_three() -> None:
    with pytest.raises(ValueError, match="min_events"):
        leave_one_out(build(LOO_EVENTS), min_events=2)


# ---------------------------------------------------------------------------------------------- temporal
TEMPORAL_EVENTS = [
    ("u1", "x", 50),
    ("u1", "y", 100),  # exactly valid_start: validation
    ("u1", "z", 199),
    ("u1", "x", 200),  # exactly test_start: test
    ("u1", "w", 250),
    ("u2", "y", 150),  # no training events: cold for validation
    ("u2", "z", 210),  # history (y@150) is not empty: a test target
    ("u3", "x", 300),  # no events before test_start: cold for test
    ("u4", "x", 10),
    ("u4", "y", 20),
]


def test_temporal_split_boundaries_and_cold_users() -> None:
    inter = build(TEMPORAL_EVENTS)
    split = temporal_split(inter, valid_start=100, test_start=200)

    assert sequences(split.train) == {"u1": ["x"], "u4": ["x", "y"]}
    assert sequences(split.valid) == {"u1": ["y", "z"]}
    assert sequences(split.test_history) == {"u1": ["x", "y", "z"], "u2": ["y"], "u4": ["x", "y"]}
    assert sequences(split.test) == {"u1": ["x", "w"], "u2": ["z"]}
    assert split.protocol == {
        "split": "temporal",
        "time_unit": "UTC seconds",
        "valid_start": 100,
        "test_start": 200,
        "exclude_history_items": False,
        "n_train_events": 3,
        "n_valid_targets": 2,
        "n_test_targets": 3,
        "n_users_valid": 1,
        "n_users_test": 2,
        "n_cold_users_valid": 1,
        "n_cold_events_valid": 1,
        "n_cold_users_test": 1,
        "n_cold_events_test": 1,
    }
    assert_one_index_space(split, inter)


def test_temporal_split_excludes_history_items() -> None:
    split = temporal_split(
        build(TEMPORAL_EVENTS), valid_start=100, test_start=200, exclude_history_items=True
    )
    assert sequences(split.valid) == {"u1": ["y", "z"]}
    # u1 already had x before test_start
    assert sequences(split.test) == {"u1": ["w"], "u2": ["z"]}
    assert split.protocol["n_history_item_events_valid"] == 0
    assert split.protocol["n_history_item_events_test"] == 1
    assert split.protocol["n_test_targets"] == 2


def test_temporal_split_equal_cuts_give_empty_validation() -> None:
    split = temporal_split(build(TEMPORAL_EVENTS), valid_start=200, test_start=200)
    assert split.valid.n_events == 0
    assert sequences(split.train) == sequences(split.test_history)


def test_temporal_split_rejects_reversed_cuts() -> None:
    with pytest.raises(ValueError, match="valid_start"):
        temporal_split(build(TEMPORAL_EVENTS), valid_start=201, test_start=200)


def test_temporal_split_by_quantile_cut_times() -> None:
    inter = build([("u", f"i{t}", t) for t in range(10)])
    split = temporal_split_by_quantile(inter, valid_fraction=0.2, test_fraction=0.2)
    assert split.protocol["valid_start"] == 6
    assert split.protocol["test_start"] == 8
    assert sequences(split.train) == {"u": [f"i{t}" for t in range(6)]}
    assert sequences(split.valid) == {"u": ["i6", "i7"]}
    assert sequences(split.test) == {"u": ["i8", "i9"]}
    assert split.protocol["valid_fraction"] == 0.2
    assert split.protocol["test_fraction"] == 0.2

    no_test = temporal_split_by_quantile(inter, valid_fraction=0.3, test_fraction=0.0)
    assert no_test.protocol["test_start"] == 10
    assert no_test.protocol["valid_start"] == 7
    assert no_test.test.n_events == 0


@pytest.mark.parametrize(
    ("valid_fraction", "test_fraction", "name"),
    [
        (-0.1, 0.1, "valid_fraction"),
        (0.1, 1.0, "test_fraction"),
        (0.5, 0.5, "valid_fraction \\+ test_fraction"),
    ],
)
def test_temporal_split_by_quantile_rejects_bad_fractions(
    valid_fraction: float, test_fraction: float, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        temporal_split_by_quantile(
            build(TEMPORAL_EVENTS), valid_fraction=valid_fraction, test_fraction=test_fraction
        )


# ---------------------------------------------------------------------------------------------- k-core
def test_k_core_needs_several_passes() -> None:
    inter = build(
        [
            ("A", "p", 1),
            ("A", "q", 2),
            ("B", "p", 3),
            ("B", "q", 4),
            ("C", "q", 5),
            ("C", "r", 6),
            ("D", "r", 7),
            ("D", "s", 8),
        ]
    )
    # s has 1 event -> dropped; then D has 1 event -> dropped; then r has 1 event -> dropped;
    # then C has 1 event -> dropped; q keeps A and B's events.
    core = k_core(inter, user_k=2, item_k=2)
    assert core.user_ids.tolist() == ["A", "B"]
    assert core.item_ids.tolist() == ["p", "q"]
    assert core.user_ptr.tolist() == [0, 2, 4]
    assert core.items.tolist() == [0, 1, 0, 1]
    assert core.timestamps.tolist() == [1, 2, 3, 4]
    # the input is untouched
    assert inter.n_users == 4 and inter.n_events == 8


def test_k_core_can_be_empty_and_rejects_bad_k() -> None:
    inter = build(LOO_EVENTS)
    empty = k_core(inter, user_k=10, item_k=1)
    assert (empty.n_users, empty.n_items, empty.n_events) == (0, 0, 0)
    with pytest.raises(ValueError, match="user_k"):
        k_core(inter, user_k=0)
    with pytest.raises(ValueError, match="item_k"):
        k_core(inter, item_k=0)


def naive_k_core(rows: list[tuple[str, str, int]], user_k: int, item_k: int) -> list[tuple[str, str, int]]:
    """Remove one offending user or item at a time until none is left."""
    rows = list(rows)
    while True:
        user_counts = Counter(u for u, _, _ in rows)
        item_counts = Counter(i for _, i, _ in rows)
        bad_user = next((u for u, c in user_counts.items() if c < user_k), None)
        if bad_user is not None:
            rows = [r for r in rows if r[0] != bad_user]
            continue
        bad_item = next((i for i, c in item_counts.items() if c < item_k), None)
        if bad_item is not None:
            rows = [r for r in rows if r[1] != bad_item]
            continue
        return rows


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 30)), max_size=60),
    user_k=st.integers(1, 4),
    item_k=st.integers(1, 4),
)
def test_k_core_matches_naive_loop(rows: list[tuple[int, int, int]], user_k: int, item_k: int) -> None:
    events = [(f"u{u}", f"i{i}", t) for u, i, t in rows]
    core = k_core(build(events), user_k=user_k, item_k=item_k)
    expected = naive_k_core(events, user_k, item_k)
    assert sorted(core.user_ids.tolist()) == sorted({u for u, _, _ in expected})
    assert sorted(core.item_ids.tolist()) == sorted({i for _, i, _ in expected})
    # same events, in the same per-user chronological order as building the survivors from scratch
    assert core.n_events == len(expected)
    if expected:
        assert timed_sequences(core) == timed_sequences(build(expected))
    assert np.all(core.lengths() >= user_k)
    assert np.all(core.item_counts() >= item_k)


# ---------------------------------------------------------------------------------------------- sessions
def test_sessionize_hand_example() -> None:
    inter = build(
        [
            ("a", "x", 0),
            ("a", "y", 1000),
            ("a", "z", 2800),  # gap of exactly 1800 s: same session
            ("a", "x", 4601),  # gap of 1801 s: new session
            ("b", "x", 4602),  # another user: new session even without a gap
            ("b", "y", 4603),
            ("c", "y", 0),
        ]
    )
    sessions = sessionize(inter, gap_seconds=1800)
    assert sessions.dtype == np.int64
    assert sessions.tolist() == [0, 0, 0, 1, 2, 2, 3]
    assert sessionize(inter, gap_seconds=10_000).tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert sessionize(inter, gap_seconds=0).tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_sessionize_keeps_ties_together_and_rejects_negative_gap() -> None:
    inter = build([("a", "x", 5), ("a", "y", 5), ("a", "z", 6)])
    assert sessionize(inter, gap_seconds=0).tolist() == [0, 0, 1]
    assert sessionize(build([])).tolist() == []
    with pytest.raises(ValueError, match="gap_seconds"):
        sessionize(inter, gap_seconds=-1)
