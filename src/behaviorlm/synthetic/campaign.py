"""A synthetic marketing campaign on top of real behaviour, with a known effect for every user.

:func:`synthetic_campaign` takes an event log (the Taobao slice, or any log with ``view``, ``cart`` and
``purchase`` event types), reads each user's pre-campaign behaviour as the features
:func:`behaviorlm.causal.effects.build_effect_table` computes (``pre_<type>_count``,
``pre_distinct_items``, ``pre_active_hours``, ``pre_span_hours``, ``pre_recency_hours``: the whole log
is the feature window and the campaign starts right after its last event), and simulates a randomised
campaign on those users: each is contacted (the treatment, e.g. a coupon) with probability
``treatment_share``, independently of everything else, and then converts (e.g. purchases within 7 days)
or not.

Every user is one of four kinds, decided by their behaviour alone (so a model of the features can learn
it), after the classic uplift quadrants (Radcliffe & Surry 2011, "Real-world uplift modelling with
significance-based uplift trees"):

* ``sleeping_dog`` -- heavy users (at least the 85th percentile of events) who already buy or only
  browse: they convert often anyway, and a contact *lowers* it (they unsubscribe, or feel pushed):
  baseline ``0.45``, effect ``-0.10`` to ``-0.18`` (more harm the heavier the user).
* ``persuadable`` -- users who carted or favourited but did not buy: intent without a purchase, which
  the contact tips over: baseline ``0.12``, effect ``+0.12`` to ``+0.20`` (more the more intent events).
* ``sure_thing`` -- lighter users who already bought: baseline ``0.55``, no effect.
* ``lost_cause`` -- everyone else (light users who only viewed): baseline ``0.03``, no effect.

Baselines also grow a little with activity (``+0.03`` per standard deviation of ``log1p(events)``).
The outcome is ``Bernoulli(baseline + treatment * effect)``. Ranking users by their chance to convert
(propensity) puts sure things and sleeping dogs first, so a campaign aimed by propensity spends its
contacts on users it cannot help or actively hurts; ranking by uplift puts persuadables first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from behaviorlm.causal.table import EffectTable, EffectWindows, activity_segments, build_effect_table
from behaviorlm.data.sequences import Interactions

USER_KINDS: tuple[str, ...] = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
HEAVY_QUANTILE = 0.85
"""Users with at least this quantile of events count as heavy."""
BASELINE = {"persuadable": 0.12, "sure_thing": 0.55, "lost_cause": 0.03, "sleeping_dog": 0.45}
"""Conversion probability without contact, before the activity term."""
ACTIVITY_SLOPE = 0.03
"""Baseline change per standard deviation of ``log1p(events)``."""


@dataclass(frozen=True, eq=False)
class SyntheticCampaign:
    """One draw of :func:`synthetic_campaign`.

    Attributes:
        table: per-user features, ``treatment`` (1 = contacted), ``outcome`` (1 = converted) and
            ``segment`` (activity tertiles, as :func:`behaviorlm.causal.effects.activity_segments` labels them).
        true_uplift: ``float64 [n]`` each user's true effect of the contact on P(conversion).
        baseline: ``float64 [n]`` each user's P(conversion) without contact.
        kind: ``[n]`` each user's kind (one of :data:`USER_KINDS`).
    """

    table: EffectTable
    true_uplift: np.ndarray
    baseline: np.ndarray
    kind: np.ndarray

    @property
    def true_ate(self) -> float:
        return float(self.true_uplift.mean())

    def kind_shares(self) -> dict[str, float]:
        """Share of users of each kind."""
        return {k: float((self.kind == k).mean()) for k in USER_KINDS}


def behaviour_features(interactions: Interactions) -> EffectTable:
    """Every user's behaviour in the whole log as features (see the module docstring), with placeholder
    treatment and outcome (all zero): the campaign is taken to start one second after the last event."""
    if interactions.n_events == 0:
        raise ValueError("the event log is empty")
    vocab = interactions.event_type_vocab
    missing = [t for t in ("view", "cart", "purchase") if t not in vocab]
    if missing:
        raise ValueError(f"a campaign needs event types {missing}; this log has {list(vocab)}")
    first, end = int(interactions.timestamps.min()), int(interactions.timestamps.max()) + 1
    # The treatment and outcome windows lie after the log, so they are empty: only the features are used.
    windows = EffectWindows(
        features_start=first, treatment_start=end, outcome_start=end + 1, outcome_end=end + 2
    )
    return build_effect_table(interactions, treatment="cart", outcome="purchase", windows=windows)


def synthetic_campaign(
    interactions: Interactions,
    *,
    treatment_share: float = 0.5,
    treatment_name: str = "coupon",
    outcome_name: str = "purchase within 7 days",
    max_users: int | None = None,
    seed: int = 0,
) -> SyntheticCampaign:
    """Simulate a randomised campaign on the users of ``interactions`` (see the module docstring).

    ``max_users`` keeps a random subset of that many users. The result is a deterministic function of
    the arguments.
    """
    if not 0.0 < treatment_share < 1.0:
        raise ValueError(f"treatment_share must be in (0, 1), got {treatment_share}")
    table = behaviour_features(interactions)
    rng = np.random.default_rng(seed)
    if max_users is not None and max_users < table.n_users:
        table = table.rows(np.sort(rng.choice(table.n_users, size=max_users, replace=False)))
    column = {name: table.features[:, i] for i, name in enumerate(table.feature_names)}
    counts = [column[name] for name in table.feature_names if name.endswith("_count")]
    events = np.sum(counts, axis=0)
    intent = column["pre_cart_count"] + column.get("pre_fav_count", 0.0)
    bought = column["pre_purchase_count"] > 0
    heavy = events >= np.quantile(events, HEAVY_QUANTILE, method="higher")
    wants = (intent > 0) & ~bought

    kind = np.full(table.n_users, "lost_cause", dtype=object)
    kind[bought] = "sure_thing"
    kind[wants] = "persuadable"
    kind[heavy & ~wants] = "sleeping_dog"
    kind = kind.astype(str)

    log_events = np.log1p(events)
    activity_z = (log_events - log_events.mean()) / max(float(log_events.std()), 1e-9)
    heavy_events = log_events[kind == "sleeping_dog"]
    # Harm grows from 0.10 (the lightest sleeping dog) to 0.18 (the heaviest).
    harm_scale = (
        (log_events - heavy_events.min()) / max(float(np.ptp(heavy_events)), 1e-9) if heavy_events.size else 0
    )
    effect = np.zeros(table.n_users)
    effect = np.where(kind == "persuadable", 0.12 + 0.08 * np.minimum(intent, 3.0) / 3.0, effect)
    effect = np.where(kind == "sleeping_dog", -0.10 - 0.08 * np.clip(harm_scale, 0.0, 1.0), effect)
    baseline = np.array([BASELINE[k] for k in kind]) + ACTIVITY_SLOPE * np.clip(activity_z, -2.0, 2.0)
    baseline = np.clip(baseline, 0.01, 0.95)
    effect = np.clip(baseline + effect, 0.0, 1.0) - baseline

    treatment = (rng.random(table.n_users) < treatment_share).astype(np.int64)
    outcome = (rng.random(table.n_users) < baseline + treatment * effect).astype(np.float64)
    table = replace(
        table,
        treatment=treatment,
        outcome=outcome,
        treatment_name=treatment_name,
        outcome_name=outcome_name,
        windows=None,
    )
    return SyntheticCampaign(table=activity_segments(table), true_uplift=effect, baseline=baseline, kind=kind)


def default_campaign(*, max_users: int | None = None, seed: int = 0) -> tuple[SyntheticCampaign, str]:
    """A campaign on the Taobao UserBehavior slice when the benchmark data folder has it, else on the
    package's synthetic event log (6,000 users of :func:`~behaviorlm.synthetic.causal.causal_synthetic`);
    returns it with the name of the log it is layered on."""
    from behaviorlm.data.datasets import dataset_path, load_interactions
    from behaviorlm.synthetic.causal import causal_synthetic

    try:
        dataset_path("taobao-110k")
    except FileNotFoundError:
        events, source = causal_synthetic(n_users=6000, seed=seed).interactions, "causal-synthetic events"
    else:
        events, source = load_interactions("taobao-110k"), "taobao-110k"
    assert events is not None
    return synthetic_campaign(events, max_users=max_users, seed=seed), source
