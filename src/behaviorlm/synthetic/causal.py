"""Users with planted confounding and a known effect of carting on purchasing.

:func:`causal_synthetic` draws users with four latent traits -- **activity** (how much they browse),
**category affinity** (how often they come back to items they already saw), **price sensitivity**
(how rarely their carts turn into purchases) and **time** (how recently they were last active) --
and a segment (the channel they use: ``app``, ``web``, ``mini-program``) that changes only the size
of the effect. Over three consecutive windows (14 days of features, 7 days of treatment, 7 days of
outcome, :data:`WINDOWS`) they generate an event log:

* Feature window: ``1 + Poisson(activity)`` views, each after the first a revisit of an already viewed
  item with probability = affinity; carts ``Poisson(0.25 activity (1 - sensitivity))``, purchases
  ``Poisson(0.08 activity (1 - sensitivity)^2)``, favs ``Poisson(0.1 activity affinity)`` on viewed
  items; the last event lies ``recency`` hours before the treatment window.
* The traits reach the treatment and the outcome only through what that log shows: the confounders
  are the six features ``pre_view_count``, ``pre_cart_count``, ``pre_fav_count``,
  ``pre_purchase_count``, ``pre_distinct_items`` and ``pre_recency_hours``, named and computed as
  :func:`behaviorlm.causal.effects.build_effect_table` computes them. So adjusting for them removes
  all confounding, whether the analysis starts from :attr:`CausalSyntheticData.table` or from the
  event log.
* Treatment window: the user carts (1 + Poisson(0.5) ``cart`` events) with probability
  ``sigmoid(-0.5 + c (0.8 act + 0.2 act^2 + 1.5 focus + 0.3 carts - 1.5 rec))`` (0.15 to 0.91 for
  98% of users, so every kind of user is seen carting and not carting) and, independently, favs
  one item with probability ``sigmoid(-1.5 + c (act + 2.5 focus - rec))``, where ``act = log1p(views) -
  log 9``, ``focus = 1 - distinct / views - 0.25``, ``carts = log1p(pre carts)``, ``rec = recency /
  336 h - 0.25`` and ``c`` is ``confounding``. Active, focused, recent users cart and fav more.
* Outcome window: the user buys with probability ``p0(x) + effect(segment) * cart`` where
  ``p0 = 0.45 sigmoid(-1.2 + 1.5 act + 2 focus + 0.8 log1p(pre purchases) - 2 rec)``. The same
  active, focused, recent users buy more anyway, so the naive treated-vs-untreated difference
  overstates the effect of carting. Favs have no effect at all: the fav "treatment" is correlated
  with purchasing only through the confounders.

The true effect of carting is additive on the purchase probability and depends only on the segment
(:data:`DEFAULT_SEGMENTS`: app +0.10, web +0.20, mini-program +0.30, shares 50/30/20%), so the
population ATE is 0.5 * 0.10 + 0.3 * 0.20 + 0.2 * 0.30 = **0.17**; :attr:`CausalSyntheticData.true_ate`
is the average over the drawn users (the sample ATE, the estimand of a given draw). With the default
``confounding=1`` the naive difference is about 0.25, i.e. ~47% too high.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from behaviorlm.causal.table import EffectTable, EffectWindows
from behaviorlm.data.sequences import Interactions

_START_SECONDS = 1_600_000_000
"""Start of the feature window (2020-09-13 UTC); the exact value is arbitrary."""
_DAY = 86_400
FEATURE_DAYS, TREATMENT_DAYS, OUTCOME_DAYS = 14, 7, 7
WINDOWS = EffectWindows(
    features_start=_START_SECONDS,
    treatment_start=_START_SECONDS + FEATURE_DAYS * _DAY,
    outcome_start=_START_SECONDS + (FEATURE_DAYS + TREATMENT_DAYS) * _DAY,
    outcome_end=_START_SECONDS + (FEATURE_DAYS + TREATMENT_DAYS + OUTCOME_DAYS) * _DAY,
)
"""The windows every draw uses (pass them to ``build_effect_table`` to analyse the event log)."""
EVENT_TYPES: tuple[str, ...] = ("view", "cart", "fav", "purchase")
FEATURE_NAMES: tuple[str, ...] = (
    "pre_view_count",
    "pre_cart_count",
    "pre_fav_count",
    "pre_purchase_count",
    "pre_distinct_items",
    "pre_recency_hours",
)


@dataclass(frozen=True)
class SyntheticSegment:
    """A segment: its name, share of users and true additive effect of carting on purchasing."""

    name: str
    share: float
    effect: float


DEFAULT_SEGMENTS: tuple[SyntheticSegment, ...] = (
    SyntheticSegment("app", 0.50, 0.10),
    SyntheticSegment("web", 0.30, 0.20),
    SyntheticSegment("mini-program", 0.20, 0.30),
)


@dataclass(frozen=True, eq=False)
class CausalSyntheticData:
    """One draw of :func:`causal_synthetic`.

    Attributes:
        table: per-user table: the six confounders, treatment ``cart``, outcome ``purchase``, segment.
        spurious_treatment: ``int64 [n]`` 1 if the user favourited in the treatment window; it has no
            effect on purchasing (true effect 0).
        individual_effect: ``float64 [n]`` each user's true effect of carting (purchase probability).
        true_ate: mean of ``individual_effect`` (the sample ATE).
        population_ate: the ATE over the segment shares (what ``true_ate`` tends to).
        segment_effects: true effect of each segment.
        propensity: ``float64 [n]`` each user's true probability of carting.
        baseline_purchase: ``float64 [n]`` each user's purchase probability without carting.
        windows: the feature / treatment / outcome windows.
        interactions: the event log, or ``None`` when not asked for.
    """

    table: EffectTable
    spurious_treatment: np.ndarray
    individual_effect: np.ndarray
    true_ate: float
    population_ate: float
    segment_effects: dict[str, float]
    propensity: np.ndarray
    baseline_purchase: np.ndarray
    windows: EffectWindows
    interactions: Interactions | None

    def spurious_table(self) -> EffectTable:
        """The same users with ``fav`` (true effect 0) as the treatment."""
        return replace(self.table, treatment=self.spurious_treatment, treatment_name="fav")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def causal_synthetic(
    *,
    n_users: int = 8000,
    n_items: int = 5000,
    segments: tuple[SyntheticSegment, ...] = DEFAULT_SEGMENTS,
    confounding: float = 1.0,
    with_events: bool = True,
    seed: int = 0,
) -> CausalSyntheticData:
    """Draw users with planted confounding and a known segment-wise effect (see the module docstring).

    ``confounding`` scales how strongly the confounders drive carting and favouriting (0: both are
    randomised). The result is a deterministic function of the arguments.
    """
    if n_users < 10:
        raise ValueError(f"n_users must be at least 10, got {n_users}")
    shares = np.array([s.share for s in segments], dtype=np.float64)
    if not segments or np.any(shares <= 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError("segments need positive shares that sum to 1")
    for s in segments:
        if not 0.0 <= s.effect <= 0.5:
            raise ValueError(
                f"segment {s.name!r}: effect must be in [0, 0.5] (a probability shift), got {s.effect}"
            )
    rng = np.random.default_rng(seed)
    n = n_users
    activity = np.exp(rng.normal(np.log(8.0), 0.7, size=n))
    affinity = rng.beta(2.0, 2.0, size=n)
    sensitivity = rng.beta(2.0, 2.0, size=n)
    feature_seconds = WINDOWS.treatment_start - WINDOWS.features_start
    recency_seconds = np.round(feature_seconds * rng.beta(1.0, 3.0, size=n)).astype(np.int64)
    last_event = WINDOWS.treatment_start - np.maximum(recency_seconds, 1)
    segment_index = rng.choice(len(segments), size=n, p=shares)

    n_view = 1 + rng.poisson(activity)
    n_cart_pre = rng.poisson(0.25 * activity * (1.0 - sensitivity))
    n_purchase_pre = rng.poisson(0.08 * activity * (1.0 - sensitivity) ** 2)
    n_fav_pre = rng.poisson(0.1 * activity * affinity)

    # Pre-window views: each view after the first revisits an already seen item with probability
    # `affinity`, else opens a random item of the catalogue.
    view_items: list[np.ndarray] = []
    distinct = np.empty(n, dtype=np.int64)
    for u in range(n):
        revisit = rng.random(n_view[u]) < affinity[u]
        fresh = rng.integers(0, n_items, size=n_view[u])
        items = np.empty(n_view[u], dtype=np.int64)
        for j in range(n_view[u]):
            items[j] = items[rng.integers(0, j)] if j and revisit[j] else fresh[j]
        view_items.append(items)
        distinct[u] = len(np.unique(items))

    recency_hours = (WINDOWS.treatment_start - last_event) / 3600.0
    act = np.log1p(n_view) - np.log(9.0)
    focus = 1.0 - distinct / n_view - 0.25
    rec = recency_hours / (feature_seconds / 3600.0) - 0.25
    c = confounding
    propensity = _sigmoid(
        -0.5 + c * (0.8 * act + 0.2 * act**2 + 1.5 * focus + 0.3 * np.log1p(n_cart_pre) - 1.5 * rec)
    )
    fav_propensity = _sigmoid(-1.5 + c * (1.0 * act + 2.5 * focus - 1.0 * rec))
    baseline = 0.45 * _sigmoid(-1.2 + 1.5 * act + 2.0 * focus + 0.8 * np.log1p(n_purchase_pre) - 2.0 * rec)
    effect = np.array([s.effect for s in segments])[segment_index]
    treatment = (rng.random(n) < propensity).astype(np.int64)
    spurious = (rng.random(n) < fav_propensity).astype(np.int64)
    outcome = (rng.random(n) < baseline + effect * treatment).astype(np.float64)

    features = np.column_stack(
        [n_view, n_cart_pre, n_fav_pre, n_purchase_pre, distinct, recency_hours]
    ).astype(np.float64)
    labels = np.array([s.name for s in segments])[segment_index]
    table = EffectTable(
        user_ids=np.arange(n),
        features=features,
        feature_names=FEATURE_NAMES,
        treatment=treatment,
        outcome=outcome,
        treatment_name="cart",
        outcome_name="purchase",
        segment=labels,
        windows=WINDOWS,
    )
    interactions = None
    if with_events:
        interactions = _event_log(
            rng,
            view_items=view_items,
            last_event=last_event,
            pre_counts=(n_cart_pre, n_fav_pre, n_purchase_pre),
            activity=activity,
            treatment=treatment,
            spurious=spurious,
            outcome=outcome,
            n_items=n_items,
        )
    return CausalSyntheticData(
        table=table,
        spurious_treatment=spurious,
        individual_effect=effect,
        true_ate=float(effect.mean()),
        population_ate=float(sum(s.share * s.effect for s in segments)),
        segment_effects={s.name: s.effect for s in segments},
        propensity=propensity,
        baseline_purchase=baseline,
        windows=WINDOWS,
        interactions=interactions,
    )


def _event_log(
    rng: np.random.Generator,
    *,
    view_items: list[np.ndarray],
    last_event: np.ndarray,
    pre_counts: tuple[np.ndarray, np.ndarray, np.ndarray],
    activity: np.ndarray,
    treatment: np.ndarray,
    spurious: np.ndarray,
    outcome: np.ndarray,
    n_items: int,
) -> Interactions:
    """The events behind the table: every feature, treatment and outcome is read off this log."""
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    times: list[np.ndarray] = []
    types: list[np.ndarray] = []

    def add(user: int, event_items: np.ndarray, event_times: np.ndarray, type_name: str) -> None:
        users.append(np.full(len(event_items), user, dtype=np.int64))
        items.append(np.asarray(event_items, dtype=np.int64))
        times.append(np.asarray(event_times, dtype=np.int64))
        types.append(np.full(len(event_items), EVENT_TYPES.index(type_name), dtype=np.int16))

    start = WINDOWS.features_start
    for u, viewed in enumerate(view_items):
        last = int(last_event[u])
        view_times = rng.integers(start, last, size=len(viewed), endpoint=True)
        view_times[-1] = last  # the user's last feature-window event sets the recency
        add(u, viewed, view_times, "view")
        for type_name, counts in zip(("cart", "fav", "purchase"), pre_counts, strict=True):
            k = int(counts[u])
            if k:
                add(
                    u, rng.choice(viewed, size=k), rng.integers(start, last, size=k, endpoint=True), type_name
                )
        carted = rng.choice(viewed, size=1 + rng.poisson(0.5)) if treatment[u] else viewed[:0]
        if treatment[u]:
            add(
                u,
                carted,
                rng.integers(WINDOWS.treatment_start, WINDOWS.outcome_start, size=len(carted)),
                "cart",
            )
        if spurious[u]:
            add(
                u,
                rng.choice(viewed, size=1),
                rng.integers(WINDOWS.treatment_start, WINDOWS.outcome_start, size=1),
                "fav",
            )
        for lo, hi in (
            (WINDOWS.treatment_start, WINDOWS.outcome_start),
            (WINDOWS.outcome_start, WINDOWS.outcome_end),
        ):
            k = int(rng.poisson(activity[u] / 2.0))
            if k:
                add(u, rng.integers(0, n_items, size=k), rng.integers(lo, hi, size=k), "view")
        if outcome[u]:
            bought = rng.choice(carted if len(carted) else viewed, size=1)
            add(u, bought, rng.integers(WINDOWS.outcome_start, WINDOWS.outcome_end, size=1), "purchase")
    return Interactions.from_events(
        user_ids=np.concatenate(users),
        item_ids=np.concatenate(items),
        timestamps=np.concatenate(times),
        event_types=np.concatenate(types),
        event_type_vocab=EVENT_TYPES,
        user_universe=np.arange(len(view_items)),
        item_universe=np.arange(n_items),
    )
