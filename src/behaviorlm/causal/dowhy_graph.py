"""The population effect through DoWhy: the causal graph, backdoor identification, two estimators and
DoWhy's refuters -- an independent cross-check of :mod:`behaviorlm.causal.effects`.

This is the only module that imports :mod:`dowhy` (installed from ``requirements/dowhy.txt``; see there
why without its declared dependencies). The graph is :class:`behaviorlm.causal.effects.CausalGraph`'s:
every behaviour feature of the feature window is a common cause of the treatment and the outcome, the
segment (when the table has one) modifies the effect, and the treatment causes the outcome. DoWhy
identifies the backdoor adjustment set from that graph (Pearl 2009), estimates the average effect by

* ``dowhy-linear`` -- ``backdoor.linear_regression`` (OLS of the outcome on the treatment, the adjustment
  set and, with segments, treatment × segment interactions), with its 95% interval, and
* ``dowhy-ipw`` -- ``backdoor.propensity_score_weighting`` (logistic propensity, Hájek weights; a point
  estimate: DoWhy's interval for it is a bootstrap that refits everything, left out for time),

and runs DoWhy's refuters on the linear estimate: a placebo treatment (permuted), a random common cause
and a random 80% data subset, each with DoWhy's p-value.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from behaviorlm.causal.learners import Z_95
from behaviorlm.causal.table import CausalGraph, EffectTable

TREATMENT, OUTCOME = "treatment", "outcome"
BOOTSTRAP_SIMULATIONS = 30
REFUTERS = {
    "placebo": "placebo_treatment_refuter",
    "random_common_cause": "random_common_cause",
    "data_subset": "data_subset_refuter",
}


@dataclass(frozen=True)
class DoWhyRefutation:
    """One DoWhy refuter: the re-estimated effect and DoWhy's p-value for "the original estimate is
    consistent with the refuter's distribution". ``passed`` applies behaviorlm's rule: for the placebo,
    the placebo effect is within ``tolerance`` of zero; otherwise the new effect is within ``tolerance`` of
    the original (``tolerance`` = 2 standard errors of the original estimate)."""

    name: str
    new_effect: float
    p_value: float | None
    passed: bool
    tolerance: float


@dataclass(frozen=True)
class DoWhyCheck:
    """What DoWhy found for one effect table."""

    backdoor_variables: tuple[str, ...]
    """The adjustment set DoWhy identified from the graph."""
    effect_modifiers: tuple[str, ...]
    estimates: dict[str, dict[str, float | None]]
    """``method -> {"effect", "ci_low", "ci_high"}`` (intervals ``None`` where not computed)."""
    refutations: tuple[DoWhyRefutation, ...]
    simulations: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows: each estimate, then each refutation of the linear estimate."""
        header = ["DoWhy", "effect", "95% CI", "refutation"]
        rows = []
        for method, est in self.estimates.items():
            ci = "" if est["ci_low"] is None else f"[{est['ci_low']:+.4f}, {est['ci_high']:+.4f}]"
            rows.append([method, f"{est['effect']:+.4f}", ci, ""])
        for ref in self.refutations:
            p = "" if ref.p_value is None else f", p {ref.p_value:.2f}"
            verdict = "pass" if ref.passed else "FAIL"
            rows.append([f"  {ref.name}", f"{ref.new_effect:+.4f}", "", f"{verdict}{p}"])
        return header, rows


def dowhy_check(
    table: EffectTable,
    graph: CausalGraph,
    *,
    simulations: int = 20,
    seed: int = 0,
    refute: bool = True,
) -> DoWhyCheck:
    """Identify, estimate and refute the effect of ``table``'s treatment with DoWhy on ``graph``."""
    try:
        import networkx as nx
        import pandas as pd
        from dowhy import CausalModel
    except ImportError as exc:  # pragma: no cover - installed by the Makefile
        raise ImportError(
            "the DoWhy cross-check needs dowhy: pip install --no-deps --require-hashes -r requirements/dowhy.txt"
        ) from exc

    frame = pd.DataFrame(table.features, columns=list(table.feature_names))
    frame[TREATMENT] = table.treatment.astype(bool)
    frame[OUTCOME] = table.outcome.astype(np.float64)
    modifiers: list[str] = []
    if table.segment is not None:
        levels = sorted(set(table.segment.tolist()))
        for level in levels[1:]:  # one-hot without the first level (the intercept carries it)
            name = f"segment_is_{''.join(ch if ch.isalnum() else '_' for ch in level)}"
            frame[name] = (table.segment == level).astype(np.float64)
            modifiers.append(name)
    rename = {graph.treatment: TREATMENT, graph.outcome: OUTCOME}
    edges = [(rename.get(a, a), rename.get(b, b)) for a, b in graph.edges if a != "segment"]
    edges += [(m, OUTCOME) for m in modifiers]
    dag = nx.DiGraph(edges)

    rng_state = np.random.get_state()
    np.random.seed(seed)  # DoWhy's refuters draw from numpy's global generator
    try:
        with warnings.catch_warnings(), _quiet_dowhy():
            warnings.simplefilter("ignore")
            model = CausalModel(
                data=frame,
                treatment=TREATMENT,
                outcome=OUTCOME,
                graph=dag,
                effect_modifiers=modifiers or None,
            )
            estimand = model.identify_effect(proceed_when_unidentifiable=True)
            backdoor = tuple(sorted(estimand.get_backdoor_variables()))
            linear = model.estimate_effect(
                estimand,
                method_name="backdoor.linear_regression",
                confidence_intervals=True,
                test_significance=False,
                # DoWhy's interval for the linear estimate with effect modifiers is a bootstrap; its
                # default of 100 refits is most of the run time.
                method_params={"init_params": {"num_simulations": BOOTSTRAP_SIMULATIONS}},
            )
            low, high = _interval(linear)
            ipw = model.estimate_effect(estimand, method_name="backdoor.propensity_score_weighting")
            estimates = {
                "dowhy-linear": {"effect": float(linear.value), "ci_low": low, "ci_high": high},
                "dowhy-ipw": {"effect": float(ipw.value), "ci_low": None, "ci_high": None},
            }
            refutations: list[DoWhyRefutation] = []
            if refute:
                tolerance = 2.0 * (high - low) / (2 * Z_95)
                for name, method in REFUTERS.items():
                    kwargs: dict[str, Any] = {"num_simulations": simulations}
                    if name == "placebo":
                        kwargs["placebo_type"] = "permute"
                    if name == "data_subset":
                        kwargs["subset_fraction"] = 0.8
                    result = model.refute_estimate(estimand, linear, method_name=method, **kwargs)
                    new = float(np.mean(result.new_effect))
                    target = 0.0 if name == "placebo" else float(linear.value)
                    p = (result.refutation_result or {}).get("p_value")
                    refutations.append(
                        DoWhyRefutation(
                            name=name,
                            new_effect=new,
                            p_value=None if p is None else float(p),
                            passed=abs(new - target) <= tolerance,
                            tolerance=tolerance,
                        )
                    )
    finally:
        np.random.set_state(rng_state)
    return DoWhyCheck(
        backdoor_variables=backdoor,
        effect_modifiers=tuple(modifiers),
        estimates=estimates,
        refutations=tuple(refutations),
        simulations=simulations if refute else 0,
    )


def _interval(estimate: Any) -> tuple[float, float]:
    ci = np.asarray(estimate.get_confidence_intervals(), dtype=np.float64).reshape(-1)
    return float(ci[0]), float(ci[-1])


class _quiet_dowhy:
    """DoWhy logs every step at INFO; keep its logger at WARNING while it runs."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("dowhy")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
