"""Churn snapshots by hand, no leakage across the cutoff, and the model beating recency-frequency on a
planted pattern."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.sequences import Interactions
from behaviorlm.evaluation.ranking import evaluate_classification
from behaviorlm.profiling.churn import (
    CHURN_FEATURES,
    DAY,
    ChurnModel,
    RecencyFrequencyBaseline,
    churn_snapshot,
)


def test_snapshot_by_hand() -> None:
    # u0: events on days 0, 1, 10 and day 12 (after the cutoff at day 11); u1: day 5 only; u2: day 20 only.
    data = Interactions.from_events(
        user_ids=np.array(["u0", "u0", "u0", "u0", "u1", "u2"]),
        item_ids=np.array(["a", "b", "a", "c", "a", "b"]),
        timestamps=np.array([0, 1, 10, 12, 5, 20]) * DAY,
        event_types=np.array(["view", "purchase", "view", "view", "cart", "view"]),
        event_type_vocab=("view", "cart", "purchase"),
    )
    snap = churn_snapshot(data, cutoff=11 * DAY, horizon_seconds=5 * DAY)
    assert snap.users.tolist() == [0, 1]  # u2 was not active before the cutoff
    assert snap.churned.tolist() == [0, 1]  # u0 came back on day 12; u1 did not
    f = dict(zip(CHURN_FEATURES, snap.features[0], strict=True))
    assert f["days_since_last_event"] == 1 and f["events"] == 3 and f["tenure_days"] == 10
    assert f["active_days"] == 3 and f["events_last_7_days"] == 1 and f["events_last_30_days"] == 3
    assert f["mean_gap_days"] == 5 and f["distinct_item_share"] == pytest.approx(2 / 3)
    assert f["purchase_share"] == pytest.approx(1 / 3) and f["cart_share"] == 0
    assert snap.features[1][CHURN_FEATURES.index("cart_share")] == 1
    # Events after the cutoff never change the features (no leakage).
    later = churn_snapshot(
        data.filter_events(data.timestamps < 11 * DAY), cutoff=11 * DAY, horizon_seconds=5 * DAY
    )
    np.testing.assert_array_equal(later.features, snap.features)
    with pytest.raises(ValueError, match="no user has an event before"):
        churn_snapshot(data, cutoff=-1, horizon_seconds=DAY)


def fading_users(n_users: int = 1200, seed: int = 0) -> Interactions:
    """Users who slow down before leaving: the gap trend, not recency alone, tells who churns."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        fading = rng.random() < 0.5
        t = float(rng.uniform(0, 20)) * DAY
        gap = float(rng.uniform(1, 3)) * DAY
        while t < 120 * DAY:
            users.append(f"u{u}")
            items.append(f"i{int(rng.integers(200))}")
            times.append(int(t))
            if fading:
                gap *= 1.6  # each gap longer than the last: gone within a few weeks
            t += gap * float(rng.uniform(0.7, 1.3))
    return Interactions.from_events(
        user_ids=np.array(users), item_ids=np.array(items), timestamps=np.array(times)
    )


def test_model_beats_recency_frequency_on_a_planted_pattern() -> None:
    data = fading_users()
    horizon = 14 * DAY
    train = churn_snapshot(data, cutoff=40 * DAY, horizon_seconds=horizon)
    test = churn_snapshot(data, cutoff=40 * DAY + horizon, horizon_seconds=horizon)
    auc = {}
    for name, model in (("gbm", ChurnModel()), ("rf", RecencyFrequencyBaseline())):
        auc[name] = evaluate_classification(test.churned, model.fit(train).predict_proba(test))["roc_auc"]
    assert auc["gbm"] > 0.9
    assert auc["gbm"] > auc["rf"]
