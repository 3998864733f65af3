"""DoWhy on the planted-confounding generator: it identifies our adjustment set from the graph, its
estimates are far closer to the planted effect than the naive difference, and its refuters behave."""

from __future__ import annotations

import pytest

from behaviorlm.causal.effects import analyze_effects, estimate_effects
from behaviorlm.causal.learners import EffectConfig
from behaviorlm.causal.table import CausalGraph
from behaviorlm.synthetic.causal import causal_synthetic

pytest.importorskip("dowhy")

from behaviorlm.causal.dowhy_graph import dowhy_check


def _graph(table) -> CausalGraph:
    return CausalGraph(
        treatment=table.treatment_name,
        outcome=table.outcome_name,
        confounders=table.feature_names,
        effect_modifiers=("segment",) if table.segment is not None else (),
    )


@pytest.fixture(scope="module")
def data():
    return causal_synthetic(n_users=6_000, seed=2, with_events=False)


@pytest.fixture(scope="module")
def check(data):
    return dowhy_check(data.table, _graph(data.table), simulations=3, seed=0)


def test_dowhy_identifies_the_graphs_adjustment_set(data, check) -> None:
    assert check.backdoor_variables == tuple(sorted(data.table.feature_names))
    assert check.effect_modifiers == ("segment_is_mini_program", "segment_is_web")


def test_dowhy_estimates_beat_the_naive_difference(data, check) -> None:
    naive = estimate_effects(data.table, methods=("naive",))[0].effect
    truth = data.true_ate
    naive_error = abs(naive - truth) / truth
    assert naive_error > 0.3
    for method, est in check.estimates.items():
        assert abs(est["effect"] - truth) / truth < naive_error / 2, (method, est, truth)
    linear = check.estimates["dowhy-linear"]
    assert linear["ci_low"] < linear["effect"] < linear["ci_high"]


def test_dowhy_refuters_pass_for_the_real_treatment(check) -> None:
    assert [r.name for r in check.refutations] == ["placebo", "random_common_cause", "data_subset"]
    for ref in check.refutations:
        assert ref.passed, ref
    assert abs(check.refutations[0].new_effect) < 0.03  # a permuted treatment has no effect


def test_spurious_treatment_mostly_vanishes_under_dowhy_adjustment(data) -> None:
    table = data.spurious_table()
    naive = estimate_effects(table, methods=("naive",))[0].effect
    spurious = dowhy_check(table, _graph(table), refute=False)
    assert naive > 0.05
    assert abs(spurious.estimates["dowhy-ipw"]["effect"]) < naive / 3


def test_report_carries_the_dowhy_check(data) -> None:
    small = data.table.rows(range(2_000))
    config = EffectConfig(n_folds=2, placebo_draws=1, subset_draws=1)
    report = analyze_effects(
        small, methods=("naive",), refute=False, segment_methods=(), config=config, dowhy=True
    )
    assert report.dowhy is not None and report.dowhy.refutations == ()
    assert "DoWhy cross-check" in report.to_markdown()
    assert (
        report.to_dict()["dowhy"]["estimates"]["dowhy-linear"]["effect"]
        == report.dowhy.estimates["dowhy-linear"]["effect"]
    )
