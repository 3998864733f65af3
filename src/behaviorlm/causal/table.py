"""The effect table: per-user treatment, outcome and pre-treatment confounders from three consecutive
windows of the event store, activity segments, and the causal graph the estimators assume.

Built by :func:`build_effect_table`; read by the estimators in :mod:`behaviorlm.causal.effects` and the
DoWhy cross-check in :mod:`behaviorlm.causal.dowhy_graph`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np

# threadpoolctl is a hard dependency of scikit-learn; it caps OpenMP threads per fit, because boosting
# with more threads than free cores runs many times slower on a shared machine.
from behaviorlm.data.sequences import Interactions

HOUR_SECONDS = 3600

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "pre_<type>_count": "events of that type in the feature window (one column per event type)",
    "pre_distinct_items": "distinct items the user touched in the feature window",
    "pre_active_hours": "distinct clock hours (UTC) with at least one event in the feature window",
    "pre_span_hours": "hours between the user's first and last event in the feature window",
    "pre_recency_hours": "hours from the user's last feature-window event to the treatment window",
    "pre_distinct_categories": "distinct item categories among the feature-window events (with item categories)",
    "pre_top_category_share": "share of the user's categorised events in their most frequent category",
    "pre_mean_price": "mean price of the items behind the feature-window events whose price is known (else 0)",
    "pre_price_known": "share of the feature-window events whose item has a known price",
}
"""The confounders :func:`build_effect_table` computes, all from the feature window only."""


# ---------------------------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class EffectWindows:
    """Three consecutive half-open windows, in UTC seconds.

    Features are counted in ``[features_start, treatment_start)``, the treatment in
    ``[treatment_start, outcome_start)`` and the outcome in ``[outcome_start, outcome_end)``.
    """

    features_start: int
    treatment_start: int
    outcome_start: int
    outcome_end: int

    def __post_init__(self) -> None:
        bounds = (self.features_start, self.treatment_start, self.outcome_start, self.outcome_end)
        if not all(a < b for a, b in pairwise(bounds)):
            raise ValueError(
                "windows must be consecutive and non-empty: features_start < treatment_start < "
                f"outcome_start < outcome_end, got {self.describe()}"
            )

    def describe(self) -> dict[str, str]:
        """Each window as ``"<ISO start> .. <ISO end>"`` (UTC)."""

        def iso(seconds: int) -> str:
            return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")

        return {
            "features": f"{iso(self.features_start)} .. {iso(self.treatment_start)}",
            "treatment": f"{iso(self.treatment_start)} .. {iso(self.outcome_start)}",
            "outcome": f"{iso(self.outcome_start)} .. {iso(self.outcome_end)}",
        }


def effect_windows(
    interactions: Interactions, *, split_time: int | None = None, window_hours: float | None = None
) -> EffectWindows:
    """Windows for an event log: the outcome window starts at ``split_time``.

    * Neither given: the log's time span is halved; the outcome window is the second half, the
      treatment window the second half of the first half, and features come from the first quarter.
    * ``window_hours`` given: the outcome and treatment windows are each that long, the outcome window
      starting at ``split_time`` (default: ``window_hours`` before the last event), the treatment window
      right before it; features come from everything earlier.
    * ``split_time`` only: the outcome window runs from it to the end; the time before it is halved
      into the feature and treatment windows.
    """
    if interactions.n_events == 0:
        raise ValueError("the event log is empty")
    first = int(interactions.timestamps.min())
    end = int(interactions.timestamps.max()) + 1
    width = None
    if window_hours is not None:
        if not window_hours > 0:
            raise ValueError(f"window_hours must be positive, got {window_hours}")
        width = round(window_hours * HOUR_SECONDS)
    if split_time is None:
        split_time = end - width if width is not None else first + (end - first) // 2
    if not first < split_time < end:
        raise ValueError(
            f"split time {_iso(split_time)} is outside the log's time span {_iso(first)} .. {_iso(end)}"
        )
    outcome_end = min(split_time + width, end) if width is not None else end
    treatment_start = split_time - width if width is not None else first + (split_time - first) // 2
    if treatment_start <= first:
        raise ValueError(
            f"no time left for the feature window: the treatment window starts at {_iso(treatment_start)}, "
            f"the log at {_iso(first)}; use a later split time or shorter windows"
        )
    return EffectWindows(
        features_start=first,
        treatment_start=treatment_start,
        outcome_start=split_time,
        outcome_end=outcome_end,
    )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class EffectTable:
    """One row per user: confounders, a binary treatment, an outcome, and optionally a segment.

    Attributes:
        user_ids: external id of each row's user.
        features: ``float64 [n, d]`` confounders measured before the treatment.
        feature_names: name of each feature column.
        treatment: ``int64 [n]`` 1 if the user did the treatment, else 0.
        outcome: ``float64 [n]`` the outcome (0/1 for a conversion).
        treatment_name: what the treatment is (e.g. the event type ``cart``).
        outcome_name: what the outcome is (e.g. ``purchase``).
        segment: optional ``[n]`` segment label of each user, for per-segment effects.
        windows: the windows the table was built from, when it came from an event log.
    """

    user_ids: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    treatment: np.ndarray
    outcome: np.ndarray
    treatment_name: str
    outcome_name: str
    segment: np.ndarray | None = None
    windows: EffectWindows | None = None

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if self.features.shape != (n, len(self.feature_names)):
            raise ValueError(
                f"features must be [n_users={n}, n_features={len(self.feature_names)}], got {self.features.shape}"
            )
        if self.treatment.shape != (n,) or self.outcome.shape != (n,):
            raise ValueError("treatment and outcome need one entry per user")
        if not np.isin(self.treatment, (0, 1)).all():
            raise ValueError("treatment must be 0 or 1 for every user")
        if self.segment is not None and self.segment.shape != (n,):
            raise ValueError("segment needs one label per user")
        if not np.isfinite(self.features).all() or not np.isfinite(self.outcome).all():
            raise ValueError("features and outcome must be finite")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_treated(self) -> int:
        return int(self.treatment.sum())

    def rows(self, index: np.ndarray) -> EffectTable:
        """The table restricted (or resampled) to the given row indices."""
        return replace(
            self,
            user_ids=self.user_ids[index],
            features=self.features[index],
            treatment=self.treatment[index],
            outcome=self.outcome[index],
            segment=None if self.segment is None else self.segment[index],
        )


def build_effect_table(
    interactions: Interactions,
    *,
    treatment: str,
    outcome: str,
    windows: EffectWindows,
    item_category: np.ndarray | None = None,
    item_price: np.ndarray | None = None,
) -> EffectTable:
    """Per-user analysis table from an event log (see :data:`FEATURE_DESCRIPTIONS` for the features).

    ``item_category`` (a label per item index, ``None``/empty where unknown) adds the category confounders
    ``pre_distinct_categories`` and ``pre_top_category_share``; ``item_price`` (a number per item index,
    NaN where unknown) adds ``pre_mean_price`` and ``pre_price_known`` (see :data:`FEATURE_DESCRIPTIONS`).
    :meth:`behaviorlm.data.store.EventStore.item_confounders` reads both from a store.

    Treatment: the user did ``treatment`` (an event type) in the treatment window. Outcome: the user did
    ``outcome`` in the outcome window. Population: users with at least one event in the feature window.
    Events in the treatment window other than the treatment itself are *not* used: they happen at the
    same time as the treatment and may be caused by it (a user who carts then views the cart).
    """
    vocab = interactions.event_type_vocab
    for role, name in (("treatment", treatment), ("outcome", outcome)):
        if name not in vocab:
            raise ValueError(
                f"{role} event type {name!r} is not in this event log; its event types are {list(vocab)}"
            )
    if treatment == outcome:
        raise ValueError(f"treatment and outcome are both {treatment!r}; they must differ")
    ts = interactions.timestamps
    users = interactions.event_users()
    in_features = (ts >= windows.features_start) & (ts < windows.treatment_start)
    population = np.unique(users[in_features])
    if len(population) == 0:
        raise ValueError(f"no user has an event in the feature window {windows.describe()['features']}")
    n_users = interactions.n_users
    t_code, y_code = vocab.index(treatment), vocab.index(outcome)
    in_treatment = (ts >= windows.treatment_start) & (ts < windows.outcome_start)
    in_outcome = (ts >= windows.outcome_start) & (ts < windows.outcome_end)
    did_treatment = np.bincount(users[in_treatment & (interactions.event_types == t_code)], minlength=n_users)
    did_outcome = np.bincount(users[in_outcome & (interactions.event_types == y_code)], minlength=n_users)

    pre_users, pre_items, pre_ts = users[in_features], interactions.items[in_features], ts[in_features]
    pre_types = interactions.event_types[in_features]
    columns: dict[str, np.ndarray] = {}
    for code, name in enumerate(vocab):
        columns[f"pre_{name}_count"] = np.bincount(pre_users[pre_types == code], minlength=n_users)
    pairs = np.unique(np.stack([pre_users, pre_items]), axis=1)
    columns["pre_distinct_items"] = np.bincount(pairs[0], minlength=n_users)
    hours = np.unique(np.stack([pre_users, pre_ts // HOUR_SECONDS]), axis=1)
    columns["pre_active_hours"] = np.bincount(hours[0], minlength=n_users)
    last = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, pre_users, pre_ts)
    first = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, pre_users, pre_ts)
    columns["pre_span_hours"] = np.where(first <= last, last - first, 0) / HOUR_SECONDS
    columns["pre_recency_hours"] = np.where(first <= last, windows.treatment_start - last, 0) / HOUR_SECONDS
    if item_category is not None:
        columns.update(
            _category_columns(np.asarray(item_category, dtype=object), pre_users, pre_items, n_users)
        )
    if item_price is not None:
        columns.update(
            _price_columns(np.asarray(item_price, dtype=np.float64), pre_users, pre_items, n_users)
        )

    names = tuple(columns)
    features = np.stack([np.asarray(columns[c], dtype=np.float64)[population] for c in names], axis=1)
    return EffectTable(
        user_ids=interactions.user_ids[population],
        features=features,
        feature_names=names,
        treatment=(did_treatment[population] > 0).astype(np.int64),
        outcome=(did_outcome[population] > 0).astype(np.float64),
        treatment_name=treatment,
        outcome_name=outcome,
        windows=windows,
    )


def _category_columns(
    item_category: np.ndarray, users: np.ndarray, items: np.ndarray, n_users: int
) -> dict[str, np.ndarray]:
    """Distinct categories per user and the share of the user's categorised events in their top category."""
    known = np.array([c is not None and c == c and str(c) != "" for c in item_category], dtype=bool)
    labels = np.unique(item_category[known].astype(str)) if known.any() else np.array([], dtype=str)
    code = np.full(len(item_category), -1, dtype=np.int64)
    code[known] = np.searchsorted(labels, item_category[known].astype(str))
    event_code = code[items]
    has = event_code >= 0
    pairs = np.unique(np.stack([users[has], event_code[has]]), axis=1)
    distinct = np.bincount(pairs[0], minlength=n_users) if pairs.size else np.zeros(n_users, dtype=np.int64)
    top_share = np.zeros(n_users)
    if has.any():
        counts = np.unique(np.stack([users[has], event_code[has]]), axis=1, return_counts=True)
        (pair_users, _), pair_counts = counts
        top = np.zeros(n_users, dtype=np.int64)
        np.maximum.at(top, pair_users, pair_counts)
        total = np.bincount(users[has], minlength=n_users)
        top_share = np.divide(top, total, out=np.zeros(n_users), where=total > 0)
    return {"pre_distinct_categories": distinct, "pre_top_category_share": top_share}


def _price_columns(
    item_price: np.ndarray, users: np.ndarray, items: np.ndarray, n_users: int
) -> dict[str, np.ndarray]:
    """Mean price of the items behind a user's events (0 when none is known) and the share of events with a
    known price, so that "no price" is not read as "price 0"."""
    price = item_price[items]
    known = np.isfinite(price)
    total = np.bincount(users, minlength=n_users)
    n_known = np.bincount(users[known], minlength=n_users)
    price_sum = np.bincount(users[known], weights=price[known], minlength=n_users)
    mean = np.divide(price_sum, n_known, out=np.zeros(n_users), where=n_known > 0)
    share = np.divide(n_known, total, out=np.zeros(n_users), where=total > 0)
    return {"pre_mean_price": mean, "pre_price_known": share}


def activity_segments(table: EffectTable, *, n_groups: int = 3) -> EffectTable:
    """The table with users segmented by feature-window activity (total ``pre_*_count``) into at most
    ``n_groups`` quantile groups, labelled in order with their event-count range, e.g.
    ``"activity q1: 1 event"``, ``"activity q2: 2-11 events"``. Tied counts stay in one group, so a log
    where most users have one event gets fewer groups."""
    count_columns = [i for i, name in enumerate(table.feature_names) if name.endswith("_count")]
    if not count_columns:
        raise ValueError("the table has no pre_<type>_count features to segment by")
    if not 2 <= n_groups <= 9:
        raise ValueError(f"n_groups must be between 2 and 9, got {n_groups}")
    activity = table.features[:, count_columns].sum(axis=1)
    cuts = np.unique(np.quantile(activity, np.arange(1, n_groups) / n_groups, method="lower"))
    # Users at a cut belong to the group below it: with most users at the minimum, that group is theirs.
    group = np.searchsorted(cuts, activity, side="left")
    labels = np.empty(table.n_users, dtype=object)
    for rank, g in enumerate(np.unique(group), start=1):
        members = activity[group == g]
        low, high = int(members.min()), int(members.max())
        span = f"{low}-{high} events" if low != high else f"{low} event" + ("s" if low != 1 else "")
        labels[group == g] = f"activity q{rank}: {span}"
    return replace(table, segment=labels.astype(str))


@dataclass(frozen=True)
class CausalGraph:
    """The assumed causal graph: confounders → treatment, confounders → outcome, treatment → outcome,
    effect modifiers → outcome. The backdoor adjustment set is the confounders (Pearl 2009, sec. 3.3.1),
    valid when no confounder is missing from them."""

    treatment: str
    outcome: str
    confounders: tuple[str, ...]
    effect_modifiers: tuple[str, ...] = ()

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        out = [(c, self.treatment) for c in self.confounders]
        out += [(c, self.outcome) for c in self.confounders]
        out += [(m, self.outcome) for m in self.effect_modifiers]
        out.append((self.treatment, self.outcome))
        return tuple(out)

    @property
    def adjustment_set(self) -> tuple[str, ...]:
        return self.confounders

    def to_dot(self) -> str:
        lines = [f'  "{a}" -> "{b}";' for a, b in self.edges]
        return "digraph effect {\n" + "\n".join(lines) + "\n}"
