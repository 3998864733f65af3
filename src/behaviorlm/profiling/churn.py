"""Churn: will an active user do nothing in the next ``horizon``? Predicted on a temporal split.

A *snapshot* at time ``cutoff`` takes every user with at least one event before it, describes them with
what was known then (:data:`CHURN_FEATURES`: recency, frequency, tenure, recent vs earlier activity,
behaviour mix, session and breadth figures) and labels them 1 if they have no event in
``[cutoff, cutoff + horizon)``. Training uses an earlier snapshot (``cutoff - horizon``, whose labels
are complete before ``cutoff``), so no future information leaks into the model that is tested on the
``cutoff`` snapshot.

:class:`ChurnModel` is a gradient-boosted tree classifier over all features; the honest baseline,
:class:`RecencyFrequencyBaseline`, is a logistic regression on recency and frequency alone (the classic
RFM reading of churn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.user_features import DAY as DAY  # re-exported: the churn CLI and benchmark use it
from behaviorlm.data.user_features import USER_FEATURES, user_features_at
from behaviorlm.estimator import Estimator

CHURN_FEATURES = USER_FEATURES
"""Columns of :attr:`ChurnSnapshot.features` (:data:`behaviorlm.data.user_features.USER_FEATURES`)."""


@dataclass(frozen=True)
class ChurnSnapshot:
    """Users active before ``cutoff``, their features then, and whether they were inactive afterwards."""

    users: np.ndarray
    """User indices (into the source :class:`Interactions`)."""
    features: np.ndarray
    """``float64 [len(users), len(CHURN_FEATURES)]``."""
    churned: np.ndarray
    """``int64 [len(users)]``: 1 = no event in ``[cutoff, cutoff + horizon)``."""
    cutoff: int
    horizon_seconds: int


def churn_snapshot(interactions: Interactions, *, cutoff: int, horizon_seconds: int) -> ChurnSnapshot:
    """The snapshot at ``cutoff`` (UTC seconds); see the module docstring."""
    if horizon_seconds <= 0:
        raise ValueError(f"horizon_seconds must be > 0, got {horizon_seconds}")
    users, features = user_features_at(interactions, cutoff=cutoff)
    ts = interactions.timestamps
    after = (ts >= cutoff) & (ts < cutoff + horizon_seconds)
    n_after = np.bincount(interactions.event_users()[after], minlength=interactions.n_users)
    return ChurnSnapshot(
        users=users,
        features=features,
        churned=(n_after[users] == 0).astype(np.int64),
        cutoff=int(cutoff),
        horizon_seconds=int(horizon_seconds),
    )


class ChurnModel(Estimator):
    """Gradient-boosted trees (scikit-learn's histogram GBM) over all :data:`CHURN_FEATURES`."""

    def __init__(self, *, max_iter: int = 200, learning_rate: float = 0.05, seed: int = 0) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, snapshot: ChurnSnapshot) -> ChurnModel:
        from sklearn.ensemble import HistGradientBoostingClassifier

        _require_both_classes(snapshot)
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, random_state=self.seed
        ).fit(snapshot.features, snapshot.churned)
        return self

    def predict_proba(self, snapshot: ChurnSnapshot) -> np.ndarray:
        """Probability of churn for each user of ``snapshot``."""
        return self.model_.predict_proba(snapshot.features)[:, 1]


class RecencyFrequencyBaseline(Estimator):
    """Logistic regression on log recency and log frequency only."""

    _COLUMNS = (CHURN_FEATURES.index("days_since_last_event"), CHURN_FEATURES.index("events"))

    def fit(self, snapshot: ChurnSnapshot) -> RecencyFrequencyBaseline:
        from sklearn.linear_model import LogisticRegression

        _require_both_classes(snapshot)
        self.model_ = LogisticRegression().fit(self._x(snapshot), snapshot.churned)
        return self

    def predict_proba(self, snapshot: ChurnSnapshot) -> np.ndarray:
        return self.model_.predict_proba(self._x(snapshot))[:, 1]

    def _x(self, snapshot: ChurnSnapshot) -> np.ndarray:
        return np.log1p(np.maximum(snapshot.features[:, self._COLUMNS], 0.0))


def _require_both_classes(snapshot: ChurnSnapshot) -> None:
    rate = snapshot.churned.mean()
    if rate in (0.0, 1.0):
        raise ValueError(
            f"the training snapshot at {snapshot.cutoff} has only {'churned' if rate else 'retained'} users; "
            "choose another cutoff or horizon"
        )
