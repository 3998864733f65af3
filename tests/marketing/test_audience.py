"""Audiences by uplift on a synthetic campaign with planted persuadables, sure things, lost causes and
sleeping dogs (behaviorlm.synthetic.campaign, layered on the package's synthetic event logs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from behaviorlm.causal.learners import EffectConfig
from behaviorlm.causal.uplift import cross_fitted_uplift
from behaviorlm.evaluation.uplift import uplift_curves
from behaviorlm.marketing.audience import AudienceConfig, build_audience, compare_targeting, select_by_value
from behaviorlm.synthetic.campaign import USER_KINDS, synthetic_campaign
from behaviorlm.synthetic.causal import causal_synthetic

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def campaign():
    events = causal_synthetic(n_users=6000, seed=0).interactions
    return synthetic_campaign(events, seed=0)


def test_generator_plants_every_kind_with_its_effect(campaign) -> None:
    shares = campaign.kind_shares()
    assert all(shares[k] > 0.05 for k in USER_KINDS), shares
    effect = {k: campaign.true_uplift[campaign.kind == k] for k in USER_KINDS}
    assert (effect["persuadable"] > 0).all() and (effect["sleeping_dog"] < 0).all()
    assert (effect["sure_thing"] == 0).all() and (effect["lost_cause"] == 0).all()
    # Sleeping dogs and sure things are the likeliest to convert without a contact: propensity's trap.
    base = {k: campaign.baseline[campaign.kind == k].mean() for k in USER_KINDS}
    assert min(base["sleeping_dog"], base["sure_thing"]) > max(base["persuadable"], base["lost_cause"])
    assert 0.45 < campaign.table.treatment.mean() < 0.55


def test_recovered_uplift_ordering_matches_the_planted_truth(campaign) -> None:
    table = campaign.table
    tau = cross_fitted_uplift(table.features, table.treatment, table.outcome, learner="x-learner")
    assert spearmanr(tau, campaign.true_uplift)[0] > 0.5
    by_kind = {k: tau[campaign.kind == k].mean() for k in USER_KINDS}
    assert min(by_kind, key=by_kind.get) == "sleeping_dog"
    assert max(by_kind, key=by_kind.get) == "persuadable"


def test_uplift_targeting_beats_propensity_and_truth_is_best(campaign) -> None:
    comparison = compare_targeting(
        campaign.table, learners=("t-learner", "x-learner"), true_uplift=campaign.true_uplift
    )
    auuc = {r.name: r.auuc for r in comparison.results}
    qini = {r.name: r.qini for r in comparison.results}
    assert auuc["uplift-x-learner"] > auuc["propensity"] and auuc["uplift-t-learner"] > auuc["propensity"]
    assert qini["true-uplift"] == max(qini.values())
    assert auuc["true-uplift"] == max(auuc.values())
    # Propensity targeting spends the first 10% on sleeping dogs and sure things: no true gain.
    assert comparison.result("propensity").true_incremental[0.1] < 0
    assert comparison.result("uplift-x-learner").true_incremental[0.1] > 10.0
    assert comparison.n_test == 3000


def test_a_comparison_as_json_keeps_the_summaries_and_samples_the_curves(campaign) -> None:
    comparison = compare_targeting(campaign.table, learners=("x-learner",), true_uplift=campaign.true_uplift)
    report = json.loads(json.dumps(comparison.to_dict(curve_points=11)))
    assert (report["n_train"], report["n_test"]) == (comparison.n_train, comparison.n_test) == (3000, 3000)
    assert report["protocol"] == comparison.protocol
    assert [r["name"] for r in report["results"]] == [r.name for r in comparison.results]
    for result, kept in zip(comparison.results, report["results"], strict=True):
        assert (kept["auuc"], kept["qini"]) == (result.auuc, result.qini)
        assert kept["budgets"] == [
            {
                "budget": budget,
                "incremental_per_1000": result.incremental[budget],
                "true_incremental_per_1000": result.true_incremental[budget],
            }
            for budget in (0.1, 0.2, 0.3)
        ]
        curve = kept["curve"]
        # Every 300th of the 3,000 held-out users, both ends included, per 1,000 users.
        assert curve["fraction"] == pytest.approx([k / 10 for k in range(11)])
        at = np.arange(0, 3001, 300)
        assert curve["qini_per_1000"] == pytest.approx(result.curves.qini[at] * 1000)
        assert curve["uplift_per_1000"] == pytest.approx(result.curves.uplift[at] * 1000)
    # A curve is never sampled finer than its users, and a curve needs both ends.
    tiny = compare_targeting(campaign.table.rows(np.arange(40)), learners=("x-learner",))
    assert len(tiny.to_dict()["results"][0]["curve"]["fraction"]) == tiny.n_test + 1 == 21
    with pytest.raises(ValueError, match="curve_points must be at least 2"):
        comparison.to_dict(curve_points=1)


def test_qini_of_random_orderings_is_about_zero(campaign) -> None:
    t, y = campaign.table.treatment, campaign.table.outcome
    rng = np.random.default_rng(1)
    random_qini = [
        uplift_curves(rng.random(len(t)), treatment=t, outcome=y).qini_coefficient for _ in range(20)
    ]
    truth = uplift_curves(campaign.true_uplift, treatment=t, outcome=y).qini_coefficient
    assert abs(np.mean(random_qini)) < 0.002
    assert truth > 0.008 and truth > max(random_qini)


def test_curves_on_a_hand_checked_example() -> None:
    # Scores rank users 0..3; treated converters at ranks 1 and 3, an untreated converter at rank 2.
    curves = uplift_curves(
        np.array([4.0, 3.0, 2.0, 1.0]),
        treatment=np.array([1, 0, 1, 0]),
        outcome=np.array([1.0, 1.0, 1.0, 0.0]),
    )
    # k=1: no control yet, so Q = U = the treated conversions = 1.
    # k=2: treated 1/1, control 1/1: Q = 1 - 1 * 1/1 = 0; U = (1 - 1) * 2 = 0.
    # k=3: treated 2/2, control 1/1: Q = 2 - 1 * 2/1 = 0; U = (1 - 1) * 3 = 0.
    # k=4: treated 2/2, control 1/2: Q = 2 - 1 * 2/2 = 1; U = (1 - 0.5) * 4 = 2.
    assert np.allclose(curves.qini * 4, [0, 1, 0, 0, 1])
    assert np.allclose(curves.uplift * 4, [0, 1, 0, 0, 2])
    assert curves.incremental_per_1000(0.5) == 0.0


def test_budget_selection_respects_budget_and_ranks_by_expected_value() -> None:
    uplift = np.array([0.05, 0.30, -0.10, 0.20, 0.01, 0.15, 0.02, 0.25, -0.05, 0.10])
    value, chosen = select_by_value(uplift, budget=0.3, value_per_conversion=10.0, cost_per_contact=0.5)
    assert chosen.tolist() == [1, 7, 3]
    assert np.allclose(value, uplift * 10.0 - 0.5)
    # A contact costing more than the value it adds is never bought, even with budget left.
    _, costly = select_by_value(uplift, budget=1.0, value_per_conversion=10.0, cost_per_contact=1.6)
    assert sorted(costly.tolist()) == [1, 3, 7]


def test_audience_respects_budget_and_breaks_down_by_segment(campaign, tmp_path) -> None:
    config = AudienceConfig(budget=0.1, cost_per_contact=0.02, effects=EffectConfig(n_folds=3))
    audience = build_audience(campaign.table, config=config)
    assert 0 < audience.n_selected <= 600
    chosen = audience.expected_value[audience.selected]
    assert chosen.min() >= audience.expected_value[~audience.selected].max()
    assert (chosen > 0).all()
    assert np.array_equal(np.sort(audience.rank[audience.selected]), np.arange(1, audience.n_selected + 1))
    assert (
        audience.selected[campaign.kind == "persuadable"].mean()
        > 3 * audience.selected[campaign.kind == "sleeping_dog"].mean()
    )
    rows = audience.segment_rows()
    assert sum(r["users"] for r in rows) == 6000 and sum(r["selected"] for r in rows) == audience.n_selected
    frame = __import__("pandas").read_parquet(audience.write(tmp_path / "audience.parquet"))
    assert frame["selected"].sum() == audience.n_selected and frame.iloc[0]["rank"] == 1
    report = audience.to_markdown()
    assert "activity q1" in report and f"selected: {audience.n_selected:,}" in report


def test_cli_builds_an_audience_from_a_campaign_file(campaign, tmp_path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from behaviorlm.cli.main import app
    from behaviorlm.marketing.audience import campaign_frame

    path = tmp_path / "campaign.csv"
    campaign_frame(campaign.table.rows(np.arange(2000))).to_csv(path, index=False)
    out = tmp_path / "audience.parquet"
    args = ["audience", "--campaign", str(path), "--segment-column", "segment", "--budget", "0.1"]
    result = CliRunner().invoke(app, [*args, "--folds", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 2000 and 0 < frame["selected"].sum() <= 200
    assert set(frame["segment"]) == set(campaign.table.segment[:2000])
    assert "# Audience for contact -> conversion" in out.with_suffix(".md").read_text()
    # --json writes the comparison the service serves as its targeting report; it needs --compare.
    report = tmp_path / "targeting.json"
    result = CliRunner().invoke(app, [*args, "--folds", "2", "--out", str(out), "--json", str(report)])
    assert result.exit_code == 2 and "add --compare" in result.output
    result = CliRunner().invoke(
        app, [*args, "--folds", "2", "--out", str(out), "--compare", "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    from behaviorlm.serving.reports import ReportFile

    served = ReportFile("targeting", report).load().report  # what /v1/reports/targeting would answer
    assert {"uplift-x-learner", "propensity", "random"} <= {r.name for r in served.results}
    bad = tmp_path / "bad.csv"
    campaign_frame(campaign.table.rows(np.arange(50))).assign(treatment=2).to_csv(bad, index=False)
    result = CliRunner().invoke(app, ["audience", "--campaign", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "row 1: treatment must be 0 or 1" in result.output


def test_cli_builds_an_audience_from_an_event_store(tmp_path) -> None:
    """Treatment and goal read from a store: a planted contact that works only for users who carted."""
    import pandas as pd
    from typer.testing import CliRunner

    from behaviorlm.cli.main import app
    from behaviorlm.data.ingest import ingest_records
    from behaviorlm.data.store import EventStore

    rng = np.random.default_rng(0)
    day, start = 86_400, 1_700_000_000
    events, carted = [], {}
    for u in range(1500):
        user = f"u{u}"
        for k in range(int(rng.integers(2, 8))):
            events.append(
                {
                    "user_id": user,
                    "item_id": f"i{rng.integers(50)}",
                    "event_type": "view",
                    "timestamp": start + int(rng.integers(0, 6 * day)) + k,
                }
            )
        carted[user] = bool(rng.random() < 0.3)
        if carted[user]:
            events.append(
                {
                    "user_id": user,
                    "item_id": "i1",
                    "event_type": "cart",
                    "timestamp": start + int(rng.integers(0, 6 * day)),
                }
            )
        treated = rng.random() < 0.5
        if treated:  # the contact, recorded as an event of its own type
            events.append(
                {
                    "user_id": user,
                    "item_id": "i1",
                    "event_type": "fav",
                    "timestamp": start + 6 * day + int(rng.integers(0, day)),
                }
            )
        if rng.random() < 0.05 + 0.6 * (treated and carted[user]):
            events.append(
                {
                    "user_id": user,
                    "item_id": "i1",
                    "event_type": "purchase",
                    "timestamp": start + 7 * day + int(rng.integers(0, day)),
                }
            )
    store = tmp_path / "s.duckdb"
    with EventStore(store) as es:
        ingest_records(es, events, source="campaign")
    out = tmp_path / "audience.parquet"
    args = [
        "audience",
        "--store",
        str(store),
        "--treatment",
        "fav",
        "--goal",
        "purchase",
        "--split-time",
        "2023-11-21T22:13:20Z",
        "--window-hours",
        "24",
        "--budget",
        "0.2",
        "--folds",
        "2",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "users did 'fav' in the treatment window" in result.output
    frame = pd.read_parquet(out)
    chosen = frame.loc[frame["selected"].astype(bool), "user_id"]
    assert 0 < len(chosen) <= 300
    assert np.mean([carted[u] for u in chosen]) > 0.8  # 30% of users carted; the contact only works for them
    missing = CliRunner().invoke(app, ["audience", "--store", str(store), "--out", str(out)])
    assert missing.exit_code == 2 and "--store needs --treatment" in missing.output


def test_audience_warns_and_states_no_number_when_few_users_converted(tmp_path) -> None:
    """Issue 21 item 12: with 4 contacted buyers `audience` claimed 162.8 incremental conversions."""
    from typer.testing import CliRunner

    from behaviorlm.cli.main import app
    from behaviorlm.data.ingest import ingest_records
    from behaviorlm.data.store import EventStore

    rng = np.random.default_rng(3)
    day, start = 86_400, 1_700_000_000
    events = []
    buyers = {"treated": 0, "untreated": 0}
    for u in range(400):
        user = f"u{u}"
        for k in range(int(rng.integers(2, 6))):
            events.append(
                {
                    "user_id": user,
                    "item_id": f"i{rng.integers(30)}",
                    "event_type": "view",
                    "timestamp": start + int(rng.integers(0, 6 * day)) + k,
                }
            )
        treated = u % 2 == 0
        if treated:
            events.append(
                {"user_id": user, "item_id": "i1", "event_type": "cart", "timestamp": start + 6 * day + 60}
            )
        # Exactly 4 contacted and 40 uncontacted users buy in the goal window.
        arm = "treated" if treated else "untreated"
        if buyers[arm] < (4 if treated else 40):
            buyers[arm] += 1
            events.append(
                {
                    "user_id": user,
                    "item_id": "i2",
                    "event_type": "purchase",
                    "timestamp": start + 7 * day + 60,
                }
            )
    store = tmp_path / "s.duckdb"
    with EventStore(store) as es:
        ingest_records(es, events, source="campaign")
    out = tmp_path / "audience.csv"
    args = ["audience", "--store", str(store), "--treatment", "cart", "--goal", "purchase"]
    args += [
        "--split-time",
        "2023-11-21T22:13:20Z",
        "--window-hours",
        "24",
        "--folds",
        "2",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "warning: only 4 treated users did 'purchase'" in output
    assert "Expected incremental conversions from the audience: not estimated" in output
    report = out.with_suffix(".md").read_text()
    assert "**Warning:** only 4 treated users" in report and "not estimated" in report


def test_audience_with_enough_conversions_has_no_warning(campaign) -> None:
    table = campaign.table.rows(np.arange(1500))
    result = build_audience(table, config=AudienceConfig(effects=EffectConfig(n_folds=2)))
    assert min(table.outcome[table.treatment == 1].sum(), table.outcome[table.treatment == 0].sum()) >= 30
    assert result.warnings == () and not result.too_few_conversions
    assert f"{result.expected_incremental_conversions:,.1f}" in result.to_markdown()
