"""Campaign audiences: whom to contact, under a budget, so that the contact adds the most conversions.

Input: a past randomised campaign as an :class:`~behaviorlm.causal.effects.EffectTable` (one row per
user: behaviour features from before the campaign, ``treatment`` = contacted or not, ``outcome`` =
converted or not, optional ``segment``). :func:`build_audience` estimates for every user

* the **propensity** to convert, ``P(Y = 1 | x)`` (a classifier on the features, treatment ignored; or
  scores from a sequence model, :func:`sequence_propensity`), and
* the **uplift**, ``tau(x) = P(Y = 1 | x, contacted) - P(Y = 1 | x, not contacted)``, with a meta-learner
  (:mod:`behaviorlm.causal.uplift`),

both cross-fitted (every user scored by models that did not see them), then selects the users with the
highest expected incremental value ``tau(x) * value_per_conversion - cost_per_contact``, at most
``budget`` of all users and only where that value is positive. A user likely to convert anyway gains
nothing from a contact, and a "sleeping dog" (negative uplift) converts *less* when contacted, which is
why the selection ranks by uplift and not by propensity (Radcliffe & Surry 2011).

:func:`compare_targeting` measures that choice on held-out users of the campaign: Qini and uplift curves,
AUUC, Qini coefficient and incremental conversions at fixed budgets (:mod:`behaviorlm.evaluation.uplift`)
for uplift targeting with each learner, propensity targeting and random targeting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.causal.effects import sparse_outcome_warnings
from behaviorlm.causal.learners import EffectConfig
from behaviorlm.causal.table import EffectTable, activity_segments
from behaviorlm.causal.uplift import (
    UPLIFT_LEARNERS,
    UpliftLearner,
    cross_fitted_response,
    cross_fitted_uplift,
    fit_predict_response,
    fit_predict_uplift,
)
from behaviorlm.data.sequences import Interactions
from behaviorlm.evaluation.uplift import UpliftCurves, true_incremental_per_1000, uplift_curves

DEFAULT_BUDGETS: tuple[float, ...] = (0.1, 0.2, 0.3)


@dataclass(frozen=True)
class AudienceConfig:
    """How to build an audience (defaults work; an unknown key is a TypeError).

    Attributes:
        learner: the uplift meta-learner (:data:`behaviorlm.causal.uplift.UPLIFT_LEARNERS`).
        budget: largest share of users to contact, in ``(0, 1]``.
        value_per_conversion: what one extra conversion is worth (any currency; 1 counts conversions).
        cost_per_contact: what one contact costs, in the same unit.
        effects: nuisance models, folds and seed (:class:`~behaviorlm.causal.effects.EffectConfig`).
    """

    learner: UpliftLearner = "x-learner"
    budget: float = 0.2
    value_per_conversion: float = 1.0
    cost_per_contact: float = 0.0
    effects: EffectConfig = field(default_factory=EffectConfig)

    def __post_init__(self) -> None:
        if self.learner not in UPLIFT_LEARNERS:
            raise ValueError(f"learner must be one of {list(UPLIFT_LEARNERS)}, got {self.learner!r}")
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget must be a share of users in (0, 1], got {self.budget}")
        if self.value_per_conversion <= 0:
            raise ValueError(f"value_per_conversion must be positive, got {self.value_per_conversion}")
        if self.cost_per_contact < 0:
            raise ValueError(f"cost_per_contact must be >= 0, got {self.cost_per_contact}")


def select_by_value(
    uplift: np.ndarray, *, budget: float, value_per_conversion: float = 1.0, cost_per_contact: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The users to contact: the top ``floor(budget * n)`` by expected incremental value
    ``uplift * value_per_conversion - cost_per_contact``, keeping only positive values.

    Returns ``(expected_value [n], selected_indices)``, the indices in decreasing expected value (ties by
    index).
    """
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a share of users in (0, 1], got {budget}")
    expected = np.asarray(uplift, dtype=np.float64) * value_per_conversion - cost_per_contact
    order = np.argsort(-expected, kind="stable")
    capacity = math.floor(budget * len(expected) + 1e-9)
    chosen = order[:capacity]
    return expected, chosen[expected[chosen] > 0]


def sequence_propensity(
    model: Any, history: Interactions, *, user_ids: np.ndarray, positive_label: Any = 1
) -> np.ndarray:
    """``P(positive_label)`` of each user from a fitted
    :class:`~behaviorlm.models.heads.SequenceClassifier` (e.g. trained on
    :func:`~behaviorlm.models.heads.purchase_within_next` labels), reading each user's sequence in
    ``history``; ``user_ids`` are external ids, in the order wanted."""
    index = {uid: i for i, uid in enumerate(history.user_ids.tolist())}
    missing = [uid for uid in np.asarray(user_ids).tolist() if uid not in index]
    if missing:
        raise ValueError(f"{len(missing)} users have no sequence in the history, e.g. {missing[:5]}")
    classes = list(model.classes_)
    if positive_label not in classes:
        raise ValueError(f"the model's classes are {classes}; {positive_label!r} is not one of them")
    users = np.array([index[uid] for uid in np.asarray(user_ids).tolist()], dtype=np.int64)
    return model.predict_proba(history, users=users)[:, classes.index(positive_label)]


def _segments(table: EffectTable) -> np.ndarray:
    if table.segment is not None:
        return table.segment.astype(str)
    if any(name.endswith("_count") for name in table.feature_names):
        segmented = activity_segments(table)
        assert segmented.segment is not None
        return segmented.segment
    return np.full(table.n_users, "all users")


@dataclass(frozen=True, eq=False)
class Audience:
    """Every user's scores and whether they are in the audience (see :func:`build_audience`)."""

    user_ids: np.ndarray
    segment: np.ndarray
    propensity: np.ndarray
    uplift: np.ndarray
    expected_value: np.ndarray
    selected: np.ndarray
    """``bool [n]``: in the audience."""
    rank: np.ndarray
    """``int64 [n]``: 1-based position in the audience, 0 for users not in it."""
    config: AudienceConfig
    treatment_name: str
    outcome_name: str
    observed_ate: float
    """Conversion rate of the contacted minus the not contacted users in the campaign."""
    warnings: tuple[str, ...] = ()
    """The small-sample warnings of :func:`behaviorlm.causal.effects.analyze_effects` for the campaign."""

    @property
    def too_few_conversions(self) -> bool:
        """Fewer than :data:`~behaviorlm.causal.effects.MIN_OUTCOME_EVENTS_PER_ARM` contacted or uncontacted
        users converted: the uplift models were fitted on a handful of positives, so the audience's
        incremental conversions are not stated (the ranking is still written, for what it is worth)."""
        return bool(self.warnings)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_selected(self) -> int:
        return int(self.selected.sum())

    @property
    def expected_incremental_conversions(self) -> float:
        return float(self.uplift[self.selected].sum())

    def segment_rows(self) -> list[dict[str, Any]]:
        """Per segment: users, how many are selected, mean uplift and propensity, expected incremental
        conversions and value of the selected ones."""
        rows = []
        for label in sorted(np.unique(self.segment)):
            members = self.segment == label
            chosen = members & self.selected
            rows.append(
                {
                    "segment": str(label),
                    "users": int(members.sum()),
                    "selected": int(chosen.sum()),
                    "mean_uplift": float(self.uplift[members].mean()),
                    "mean_propensity": float(self.propensity[members].mean()),
                    "incremental_conversions": float(self.uplift[chosen].sum()),
                    "expected_value": float(self.expected_value[chosen].sum()),
                }
            )
        return rows

    def to_frame(self) -> Any:
        """One row per user (a pandas DataFrame), audience members first, by rank."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "user_id": self.user_ids,
                "segment": self.segment,
                "propensity": self.propensity,
                "uplift": self.uplift,
                "expected_value": self.expected_value,
                "selected": self.selected,
                "rank": self.rank,
            }
        )
        frame["_order"] = np.where(self.rank > 0, self.rank, self.n_users + 1)
        return frame.sort_values(["_order", "expected_value"], ascending=[True, False]).drop(columns="_order")

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_frame` as Parquet (``.parquet``) or CSV (anything else)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self.to_frame()
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    def to_markdown(self) -> str:
        """A short readable report: the rule, the totals and the per-segment breakdown."""
        c = self.config
        lines = [
            f"# Audience for {self.treatment_name} -> {self.outcome_name}",
            "",
            f"- Users scored: {self.n_users:,}; selected: {self.n_selected:,} "
            f"(budget {c.budget:.0%} = at most {math.floor(c.budget * self.n_users + 1e-9):,} contacts).",
            f"- Rule: highest expected incremental value = uplift x {c.value_per_conversion:g} per conversion "
            f"- {c.cost_per_contact:g} per contact, positive values only. Uplift: {c.learner}, "
            f"propensity: classifier on behaviour features, both cross-fitted over {c.effects.n_folds} folds.",
            f"- Campaign as run: contacted users converted {self.observed_ate * 100:+.2f} percentage points "
            "more than uncontacted ones (all users).",
            (
                "- Expected incremental conversions from the audience: not estimated, too few conversions "
                "(see the warning)."
                if self.too_few_conversions
                else f"- Expected incremental conversions from the audience: "
                f"{self.expected_incremental_conversions:,.1f} "
                f"(expected value {float(self.expected_value[self.selected].sum()):,.1f})."
            ),
            f"- Users with negative estimated uplift (contact expected to hurt): {int((self.uplift < 0).sum()):,}; "
            "none of them is selected.",
            "",
            "| segment | users | selected | mean uplift (pp) | mean propensity | incremental conversions |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        if self.warnings:
            lines[1:1] = ["", *(f"**Warning:** {w}" for w in self.warnings)]
        for row in self.segment_rows():
            incremental = "n/a" if self.too_few_conversions else f"{row['incremental_conversions']:,.1f}"
            lines.append(
                f"| {row['segment']} | {row['users']:,} | {row['selected']:,} | {row['mean_uplift'] * 100:+.2f} | "
                f"{row['mean_propensity']:.3f} | {incremental} |"
            )
        return "\n".join(lines) + "\n"


def build_audience(
    table: EffectTable, *, config: AudienceConfig | None = None, propensity: np.ndarray | None = None
) -> Audience:
    """Score every user of a randomised campaign and pick the audience (see the module docstring).

    ``propensity`` replaces the feature classifier's scores (e.g. from :func:`sequence_propensity`).
    Segments: ``table.segment``, else activity tertiles, else one segment.
    """
    config = config or AudienceConfig()
    x, t, y = table.features, table.treatment, table.outcome
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("the outcome must be a conversion: 0 or 1 for every user")
    if propensity is None:
        propensity = cross_fitted_response(x, y, t=t, config=config.effects)
    elif np.shape(propensity) != (table.n_users,):
        raise ValueError(f"propensity needs one score per user ({table.n_users}), got {np.shape(propensity)}")
    uplift = cross_fitted_uplift(x, t, y, learner=config.learner, config=config.effects)
    expected, chosen = select_by_value(
        uplift,
        budget=config.budget,
        value_per_conversion=config.value_per_conversion,
        cost_per_contact=config.cost_per_contact,
    )
    selected = np.zeros(table.n_users, dtype=bool)
    selected[chosen] = True
    rank = np.zeros(table.n_users, dtype=np.int64)
    rank[chosen] = np.arange(1, len(chosen) + 1)
    return Audience(
        user_ids=table.user_ids,
        segment=_segments(table),
        propensity=np.asarray(propensity, dtype=np.float64),
        uplift=uplift,
        expected_value=expected,
        selected=selected,
        rank=rank,
        config=config,
        treatment_name=table.treatment_name,
        outcome_name=table.outcome_name,
        observed_ate=float(y[t == 1].mean() - y[t == 0].mean()),
        warnings=sparse_outcome_warnings(table),
    )


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class TargetingResult:
    """One ordering's curves and summaries on the held-out users (incremental values per 1,000 users)."""

    name: str
    curves: UpliftCurves
    auuc: float
    qini: float
    incremental: dict[float, float]
    true_incremental: dict[float, float] | None = None

    def metrics(self) -> dict[str, float]:
        """The summaries as flat ``{"auuc", "qini", "incremental@10", ...}`` (budgets in percent)."""
        out = {"auuc": self.auuc, "qini": self.qini}
        out.update({f"incremental@{round(b * 100)}": v for b, v in self.incremental.items()})
        if self.true_incremental is not None:
            out.update({f"true_incremental@{round(b * 100)}": v for b, v in self.true_incremental.items()})
        return out


@dataclass(frozen=True, eq=False)
class TargetingComparison:
    """Orderings of the same held-out users compared (see :func:`compare_targeting`)."""

    results: tuple[TargetingResult, ...]
    n_train: int
    n_test: int
    protocol: dict[str, Any]

    def result(self, name: str) -> TargetingResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no ordering {name!r}; have {[r.name for r in self.results]}")

    def to_markdown(self) -> str:
        budgets = list(self.results[0].incremental)
        truth = self.results[0].true_incremental is not None
        header = ["targeting", "AUUC", "Qini"] + [f"incr. @{b:.0%}" for b in budgets]
        if truth:
            header += [f"true incr. @{b:.0%}" for b in budgets]
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for r in self.results:
            cells = [r.name, f"{r.auuc:.4f}", f"{r.qini:.4f}"] + [f"{r.incremental[b]:+.1f}" for b in budgets]
            if truth and r.true_incremental is not None:
                cells += [f"{r.true_incremental[b]:+.1f}" for b in budgets]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self, *, curve_points: int = 101) -> dict[str, Any]:
        """A JSON-serializable copy: per ordering its AUUC, Qini coefficient and incremental conversions per
        1,000 users at each budget, and its uplift and Qini curves (per 1,000 users) at ``curve_points``
        evenly spaced shares of users contacted (every held-out user when there are fewer)."""
        if curve_points < 2:
            raise ValueError(f"curve_points must be at least 2, got {curve_points}")
        results = []
        for r in self.results:
            n = len(r.curves.fraction) - 1
            at = np.unique(np.round(np.linspace(0, n, min(curve_points, n + 1))).astype(np.int64))
            results.append(
                {
                    "name": r.name,
                    "auuc": r.auuc,
                    "qini": r.qini,
                    "budgets": [
                        {
                            "budget": budget,
                            "incremental_per_1000": value,
                            "true_incremental_per_1000": None
                            if r.true_incremental is None
                            else r.true_incremental[budget],
                        }
                        for budget, value in r.incremental.items()
                    ],
                    "curve": {
                        "fraction": r.curves.fraction[at].tolist(),
                        "uplift_per_1000": (r.curves.uplift[at] * 1000.0).tolist(),
                        "qini_per_1000": (r.curves.qini[at] * 1000.0).tolist(),
                    },
                }
            )
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "protocol": dict(self.protocol),
            "results": results,
        }

    def plot_qini(self, path: str | Path, *, title: str = "Qini curves on held-out users") -> Path:
        """Qini curves of every ordering and the random-targeting line, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in self.results:
            style = ":" if r.name == "random" else "-"
            ax.plot(r.curves.fraction, r.curves.qini * 1000.0, style, label=r.name)
        final = self.results[0].curves.qini[-1] * 1000.0
        ax.plot([0, 1], [0, final], "k--", linewidth=0.8, label="random (expected)")
        ax.set_xlabel("share of users contacted (highest score first)")
        ax.set_ylabel("Qini: treated conversions above the\ncontrol rate, per 1,000 users")
        ax.set_title(title)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _result(
    name: str,
    score: np.ndarray,
    *,
    t: np.ndarray,
    y: np.ndarray,
    budgets: tuple[float, ...],
    true_uplift: np.ndarray | None,
    seed: int,
) -> TargetingResult:
    curves = uplift_curves(score, treatment=t, outcome=y, seed=seed)
    return TargetingResult(
        name=name,
        curves=curves,
        auuc=curves.auuc,
        qini=curves.qini_coefficient,
        incremental={b: curves.incremental_per_1000(b) for b in budgets},
        true_incremental=None
        if true_uplift is None
        else {
            b: true_incremental_per_1000(score, true_uplift=true_uplift, budget=b, seed=seed) for b in budgets
        },
    )


def compare_targeting(
    table: EffectTable,
    *,
    learners: tuple[UpliftLearner, ...] = UPLIFT_LEARNERS,
    test_fraction: float = 0.5,
    budgets: tuple[float, ...] = DEFAULT_BUDGETS,
    config: EffectConfig | None = None,
    true_uplift: np.ndarray | None = None,
) -> TargetingComparison:
    """Fit on a random ``1 - test_fraction`` of the campaign's users (stratified by treatment) and rank the
    rest by each learner's uplift (``uplift-<learner>``), by propensity to convert (``propensity``) and at
    random (``random``); with ``true_uplift`` (synthetic data) also by the truth (``true-uplift``) and
    with the true incremental conversions of every ordering."""
    from sklearn.model_selection import train_test_split

    config = config or EffectConfig()
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    index = np.arange(table.n_users)
    train, test = train_test_split(
        index, test_size=test_fraction, stratify=table.treatment, random_state=config.seed
    )
    x, t, y = table.features, table.treatment, table.outcome
    scores: dict[str, np.ndarray] = {}
    for learner in learners:
        scores[f"uplift-{learner}"] = fit_predict_uplift(
            x[train], t[train], y[train], x[test], learner=learner, config=config
        )
    scores["propensity"] = fit_predict_response(x[train], y[train], x[test], config=config)
    scores["random"] = np.random.default_rng(config.seed + 1).random(len(test))
    if true_uplift is not None:
        scores["true-uplift"] = np.asarray(true_uplift)[test]
    truth = None if true_uplift is None else np.asarray(true_uplift)[test]
    results = tuple(
        _result(name, s, t=t[test], y=y[test], budgets=budgets, true_uplift=truth, seed=config.seed)
        for name, s in scores.items()
    )
    return TargetingComparison(
        results=results,
        n_train=len(train),
        n_test=len(test),
        protocol={
            "split": f"random {1 - test_fraction:.0%} train / {test_fraction:.0%} held-out users, stratified by treatment",
            "curves": "uplift and Qini curves on held-out users, ties broken by a seeded shuffle",
            "auuc": "area under the uplift curve (incremental conversions per user vs share contacted)",
            "qini": "area between the Qini curve and the random line (Radcliffe 2007)",
            "incremental": "incremental conversions per 1,000 held-out users at each budget, from outcomes",
            "learner": config.learner,
            "seed": config.seed,
        },
    )


def read_campaign(
    path: str | Path,
    *,
    user_column: str = "user_id",
    treatment_column: str = "treatment",
    outcome_column: str = "outcome",
    segment_column: str | None = None,
    treatment_name: str = "contact",
    outcome_name: str = "conversion",
) -> EffectTable:
    """A past randomised campaign from CSV or Parquet: one row per user with a user id, ``treatment``
    (0/1: contacted), ``outcome`` (0/1: converted), optionally a segment label, and every other numeric
    column as a behaviour feature."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"campaign file {path} does not exist")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    needed = [user_column, treatment_column, outcome_column] + ([segment_column] if segment_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; it has {list(frame.columns)}")
    for column in (treatment_column, outcome_column):
        bad = ~frame[column].isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: row {row + 1}: {column} must be 0 or 1, got {frame[column].iloc[row]!r}"
            )
    features = [c for c in frame.columns if c not in needed and pd.api.types.is_numeric_dtype(frame[c])]
    if not features:
        raise ValueError(f"{path}: no numeric feature column besides {needed}")
    values = frame[features].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(values)))
        raise ValueError(f"{path}: row {row + 1}: feature {features[col]!r} is missing or not finite")
    return EffectTable(
        user_ids=frame[user_column].to_numpy(),
        features=values,
        feature_names=tuple(features),
        treatment=frame[treatment_column].to_numpy(dtype=np.int64),
        outcome=frame[outcome_column].to_numpy(dtype=np.float64),
        treatment_name=treatment_name,
        outcome_name=outcome_name,
        segment=None if segment_column is None else frame[segment_column].astype(str).to_numpy(),
    )


def campaign_frame(table: EffectTable) -> Any:
    """The campaign as :func:`read_campaign` reads it (a pandas DataFrame): user id, features, segment,
    treatment, outcome."""
    import pandas as pd

    frame = pd.DataFrame(table.features, columns=list(table.feature_names))
    frame.insert(0, "user_id", table.user_ids)
    if table.segment is not None:
        frame["segment"] = table.segment
    frame["treatment"] = table.treatment
    frame["outcome"] = table.outcome.astype(np.int64)
    return frame


def synthetic_comparison(*, n_users: int = 6000, seed: int = 0) -> TargetingComparison:
    """Uplift (X-learner) vs propensity vs random vs the planted truth on a small synthetic campaign over the
    package's synthetic event log (no data folder needed; a few seconds on one core)."""
    from behaviorlm.synthetic.campaign import synthetic_campaign
    from behaviorlm.synthetic.causal import causal_synthetic

    events = causal_synthetic(n_users=n_users, seed=seed).interactions
    assert events is not None
    campaign = synthetic_campaign(events, seed=seed)
    return compare_targeting(
        campaign.table,
        learners=("x-learner",),
        config=EffectConfig(seed=seed),
        true_uplift=campaign.true_uplift,
    )
