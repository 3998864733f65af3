"""Purchase propensity: features and labels by hand, nothing read at or after the cutoff, a planted
signal learned and compared with boosting, exact save/load, and the model as an intent model."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.user_features import USER_FEATURES
from behaviorlm.evaluation.purchase import fit_purchase_propensity
from behaviorlm.models.heads import intent_classes, read_intent
from behaviorlm.models.propensity import (
    PurchasePropensity,
    feature_names,
    propensity_features,
    propensity_snapshot,
)
from behaviorlm.models.registry import load_intent_model, load_model
from behaviorlm.testing.purchase import START as T0
from behaviorlm.testing.purchase import planted_propensity_events

H = 3600
DAY = 86_400


def events(rows: list[tuple[str, str, str, int]]) -> Interactions:
    users, items, types, times = zip(*rows, strict=True)
    return Interactions.from_events(
        user_ids=np.array(users),
        item_ids=np.array(items),
        timestamps=np.array(times),
        event_types=np.array(types),
        event_type_vocab=("view", "cart", "purchase"),
    )


def as_interactions(records: list[dict]) -> Interactions:
    return events([(r["user_id"], r["item_id"], r["event_type"], r["timestamp"]) for r in records])


def test_features_and_labels_by_hand() -> None:
    cutoff = T0 + 10 * DAY
    data = events(
        [
            ("a", "x", "view", cutoff - 50 * H),  # outside every recent window
            ("a", "x", "view", cutoff - 20 * H),  # last 24 h and 48 h
            ("a", "y", "cart", cutoff - 2 * H),  # every window
            ("a", "y", "purchase", cutoff + 5 * H),  # after the cutoff: a label, never a feature
            ("b", "z", "view", cutoff - 1 * H),
            ("c", "z", "view", cutoff + H),  # no event before the cutoff: not in the snapshot
        ]
    )
    snap = propensity_snapshot(data, cutoff=cutoff, hours=24)
    assert [data.user_ids[u] for u in snap.users] == ["a", "b"]
    assert snap.labels.tolist() == [1, 0]
    row = dict(zip(feature_names(snap.event_types), snap.features[0], strict=True))
    assert row["events"] == 3 and row["purchase_share"] == 0  # the purchase after the cutoff is unseen
    assert row["days_since_last_event"] == pytest.approx(2 / 24)
    assert (row["view_last_3h"], row["view_last_12h"], row["view_last_24h"], row["view_last_48h"]) == (
        0,
        0,
        1,
        1,
    )
    assert (row["cart_last_3h"], row["cart_last_48h"], row["purchase_last_48h"]) == (1, 1, 0)
    assert snap.features.shape == (2, len(USER_FEATURES) + 4 * 3)
    # A later window: the purchase is now 1 hour old, so it is a feature, and nobody buys after it.
    later = propensity_snapshot(data, cutoff=cutoff + 6 * H, hours=24)
    assert later.labels.tolist() == [0, 0, 0]
    assert (
        dict(zip(feature_names(later.event_types), later.features[0], strict=True))["purchase_last_3h"] == 1
    )
    # Event types the data lacks count zero; a missing purchase type is an error naming it.
    other = propensity_features(data, cutoff=cutoff, event_types=("view", "fav"))
    assert other.features[:, -1].tolist() == [0, 0]
    with pytest.raises(ValueError, match="'buy' is not in"):
        propensity_snapshot(data, cutoff=cutoff, hours=24, purchase_type="buy")


def test_planted_signal_beats_boosting_and_saves_exactly(tmp_path) -> None:
    data = as_interactions(planted_propensity_events())
    model, report = fit_purchase_propensity(
        data, first_timestamp=T0, last_timestamp=int(data.timestamps.max()), hours=24, n_boot=200
    )
    assert report["protocol"]["train"]["cutoffs"] == [T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]
    assert report["protocol"]["test"]["cutoffs"] == [T0 + 6 * DAY, T0 + 7 * DAY]
    assert report["roc_auc"] > 0.97 and report["average_precision"] > 0.9
    # The baseline reads the user features only: a cart an hour ago is a recency it cannot tell apart.
    assert report["roc_auc_vs_boosting"]["low"] > 0
    cart_3h = model.feature_names_.index("cart_last_3h")
    assert model.coef_[cart_3h] == max(model.coef_)
    loaded = load_model(model.save(tmp_path / "p"))
    assert isinstance(loaded, PurchasePropensity) and loaded.feature_names_ == model.feature_names_
    snap = model.snapshot(data, cutoff=T0 + 7 * DAY)
    np.testing.assert_array_equal(loaded.predict_snapshot(snap), model.predict_snapshot(snap))
    assert load_intent_model(tmp_path / "p").hours == 24


def test_predict_proba_reads_only_events_before_as_of() -> None:
    data = as_interactions(planted_propensity_events(n_users=120))
    model, _ = fit_purchase_propensity(
        data, first_timestamp=T0, last_timestamp=int(data.timestamps.max()), hours=24, n_boot=10
    )
    assert intent_classes(model) == ["no purchase within 24h", "purchase within 24h"]
    # One user's request: a cart an hour ago makes a purchase likely; a day later without news it fades.
    history = model.history_from_events(
        ["new-item", "other"], event_types=["view", "cart"], timestamps=[T0 - 5 * H, T0 - H]
    )
    assert history.interactions.n_events == 2 and not history.unknown_items  # items are not looked up
    fresh = read_intent(model, history.interactions, now=lambda: T0).probabilities
    stale = read_intent(model, history.interactions, now=lambda: T0 + 2 * DAY).probabilities
    assert fresh.sum() == pytest.approx(1.0) and fresh[1] > 2 * stale[1]
    # Without a clock it answers as of the user's latest event; a "now" before it is not allowed to hide it.
    np.testing.assert_allclose(
        read_intent(model, history.interactions).probabilities,
        read_intent(model, history.interactions, now=lambda: 0).probabilities,
    )
    two = events([("a", "x", "view", T0), ("b", "x", "view", T0 + 5 * H)])
    assert model.predict_proba(two, as_of=T0 + H).shape == (1, 2)  # users: those with an earlier event
    with pytest.raises(ValueError, match="user 'b' has no event before as_of"):
        model.predict_proba(two, users=np.array([0, 1]), as_of=T0 + H)
    with pytest.raises(RuntimeError, match="not fitted"):
        PurchasePropensity().predict_proba(data)


def test_fit_needs_both_classes() -> None:
    data = events([("a", "x", "view", T0), ("b", "x", "view", T0 + H)])
    snap = propensity_snapshot(data, cutoff=T0 + 2 * H, hours=24)
    with pytest.raises(ValueError, match="only non-buyers"):
        PurchasePropensity().fit([snap])


def test_reasons_add_up_to_the_log_odds_and_name_the_recent_cart() -> None:
    data = as_interactions(planted_propensity_events(n_users=120))
    model, _ = fit_purchase_propensity(
        data, first_timestamp=T0, last_timestamp=int(data.timestamps.max()), hours=24, n_boot=10
    )
    history = model.history_from_events(
        ["a", "b", "b"], event_types=["view", "view", "cart"], timestamps=[T0 - 30 * H, T0 - 2 * H, T0 - H]
    ).interactions
    p = model.predict_proba(history, as_of=T0)[0, 1]
    every = model.reasons(history, as_of=T0, top=len(model.feature_names_))
    average = model.intercept_ + float(model.coef_ @ model.feature_means_)
    assert average + sum(r.log_odds for r in every) == pytest.approx(np.log(p / (1 - p)), abs=1e-9)
    top = model.reasons(history, as_of=T0, top=3)
    assert top == every[:3] and abs(top[0].log_odds) >= abs(top[1].log_odds) >= abs(top[2].log_odds)
    cart = next(r for r in every if r.feature == "cart_last_3h")
    assert cart.value == 1 and cart.log_odds > 0 and cart.label == "cart events in the last 3 h"
    assert read_intent(model, history, now=lambda: T0).reasons == top


def test_probabilities_are_recalibrated_on_the_validation_days() -> None:
    """Platt scaling folded into the coefficients: on the validation snapshots the mean probability equals
    their purchase rate (the logistic regression's own property on the data it is fitted to), the ranking
    is the uncalibrated one, and the reasons still add up."""
    data = as_interactions(planted_propensity_events(n_users=150, seed=3))
    cut = [T0 + k * DAY for k in range(1, 8)]
    snaps = [propensity_snapshot(data, cutoff=c, hours=24) for c in cut]
    raw = PurchasePropensity().fit(snaps[:3])
    assert raw.calibration_ is None
    model = PurchasePropensity().fit(snaps[:3], valid=snaps[3:5])
    assert model.calibration_ is not None and model.calibration_["slope"] > 0
    valid_p = np.concatenate([model.predict_snapshot(s) for s in snaps[3:5]])
    valid_y = np.concatenate([s.labels for s in snaps[3:5]])
    assert valid_p.mean() == pytest.approx(valid_y.mean(), abs=1e-3)
    test = snaps[6]
    if model.chosen_c_ == 1.0:  # same C: the calibrated ranking is the raw one
        np.testing.assert_array_equal(
            np.argsort(model.predict_snapshot(test), kind="stable"),
            np.argsort(raw.predict_snapshot(test), kind="stable"),
        )
    history = data.filter_events(data.timestamps < cut[6])
    p = model.predict_proba(history, users=np.array([0]), as_of=cut[6])[0, 1]
    average = model.intercept_ + float(model.coef_ @ model.feature_means_)
    every = model.reasons(history, user=0, as_of=cut[6], top=len(model.feature_names_))
    assert average + sum(r.log_odds for r in every) == pytest.approx(np.log(p / (1 - p)), abs=1e-9)
