"""What is known about each user at a moment in time: behaviour features computed from events before it.

:func:`user_features_at` is the one place these are computed; churn snapshots
(:func:`behaviorlm.profiling.churn.churn_snapshot`) and purchase-propensity snapshots
(:mod:`behaviorlm.models.propensity`) both read them, each adding its own label.
"""

from __future__ import annotations

import numpy as np

from behaviorlm.data.sequences import Interactions

DAY = 86_400

USER_FEATURES = (
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
"""Columns of :func:`user_features_at`."""


def user_features_at(interactions: Interactions, *, cutoff: int) -> tuple[np.ndarray, np.ndarray]:
    """``(users, features)``: every user with an event before ``cutoff`` (UTC seconds; user indices into
    ``interactions``) and ``float64 [len(users), len(USER_FEATURES)]`` from those events alone: recency,
    frequency, tenure, active days, 7- and 30-day activity, the recent share, the mean gap, breadth, and
    the purchase and cart shares. A ``ValueError`` when no user has an event before ``cutoff``."""
    n_users = interactions.n_users
    user_of_event = np.repeat(np.arange(n_users), interactions.lengths())
    ts = interactions.timestamps
    before = ts < cutoff
    n_before = np.bincount(user_of_event[before], minlength=n_users)
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
    return users, features
