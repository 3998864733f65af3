"""Anomalous users and bots: behaviour features, an isolation forest over them, and readable reasons.

Each user is described by how they behave, not what they like (:func:`user_behaviour_features`):
activity (events, events per hour), timing (median gap, regularity of gaps, share of gaps of two
seconds or less, share at night), mix (shares of views, carts, favourites, purchases; purchases per
cart), breadth (distinct items per event; how popular the items are — people follow popularity,
crawlers do not) and whether the exact item sequence also belongs to another user (a replayed
session). :class:`AnomalyDetector` fits an isolation forest (Liu, Ting & Zhou, ICDM 2008) on robustly
scaled features, scores every user (higher = more anomalous) and explains a score by the features that
sit furthest from typical users, in units of their inter-quartile range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorlm.data.sequences import Interactions

FEATURES = (
    "events",
    "events_per_hour",
    "median_gap_seconds",
    "gap_regularity",
    "burst_share",
    "night_share",
    "view_share",
    "cart_share",
    "fav_share",
    "purchase_share",
    "purchases_per_cart",
    "distinct_item_share",
    "item_popularity",
    "shared_sequence",
)
"""Columns of :func:`user_behaviour_features`, in order."""

_LOG_SCALED = {"events", "events_per_hour", "median_gap_seconds"}


def user_behaviour_features(
    interactions: Interactions, *, utc_offset_hours: float = 0.0, burst_seconds: int = 2
) -> np.ndarray:
    """``float64 [n_users, len(FEATURES)]``; NaN where a feature is undefined (e.g. gaps of a user with
    one event). ``utc_offset_hours`` places "night" (00:00–06:00) in the users' local time."""
    n_users = interactions.n_users
    lengths = interactions.lengths()
    user_of_event = np.repeat(np.arange(n_users), lengths)
    ts = interactions.timestamps.astype(np.float64)
    out = np.full((n_users, len(FEATURES)), np.nan)
    col = {name: i for i, name in enumerate(FEATURES)}
    out[:, col["events"]] = lengths
    first = interactions.user_ptr[:-1]
    last = interactions.user_ptr[1:] - 1
    has = lengths > 0
    span = np.zeros(n_users)
    span[has] = ts[last[has]] - ts[first[has]]
    # A ten-minute floor on the span keeps a quick checkout of two or three items from reading as a
    # rate of hundreds of events an hour.
    out[has, col["events_per_hour"]] = lengths[has] / np.maximum(span[has], 600.0) * 3600.0

    # Gaps between consecutive events of the same user.
    same_user = np.diff(user_of_event) == 0
    gaps = np.diff(ts)[same_user]
    gap_user = user_of_event[1:][same_user]
    n_gaps = np.bincount(gap_user, minlength=n_users)
    with_gaps = n_gaps > 0
    order = np.lexsort((gaps, gap_user))  # gaps sorted within each user
    sorted_gaps = gaps[order]
    gap_ptr = np.concatenate([[0], np.cumsum(n_gaps)])
    mid_lo = gap_ptr[:-1] + (n_gaps - 1) // 2
    mid_hi = gap_ptr[:-1] + n_gaps // 2
    out[with_gaps, col["median_gap_seconds"]] = 0.5 * (
        sorted_gaps[mid_lo[with_gaps]] + sorted_gaps[mid_hi[with_gaps]]
    )
    log_gaps = np.log1p(gaps)
    mean = np.bincount(gap_user, weights=log_gaps, minlength=n_users)
    sq = np.bincount(gap_user, weights=log_gaps**2, minlength=n_users)
    enough = n_gaps >= 2
    mean_e = mean[enough] / n_gaps[enough]
    std_e = np.sqrt(np.maximum(sq[enough] / n_gaps[enough] - mean_e**2, 0.0))
    # Regular, machine-like timing has a small spread of log gaps relative to their level.
    out[enough, col["gap_regularity"]] = 1.0 / (1.0 + std_e)
    # A checkout writes several purchases in the same second; only gaps before other events count as bursts.
    later_type = interactions.event_types[1:][same_user]
    purchase = (
        interactions.event_type_vocab.index("purchase") if "purchase" in interactions.event_type_vocab else -1
    )
    counted = later_type != purchase
    bursts = np.bincount(
        gap_user, weights=((gaps <= burst_seconds) & counted).astype(float), minlength=n_users
    )
    n_counted = np.bincount(gap_user, weights=counted.astype(float), minlength=n_users)
    ok = n_counted > 0
    out[ok, col["burst_share"]] = bursts[ok] / n_counted[ok]

    hours = ((ts / 3600.0 + utc_offset_hours) % 24).astype(int)
    night = np.bincount(user_of_event, weights=(hours < 6).astype(float), minlength=n_users)
    out[has, col["night_share"]] = night[has] / lengths[has]

    vocab = interactions.event_type_vocab
    type_counts = np.zeros((n_users, len(vocab)))
    np.add.at(type_counts, (user_of_event, interactions.event_types.astype(np.int64)), 1.0)
    for name in ("view", "cart", "fav", "purchase"):
        if name in vocab:
            out[has, col[f"{name}_share"]] = type_counts[has, vocab.index(name)] / lengths[has]
        else:
            out[has, col[f"{name}_share"]] = 0.0
    carts = type_counts[:, vocab.index("cart")] if "cart" in vocab else np.zeros(n_users)
    buys = type_counts[:, vocab.index("purchase")] if "purchase" in vocab else np.zeros(n_users)
    out[has, col["purchases_per_cart"]] = buys[has] / (carts[has] + 1.0)

    pairs = np.unique(user_of_event * np.int64(interactions.n_items) + interactions.items)
    distinct = np.bincount(pairs // interactions.n_items, minlength=n_users)
    out[has, col["distinct_item_share"]] = distinct[has] / lengths[has]
    popularity = np.log1p(np.bincount(interactions.items, minlength=interactions.n_items))
    pop_sum = np.bincount(user_of_event, weights=popularity[interactions.items], minlength=n_users)
    out[has, col["item_popularity"]] = pop_sum[has] / lengths[has]

    out[:, col["shared_sequence"]] = _shared_sequences(interactions, min_length=3)
    return out


def _shared_sequences(interactions: Interactions, *, min_length: int) -> np.ndarray:
    """1.0 for users whose whole item sequence (of ``min_length`` or more events) another user also has."""
    lengths = interactions.lengths()
    keys = []
    for u in range(interactions.n_users):
        if lengths[u] >= min_length:
            keys.append(interactions.items[interactions.user_ptr[u] : interactions.user_ptr[u + 1]].tobytes())
        else:
            keys.append(None)
    counts: dict[bytes, int] = {}
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return np.array([float(key is not None and counts[key] > 1) for key in keys])


@dataclass(frozen=True)
class AnomalyReason:
    feature: str
    value: float
    typical: float
    """The feature's median over all users."""
    iqr_units: float
    """How far the value is from the median, in inter-quartile ranges (signed)."""


class AnomalyDetector:
    """Isolation forest over :func:`user_behaviour_features` (robustly scaled); higher score = more anomalous.

    Fit on the users to screen (no labels needed): ``fit(interactions)``, then ``scores_`` holds one
    score per user, and :meth:`reasons` explains a user's score.

    ``max_samples`` (users per tree) was chosen on a validation planting (Taobao slice, bots of seed 1;
    the benchmark reports seed 0): 256, scikit-learn's default, ranks rare-but-human behaviour such as
    a three-item checkout above crawlers (precision@50 0.02 for scrapers); 2048 gave the best balance of
    ROC-AUC (0.996) and precision@50 (0.98-1.00 for scrapers, click farms and cart stuffers).
    """

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        max_samples: int = 2048,
        utc_offset_hours: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.utc_offset_hours = utc_offset_hours
        self.seed = seed

    def fit(self, interactions: Interactions) -> AnomalyDetector:
        from sklearn.ensemble import IsolationForest

        raw = user_behaviour_features(interactions, utc_offset_hours=self.utc_offset_hours)
        self.features_ = raw
        scaled = self._transform(raw, fit=True)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(scaled)),
            random_state=self.seed,
        ).fit(scaled)
        self.scores_ = -self.forest_.score_samples(scaled)
        self.user_ids_ = interactions.user_ids
        return self

    def score(self, interactions: Interactions) -> np.ndarray:
        """Scores of other users under the fitted forest and scaling."""
        raw = user_behaviour_features(interactions, utc_offset_hours=self.utc_offset_hours)
        return -self.forest_.score_samples(self._transform(raw, fit=False))

    def _transform(self, raw: np.ndarray, *, fit: bool) -> np.ndarray:
        x = raw.copy()
        for i, name in enumerate(FEATURES):
            if name in _LOG_SCALED:
                x[:, i] = np.log1p(x[:, i])
        if fit:
            self.median_ = np.nanmedian(x, axis=0)
            q75, q25 = np.nanpercentile(x, [75, 25], axis=0)
            std = np.nanstd(x, axis=0)
            # Features constant over most users (IQR 0) are scaled by their spread instead.
            self.scale_ = np.where(q75 - q25 > 0, q75 - q25, np.where(std > 0, std, 1.0))
        x = np.where(np.isnan(x), self.median_, x)
        return (x - self.median_) / self.scale_

    def reasons(self, user: int, *, top: int = 3) -> list[AnomalyReason]:
        """The ``top`` defined features of user index ``user`` furthest from typical, largest first."""
        raw = self.features_[user]
        z = self._transform(self.features_[user : user + 1], fit=False)[0]
        order = [i for i in np.argsort(-np.abs(z)) if not np.isnan(raw[i])][:top]
        typical_raw = np.nanmedian(self.features_, axis=0)
        return [
            AnomalyReason(
                feature=FEATURES[i], value=float(raw[i]), typical=float(typical_raw[i]), iqr_units=float(z[i])
            )
            for i in order
        ]

    def top(self, k: int = 20) -> np.ndarray:
        """User indices of the ``k`` highest scores, most anomalous first."""
        return np.argsort(-self.scores_, kind="stable")[:k]
