"""The planted-pattern generator and the leave-last-out helper used by the conformance suite."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.sequences import Interactions
from behaviorlm.testing import hold_out_last_event, planted_pattern_interactions


def test_planted_pattern_shape_and_index_space() -> None:
    data = planted_pattern_interactions(n_users=50, n_items=30, n_clusters=3, events_per_user=7, seed=4)
    assert (data.n_users, data.n_items, data.n_events) == (50, 30, 350)
    assert data.user_ids.tolist() == list(range(50))
    assert data.item_ids.tolist() == list(range(30))
    assert (data.lengths() == 7).all()
    for user in range(50):
        history = data.history(user)
        assert len(set(history.tolist())) == 7, "a user's items are distinct"
        times = data.timestamps[data.user_ptr[user] : data.user_ptr[user + 1]]
        assert (np.diff(times) > 0).all(), "timestamps strictly increase per user"


def test_planted_pattern_is_deterministic_in_the_seed() -> None:
    first, second = planted_pattern_interactions(seed=3), planted_pattern_interactions(seed=3)
    other = planted_pattern_interactions(seed=4)
    for field in ("user_ptr", "items", "timestamps", "event_types"):
        assert np.array_equal(getattr(first, field), getattr(second, field))
    assert not np.array_equal(first.items, other.items)


def test_users_mostly_stay_inside_one_cluster() -> None:
    n_items, n_clusters = 60, 6
    data = planted_pattern_interactions(n_items=n_items, n_clusters=n_clusters, noise_share=0.25, seed=0)
    cluster_of_item = np.arange(n_items) * n_clusters // n_items
    main_cluster_share = []
    for user in range(data.n_users):
        counts = np.bincount(cluster_of_item[data.history(user)], minlength=n_clusters)
        main_cluster_share.append(counts.max() / counts.sum())
    # 12 events, clusters of 10 items, a quarter noise: about 9 of 12 events in the user's cluster.
    assert 0.65 < np.mean(main_cluster_share) < 0.85


def _top_share(counts: np.ndarray, *, top: int) -> float:
    return float(np.sort(counts)[::-1][:top].sum() / counts.sum())


def test_noise_follows_the_popularity_skew() -> None:
    skewed = planted_pattern_interactions(noise_share=1.0, popularity_skew=2.0, seed=1).item_counts()
    flat = planted_pattern_interactions(noise_share=1.0, popularity_skew=0.0, seed=1).item_counts()
    assert _top_share(skewed, top=6) > _top_share(flat, top=6) + 0.1


def test_no_noise_means_pure_clusters() -> None:
    data = planted_pattern_interactions(
        n_users=40, n_items=40, n_clusters=4, events_per_user=5, noise_share=0.0, seed=2
    )
    cluster_of_item = np.arange(40) * 4 // 40
    for user in range(data.n_users):
        assert len(set(cluster_of_item[data.history(user)].tolist())) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"events_per_user": 61}, "events_per_user"),
        ({"noise_share": 1.5}, "noise_share"),
    ],
)
def test_planted_pattern_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        planted_pattern_interactions(**kwargs)


def test_hold_out_last_event_splits_off_each_users_latest_event() -> None:
    data = planted_pattern_interactions(n_users=20, n_items=20, n_clusters=2, events_per_user=4, seed=5)
    held = hold_out_last_event(data)
    assert held.users.tolist() == list(range(20))
    assert held.train.n_events == data.n_events - 20
    assert held.train.n_items == data.n_items and held.train.n_users == data.n_users
    for user in range(20):
        full = data.history(user)
        assert held.targets[user] == full[-1]
        assert held.train.history(user).tolist() == full[:-1].tolist()


def test_hold_out_last_event_skips_users_with_a_single_event() -> None:
    data = Interactions.from_events(
        user_ids=np.array([0, 1, 1, 2, 2, 2]),
        item_ids=np.array([5, 1, 2, 3, 4, 0]),
        timestamps=np.array([10, 20, 10, 1, 2, 3]),
    )
    held = hold_out_last_event(data)
    assert held.users.tolist() == [1, 2]
    # user 1's events sorted by time are [2, 1], so item index of external id 1 is the target.
    assert held.targets.tolist() == [1, 0]
    assert held.train.history(0).tolist() == [5]
    assert held.train.history(1).tolist() == [2]
    assert held.train.history(2).tolist() == [3, 4]
