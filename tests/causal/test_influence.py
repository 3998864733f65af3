"""Per-user influence on planted data: one cart event decides the next item, every other event is noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from behaviorlm.causal.influence import (
    DELETION_ORDERS,
    deletion_curve,
    deletion_influence,
    gradient_influence,
)
from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.gru4rec import GRU4Rec
from behaviorlm.models.sequential import SequentialRecommender
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.testing.synthetic import FUNNEL_EVENT_TYPES, cart_cause_sequences, hold_out_last_event
from behaviorlm.training.options import TrainingOptions

SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1, "max_len": 16, "epochs": 40, "lr": 5e-3}
N_ITEMS = 20
LENGTH = 8  # 7 history events (one cart) and the purchase they cause


@pytest.fixture(scope="module")
def model() -> BehaviorTransformer:
    torch.set_num_threads(1)
    train = cart_cause_sequences(n_users=600, n_items=N_ITEMS, length=LENGTH, seed=0).interactions
    return BehaviorTransformer.from_params(SMALL).fit(train)


@pytest.fixture(scope="module")
def fresh():
    """Users the model never saw: their history (cart + views) and the purchase it causes."""
    planted = cart_cause_sequences(n_users=100, n_items=N_ITEMS, length=LENGTH, seed=1)
    return planted, hold_out_last_event(planted.interactions)


def _log_prob_without(model: SequentialRecommender, history: Interactions, user: int, event: int, item: int):
    keep = np.ones(history.n_events, dtype=bool)
    keep[event] = False
    scores = model.score(ScoringBatch(users=np.array([user]), history=history.filter_events(keep)))
    return torch.log_softmax(scores.double(), dim=1)[0, item].item()


def test_deletion_finds_the_planted_cart_event(model, fresh) -> None:
    planted, held = fresh
    found, predicted = [], []
    for user in range(held.train.n_users):
        influence = deletion_influence(model, held.train, user)  # target: the model's top-1
        predicted.append(influence.target_item == held.targets[user])
        found.append(influence.positions[np.argmax(influence.values)] == planted.cause_positions[user])
    # Measured: the top-1 is the planted purchase for 97% of these unseen users, and the cart is the
    # most influential event for 100%.
    assert np.mean(predicted) >= 0.9
    assert np.mean(found) >= 0.9


def test_batched_deletion_equals_one_at_a_time(model, fresh) -> None:
    _, held = fresh
    for user in (0, 1, 2):
        influence = deletion_influence(model, held.train, user, target_item=int(held.targets[user]))
        assert len(influence.values) == held.train.lengths()[user]
        expected = [
            influence.base_log_prob - _log_prob_without(model, held.train, user, event, influence.target_item)
            for event in influence.event_indices
        ]
        np.testing.assert_allclose(influence.values, expected, atol=1e-5)


def _long_history(n_events: int, seed: int) -> Interactions:
    """One user with more events than the window: a deletion lets the oldest outside event in."""
    rng = np.random.default_rng(seed)
    return Interactions.from_events(
        user_ids=np.zeros(n_events, dtype=np.int64),
        item_ids=rng.integers(N_ITEMS, size=n_events),
        timestamps=1_600_000_000 + np.cumsum(rng.integers(1, 100_000, size=n_events)),
        event_types=rng.integers(2, size=n_events),
        event_type_vocab=FUNNEL_EVENT_TYPES,
        item_universe=np.arange(N_ITEMS),
    )


@pytest.mark.parametrize("kind", ["transformer", "gru4rec"])
def test_deletion_over_a_long_history_is_exact(model, kind: str) -> None:
    if kind == "gru4rec":
        train = cart_cause_sequences(n_users=100, n_items=N_ITEMS, length=LENGTH, seed=0).interactions
        model = GRU4Rec(max_len=16, n_time_buckets=8, training=TrainingOptions(epochs=2)).fit(train)
    history = _long_history(24, seed=3)
    influence = deletion_influence(model, history, 0, target_item=5)
    # Only the last max_len events are read, so only they have an influence.
    np.testing.assert_array_equal(influence.positions, np.arange(24 - 16, 24))
    expected = [
        influence.base_log_prob - _log_prob_without(model, history, 0, e, 5) for e in influence.event_indices
    ]
    np.testing.assert_allclose(influence.values, expected, atol=1e-5)
    gradient = gradient_influence(model, history, 0, target_item=5)
    assert gradient.values.shape == (16,) and np.isfinite(gradient.values).all()
    assert gradient.base_log_prob == pytest.approx(influence.base_log_prob, abs=1e-4)


def test_gradient_influence_agrees_with_deletion(model, fresh) -> None:
    planted, held = fresh
    deletion, gradient, found = [], [], []
    for user in range(held.train.n_users):
        target = int(held.targets[user])
        deletion.append(deletion_influence(model, held.train, user, target_item=target).values)
        values = gradient_influence(model, held.train, user, target_item=target).values
        gradient.append(values)
        found.append(np.argmax(values) == planted.cause_positions[user])
    # Measured: Pearson r 0.78 over all events; the cart ranks first for 100% of users.
    r = np.corrcoef(np.concatenate(deletion), np.concatenate(gradient))[0, 1]
    assert r > 0.5
    assert np.mean(found) >= 0.85


def test_deletion_curve_influence_order_is_most_faithful(model, fresh) -> None:
    _, held = fresh
    users = np.arange(held.train.n_users)
    curves = {
        order: deletion_curve(model, held.train, users, order=order, steps=4) for order in DELETION_ORDERS
    }
    for curve in curves.values():
        assert curve.n_users == len(users) and curve.skipped_users == 0
        assert curve.log_prob_change.shape == (5,) and curve.log_prob_change[0] == 0.0
    # Measured AUC (nats): influence -1.85, gradient -1.80, random -0.67, recency -0.48.
    assert curves["influence"].auc < curves["random"].auc - 0.5
    assert curves["influence"].auc < curves["recency"].auc - 0.5
    assert curves["gradient"].auc < curves["random"].auc
    # Removing the single most influential event (the cart) drops the purchase from rank ~1 to ~10.
    assert curves["influence"].drop_at(1) > 1.0
    assert curves["influence"].mean_rank[1] > 3 * curves["influence"].mean_rank[0]
    assert curves["influence"].metrics()["drop_at_1"] == pytest.approx(curves["influence"].drop_at(1))
    # Greedy re-ranking removes the same first event and is never less faithful than the one-shot ranking.
    assert curves["greedy"].drop_at(1) == pytest.approx(curves["influence"].drop_at(1))
    assert curves["greedy"].auc <= curves["influence"].auc + 1e-9


def test_top_events_are_plain_facts(model, fresh) -> None:
    planted, held = fresh
    influence = deletion_influence(model, held.train, 0, target_item=int(held.targets[0]))
    facts = influence.top(3)
    assert json.loads(json.dumps(facts)) == facts
    assert [f["effect"] for f in facts] == sorted((f["effect"] for f in facts), reverse=True)
    first = facts[0]
    assert first["event_type"] == "cart" and first["event_index"] == planted.cause_positions[0]
    assert first["events_ago"] == LENGTH - 1 - first["event_index"]
    assert first["item_id"] == str(held.train.history(0)[first["event_index"]])
    assert set(first) == {"event_index", "events_ago", "item_id", "event_type", "timestamp", "time", "effect"}


def test_raw_history_matches_predict_next(model) -> None:
    items = ["3", "17", "999", "8", "11"]
    types = ["view", "cart", "view", "view", "teleport"]
    times = [100, 160, 220, 280, 340]
    raw = model.history_from_events(items, event_types=types, timestamps=times, unknown_event_types="skip")
    assert raw.unknown_items == ["999"] and raw.unknown_event_types == ["teleport"]
    assert raw.interactions.n_events == 3
    prediction = model.predict_next(
        items[:2] + items[3:4], event_types=types[:2] + types[3:4], timestamps=[100, 160, 280]
    )
    influence = deletion_influence(model, raw.interactions, 0)
    assert influence.target_item_id == prediction.item_ids[0]
    assert influence.target_item_id == str((17 + N_ITEMS // 2) % N_ITEMS)  # the carted item's partner
    assert influence.top(1)[0]["item_id"] == "17"


def test_bad_arguments_are_named(model, fresh) -> None:
    _, held = fresh
    with pytest.raises(ValueError, match="order must be one of"):
        deletion_curve(model, held.train, np.arange(3), order="alphabetical", steps=2)
    with pytest.raises(ValueError, match="no user has 8 or more events"):
        deletion_curve(model, held.train, np.arange(3), order="recency", steps=7)
    with pytest.raises(ValueError, match="target item index 99 is out of range"):
        deletion_influence(model, held.train, 0, target_item=99)
    with pytest.raises(ValueError, match="user index 100 is out of range"):
        gradient_influence(model, held.train, 100)


def test_unknown_event_types_are_an_error_unless_skipped(model) -> None:
    import pytest

    with pytest.raises(ValueError, match=r"event types \['teleport'\]"):
        model.history_from_events(["3"], event_types=["teleport"])
    assert model.predict_next(
        ["3", "8"], event_types=["teleport", "view"], unknown_event_types="skip"
    ).item_ids
