"""Population effects on planted confounding: adjusted estimators find the planted effect, the naive
difference does not, refutations behave, and a behaviour with no effect is not mistaken for one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from behaviorlm.causal.effects import (
    analyze_effects,
    estimate_effects,
    plot_segment_effects,
    refute_effects,
    segment_effects,
)
from behaviorlm.causal.learners import EffectConfig
from behaviorlm.causal.table import EffectTable, activity_segments, build_effect_table, effect_windows
from behaviorlm.data.sequences import Interactions
from behaviorlm.synthetic.causal import FEATURE_NAMES, causal_synthetic

FAST = EffectConfig(n_folds=3, placebo_draws=2, subset_draws=2)


@pytest.fixture(scope="module")
def large():
    return causal_synthetic(n_users=20_000, seed=0, with_events=False)


@pytest.fixture(scope="module")
def large_report(large):
    return analyze_effects(large.table, refute=False, segment_methods=("dr-learner",))


@pytest.fixture(scope="module")
def small():
    return causal_synthetic(n_users=5_000, seed=1)


def test_dml_and_aipw_recover_the_planted_ate_where_the_naive_difference_is_confounded(large, large_report):
    truth = large.true_ate
    assert large.population_ate == pytest.approx(0.5 * 0.10 + 0.3 * 0.20 + 0.2 * 0.30)
    assert abs(truth - large.population_ate) < 0.005
    naive = large_report.estimate("naive")
    assert (naive.effect - truth) / truth > 0.30
    assert not naive.ci_low <= truth <= naive.ci_high
    for method in ("aipw", "dml"):
        estimate = large_report.estimate(method)
        assert abs(estimate.effect - truth) / truth < 0.10, (method, estimate.effect, truth)
        assert estimate.ci_low <= truth <= estimate.ci_high
        assert estimate.n == 20_000 and estimate.n_treated == large.table.n_treated


def test_segment_effects_recover_the_planted_heterogeneity(large, large_report):
    by_segment = {s.segment: s for s in large_report.segments}
    assert set(by_segment) == set(large.segment_effects)
    for name, truth in large.segment_effects.items():
        found = by_segment[name]
        assert abs(found.effect - truth) < 0.05, (name, found.effect, truth)
        # Three segments' 95% intervals miss one truth 14% of the time; 3 standard errors (99.7%) do not.
        assert abs(found.effect - truth) < 3 * found.std_error
    ordered = sorted(by_segment, key=lambda name: by_segment[name].effect)
    assert ordered == ["app", "web", "mini-program"]


def test_x_learner_segments_with_bootstrap_intervals(small):
    config = EffectConfig(learner="linear", x_learner_bootstrap=10)
    found = {s.segment: s for s in segment_effects(small.table, methods=("x-learner",), config=config)}
    for name, truth in small.segment_effects.items():
        assert abs(found[name].effect - truth) < 0.05, (name, found[name].effect, truth)
        assert abs(found[name].effect - truth) < 3 * found[name].std_error
        assert 0 < found[name].std_error < 0.05


def test_spurious_treatment_is_flagged_while_the_naive_difference_finds_an_effect(large):
    spurious = {
        e.method: e for e in estimate_effects(large.spurious_table(), methods=("naive", "aipw", "dml"))
    }
    assert spurious["naive"].ci_low > 0.05  # favs "look" effective: favouriters buy more anyway
    for method in ("aipw", "dml"):
        assert spurious[method].ci_covers_zero, (method, spurious[method])
        assert abs(spurious[method].effect) < 0.02


def test_refutations_pass_for_the_real_treatment_and_the_spurious_one_looks_like_a_placebo(small):
    real = refute_effects(
        small.table, estimate_effects(small.table, methods=("aipw", "dml"), config=FAST), config=FAST
    )
    for estimate in real:
        placebo = estimate.refutation("placebo-treatment")
        assert placebo.passed and abs(placebo.new_effect) < 0.03 and len(placebo.draws) == 2
        assert placebo.p_value < 1e-6  # the real effect is far outside what placebos produce
        cause = estimate.refutation("random-common-cause")
        assert cause.passed and abs(cause.new_effect - estimate.effect) <= estimate.std_error
        subset = estimate.refutation("data-subset")
        assert subset.passed and len(subset.draws) == 2
        assert max(abs(d - estimate.effect) for d in subset.draws) <= subset.tolerance
    spurious = refute_effects(
        small.spurious_table(),
        estimate_effects(small.spurious_table(), methods=("aipw", "dml"), config=FAST),
        checks=("placebo-treatment",),
        config=FAST,
    )
    for estimate in spurious:
        assert [r.name for r in estimate.refutations] == ["placebo-treatment"]
        assert estimate.refutation("placebo-treatment").p_value > 0.05, estimate


def test_own_dml_and_aipw_agree_with_econml(small):
    pytest.importorskip("econml")
    config = EffectConfig(learner="linear", n_folds=3)
    found = {
        e.method: e
        for e in estimate_effects(
            small.table, methods=("dml", "aipw", "econml-dml", "econml-dr"), config=config
        )
    }
    for ours, theirs in (("dml", "econml-dml"), ("aipw", "econml-dr")):
        a, b = found[ours], found[theirs]
        assert abs(a.effect - b.effect) < 0.5 * a.std_error, (a, b)
        assert 0.8 < a.std_error / b.std_error < 1.25, (a, b)


def test_table_from_the_event_log_matches_the_generator(small):
    table = build_effect_table(
        small.interactions, treatment="cart", outcome="purchase", windows=small.windows
    )
    np.testing.assert_array_equal(table.user_ids, small.table.user_ids)
    np.testing.assert_array_equal(table.treatment, small.table.treatment)
    np.testing.assert_array_equal(table.outcome, small.table.outcome)
    for j, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(
            table.features[:, table.feature_names.index(name)], small.table.features[:, j]
        )
    assert set(table.feature_names) - set(FEATURE_NAMES) == {"pre_active_hours", "pre_span_hours"}
    fav = build_effect_table(small.interactions, treatment="fav", outcome="purchase", windows=small.windows)
    np.testing.assert_array_equal(fav.treatment, small.spurious_treatment)


def test_missing_event_type_is_a_clear_error(small):
    with pytest.raises(
        ValueError,
        match=r"treatment event type 'wishlist' is not in this event log; its event types are "
        r"\['view', 'cart', 'fav', 'purchase'\]",
    ):
        build_effect_table(
            small.interactions, treatment="wishlist", outcome="purchase", windows=small.windows
        )
    with pytest.raises(ValueError, match="outcome event type 'order'"):
        build_effect_table(small.interactions, treatment="cart", outcome="order", windows=small.windows)


def test_no_treated_users_is_a_clear_error(small):
    nobody = replace(small.table, treatment=np.zeros(small.table.n_users, dtype=np.int64))
    with pytest.raises(ValueError, match=r"0 users did 'cart' and 5000 did not"):
        estimate_effects(nobody, methods=("naive",))


def _toy_log() -> Interactions:
    """Four users over 4 hours (t = 0..14400 s); user 3 is first seen in the treatment window."""
    rows = [
        ("a", "i1", 0, "view"),
        ("a", "i2", 1800, "view"),
        ("a", "i2", 5000, "cart"),  # treatment window [3600, 7200)
        ("a", "i2", 9000, "purchase"),  # outcome window [7200, 14401)
        ("b", "i1", 100, "view"),
        ("b", "i1", 200, "purchase"),
        ("b", "i3", 7300, "view"),
        ("c", "i3", 3000, "cart"),
        ("c", "i3", 14400, "purchase"),
        ("d", "i1", 4000, "view"),
    ]
    users, items, times, types = zip(*rows, strict=True)
    return Interactions.from_events(
        user_ids=np.array(users),
        item_ids=np.array(items),
        timestamps=np.array(times),
        event_types=np.array(types),
        event_type_vocab=("view", "cart", "purchase"),
    )


def test_windows_and_features_on_a_hand_checked_log():
    log = _toy_log()
    windows = effect_windows(log)
    assert (windows.features_start, windows.treatment_start, windows.outcome_start, windows.outcome_end) == (
        0,
        3600,
        7200,
        14401,
    )
    table = build_effect_table(log, treatment="cart", outcome="purchase", windows=windows)
    assert table.user_ids.tolist() == ["a", "b", "c"]  # d has no feature-window event
    assert table.treatment.tolist() == [1, 0, 0]  # c carted before the treatment window
    assert table.outcome.tolist() == [1.0, 0.0, 1.0]
    features = dict(zip(table.feature_names, table.features.T, strict=True))
    assert features["pre_view_count"].tolist() == [2, 1, 0]
    assert features["pre_cart_count"].tolist() == [0, 0, 1]
    assert features["pre_purchase_count"].tolist() == [0, 1, 0]
    assert features["pre_distinct_items"].tolist() == [2, 1, 1]
    assert features["pre_active_hours"].tolist() == [1, 1, 1]
    assert features["pre_span_hours"].tolist() == [0.5, 100 / 3600, 0.0]
    assert features["pre_recency_hours"].tolist() == [0.5, 3400 / 3600, 600 / 3600]

    hourly = effect_windows(log, window_hours=1.0)
    assert (hourly.treatment_start, hourly.outcome_start, hourly.outcome_end) == (7201, 10801, 14401)
    with pytest.raises(ValueError, match="outside the log's time span"):
        effect_windows(log, split_time=20_000)
    with pytest.raises(ValueError, match="no time left for the feature window"):
        effect_windows(log, split_time=3600, window_hours=1.0)


def test_regression_adjustment_and_naive_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    t = (rng.random(400) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(np.int64)
    y = 1.0 + 0.3 * t + 0.5 * x[:, 0] - 0.2 * x[:, 1]  # linear and noise-free: OLS is exact
    table = EffectTable(
        user_ids=np.arange(400),
        features=x,
        feature_names=("x0", "x1"),
        treatment=t,
        outcome=y,
        treatment_name="t",
        outcome_name="y",
    )
    naive, regression = estimate_effects(table, methods=("naive", "regression"))
    assert naive.effect == pytest.approx(y[t == 1].mean() - y[t == 0].mean())
    assert regression.effect == pytest.approx(0.3, abs=1e-9)
    assert regression.std_error < 1e-6


def test_activity_segments_split_users_by_feature_window_activity(small):
    segmented = activity_segments(small.table, n_groups=3)
    labels = np.unique(segmented.segment)
    assert len(labels) == 3
    activity = small.table.features[:, [i for i, n in enumerate(FEATURE_NAMES) if n.endswith("_count")]].sum(
        1
    )
    means = sorted(activity[segmented.segment == label].mean() for label in labels)
    assert means[0] < means[1] < means[2]
    assert [label.split(":")[0] for label in labels] == ["activity q1", "activity q2", "activity q3"]
    # Most users with a single event (as in a short log): they form one group instead of three.
    mostly_one = replace(small.table, features=np.ones_like(small.table.features) * 0.0)
    mostly_one.features[:, 0] = np.where(np.arange(small.table.n_users) % 10 == 0, 5.0, 1.0)
    assert sorted(set(activity_segments(mostly_one).segment)) == [
        "activity q1: 1 event",
        "activity q2: 5 events",
    ]


def test_sparse_outcomes_are_warned_about(small):
    rare = replace(small.table, outcome=(np.arange(small.table.n_users) % 400 == 0).astype(np.float64))
    report = analyze_effects(rare, methods=("naive",), refute=False, segment_methods=())
    n_treated_buyers = int(rare.outcome[rare.treatment == 1].sum())
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith(f"only {n_treated_buyers} treated and ")
    assert "**Warning:** only" in report.to_markdown()


def test_report_renders_markdown_and_a_segment_plot(large, large_report, tmp_path):
    assert large_report.warnings == ()
    text = large_report.to_markdown()
    assert "| aipw |" in text and "| dml |" in text and "| mini-program | dr-learner |" in text
    assert "not run" in text  # refutations were switched off for this report
    facts = large_report.to_dict()
    assert facts["graph"]["adjustment_set"] == list(FEATURE_NAMES)
    assert ["cart", "purchase"] in facts["graph"]["edges"]
    png = plot_segment_effects(
        large_report, path=tmp_path / "segments.png", true_effects=large.segment_effects
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_category_and_price_confounders_on_a_hand_checked_log():
    log = _toy_log()  # items i1, i2, i3
    windows = effect_windows(log)
    category = np.array(["shoes", "shoes", None], dtype=object)
    price = np.array([10.0, 30.0, np.nan])
    table = build_effect_table(
        log, treatment="cart", outcome="purchase", windows=windows, item_category=category, item_price=price
    )
    features = dict(zip(table.feature_names, table.features.T, strict=True))
    # a viewed i1 and i2 (both shoes, 10 and 30); b viewed and bought i1; c carted i3 (no category, no price)
    assert features["pre_distinct_categories"].tolist() == [1, 1, 0]
    assert features["pre_top_category_share"].tolist() == [1.0, 1.0, 0.0]
    assert features["pre_mean_price"].tolist() == [20.0, 10.0, 0.0]
    assert features["pre_price_known"].tolist() == [1.0, 1.0, 0.0]


def test_store_reads_item_categories_and_prices(tmp_path):
    from behaviorlm.data.ingest import ingest_records
    from behaviorlm.data.store import EventStore

    events = [
        {
            "user_id": "u",
            "item_id": "i1",
            "event_type": "purchase",
            "timestamp": 1_700_000_000,
            "value": 12.5,
        },
        {"user_id": "u", "item_id": "i1", "event_type": "purchase", "timestamp": 1_700_000_100, "value": 7.5},
        {"user_id": "u", "item_id": "i2", "event_type": "view", "timestamp": 1_700_000_200, "value": 99},
    ]
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, events, source="t")
        category, price = store.item_confounders(np.array(["i2", "i1"]))
        assert category is None  # no item has a category
        assert np.isnan(price[0]) and price[1] == 10.0  # views do not set a price
        store.execute("INSERT INTO items VALUES ('i2', NULL, 'toys', NULL, '{\"price\": 3}', NULL)")
        category, price = store.item_confounders(np.array(["i2", "i1", "i9"]))
        assert category.tolist() == ["toys", None, None]
        assert price[0] == 3.0 and price[1] == 10.0 and np.isnan(price[2])
