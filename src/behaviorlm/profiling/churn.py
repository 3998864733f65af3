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
from behaviorlm.estimator import Estimator

DAY = 86_400

CHURN_FEATURES = (
    "days_since_last_event",
    "events",
    "tenure_days",
    "active_days",
    "events_last_7_days",
    "events_last_30_days",
    "recent_share",
    "mean_gap_days",
    "distinct_item_share",
    "purchase_share",
    "cart_share",
)
"""Columns of :attr:`ChurnSnapshot.features`."""


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
    n_users = interactions.n_users
    user_of_event = np.repeat(np.arange(n_users), interactions.lengths())
    ts = interactions.timestamps
    before = ts < cutoff
    after = (ts >= cutoff) & (ts < cutoff + horizon_seconds)
    n_before = np.bincount(user_of_event[before], minlength=n_users)
    n_after = np.bincount(user_of_event[after], minlength=n_users)
    users = np.flatnonzero(n_before > 0)
    if len(users) == 0:
        raise ValueError(f"no user has an event before the cutoff {cutoff}")
    u, t = user_of_event[before], ts[before].astype(np.float64)
    last = np.full(n_users, -np.inf)
    np.maximum.at(last, u, t)
    first = np.full(n_users, np.inf)
    np.minimum.at(first, u, t)
    days = (t // DAY).astype(np.int64)
    active_days = np.bincount(np.unique(u * np.int64(1 << 32) + days) >> 32, minlength=n_users)
    last7 = np.bincount(u[t >= cutoff - 7 * DAY], minlength=n_users)
    last30 = np.bincount(u[t >= cutoff - 30 * DAY], minlength=n_users)
    pairs = np.unique(u * np.int64(interactions.n_items) + interactions.items[before])
    distinct = np.bincount(pairs // interactions.n_items, minlength=n_users)
    vocab = interactions.event_type_vocab
    types = interactions.event_types[before]

    def share(name: str) -> np.ndarray:
        if name not in vocab:
            return np.zeros(n_users)
        return np.bincount(u[types == vocab.index(name)], minlength=n_users) / np.maximum(n_before, 1)

    tenure = (last - first) / DAY
    features = np.column_stack(
        [
            (cutoff - last) / DAY,
            n_before,
            tenure,
            active_days,
            last7,
            last30,
            last30 / np.maximum(n_before, 1),
            tenure / np.maximum(n_before - 1, 1),
            distinct / np.maximum(n_before, 1),
            share("purchase"),
            share("cart"),
        ]
    )[users].astype(np.float64)
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
