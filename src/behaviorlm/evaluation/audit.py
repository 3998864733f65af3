"""Bias audit of a fitted recommender: quality gaps between user groups and popularity bias.

What is measured (all on the full-ranking evaluation of :func:`~behaviorlm.evaluation.ranking.evaluate_ranking`,
seen items masked):

* **Quality per user group.** NDCG@K and HR@K per group, with percentile bootstrap intervals
  (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13) from resampling the group's
  users. Groups come from user attributes (gender, age band, occupation) and from activity (tertiles
  of history length), as in Ekstrand et al., "All The Cool Kids, How Do They Fit In?: Popularity and
  Demographic Biases in Recommender Evaluation and Effectiveness", FAT* 2018. Each group is compared
  with the rest of the users (difference of means, bootstrap interval from resampling both sides), and
  the spread of an attribute is the *gap*: best group minus worst group, with a bootstrap interval for
  that pair and a permutation-test p-value for "the group means are all equal" (the p-value accounts
  for having picked the best and the worst group; the interval does not).
* **Popularity bias.** Average recommendation popularity against the average popularity of the users'
  own histories (ARP, Abdollahpouri et al., "The Unfairness of Popularity Bias in Recommendation",
  RMSE workshop at RecSys 2019), the Gini coefficient of exposure over the catalogue, the long-tail
  share (recommendation slots outside the "head": the most popular items making 80% of interactions)
  and catalogue coverage@K.
* **Mitigation trade-off.** The same audit of :class:`~behaviorlm.models.reranking.PopularityPenalized`
  wrappers of the model for a few penalties.

Protected attributes are read **after** scoring, only to group the users' metric values: the model is
called with ``ScoringBatch(users, history)`` exactly as in ordinary evaluation and never sees them. The
report lists the attributes it used.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import behaviorlm.evaluation.metrics as metrics
from behaviorlm.data.sequences import Interactions
from behaviorlm.evaluation.ranking import evaluate_ranking
from behaviorlm.models.base import Recommender
from behaviorlm.models.reranking import PopularityPenalized

if TYPE_CHECKING:
    from behaviorlm.data.store import EventStore

ATTRIBUTE_GROUPS = ("gender", "age", "occupation")
"""Groupings read from user attributes (protected attributes: used for auditing only)."""

ACTIVITY = "activity"
"""Grouping by history-length tertile, available for every dataset."""

DEFAULT_GROUPS = (*ATTRIBUTE_GROUPS, ACTIVITY)

AGE_BANDS: tuple[tuple[float, str], ...] = (
    (18, "under 18"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (50, "45-49"),
    (56, "50-55"),
    (math.inf, "56+"),
)
"""``(upper bound exclusive, label)``: MovieLens 1M's age bands (its README), applied to raw ages too, so
ML-100k's ages and ML-1M's band codes (1, 18, 25, ...) land in the same bands."""

UNKNOWN = "unknown"
HEAD_SHARE = 0.8


@dataclass(frozen=True)
class Interval:
    """A point estimate with a ``confidence`` bootstrap interval ``[low, high]``."""

    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class GroupQuality:
    """One user group: its size, mean metrics with intervals, and its difference from everyone else.

    ``popularity_lift`` is the group's mean recommendation popularity over its mean history popularity
    (above 1: the group is recommended more popular items than it consumes).
    """

    group: str
    n_users: int
    metrics: dict[str, Interval]
    vs_rest: dict[str, Interval]
    popularity_lift: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "n_users": self.n_users,
            "metrics": {name: value.to_dict() for name, value in self.metrics.items()},
            "vs_rest": {name: value.to_dict() for name, value in self.vs_rest.items()},
            "popularity_lift": self.popularity_lift,
        }


@dataclass(frozen=True)
class GroupGap:
    """Quality by the groups of one attribute (or activity) and the gap between best and worst group.

    Per metric: ``gap`` is best-group mean minus worst-group mean (among groups with at least
    ``min_group_users`` users; ``small_groups`` lists the others, reported but not compared), with a
    bootstrap interval for that pair, ``best``/``worst`` name the groups, and ``p_value`` is the
    permutation-test p-value of the max-minus-min spread under "group labels do not matter".
    """

    attribute: str
    groups: list[GroupQuality]
    gap: dict[str, Interval]
    best: dict[str, str]
    worst: dict[str, str]
    p_value: dict[str, float]
    small_groups: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "groups": [g.to_dict() for g in self.groups],
            "gap": {name: value.to_dict() for name, value in self.gap.items()},
            "best": dict(self.best),
            "worst": dict(self.worst),
            "p_value": dict(self.p_value),
            "small_groups": list(self.small_groups),
        }


@dataclass(frozen=True)
class PopularityBias:
    """Popularity of the top-K lists, from the item interaction counts of the audit's history.

    Attributes:
        mean_recommended_popularity: mean over users of the mean count of their K recommended items.
        mean_history_popularity: mean over users of the mean count of the items in their history.
        popularity_ratio: the first over the second (1 = recommendations as popular as what users consume).
        gini_exposure: Gini coefficient of how often each catalogue item is recommended (0 = equal exposure).
        longtail_share: share of recommendation slots outside the head items.
        n_head_items: number of head items (the most popular items making 80% of interactions).
        coverage: share of the catalogue in at least one top-K list.
    """

    mean_recommended_popularity: float
    mean_history_popularity: float
    popularity_ratio: float
    gini_exposure: float
    longtail_share: float
    n_head_items: int
    coverage: float

    def to_dict(self) -> dict[str, float]:
        return {
            "mean_recommended_popularity": self.mean_recommended_popularity,
            "mean_history_popularity": self.mean_history_popularity,
            "popularity_ratio": self.popularity_ratio,
            "gini_exposure": self.gini_exposure,
            "longtail_share": self.longtail_share,
            "n_head_items": self.n_head_items,
            "coverage": self.coverage,
        }


@dataclass(frozen=True)
class TradeOffPoint:
    """The audit of a :class:`PopularityPenalized` wrapper at one ``penalty``."""

    penalty: float
    metrics: dict[str, float]
    gaps: dict[str, Interval]
    popularity: PopularityBias

    def to_dict(self) -> dict[str, Any]:
        return {
            "penalty": self.penalty,
            "metrics": dict(self.metrics),
            "gaps": {name: value.to_dict() for name, value in self.gaps.items()},
            "popularity": self.popularity.to_dict(),
        }


@dataclass(frozen=True)
class AuditReport:
    """Everything :func:`audit_recommender` measured, with the protocol and the attributes it used.

    ``gaps`` in :class:`TradeOffPoint` are keyed ``"<attribute>:<metric>"``.
    """

    model: str
    protocol: dict[str, Any]
    attributes_used: list[str]
    metrics: dict[str, float]
    groups: dict[str, GroupGap]
    popularity: PopularityBias
    mitigation: list[TradeOffPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return {
            "model": self.model,
            "protocol": dict(self.protocol),
            "attributes_used": list(self.attributes_used),
            "attribute_use": "grouping of evaluation results only; never a model input",
            "metrics": dict(self.metrics),
            "groups": {name: gap.to_dict() for name, gap in self.groups.items()},
            "popularity": self.popularity.to_dict(),
            "mitigation": [point.to_dict() for point in self.mitigation],
        }


# ------------------------------------------------------------------------------------------------ audit


def audit_recommender(
    model: Recommender,
    *,
    history: Interactions,
    targets: Interactions,
    user_attributes: Mapping[str, Mapping[str, Any]] | None = None,
    groups: Sequence[str] = DEFAULT_GROUPS,
    k: int = 10,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_group_users: int = 20,
    penalties: Sequence[float] = (),
    split_name: str = "leave-one-out",
    progress: Callable[[str], None] | None = None,
) -> AuditReport:
    """Audit ``model`` for quality gaps between user groups and for popularity bias (module docstring).

    ``history``/``targets`` are as in :func:`~behaviorlm.evaluation.ranking.evaluate_ranking` (e.g. a
    split's ``test_history`` and ``test``). ``user_attributes`` maps a user id (``history.user_ids``
    entry, as a string) to its attributes (e.g. ``{"gender": "F", "age": "24", "occupation": ...}``, as
    :func:`read_user_attributes` returns them); a user without the attribute is in group
    ``"unknown"``. ``groups`` names the groupings: ``"gender"``, ``"age"`` (banded by
    :data:`AGE_BANDS`), ``"occupation"``, any other attribute key (used as is) and ``"activity"``
    (history-length tertiles of the evaluated users). Intervals are percentile bootstrap intervals from
    ``n_resamples`` resamples at ``confidence``, seeded by ``seed``; p-values use as many label
    permutations. ``penalties`` adds a :class:`TradeOffPoint` per popularity penalty (``0`` is the
    model itself). ``progress``, when given, is called with a short message before each step.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be >= 100 for a percentile interval, got {n_resamples}")
    if min_group_users < 2:
        raise ValueError(f"min_group_users must be >= 2, got {min_group_users}")
    groups = list(dict.fromkeys(groups))
    if not groups:
        raise ValueError("groups is empty: name at least one grouping, e.g. activity")
    attribute_groups = [g for g in groups if g != ACTIVITY]
    if attribute_groups:
        _check_attributes(user_attributes, attribute_groups)
    settings = _Settings(
        k=k,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        min_group_users=min_group_users,
    )
    popularity = history.item_counts().astype(np.float64)

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    say(f"ranking with {model.name}")
    evaluation = _evaluate(model, history=history, targets=targets, settings=settings, split_name=split_name)
    labels = group_labels(
        evaluation.users,
        history=history,
        user_attributes=user_attributes or {},
        groups=groups,
    )
    say("bootstrapping group metrics")
    group_gaps = {
        name: group_gap(
            evaluation.values,
            labels=labels[name],
            attribute=name,
            popularity_lift=evaluation.popularity_lift,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
            min_group_users=min_group_users,
        )
        for name in groups
    }
    bias = popularity_bias(
        evaluation.top_items, users=evaluation.users, history=history, popularity=popularity
    )

    mitigation = []
    for penalty in penalties:
        say(f"popularity penalty {penalty:g}")
        wrapped = PopularityPenalized(model, penalty=float(penalty)).fit(model.trained_on)
        point = _evaluate(wrapped, history=history, targets=targets, settings=settings, split_name=split_name)
        gaps = {}
        for name in groups:
            gap = group_gap(
                point.values,
                labels=labels[name],
                attribute=name,
                popularity_lift=point.popularity_lift,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
                min_group_users=min_group_users,
            )
            gaps.update({f"{name}:{metric}": value for metric, value in gap.gap.items()})
        mitigation.append(
            TradeOffPoint(
                penalty=float(penalty),
                metrics=point.summary,
                gaps=gaps,
                popularity=popularity_bias(
                    point.top_items, users=point.users, history=history, popularity=popularity
                ),
            )
        )

    protocol = {
        **evaluation.protocol,
        "bootstrap_resamples": n_resamples,
        "permutations": n_resamples,
        "confidence": confidence,
        "seed": seed,
        "min_group_users": min_group_users,
        "popularity": "interaction counts in the audit's history (train + valid for the test targets)",
        "head_items": f"most popular items making {HEAD_SHARE:.0%} of interactions",
    }
    return AuditReport(
        model=model.name,
        protocol=protocol,
        attributes_used=attribute_groups,
        metrics=evaluation.summary,
        groups=group_gaps,
        popularity=bias,
        mitigation=mitigation,
    )


def group_labels(
    users: np.ndarray,
    *,
    history: Interactions,
    user_attributes: Mapping[str, Mapping[str, Any]],
    groups: Sequence[str],
) -> dict[str, np.ndarray]:
    """Group label (``str``) of each user index in ``users`` for each grouping in ``groups``.

    ``"age"`` is banded by :data:`AGE_BANDS`; ``"activity"`` is the tertile of the user's number of
    events in ``history`` among ``users`` (labels state the event ranges); any other name is the
    attribute's value as a string. Missing attributes give ``"unknown"``.
    """
    users = np.asarray(users, dtype=np.int64)
    ids = [str(u) for u in history.user_ids[users].tolist()]
    out: dict[str, np.ndarray] = {}
    for name in groups:
        if name == ACTIVITY:
            out[name] = _activity_labels(history.lengths()[users])
            continue
        values = [user_attributes.get(user_id, {}).get(name) for user_id in ids]
        if name == "age":
            out[name] = np.array([_age_band(v) for v in values], dtype=object)
        else:
            out[name] = np.array(
                [UNKNOWN if v is None or str(v).strip() == "" else str(v) for v in values], dtype=object
            )
    return out


def group_gap(
    values: Mapping[str, np.ndarray],
    *,
    labels: np.ndarray,
    attribute: str,
    popularity_lift: tuple[np.ndarray, np.ndarray] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_group_users: int = 20,
) -> GroupGap:
    """Per-group means with bootstrap intervals, each group against the rest, and the best-worst gap.

    ``values`` maps a metric name to one value per user; ``labels`` is each user's group. Bootstrap
    resamples draw users with replacement within each group (and within the rest), so the intervals of a
    difference come from two independent resamples. ``popularity_lift``, when given, is the per-user
    ``(recommended popularity, history popularity)`` pair the groups' lifts are computed from.
    """
    labels = np.asarray(labels, dtype=object)
    names = list(values)
    matrix = np.column_stack([np.asarray(values[n], dtype=np.float64) for n in names])
    if len(labels) != len(matrix):
        raise ValueError(f"labels has {len(labels)} entries but the metric arrays have {len(matrix)}")
    group_names, codes = np.unique(labels.astype(str), return_inverse=True)
    sizes = np.bincount(codes, minlength=len(group_names))
    alpha = (1 - confidence) / 2
    seeds = np.random.SeedSequence([seed, _stable_hash(attribute)]).spawn(2 * len(group_names) + 1)

    resampled_means = []
    results = []
    for index, group in enumerate(group_names):
        inside = matrix[codes == index]
        rest = matrix[codes != index]
        boot_inside = _bootstrap_means(inside, n_resamples, np.random.default_rng(seeds[2 * index]))
        resampled_means.append(boot_inside)
        group_metrics = {
            n: _interval(inside[:, j].mean(), boot_inside[:, j], alpha) for j, n in enumerate(names)
        }
        vs_rest: dict[str, Interval] = {}
        if len(rest):
            boot_rest = _bootstrap_means(rest, n_resamples, np.random.default_rng(seeds[2 * index + 1]))
            vs_rest = {
                n: _interval(
                    inside[:, j].mean() - rest[:, j].mean(), boot_inside[:, j] - boot_rest[:, j], alpha
                )
                for j, n in enumerate(names)
            }
        lift = math.nan
        if popularity_lift is not None:
            recommended, consumed = (np.asarray(a, dtype=np.float64)[codes == index] for a in popularity_lift)
            lift = float(recommended.mean() / consumed.mean()) if consumed.mean() > 0 else math.nan
        results.append(
            GroupQuality(
                group=str(group),
                n_users=int(sizes[index]),
                metrics=group_metrics,
                vs_rest=vs_rest,
                popularity_lift=lift,
            )
        )

    compared = np.flatnonzero((sizes >= min_group_users) & (group_names != UNKNOWN))
    gap, best, worst, p_value = {}, {}, {}, {}
    if len(compared) >= 2:
        means = np.array([matrix[codes == i].mean(axis=0) for i in range(len(group_names))])
        permuted_spread = _permutation_spreads(
            matrix,
            codes=codes,
            compared=compared,
            n_permutations=n_resamples,
            rng=np.random.default_rng(seeds[-1]),
        )
        for j, name in enumerate(names):
            hi = compared[np.argmax(means[compared, j])]
            lo = compared[np.argmin(means[compared, j])]
            gap[name] = _interval(
                means[hi, j] - means[lo, j], resampled_means[hi][:, j] - resampled_means[lo][:, j], alpha
            )
            best[name], worst[name] = str(group_names[hi]), str(group_names[lo])
            observed = means[compared, j].max() - means[compared, j].min()
            # The +1s count the observed labelling as one of the permutations (Phipson & Smyth, 2010).
            p_value[name] = float((1 + np.sum(permuted_spread[:, j] >= observed - 1e-12)) / (1 + n_resamples))
    small = [str(group_names[i]) for i in range(len(group_names)) if i not in set(compared.tolist())]
    return GroupGap(
        attribute=attribute,
        groups=results,
        gap=gap,
        best=best,
        worst=worst,
        p_value=p_value,
        small_groups=small,
    )


def popularity_bias(
    top_items: np.ndarray, *, users: np.ndarray, history: Interactions, popularity: np.ndarray | None = None
) -> PopularityBias:
    """Popularity-bias measures of ``top_items`` (``[len(users), K]`` item indices, ``-1`` = no item).

    ``popularity`` is the interaction count per item (default: ``history.item_counts()``); a user's
    history popularity is the mean count over the events in ``history``.
    """
    top_items = np.asarray(top_items, dtype=np.int64)
    n_items = history.n_items
    counts = history.item_counts().astype(np.float64) if popularity is None else np.asarray(popularity, float)
    recommended, consumed = _user_popularity(top_items, users=users, history=history, popularity=counts)
    listed = top_items[top_items >= 0]
    exposure = np.bincount(listed, minlength=n_items)
    head = head_items(counts, share=HEAD_SHARE)
    mean_history = float(consumed.mean())
    return PopularityBias(
        mean_recommended_popularity=float(recommended.mean()),
        mean_history_popularity=mean_history,
        popularity_ratio=float(recommended.mean() / mean_history) if mean_history > 0 else math.nan,
        gini_exposure=metrics.gini_coefficient(exposure),
        longtail_share=float(np.mean(~np.isin(listed, head))),
        n_head_items=len(head),
        coverage=metrics.catalogue_coverage(listed, n_items=n_items),
    )


def head_items(popularity: np.ndarray, *, share: float = HEAD_SHARE) -> np.ndarray:
    """Indices of the most popular items that together make ``share`` of all interactions.

    The smallest such set, taken in order of decreasing count (ties to the lower index); every other
    item is the long tail (Abdollahpouri, Burke & Mobasher, "Controlling Popularity Bias in
    Learning-to-Rank Recommendation", RecSys 2017, use the same 80/20 cut).
    """
    counts = np.asarray(popularity, dtype=np.float64)
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order])
    n_head = int(np.searchsorted(cumulative, share * cumulative[-1] - 1e-9)) + 1
    return np.sort(order[:n_head])


def read_user_attributes(store: EventStore) -> dict[str, dict[str, Any]]:
    """User id -> attribute object from the store's ``users`` table (empty when it holds none)."""
    out: dict[str, dict[str, Any]] = {}
    for user_id, attributes in store.rows("SELECT user_id, attributes FROM users"):
        if attributes is None:
            continue
        value = json.loads(attributes) if isinstance(attributes, str) else attributes
        if isinstance(value, dict):
            out[str(user_id)] = value
    return out


def plot_group_quality(
    reports: AuditReport | Sequence[AuditReport], path: str | Path, *, metric: str | None = None
) -> Path:
    """Save a PNG of ``metric`` (default NDCG@K) per group with its interval, one panel per grouping.

    Several reports (e.g. one per model, audited on the same users) share the panels, one colour each.
    Groups too small to compare are drawn faded; the dashed line is each model's mean over all users.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [reports] if isinstance(reports, AuditReport) else list(reports)
    if not reports:
        raise ValueError("plot_group_quality needs at least one report")
    first = reports[0]
    metric = metric or f"ndcg@{first.protocol['audit_k']}"
    attributes = list(first.groups)
    heights = [max(1.4, (0.16 + 0.1 * len(reports)) * len(first.groups[a].groups) + 0.8) for a in attributes]
    fig, axes = plt.subplots(
        len(attributes), 1, figsize=(7.5, sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    colours = plt.get_cmap("tab10").colors
    for ax, attribute in zip(axes[:, 0], attributes, strict=True):
        order = [
            g.group for g in sorted(first.groups[attribute].groups, key=lambda g: g.metrics[metric].estimate)
        ]
        sizes = {g.group: g.n_users for g in first.groups[attribute].groups}
        for m, report in enumerate(reports):
            gap = report.groups[attribute]
            by_group = {g.group: g.metrics[metric] for g in gap.groups}
            offset = (m - (len(reports) - 1) / 2) * min(0.8 / len(reports), 0.25)
            colour = colours[m % len(colours)]
            for faded in (False, True):
                chosen = [n for n in order if (n in gap.small_groups) == faded]
                if not chosen:
                    continue
                y = np.array([order.index(n) for n in chosen]) + offset
                est = np.array([by_group[n].estimate for n in chosen])
                err = [est - [by_group[n].low for n in chosen], [by_group[n].high for n in chosen] - est]
                ax.errorbar(
                    est,
                    y,
                    xerr=err,
                    fmt="o",
                    ms=3,
                    capsize=2,
                    color=colour,
                    alpha=0.35 if faded else 1.0,
                    label=report.model if not faded and ax is axes[0, 0] else None,
                )
            ax.axvline(report.metrics[metric], color=colour, lw=0.8, ls="--", alpha=0.7)
        ax.set_yticks(np.arange(len(order)), [f"{n} (n={sizes[n]})" for n in order], fontsize=7)
        title = attribute
        if len(reports) == 1 and metric in first.groups[attribute].gap:
            g = first.groups[attribute].gap[metric]
            title += f": gap {g.estimate:.3f} [{g.low:.3f}, {g.high:.3f}], p={first.groups[attribute].p_value[metric]:.3f}"
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    if len(reports) > 1:
        axes[0, 0].legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel(
        f"{metric} per group, {first.protocol['confidence']:.0%} bootstrap interval (faded: < "
        f"{first.protocol['min_group_users']} users; dashed: all users)",
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Settings:
    k: int
    n_resamples: int
    confidence: float
    seed: int
    min_group_users: int


@dataclass(frozen=True)
class _Evaluation:
    users: np.ndarray
    values: dict[str, np.ndarray]
    summary: dict[str, float]
    protocol: dict[str, Any]
    top_items: np.ndarray
    popularity_lift: tuple[np.ndarray, np.ndarray]


def _evaluate(
    model: Recommender, *, history: Interactions, targets: Interactions, settings: _Settings, split_name: str
) -> _Evaluation:
    k = settings.k
    result = evaluate_ranking(
        model, history=history, targets=targets, ks=(k,), split_name=split_name, per_user=True
    )
    assert result.users is not None and result.per_user is not None
    values = {f"ndcg@{k}": result.per_user[f"ndcg@{k}"], f"hr@{k}": result.per_user[f"hr@{k}"]}
    # The lists users would be shown: top-K after masking everything in their history.
    top = model.recommend(result.users, k=k, history=history, exclude_seen=True)
    top_items = np.where(np.isfinite(top.scores), top.items, -1)
    lift = _user_popularity(
        top_items, users=result.users, history=history, popularity=history.item_counts().astype(np.float64)
    )
    return _Evaluation(
        users=result.users,
        values=values,
        summary={
            **{n: float(v.mean()) for n, v in values.items()},
            f"coverage@{k}": result.metrics[f"coverage@{k}"],
        },
        protocol={**result.protocol, "audit_k": k},
        top_items=top_items,
        popularity_lift=lift,
    )


def _user_popularity(
    top_items: np.ndarray, *, users: np.ndarray, history: Interactions, popularity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per user: mean popularity of the recommended items, and of the events in the user's history."""
    listed = top_items >= 0
    recommended = np.where(listed, popularity[np.where(listed, top_items, 0)], 0.0).sum(axis=1)
    recommended = recommended / np.maximum(listed.sum(axis=1), 1)
    per_user_sum = np.bincount(
        history.event_users(), weights=popularity[history.items], minlength=history.n_users
    )
    consumed = per_user_sum[users] / np.maximum(history.lengths()[users], 1)
    return recommended, consumed


def _check_attributes(user_attributes: Mapping[str, Mapping[str, Any]] | None, names: list[str]) -> None:
    if not user_attributes:
        raise ValueError(
            f"groups {names} need user attributes, but there are none (the store's users table is "
            "empty); use --groups activity, or ingest a user file"
        )
    present = set().union(*(a.keys() for a in user_attributes.values()))
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(
            f"no user has attribute(s) {missing}; the user attributes are {sorted(present)} (and activity)"
        )


def _age_band(value: Any) -> str:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return UNKNOWN
    if not math.isfinite(age) or age < 0:
        return UNKNOWN
    return next(label for upper, label in AGE_BANDS if age < upper)


def _activity_labels(lengths: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    low_cut, high_cut = np.quantile(lengths, [1 / 3, 2 / 3], method="lower")
    tertile = np.where(lengths <= low_cut, 0, np.where(lengths <= high_cut, 1, 2))
    names = []
    for t in range(3):
        inside = lengths[tertile == t]
        names.append(f"{t + 1}/3 ({inside.min()}-{inside.max()} events)" if len(inside) else f"{t + 1}/3")
    return np.array([names[t] for t in tertile], dtype=object)


def _bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_resamples, n_metrics]`` means of ``values`` (``[n, n_metrics]``) over resampled rows."""
    n = len(values)
    out = np.empty((n_resamples, values.shape[1]))
    # Blocks keep the index array at about a million entries whatever the group size.
    block = max(1, 1_000_000 // max(n, 1))
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def _permutation_spreads(
    matrix: np.ndarray,
    *,
    codes: np.ndarray,
    compared: np.ndarray,
    n_permutations: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[n_permutations, n_metrics]`` max-minus-min group means after shuffling the users' groups.

    Kept rather than ``scipy.stats.permutation_test``: that runs the same test at the same speed (46 vs 49 ms
    for 1,000 permutations of 943 users in 3 groups) but, from the same seed, draws a different null
    distribution, so switching would change every published p-value without improving any."""
    keep = np.isin(codes, compared)
    values, group = matrix[keep], codes[keep]
    remap = np.full(codes.max() + 1, -1)
    remap[compared] = np.arange(len(compared))
    group = remap[group]
    sizes = np.bincount(group, minlength=len(compared)).astype(np.float64)
    n_metrics = values.shape[1]
    out = np.empty((n_permutations, n_metrics))
    offsets = np.arange(n_metrics)
    for p in range(n_permutations):
        shuffled = rng.permutation(group)
        sums = np.bincount(
            (shuffled[:, None] * n_metrics + offsets).ravel(),
            weights=values.ravel(),
            minlength=len(compared) * n_metrics,
        ).reshape(len(compared), n_metrics)
        means = sums / sizes[:, None]
        out[p] = means.max(axis=0) - means.min(axis=0)
    return out


def _interval(estimate: float, resampled: np.ndarray, alpha: float) -> Interval:
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return Interval(estimate=float(estimate), low=float(low), high=float(high))


def _stable_hash(text: str) -> int:
    # Python's hash() of a str changes between processes; the seed of a grouping must not.
    return zlib.crc32(text.encode("utf-8"))
