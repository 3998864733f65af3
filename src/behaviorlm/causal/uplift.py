"""Per-user effects (uplift, the conditional average treatment effect ``tau(x) = E[Y(1) - Y(0) | X = x]``)
with meta-learners, for deciding *whom* to treat rather than whether the treatment works on average.

The learners are EconML's (``pip install 'behaviorlm[causal]'``), with the same nuisance models as the
population estimators of :mod:`behaviorlm.causal.effects` (gradient boosting or linear, see
:class:`~behaviorlm.causal.effects.EffectConfig`):

* ``t-learner`` -- one outcome model per arm, ``tau(x) = mu1(x) - mu0(x)`` (Künzel et al. 2019, PNAS,
  "Metalearners for estimating heterogeneous treatment effects using machine learning", sec. 2).
* ``x-learner`` -- the X-learner of the same paper (eqs. 4-6): each arm's imputed effects regressed on
  x, blended by the propensity.
* ``dr-learner`` -- the doubly robust learner (Kennedy 2023, "Towards optimal doubly robust estimation
  of heterogeneous causal effects"): the cross-fitted AIPW score of every user regressed on x.

:func:`cross_fitted_uplift` gives every user an estimate from models that never saw that user
(cross-fitting, Chernozhukov et al. 2018, sec. 3), so the estimates can be ranked and evaluated on the
same users without overfitting bias; :func:`fit_predict_uplift` fits on some users and scores others.

For comparison, :func:`cross_fitted_response` and :func:`fit_predict_response` give the *response*
(propensity-to-convert) model that classic targeting ranks by: ``P(Y = 1 | x)`` with the treatment
ignored. It answers "who will convert?", not "whose conversion does the contact change?".
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from behaviorlm.causal.learners import EffectConfig, classifier, folds, propensity_model, regressor

UpliftLearner = Literal["t-learner", "x-learner", "dr-learner"]
UPLIFT_LEARNERS: tuple[UpliftLearner, ...] = ("t-learner", "x-learner", "dr-learner")


def _make_learner(learner: UpliftLearner, config: EffectConfig) -> Any:
    try:
        from econml.dr import DRLearner
        from econml.metalearners import TLearner, XLearner
    except ImportError as exc:
        raise ImportError(
            f"uplift learner {learner!r} needs EconML: pip install 'behaviorlm[causal]'"
        ) from exc
    # Regressors on the 0/1 outcome estimate its probability (squared loss), which is what the
    # meta-learners subtract; a classifier's predict() would return labels instead.
    if learner == "t-learner":
        return TLearner(models=regressor(config))
    if learner == "x-learner":
        return XLearner(
            models=regressor(config),
            cate_models=regressor(config),
            propensity_model=propensity_model(config),
        )
    if learner == "dr-learner":
        return DRLearner(
            model_propensity=propensity_model(config),
            model_regression=regressor(config),
            model_final=regressor(config),
            min_propensity=max(config.propensity_clip, 1e-6),
            cv=2,
            random_state=config.seed,
        )
    raise ValueError(f"unknown uplift learner {learner!r}; known: {list(UPLIFT_LEARNERS)}")


def _check(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2 or t.shape != (len(x),) or y.shape != (len(x),):
        raise ValueError(f"need x [n, d], t [n] and y [n]; got {x.shape}, {t.shape}, {y.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("the treatment must be 0 or 1 for every user")
    for arm in (0, 1):
        if (t == arm).sum() < 2:
            raise ValueError(
                f"need at least two {'treated' if arm else 'untreated'} users to estimate uplift"
            )


def fit_predict_uplift(
    x_train: np.ndarray,
    t_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    learner: UpliftLearner = "x-learner",
    config: EffectConfig | None = None,
) -> np.ndarray:
    """``tau(x)`` for every row of ``x_test`` from ``learner`` fitted on the training users."""
    config = config or EffectConfig()
    t_train = np.asarray(t_train).astype(np.int64)
    _check(x_train, t_train, np.asarray(y_train, dtype=np.float64))
    model = _make_learner(learner, config)
    with threadpool_limits(limits=config.n_threads), warnings.catch_warnings():
        # EconML hands sklearn column vectors; the resulting DataConversionWarning is noise here.
        warnings.simplefilter("ignore")
        model.fit(np.asarray(y_train, dtype=np.float64), t_train, X=x_train)
        return np.ravel(model.effect(x_test)).astype(np.float64)


def cross_fitted_uplift(
    x: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    *,
    learner: UpliftLearner = "x-learner",
    config: EffectConfig | None = None,
) -> np.ndarray:
    """Out-of-fold ``tau(x)`` for every user: ``config.n_folds`` folds stratified by treatment, each
    scored by ``learner`` fitted on the other folds."""
    config = config or EffectConfig()
    t = np.asarray(t).astype(np.int64)
    y = np.asarray(y, dtype=np.float64)
    _check(x, t, y)
    tau = np.empty(len(t))
    for train, test in folds(t, config):
        tau[test] = fit_predict_uplift(x[train], t[train], y[train], x[test], learner=learner, config=config)
    return tau


def fit_predict_response(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, config: EffectConfig | None = None
) -> np.ndarray:
    """``P(Y = 1 | x)`` for every row of ``x_test`` from a classifier fitted on the training users
    (the treatment ignored); a constant when the training outcome does not vary."""
    config = config or EffectConfig()
    y_train = np.asarray(y_train)
    if not np.isin(y_train, (0, 1)).all():
        raise ValueError("the response model needs a 0/1 outcome (converted or not)")
    if np.all(y_train == y_train[0]):
        return np.full(len(x_test), float(y_train[0]))
    with threadpool_limits(limits=config.n_threads):
        model = classifier(config).fit(x_train, y_train.astype(np.int64))
        return model.predict_proba(x_test)[:, 1]


def cross_fitted_response(
    x: np.ndarray, y: np.ndarray, *, t: np.ndarray, config: EffectConfig | None = None
) -> np.ndarray:
    """Out-of-fold ``P(Y = 1 | x)`` for every user (folds stratified by the treatment ``t``, as for
    :func:`cross_fitted_uplift`, so both scores come from the same splits)."""
    config = config or EffectConfig()
    p = np.empty(len(y))
    for train, test in folds(np.asarray(t), config):
        p[test] = fit_predict_response(x[train], y[train], x[test], config=config)
    return p
