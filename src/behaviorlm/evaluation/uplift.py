"""Uplift evaluation: how many extra conversions a targeting order buys, measured on a randomised campaign.

Users are sorted by a score (highest first, ties broken by a seeded shuffle) and, for the top ``k``, the
treated and untreated users among them are counted (``n_t(k)``, ``n_c(k)``) with their conversions
(``y_t(k)``, ``y_c(k)``). With a randomised treatment, both arms of the top ``k`` are samples of the same
users, so their difference estimates what contacting exactly those users would add:

* the **uplift curve** (Rzepakowski & Jaroszewicz 2012, "Decision trees for uplift modeling with single
  and multiple treatments"): ``U(k) = (y_t(k) / n_t(k) - y_c(k) / n_c(k)) * k``, the incremental
  conversions if the top ``k`` were contacted;
* the **Qini curve** (Radcliffe 2007, "Using control groups to target on predicted lift"):
  ``Q(k) = y_t(k) - y_c(k) * n_t(k) / n_c(k)``, the treated conversions in excess of what the control
  group predicts for them.

Both are reported per user of the population (divided by ``n``) against the share of users contacted
``k / n``, so numbers from populations of different sizes compare. Summaries:

* ``auuc`` -- area under the uplift curve over ``[0, 1]`` (Gutierrez & Gérardy 2017, "Causal inference and
  uplift modelling: a review of the literature"). A random order scores about half the ATE.
* ``qini`` -- the Qini coefficient: area between the Qini curve and the random-targeting line from
  ``(0, 0)`` to ``(1, Q(n) / n)`` (Radcliffe 2007). A random order scores about 0; higher is better.
* :meth:`UpliftCurves.incremental_per_1000` -- ``U(k)`` at a budget, per 1,000 users of the population.

Checked against scikit-uplift 0.5.1 (``sklift.metrics``; tests/evaluation/test_uplift_sklift.py) and
kept, for measured reasons. Without tied scores our curves times ``n`` equal sklift's ``uplift_curve`` and
``qini_curve`` at every ``k`` (to 1e-14 on 4,000 users), our ``auuc`` is the area of sklift's curve over
``n**2``, our Qini coefficient its area above the random line over ``n**2``, and sklift's
``qini_auc_score`` is ours divided by a constant of the data set (its perfect curve's area), so both
rank scorers the same. With ties, the curves follow one seeded order inside each group of tied scores
(a budget may end inside a group), but the areas are read at the ends of the groups only, with a chord
across each -- where the counts do not depend on the order, as sklift does -- so they equal sklift's for
every seed. (Read along the seeded order instead, the areas averaged to sklift's over seeds but one seed's
spread around them: on 4,000 users with scores in 8 tie groups, a standard deviation of 1.5% of the AUUC
and 4.5% of the Qini coefficient, at worst 4.5% and 13%.) We keep ours because: the budgets read the curve at any ``k``, inside a tie group too,
and :func:`true_incremental_per_1000` must contact the same users (the seeded shuffle does both; sklift
has no value inside a group); sklift takes 0/1 outcomes only and refuses an outcome or treatment column
that is all one value; it calls ``sklearn.utils.extmath.stable_cumsum``, deprecated in scikit-learn 1.8
and removed in 1.10, inside our ``scikit-learn<2`` range; and it is slower: on 1,000,000 users, pinned
to one core (benchmarks/run_uplift_sklift.py, four runs on a shared machine), both our curves and areas
take 0.33-0.54 s, sklift's two curves and their ``auc`` 0.56-1.16 s (1.7-2.1 times ours), and its
``uplift_auc_score`` plus ``qini_auc_score`` 0.95-1.74 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UpliftCurves:
    """Uplift and Qini curves of one ordering, at every ``k = 0..n`` (per user of the population)."""

    fraction: np.ndarray
    """``[n + 1]`` share of users contacted, ``k / n``."""
    uplift: np.ndarray
    """``[n + 1]`` ``U(k) / n``."""
    qini: np.ndarray
    """``[n + 1]`` ``Q(k) / n``."""
    group_end: np.ndarray
    """``[n + 1]`` bool: ``k`` is 0, ``n`` or the end of a group of tied scores -- the points where the
    curves do not depend on how ties were broken. The areas are read there only."""

    @property
    def auuc(self) -> float:
        """Area under the uplift curve, with a chord across each group of tied scores (so it does not
        depend on the seed that ordered the ties; equal to sklift's, see the module docstring)."""
        ends = self.group_end
        return float(np.trapezoid(self.uplift[ends], self.fraction[ends]))

    @property
    def qini_coefficient(self) -> float:
        """Area between the Qini curve and the random line, with a chord across each tie group."""
        ends = self.group_end
        random_line = self.fraction[ends] * self.qini[-1]
        return float(np.trapezoid(self.qini[ends] - random_line, self.fraction[ends]))

    def incremental_per_1000(self, budget: float) -> float:
        """Incremental conversions per 1,000 users when the top ``budget`` share is contacted."""
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be a share in (0, 1], got {budget}")
        n = len(self.fraction) - 1
        return float(self.uplift[round(budget * n)] * 1000.0)


def _order(score: np.ndarray, seed: int) -> np.ndarray:
    shuffle = np.random.default_rng(seed).permutation(len(score))
    # A stable sort of the shuffled scores breaks ties at random, not by input position.
    return shuffle[np.argsort(-score[shuffle], kind="stable")]


def uplift_curves(
    score: np.ndarray, *, treatment: np.ndarray, outcome: np.ndarray, seed: int = 0
) -> UpliftCurves:
    """Uplift and Qini curves of contacting users in decreasing ``score`` (see the module docstring).

    Where the top ``k`` has no user of one arm yet, the arm's rate is taken as 0 (the curves start flat).
    """
    score = np.asarray(score, dtype=np.float64)
    treatment = np.asarray(treatment)
    outcome = np.asarray(outcome, dtype=np.float64)
    n = len(score)
    if treatment.shape != (n,) or outcome.shape != (n,):
        raise ValueError(
            f"score, treatment and outcome need one entry per user; got {n}, {treatment.shape}, {outcome.shape}"
        )
    if not np.isin(treatment, (0, 1)).all():
        raise ValueError("the treatment must be 0 or 1 for every user")
    if not np.isfinite(score).all():
        raise ValueError("scores must be finite")
    order = _order(score, seed)
    t, y = treatment[order].astype(np.float64), outcome[order]
    zero = np.zeros(1)
    n_t = np.concatenate([zero, np.cumsum(t)])
    n_c = np.concatenate([zero, np.cumsum(1.0 - t)])
    y_t = np.concatenate([zero, np.cumsum(y * t)])
    y_c = np.concatenate([zero, np.cumsum(y * (1.0 - t))])
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_t = np.where(n_t > 0, y_t / n_t, 0.0)
        rate_c = np.where(n_c > 0, y_c / n_c, 0.0)
        qini = np.where(n_c > 0, y_t - y_c * n_t / n_c, y_t)
    k = np.arange(n + 1, dtype=np.float64)
    ranked = score[order]
    group_end = np.ones(n + 1, dtype=bool)
    group_end[1:n] = ranked[:-1] != ranked[1:]
    return UpliftCurves(fraction=k / n, uplift=(rate_t - rate_c) * k / n, qini=qini / n, group_end=group_end)


def true_incremental_per_1000(
    score: np.ndarray, *, true_uplift: np.ndarray, budget: float, seed: int = 0
) -> float:
    """Expected incremental conversions per 1,000 users when the top ``budget`` share by ``score`` is
    contacted, from the known individual effects (on synthetic data, where they are known)."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a share in (0, 1], got {budget}")
    n = len(score)
    top = _order(np.asarray(score, dtype=np.float64), seed)[: round(budget * n)]
    return float(np.asarray(true_uplift)[top].sum() / n * 1000.0)
