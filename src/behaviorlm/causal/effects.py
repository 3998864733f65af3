"""Population-level causal effects of a behaviour on a later outcome, with refutations.

The question: does doing behaviour T (an event type, e.g. ``cart``) in a window *cause* more users to
do Y (e.g. ``purchase``) in the window after it, on average over users? Comparing users who did T
with users who did not answers a different question, because the same traits (how active a user is,
how focused, how recently they came) drive both T and Y. This module estimates the average treatment
effect (ATE, on the outcome's scale: for a binary outcome, percentage points of conversion) under the
assumption that those traits are captured by the user's activity *before* the treatment window.

Design (:mod:`behaviorlm.causal.table`: ``EffectWindows``, ``build_effect_table``): three consecutive windows. Confounders are
counted in the feature window, the treatment is "did T in the treatment window", the outcome is "did
Y in the outcome window". Everything adjusted for is measured before the treatment, so it cannot be
a consequence of it. The population is every user with at least one event in the feature window.

The assumed causal graph (``behaviorlm.causal.table.CausalGraph``): every feature → T, every feature → Y, T → Y, and
segment → Y (an effect modifier). The features form a backdoor adjustment set if there is no
unmeasured confounder -- an assumption no estimator can check; the refutations below probe how
fragile the estimate is, they do not prove it.

Estimators (:func:`estimate_effects`), all with 95% confidence intervals:

* ``naive`` -- difference in outcome rates, treated minus untreated (no adjustment).
* ``regression`` -- OLS of Y on T, centred features and their interactions with T (Lin 2013,
  "Agnostic notes on regression adjustments to experimental data"), HC1 sandwich errors.
* ``ipw`` -- Hájek inverse-propensity weighting (Rosenbaum & Rubin 1983; Hirano, Imbens & Ridder 2003)
  with cross-fitted, clipped propensities.
* ``aipw`` -- augmented IPW, the doubly robust estimator of Robins, Rotnitzky & Zhao (1994), with
  cross-fitted outcome and propensity models; influence-function standard error.
* ``dml`` -- double/debiased machine learning, partially linear model by partialling-out
  (Chernozhukov et al. 2018, "Double/debiased machine learning for treatment and structural
  parameters", sec. 4.1, with the Robinson 1988 residual-on-residual score) with cross-fitting. It
  estimates a variance-weighted average of effects (weights Var(T | X)); this equals the ATE when the
  effect does not vary with the propensity.
* ``econml-dml`` / ``econml-dr`` -- EconML's ``LinearDML`` and ``LinearDRLearner`` on the same
  features and learners, when EconML is installed (``pip install 'behaviorlm[causal]'``).

Heterogeneous effects per segment (:func:`segment_effects`): ``dr-learner`` averages the cross-fitted
AIPW scores within each segment (Kennedy 2023, "Towards optimal doubly robust estimation of
heterogeneous causal effects"); ``x-learner`` is the X-learner of Künzel, Sekhon, Bickel & Yu (2019,
PNAS), averaged per segment, with a bootstrap interval (all its models refitted per resample).

Refutations (:func:`refute_effects`), after DoWhy's refuters: a placebo treatment (T permuted: the
effect should vanish), a random common cause (an extra noise feature: the estimate should not move),
and data subsets (random 80% of users: the estimate should move no more than sampling noise).

Libraries: the estimators, graph and refuters are implemented here on numpy and scikit-learn. DoWhy
0.14 declares scipy <= 1.15.3, so it is installed without its declared dependencies
(``requirements/dowhy.txt``) and used as a cross-check (``analyze_effects(..., dowhy=True)``, ``behaviorlm
effects --dowhy``, :mod:`behaviorlm.causal.dowhy_graph`): the same graph, DoWhy's backdoor identification,
its linear-regression and propensity-weighting estimators and its refuters. EconML is optional and used as
an independent cross-check of the DML and DR estimates.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

# threadpoolctl is a hard dependency of scikit-learn; it caps OpenMP threads per fit, because boosting
# with more threads than free cores runs many times slower on a shared machine.
from threadpoolctl import threadpool_limits

from behaviorlm.causal.learners import (
    Z_95,
    EffectConfig,
    Nuisances,
    classifier,
    cross_fit,
    fit_predict,
    is_binary,
    propensity_model,
    regressor,
)
from behaviorlm.causal.table import CausalGraph, EffectTable

EstimatorName = Literal["naive", "regression", "ipw", "aipw", "dml", "econml-dml", "econml-dr"]
SegmentMethod = Literal["dr-learner", "x-learner"]

OWN_METHODS: tuple[EstimatorName, ...] = ("naive", "regression", "ipw", "aipw", "dml")
"""The estimators implemented here (no optional dependency)."""
ECONML_METHODS: tuple[EstimatorName, ...] = ("econml-dml", "econml-dr")
"""Estimators that call EconML (the ``causal`` extra)."""
SEGMENT_METHODS: tuple[SegmentMethod, ...] = ("dr-learner", "x-learner")

MIN_ARM_USERS_PER_SEGMENT = 10
"""A segment's effect is estimated only with at least this many treated and untreated users in it."""

# ---------------------------------------------------------------------------------------------- results
RefutationName = Literal["placebo-treatment", "random-common-cause", "data-subset"]
REFUTATIONS: tuple[RefutationName, ...] = ("placebo-treatment", "random-common-cause", "data-subset")


@dataclass(frozen=True)
class Refutation:
    """One refutation of one estimate.

    ``new_effect`` is the mean of the re-estimates in ``draws``; ``tolerance`` is what ``passed`` was
    judged against (for the placebo: how far from zero; otherwise: how far from ``original_effect``).
    For the placebo, ``p_value`` is the two-sided p-value of the *original* effect under the placebo
    distribution (normal, zero mean, the placebo draws' standard error): a large value means the real
    estimate looks like a placebo's, i.e. there is no detectable effect.
    """

    name: RefutationName
    original_effect: float
    new_effect: float
    tolerance: float
    passed: bool
    draws: tuple[float, ...]
    detail: str
    p_value: float | None = None


@dataclass(frozen=True)
class EffectEstimate:
    """An average treatment effect with its 95% confidence interval and refutations."""

    method: str
    effect: float
    std_error: float
    ci_low: float
    ci_high: float
    n: int
    n_treated: int
    treatment: str
    outcome: str
    refutations: tuple[Refutation, ...] = ()

    @property
    def ci_covers_zero(self) -> bool:
        return self.ci_low <= 0.0 <= self.ci_high

    def refutation(self, name: RefutationName) -> Refutation:
        for ref in self.refutations:
            if ref.name == name:
                return ref
        raise KeyError(f"estimate {self.method!r} has no {name!r} refutation")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentEffect:
    """The average effect within one segment, with its 95% confidence interval."""

    segment: str
    method: str
    effect: float
    std_error: float
    ci_low: float
    ci_high: float
    n: int
    n_treated: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _design(table: EffectTable) -> np.ndarray:
    """Features plus one-hot segments (effect modifiers), without constant columns."""
    blocks = [table.features]
    if table.segment is not None:
        levels = np.unique(table.segment)
        blocks.append((table.segment[:, None] == levels[None, 1:]).astype(np.float64))
    x = np.concatenate(blocks, axis=1)
    varying = x.max(axis=0) > x.min(axis=0) if len(x) else np.zeros(x.shape[1], dtype=bool)
    return x[:, varying]


def _check_variation(table: EffectTable, config: EffectConfig) -> None:
    n_treated = table.n_treated
    n_untreated = table.n_users - n_treated
    if min(n_treated, n_untreated) < config.n_folds:
        raise ValueError(
            f"{n_treated} users did {table.treatment_name!r} and {n_untreated} did not; an effect needs "
            f"at least n_folds={config.n_folds} users on each side"
        )


# ---------------------------------------------------------------------------------------------- estimators
def _naive(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    y1, y0 = y[t == 1], y[t == 0]
    se = (
        math.sqrt(y1.var(ddof=1) / len(y1) + y0.var(ddof=1) / len(y0))
        if min(len(y1), len(y0)) > 1
        else math.inf
    )
    return float(y1.mean() - y0.mean()), se


def _regression(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Lin (2013): OLS of y on [1, t, x - mean(x), t * (x - mean(x))]; the t coefficient is the ATE.
    HC1 (White 1980, with the n / (n - p) correction) standard error."""
    xc = x - x.mean(axis=0)
    design = np.column_stack([np.ones(len(t)), t, xc, t[:, None] * xc])
    gram_inv = np.linalg.pinv(design.T @ design)
    coef = gram_inv @ design.T @ y
    resid = y - design @ coef
    n, p = design.shape
    meat = (design * resid[:, None] ** 2).T @ design
    cov = gram_inv @ meat @ gram_inv * (n / max(n - p, 1))
    return float(coef[1]), float(math.sqrt(max(cov[1, 1], 0.0)))


def _ipw(t: np.ndarray, y: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """Hájek IPW: weighted means of y in each arm with weights t / e and (1 - t) / (1 - e); the standard
    error is from its influence function with the propensity held fixed."""
    w1, w0 = t / e, (1 - t) / (1 - e)
    mean1 = float((w1 * y).sum() / w1.sum())
    mean0 = float((w0 * y).sum() / w0.sum())
    psi = w1 * (y - mean1) / w1.mean() - w0 * (y - mean0) / w0.mean()
    return mean1 - mean0, float(psi.std(ddof=1) / math.sqrt(len(t)))


def _aipw_scores(t: np.ndarray, y: np.ndarray, nu: Nuisances) -> np.ndarray:
    """Robins, Rotnitzky & Zhao (1994) doubly robust score of each user:
    mu1 - mu0 + t (y - mu1) / e - (1 - t) (y - mu0) / (1 - e). Its mean is the ATE."""
    e, mu0, mu1 = nu.propensity, nu.outcome_untreated, nu.outcome_treated
    return mu1 - mu0 + t * (y - mu1) / e - (1 - t) * (y - mu0) / (1 - e)


def _mean_with_se(scores: np.ndarray) -> tuple[float, float]:
    return float(scores.mean()), float(scores.std(ddof=1) / math.sqrt(len(scores)))


def _dml(t: np.ndarray, y: np.ndarray, nu: Nuisances) -> tuple[float, float]:
    """Chernozhukov et al. (2018), partially linear model, partialling-out score:
    theta = sum(v * w) / sum(v * v) with v = t - E[t|x], w = y - E[y|x] (cross-fitted); variance
    mean(psi^2) / mean(v^2)^2 / n with psi = v (w - theta v) (their sec. 4.1)."""
    v = t - nu.propensity
    w = y - nu.outcome_mean
    jacobian = float((v * v).mean())
    theta = float((v * w).mean() / jacobian)
    psi = v * (w - theta * v)
    return theta, float(math.sqrt((psi**2).mean() / jacobian**2 / len(t)))


def _econml(
    method: EstimatorName, x: np.ndarray, t: np.ndarray, y: np.ndarray, config: EffectConfig
) -> tuple[float, float]:
    try:
        from econml.dml import LinearDML
        from econml.dr import LinearDRLearner
    except ImportError as exc:
        raise ImportError(f"method {method!r} needs EconML: pip install 'behaviorlm[causal]'") from exc
    binary = is_binary(y)
    outcome_model = classifier(config) if binary else regressor(config)
    if method == "econml-dml":
        model = LinearDML(
            model_y=outcome_model,
            model_t=propensity_model(config),
            discrete_treatment=True,
            discrete_outcome=binary,
            cv=config.n_folds,
            random_state=config.seed,
        )
    else:
        model = LinearDRLearner(
            model_propensity=propensity_model(config),
            model_regression=outcome_model,
            discrete_outcome=binary,
            min_propensity=max(config.propensity_clip, 1e-6),
            cv=config.n_folds,
            random_state=config.seed,
        )
    with threadpool_limits(limits=config.n_threads), warnings.catch_warnings():
        # EconML hands sklearn column vectors; the resulting DataConversionWarning is noise here.
        warnings.simplefilter("ignore")
        model.fit(y, t, X=None, W=x)
        inference = model.ate_inference()
    effect = float(np.ravel(inference.mean_point)[0])
    return effect, float(np.ravel(inference.stderr_mean)[0])


def _estimate_from(
    table: EffectTable, methods: tuple[EstimatorName, ...], config: EffectConfig
) -> tuple[list[EffectEstimate], Nuisances | None, np.ndarray]:
    _check_variation(table, config)
    unknown = [m for m in methods if m not in OWN_METHODS + ECONML_METHODS]
    if unknown:
        raise ValueError(
            f"unknown effect estimator(s) {unknown}; known: {list(OWN_METHODS + ECONML_METHODS)}"
        )
    x = _design(table)
    t = table.treatment.astype(np.float64)
    y = table.outcome
    nuisances = cross_fit(x, t, y, config) if {"ipw", "aipw", "dml"} & set(methods) else None
    out = []
    for method in methods:
        if method == "naive":
            effect, se = _naive(t, y)
        elif method == "regression":
            effect, se = _regression(x, t, y)
        elif method == "ipw":
            effect, se = _ipw(t, y, nuisances.propensity)
        elif method == "aipw":
            effect, se = _mean_with_se(_aipw_scores(t, y, nuisances))
        elif method == "dml":
            effect, se = _dml(t, y, nuisances)
        else:
            effect, se = _econml(method, x, t, y, config)
        out.append(
            EffectEstimate(
                method=method,
                effect=effect,
                std_error=se,
                ci_low=effect - Z_95 * se,
                ci_high=effect + Z_95 * se,
                n=table.n_users,
                n_treated=table.n_treated,
                treatment=table.treatment_name,
                outcome=table.outcome_name,
            )
        )
    return out, nuisances, x


def estimate_effects(
    table: EffectTable,
    *,
    methods: tuple[EstimatorName, ...] = OWN_METHODS,
    config: EffectConfig | None = None,
) -> list[EffectEstimate]:
    """The average effect of ``table.treatment`` on ``table.outcome`` by each of ``methods`` (see the
    module docstring), with 95% confidence intervals. The cross-fitted nuisance models are fitted once
    and shared by IPW, AIPW and DML."""
    estimates, _, _ = _estimate_from(table, tuple(methods), config or EffectConfig())
    return estimates


# ---------------------------------------------------------------------------------------------- refutations
def refute_effects(
    table: EffectTable,
    estimates: list[EffectEstimate],
    *,
    checks: tuple[RefutationName, ...] = REFUTATIONS,
    config: EffectConfig | None = None,
) -> list[EffectEstimate]:
    """``estimates`` with the refutations in ``checks`` attached (after DoWhy's refuters, Sharma &
    Kiciman 2020). Every re-estimate uses the same methods and settings as the original.

    * ``placebo-treatment``: the treatment is randomly permuted ``placebo_draws`` times; a sound
      estimator finds no effect. Passes when the mean placebo effect is within 1.96 standard errors
      (root mean square of the draws' errors) of zero. Its ``p_value`` says how placebo-like the
      original estimate is.
    * ``random-common-cause``: an independent standard-normal feature is added; passes when the
      estimate moves by at most ``random_cause_tolerance_se`` of its standard errors.
    * ``data-subset``: re-estimated on ``subset_draws`` random subsets of ``subset_fraction`` of the
      users; a subset estimate differs from the full one by sampling noise of standard deviation
      ``se * sqrt(1 / fraction - 1)``, and the refutation passes when every draw is within three of those.
    """
    config = config or EffectConfig()
    unknown = [c for c in checks if c not in REFUTATIONS]
    if unknown:
        raise ValueError(f"unknown refutation(s) {unknown}; known: {list(REFUTATIONS)}")
    methods = tuple(e.method for e in estimates)
    rng = np.random.default_rng(config.seed)
    found: dict[str, list[Refutation]] = {}
    for check in checks:
        if check == "placebo-treatment":
            found[check] = _placebo(table, estimates, methods, rng, config)
        elif check == "random-common-cause":
            found[check] = _random_common_cause(table, estimates, methods, rng, config)
        else:
            found[check] = _data_subset(table, estimates, methods, rng, config)
    return [
        replace(estimate, refutations=estimate.refutations + tuple(found[c][i] for c in checks))
        for i, estimate in enumerate(estimates)
    ]


def _placebo(
    table: EffectTable,
    estimates: list[EffectEstimate],
    methods: tuple[EstimatorName, ...],
    rng: np.random.Generator,
    config: EffectConfig,
) -> list[Refutation]:
    placebo = [
        _estimate_from(replace(table, treatment=rng.permutation(table.treatment)), methods, config)[0]
        for _ in range(config.placebo_draws)
    ]
    out = []
    for i, estimate in enumerate(estimates):
        draws = tuple(p[i].effect for p in placebo)
        placebo_se = float(math.sqrt(np.mean([p[i].std_error ** 2 for p in placebo])))
        mean = float(np.mean(draws))
        passed = abs(mean) <= Z_95 * placebo_se
        p_value = math.erfc(abs(estimate.effect) / placebo_se / math.sqrt(2.0)) if placebo_se > 0 else 0.0
        out.append(
            Refutation(
                name="placebo-treatment",
                original_effect=estimate.effect,
                new_effect=mean,
                tolerance=Z_95 * placebo_se,
                passed=passed,
                draws=draws,
                detail=f"permuted treatment: mean effect {mean:+.4f} over {len(draws)} draws "
                f"({'within' if passed else 'outside'} ±{Z_95 * placebo_se:.4f} of zero); the original "
                f"effect's p-value against placebos is {p_value:.3g}",
                p_value=p_value,
            )
        )
    return out


def _random_common_cause(
    table: EffectTable,
    estimates: list[EffectEstimate],
    methods: tuple[EstimatorName, ...],
    rng: np.random.Generator,
    config: EffectConfig,
) -> list[Refutation]:
    with_noise = replace(
        table,
        features=np.concatenate([table.features, rng.standard_normal(table.n_users)[:, None]], axis=1),
        feature_names=(*table.feature_names, "random_common_cause"),
    )
    new = _estimate_from(with_noise, methods, config)[0]
    out = []
    for estimate, again in zip(estimates, new, strict=True):
        moved = again.effect - estimate.effect
        tolerance = config.random_cause_tolerance_se * estimate.std_error
        out.append(
            Refutation(
                name="random-common-cause",
                original_effect=estimate.effect,
                new_effect=again.effect,
                tolerance=tolerance,
                passed=abs(moved) <= tolerance,
                draws=(again.effect,),
                detail=f"with a random feature: {again.effect:+.4f} (moved {moved:+.4f}, tolerance ±{tolerance:.4f})",
            )
        )
    return out


def _data_subset(
    table: EffectTable,
    estimates: list[EffectEstimate],
    methods: tuple[EstimatorName, ...],
    rng: np.random.Generator,
    config: EffectConfig,
) -> list[Refutation]:
    size = round(config.subset_fraction * table.n_users)
    subsets = [
        _estimate_from(table.rows(np.sort(rng.choice(table.n_users, size, replace=False))), methods, config)[
            0
        ]
        for _ in range(config.subset_draws)
    ]
    out = []
    for i, estimate in enumerate(estimates):
        draws = tuple(s[i].effect for s in subsets)
        tolerance = 3.0 * estimate.std_error * math.sqrt(1.0 / config.subset_fraction - 1.0)
        worst = float(max(abs(d - estimate.effect) for d in draws))
        out.append(
            Refutation(
                name="data-subset",
                original_effect=estimate.effect,
                new_effect=float(np.mean(draws)),
                tolerance=tolerance,
                passed=worst <= tolerance,
                draws=draws,
                detail=f"{len(draws)} subsets of {config.subset_fraction:.0%}: mean {np.mean(draws):+.4f}, "
                f"largest move {worst:.4f} (tolerance {tolerance:.4f})",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- segments
def _segment_groups(table: EffectTable) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Segments with enough treated and untreated users, and the labels of those without."""
    if table.segment is None:
        raise ValueError("the table has no segments; set one (e.g. activity_segments(table))")
    kept, left_out = [], []
    for label in np.unique(table.segment):
        members = np.flatnonzero(table.segment == label)
        n_treated = int(table.treatment[members].sum())
        if min(n_treated, len(members) - n_treated) >= MIN_ARM_USERS_PER_SEGMENT:
            kept.append((str(label), members))
        else:
            left_out.append(str(label))
    return kept, left_out


def _x_learner_cate(x: np.ndarray, t: np.ndarray, y: np.ndarray, config: EffectConfig) -> np.ndarray:
    """Künzel et al. (2019), eqs. 4-6: outcome models mu0 (untreated) and mu1 (treated); imputed effects
    D1 = y - mu0(x) on the treated and D0 = mu1(x) - y on the untreated, each regressed on x; then
    tau(x) = e(x) tau0(x) + (1 - e(x)) tau1(x). Each imputation uses the *other* arm's model, so no
    cross-fitting is needed; returns tau for every row."""
    binary = is_binary(y)
    treated, untreated = t == 1, t == 0
    mu0 = fit_predict(x[untreated], y[untreated], x[treated], binary=binary, config=config)
    mu1 = fit_predict(x[treated], y[treated], x[untreated], binary=binary, config=config)
    tau1 = fit_predict(x[treated], y[treated] - mu0, x, binary=False, config=config)
    tau0 = fit_predict(x[untreated], mu1 - y[untreated], x, binary=False, config=config)
    clip = config.propensity_clip
    e = np.clip(fit_predict(x, t, x, binary=True, config=config, propensity=True), clip, 1.0 - clip)
    return e * tau0 + (1.0 - e) * tau1


def _segment_effects_from(
    table: EffectTable,
    x: np.ndarray,
    nu: Nuisances,
    methods: tuple[SegmentMethod, ...],
    config: EffectConfig,
) -> list[SegmentEffect]:
    groups, _ = _segment_groups(table)
    t = table.treatment.astype(np.float64)
    y = table.outcome
    out: list[SegmentEffect] = []
    for method in methods:
        if method == "dr-learner":
            scores = _aipw_scores(t, y, nu)
            for label, members in groups:
                effect, se = _mean_with_se(scores[members])
                out.append(
                    _segment_effect(
                        label, method, effect, se, effect - Z_95 * se, effect + Z_95 * se, table, members
                    )
                )
        elif method == "x-learner":
            rng = np.random.default_rng(config.seed)
            with threadpool_limits(limits=config.n_threads):
                cate = _x_learner_cate(x, t, y, config)
                boot = np.empty((config.x_learner_bootstrap, len(groups)))
                for b in range(config.x_learner_bootstrap):
                    rows = rng.integers(0, table.n_users, table.n_users)
                    boot_cate = _x_learner_cate(x[rows], t[rows], y[rows], config)
                    labels = table.segment[rows]
                    boot[b] = [boot_cate[labels == label].mean() for label, _ in groups]
            for j, (label, members) in enumerate(groups):
                effect = float(cate[members].mean())
                se = float(boot[:, j].std(ddof=1)) if config.x_learner_bootstrap > 1 else math.inf
                out.append(
                    _segment_effect(
                        label, method, effect, se, effect - Z_95 * se, effect + Z_95 * se, table, members
                    )
                )
        else:
            raise ValueError(f"unknown segment method {method!r}; known: {list(SEGMENT_METHODS)}")
    return out


def _segment_effect(
    label: str,
    method: str,
    effect: float,
    se: float,
    low: float,
    high: float,
    table: EffectTable,
    members: np.ndarray,
) -> SegmentEffect:
    return SegmentEffect(
        segment=label,
        method=method,
        effect=effect,
        std_error=se,
        ci_low=low,
        ci_high=high,
        n=len(members),
        n_treated=int(table.treatment[members].sum()),
    )


def segment_effects(
    table: EffectTable,
    *,
    methods: tuple[SegmentMethod, ...] = SEGMENT_METHODS,
    config: EffectConfig | None = None,
) -> list[SegmentEffect]:
    """Average effect within each of ``table.segment`` (segments with fewer than
    :data:`MIN_ARM_USERS_PER_SEGMENT` treated or untreated users are left out).

    ``dr-learner``: the mean of the cross-fitted AIPW scores in the segment (Kennedy 2023), with an
    influence-function interval. ``x-learner``: the mean X-learner CATE in the segment (Künzel et al.
    2019), with a normal interval from the standard deviation over ``x_learner_bootstrap`` bootstrap
    resamples of the users (every model of the X-learner is refitted on each resample).
    """
    config = config or EffectConfig()
    _check_variation(table, config)
    x = _design(table)
    nu = cross_fit(x, table.treatment.astype(np.float64), table.outcome, config)
    return _segment_effects_from(table, x, nu, tuple(methods), config)


# ---------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class EffectReport:
    """Everything :func:`analyze_effects` found, as structured facts."""

    treatment: str
    outcome: str
    n_users: int
    n_treated: int
    outcome_rate_treated: float
    outcome_rate_untreated: float
    estimates: tuple[EffectEstimate, ...]
    segments: tuple[SegmentEffect, ...]
    graph: CausalGraph
    protocol: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    dowhy: Any = None
    """The DoWhy cross-check (:class:`behaviorlm.causal.dowhy_graph.DoWhyCheck`) when asked for."""

    def estimate(self, method: str) -> EffectEstimate:
        for estimate in self.estimates:
            if estimate.method == method:
                return estimate
        raise KeyError(f"no estimate by {method!r}; the report has {[e.method for e in self.estimates]}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["graph"] = {
            "edges": [list(e) for e in self.graph.edges],
            "adjustment_set": list(self.graph.adjustment_set),
        }
        return out

    def summary(self) -> str:
        """One sentence: population, treated users and the raw outcome rates."""
        return (
            f"Effect of `{self.treatment}` (treatment window) on `{self.outcome}` (outcome window): "
            f"{self.n_users:,} users, {self.n_treated:,} treated; outcome rate "
            f"{self.outcome_rate_treated:.2%} treated, {self.outcome_rate_untreated:.2%} untreated."
        )

    def estimate_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted rows of the estimates table: method, effect, CI, then each refutation's
        verdict with the placebo's mean effect and the real effect's p-value against placebos, the
        move under a random common cause, and the largest move over the data subsets."""
        header = ["method", "effect", "95% CI", "placebo (p real)", "random cause", "data subsets"]
        rows = [
            [est.method, f"{est.effect:+.4f}", f"[{est.ci_low:+.4f}, {est.ci_high:+.4f}]"]
            + [_refutation_cell(est, name) for name in REFUTATIONS]
            for est in self.estimates
        ]
        return header, rows

    def segment_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted rows of the per-segment table."""
        header = ["segment", "method", "effect", "95% CI", "users", "treated"]
        rows = [
            [
                seg.segment,
                seg.method,
                f"{seg.effect:+.4f}",
                f"[{seg.ci_low:+.4f}, {seg.ci_high:+.4f}]",
                f"{seg.n:,}",
                f"{seg.n_treated:,}",
            ]
            for seg in self.segments
        ]
        return header, rows

    def segments_left_out(self) -> list[str]:
        return list(self.protocol.get("segments_left_out") or [])

    def to_markdown(self) -> str:
        """A Markdown section: population, estimates with refutations, per-segment effects."""
        lines = [self.summary(), ""]
        lines += [f"**Warning:** {w}" for w in self.warnings] + ([""] if self.warnings else [])
        header, rows = self.estimate_rows()
        lines += _markdown_table(header, rows, right=(1,))
        if self.segments:
            header, rows = self.segment_rows()
            lines += ["", *_markdown_table(header, rows, right=(2, 4, 5))]
        if self.segments_left_out():
            lines += [
                "",
                f"Segments left out (fewer than {MIN_ARM_USERS_PER_SEGMENT} treated or untreated users): "
                + ", ".join(self.segments_left_out())
                + ".",
            ]
        if self.dowhy is not None:
            header, rows = self.dowhy.rows()
            lines += [
                "",
                f"DoWhy cross-check (backdoor set identified from the graph: {', '.join(self.dowhy.backdoor_variables)}):",
                "",
                *_markdown_table(header, rows, right=(1,)),
            ]
        return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]], *, right: tuple[int, ...]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    return ["| " + " | ".join(r) + " |" for r in (header, align, *rows)]


def utc_seconds(text: str) -> int:
    """Unix seconds of an ISO-8601 time (UTC when it has no offset), e.g. ``2017-11-26T02:00:00``."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time (e.g. 2017-11-26T02:00:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _refutation_cell(estimate: EffectEstimate, name: RefutationName) -> str:
    try:
        ref = estimate.refutation(name)
    except KeyError:
        return "not run"
    verdict = "pass" if ref.passed else "FAIL"
    if name == "placebo-treatment":
        return f"{verdict} {ref.new_effect:+.4f} (p={ref.p_value:.2g})"
    if name == "random-common-cause":
        return f"{verdict} Δ{ref.new_effect - ref.original_effect:+.4f}"
    worst = max(abs(d - ref.original_effect) for d in ref.draws)
    return f"{verdict} max Δ{worst:.4f}"


def analyze_effects(
    table: EffectTable,
    *,
    methods: tuple[EstimatorName, ...] = OWN_METHODS,
    segment_methods: tuple[SegmentMethod, ...] = SEGMENT_METHODS,
    refute: bool = True,
    config: EffectConfig | None = None,
    dowhy: bool = False,
) -> EffectReport:
    """Estimates by every method (with refutations unless ``refute`` is false) and, when the table has
    segments, per-segment effects by ``segment_methods``. With ``dowhy``, also the DoWhy cross-check on the
    same graph (:func:`behaviorlm.causal.dowhy_graph.dowhy_check`)."""
    config = config or EffectConfig()
    estimates, nuisances, x = _estimate_from(table, tuple(methods), config)
    if refute:
        estimates = refute_effects(table, estimates, config=config)
    segments: list[SegmentEffect] = []
    if table.segment is not None and segment_methods:
        nu = (
            nuisances
            if nuisances is not None
            else cross_fit(x, table.treatment.astype(np.float64), table.outcome, config)
        )
        segments = _segment_effects_from(table, x, nu, tuple(segment_methods), config)
    treated = table.treatment == 1
    protocol: dict[str, Any] = {
        "population": "users with at least one event in the feature window"
        if table.windows
        else "given table",
        "features": list(table.feature_names),
        "segments": "effect modifiers (one-hot) in every model" if table.segment is not None else None,
        "segments_left_out": (
            _segment_groups(table)[1] if table.segment is not None and segment_methods else []
        ),
        "min_arm_users_per_segment": MIN_ARM_USERS_PER_SEGMENT,
        "config": asdict(config),
        "confidence": 0.95,
    }
    if table.windows is not None:
        protocol["windows"] = table.windows.describe()
    graph = CausalGraph(
        treatment=table.treatment_name,
        outcome=table.outcome_name,
        confounders=table.feature_names,
        effect_modifiers=("segment",) if table.segment is not None else (),
    )
    check = None
    if dowhy:
        from behaviorlm.causal.dowhy_graph import dowhy_check

        check = dowhy_check(table, graph, refute=refute, seed=config.seed)
    return EffectReport(
        dowhy=check,
        warnings=sparse_outcome_warnings(table),
        treatment=table.treatment_name,
        outcome=table.outcome_name,
        n_users=table.n_users,
        n_treated=table.n_treated,
        outcome_rate_treated=float(table.outcome[treated].mean()),
        outcome_rate_untreated=float(table.outcome[~treated].mean()),
        estimates=tuple(estimates),
        segments=tuple(segments),
        graph=graph,
        protocol=protocol,
    )


MIN_OUTCOME_EVENTS_PER_ARM = 30
"""Below this many treated (or untreated) users with a binary outcome, the report warns."""


def sparse_outcome_warnings(table: EffectTable) -> tuple[str, ...]:
    if not is_binary(table.outcome):
        return ()
    treated = table.treatment == 1
    counts = {"treated": int(table.outcome[treated].sum()), "untreated": int(table.outcome[~treated].sum())}
    sparse = {arm: n for arm, n in counts.items() if n < MIN_OUTCOME_EVENTS_PER_ARM}
    if not sparse:
        return ()
    which = " and ".join(f"{n} {arm}" for arm, n in sparse.items())
    return (
        f"only {which} users did {table.outcome_name!r}: standard errors, intervals and placebo p-values rest "
        f"on normal approximations that need more outcome events (at least {MIN_OUTCOME_EVENTS_PER_ARM} per "
        "arm); read them as rough",
    )


def plot_segment_effects(
    report: EffectReport,
    *,
    path: str | Path,
    title: str | None = None,
    true_effects: dict[str, float] | None = None,
) -> Path:
    """A PNG of each segment's effect with its 95% interval, one marker per method, next to the AIPW
    (else first) overall estimate and, when known (synthetic data), each segment's ``true_effects``;
    returns the path. Needs matplotlib (the ``causal`` extra)."""
    if not report.segments:
        raise ValueError("the report has no per-segment effects to plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'behaviorlm[causal]'") from exc
    labels = list(dict.fromkeys(s.segment for s in report.segments))
    methods = list(dict.fromkeys(s.method for s in report.segments))
    fig, ax = plt.subplots(figsize=(7.0, 0.9 + 0.7 * len(labels)))
    offsets = np.linspace(-0.15, 0.15, len(methods)) if len(methods) > 1 else np.zeros(1)
    for offset, method in zip(offsets, methods, strict=True):
        rows = [s for s in report.segments if s.method == method]
        ypos = np.array([labels.index(s.segment) for s in rows]) + offset
        effects = np.array([s.effect for s in rows])
        errors = np.array([[s.effect - s.ci_low for s in rows], [s.ci_high - s.effect for s in rows]])
        ax.errorbar(effects, ypos, xerr=errors, fmt="o", capsize=3, label=method)
    if true_effects:
        known = [label for label in labels if label in true_effects]
        ax.scatter(
            [true_effects[label] for label in known],
            [labels.index(label) for label in known],
            marker="x",
            s=60,
            color="black",
            zorder=3,
            label="true effect",
        )
    overall = next((e for e in report.estimates if e.method == "aipw"), report.estimates[0])
    ax.axvline(overall.effect, color="grey", linestyle="--", linewidth=1, label=f"overall ({overall.method})")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"effect of {report.treatment} on {report.outcome} (95% CI)")
    ax.set_title(
        textwrap.fill(title or f"Effect of {report.treatment} on {report.outcome} by segment", width=80),
        fontsize="medium",
    )
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
