"""Top-K ranking evaluation of a :class:`~behaviorlm.models.base.Recommender`, explicit about its protocol.

:func:`evaluate_ranking` ranks every target item against the **full catalogue** by default (Krichene &
Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020, show that sampled metrics can reverse
model orderings); sampled-negative ranking exists for comparison with older papers and is labelled as
such in every metric key. Ties are broken **pessimistically** — a target ranks below every other item
with the same score — so a model that scores everything equally gets no credit.

Work is done in batches of users on the ``[batch, n_items]`` score tensor with torch ops; no Python
loop runs per user, and memory stays bounded by ``batch_size x n_items``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import behaviorlm.evaluation.metrics as metrics
from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import Recommender, ScoringBatch, mask_seen_
from behaviorlm.training.threads import AdaptiveThreads


@dataclass(frozen=True)
class RankingResult:
    """Mean ranking metrics over the evaluated users, with the protocol that produced them.

    Attributes:
        metrics: metric name -> mean over users, e.g. ``"hr@10"``, ``"ndcg@10"``, ``"recall@10"``,
            ``"coverage@10"``, ``"mrr"``; under sampled ranking every key starts with ``"sampled_"``.
        n_users: number of users evaluated (those with at least one target).
        protocol: ``split``, ``ranking`` (``"full"`` or ``"sampled-<n>"``), ``mask_seen``,
            ``n_candidates`` (items each target is ranked among), ``tie_handling`` (``"pessimistic"``),
            ``ks``, and ``seed`` for sampled ranking.
        eval_seconds: wall-clock time of the evaluation.
        users: with ``evaluate_ranking(per_user=True)``, the evaluated user indices (ascending), else None.
        per_user: with ``per_user=True``, metric name -> ``float64 [n_users]``, one value per entry of
            ``users`` (the values ``metrics`` averages; coverage has none), else None.
    """

    metrics: dict[str, float]
    n_users: int
    protocol: dict[str, Any]
    eval_seconds: float
    users: np.ndarray | None = field(default=None, repr=False)
    per_user: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy of the summary (the per-user arrays are left out)."""
        return {
            "metrics": dict(self.metrics),
            "n_users": self.n_users,
            "protocol": copy.deepcopy(self.protocol),
            "eval_seconds": self.eval_seconds,
        }

    def to_arrow(self, space: Interactions | None = None) -> Any:
        """The per-user values as a ``pyarrow.Table`` (``user`` and one column per metric; with ``space``,
        e.g. the history's interactions, users are their external ids). Needs ``per_user=True``."""
        import pyarrow as pa

        if self.per_user is None or self.users is None:
            raise ValueError("no per-user values: evaluate with evaluate_ranking(..., per_user=True)")
        users = self.users if space is None else space.user_ids[self.users].astype(str)
        return pa.table({"user": users, **{name: values for name, values in self.per_user.items()}})

    def to_pandas(self, space: Interactions | None = None) -> Any:
        """:meth:`to_arrow` as a pandas DataFrame (its column means are :attr:`metrics`)."""
        return self.to_arrow(space).to_pandas()

    def describe(self) -> str:
        """One line stating the protocol and the metrics."""
        p = self.protocol
        ranking = (
            f"full ranking over {p['n_candidates']} items"
            if p["ranking"] == "full"
            else f"SAMPLED ranking ({p['ranking']}: target + {p['n_candidates'] - 1} random unseen items)"
        )
        masking = "seen items masked" if p["mask_seen"] else "seen items not masked"
        values = " ".join(f"{name}={value:.4f}" for name, value in self.metrics.items())
        return (
            f"split={p['split']} | {ranking}, {masking}, {p['tie_handling']} ties | "
            f"{self.n_users} users | {values} | {self.eval_seconds:.1f}s"
        )


def evaluate_ranking(
    model: Recommender,
    *,
    history: Interactions,
    targets: Interactions,
    ks: tuple[int, ...] = (10, 20),
    mask_seen: bool = True,
    batch_size: int = 1024,
    users: np.ndarray | None = None,
    split_name: str = "leave-one-out",
    sampled_negatives: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    per_user: bool = False,
) -> RankingResult:
    """Rank each user's target items with ``model.score`` and report HR, NDCG, Recall @K, MRR and coverage.

    Protocol:

    * Users evaluated: those with at least one event in ``targets`` (intersected with ``users`` when
      given). A user's target items are deduplicated: relevance is binary, each item counts once.
    * The model reads ``history`` (e.g. train, or train + validation) through
      ``ScoringBatch(users=..., history=history)``; it never sees ``targets``.
    * ``mask_seen``: items in the user's ``history`` get score ``-inf`` before ranking, **except the
      user's own target items**, which always stay rankable with the model's score — a repeat purchase
      of a history item is a legitimate target and must not be forced to the bottom.
    * Full ranking (default): target ``t`` of user ``u`` has 0-based rank
      ``#{i : s_ui > s_ut} + #{i != t : s_ui = s_ut}`` over all ``n_items`` items (pessimistic ties;
      other targets of the same user count as items). Metrics are those of
      :mod:`behaviorlm.evaluation.metrics`; ``coverage@K`` is the share of the catalogue appearing in
      any user's top-K list (after masking, ignoring ``-inf`` entries), from ``torch.topk``.
    * Sampled ranking (``sampled_negatives=n``): each target is ranked, with the same pessimistic ties,
      among itself and ``n`` distinct items drawn uniformly from those absent from the user's history
      and targets (seeded by ``seed``; the draw depends on ``batch_size`` too). Keys become
      ``"sampled_hr@10"``, ... and coverage is not reported, as it is a full-ranking quantity. History
      items are never drawn as negatives, so seen items are always excluded (``mask_seen`` is ignored
      and the protocol records ``True``).

    ``progress``, when given, is called after every batch with ``(users_done, users_total)``.
    ``per_user=True`` also returns each evaluated user's metric values (``RankingResult.users`` and
    ``RankingResult.per_user``), e.g. for group comparisons with bootstrap intervals
    (:mod:`behaviorlm.evaluation.audit`).

    Memory is bounded by ``batch_size x n_items`` floats (plus a bool copy of the same shape). The
    score tensor is masked in place, as :meth:`Recommender.recommend` does; a tensor that is a view
    (a broadcast row, a slice of a cached matrix) is copied first, so a model's state is never written.
    """
    started = time.perf_counter()
    _check_index_space(history, targets)
    ks = _check_ks(ks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_items = targets.n_items
    if sampled_negatives is not None:
        if sampled_negatives < 1 or sampled_negatives >= n_items:
            raise ValueError(
                f"sampled_negatives must be in [1, n_items - 1 = {n_items - 1}], got {sampled_negatives}"
            )
        n_candidates = sampled_negatives + 1
    else:
        n_candidates = n_items
    if ks[-1] > n_candidates:
        raise ValueError(f"k={ks[-1]} exceeds the {n_candidates} candidates each target is ranked among")

    eval_users, target_ptr, target_items = _distinct_targets(targets, users)
    order = None
    if sampled_negatives is None and getattr(model, "scores_by_history_length", False):
        # Users in order of history length: a sequence model's batch is cut to its longest window, so
        # batches of similar lengths skip the padding (on Amazon Beauty, median 4 events, random batches
        # of 512 were ~85% padding). The metrics do not depend on the order; per-user values are put back
        # in user order below. (Sampled ranking keeps user order: its negatives are drawn batch by batch.)
        order = np.argsort(history.lengths()[eval_users], kind="stable")
        eval_users, target_ptr, target_items = _reorder_csr(eval_users, target_ptr, target_items, order)
    rng = np.random.default_rng(seed)

    sums: dict[str, float] = {}
    per_user_parts: dict[str, list[np.ndarray]] = {}
    covered = {k: np.zeros(n_items, dtype=bool) for k in ks}
    with torch.inference_mode(), AdaptiveThreads() as threads:
        for start in range(0, len(eval_users), batch_size):
            threads.step()
            stop = min(start + batch_size, len(eval_users))
            batch = ScoringBatch(users=eval_users[start:stop], history=history)
            ptr = target_ptr[start : stop + 1] - target_ptr[start]
            items = target_items[target_ptr[start] : target_ptr[stop]]
            rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(ptr))
            scores = _checked_scores(model, batch, n_items=n_items)
            if sampled_negatives is None:
                ranks = _full_ranks(
                    scores, batch=batch, rows=rows, items=items, ks=ks, mask_seen=mask_seen, covered=covered
                )
            else:
                ranks = _sampled_ranks(
                    scores, batch=batch, rows=rows, items=items, n_negatives=sampled_negatives, rng=rng
                )
            for name, values in _per_user_metrics(ranks, target_ptr=ptr, ks=ks).items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
                if per_user:
                    per_user_parts.setdefault(name, []).append(values)
            if progress is not None:
                progress(stop, len(eval_users))

    n_users = len(eval_users)
    prefix = "" if sampled_negatives is None else "sampled_"
    per_user_values = {f"{prefix}{name}": np.concatenate(parts) for name, parts in per_user_parts.items()}
    if order is not None:
        back = np.argsort(order)
        eval_users = eval_users[back]
        per_user_values = {name: values[back] for name, values in per_user_values.items()}
    result_metrics = {f"{prefix}{name}": total / n_users for name, total in sums.items()}
    if sampled_negatives is None:
        for k in ks:
            result_metrics[f"coverage@{k}"] = metrics.catalogue_coverage(
                np.flatnonzero(covered[k]), n_items=n_items
            )
    protocol: dict[str, Any] = {
        "split": split_name,
        "ranking": "full" if sampled_negatives is None else f"sampled-{sampled_negatives}",
        "mask_seen": mask_seen or sampled_negatives is not None,
        "n_candidates": n_candidates,
        "tie_handling": "pessimistic",
        "ks": list(ks),
    }
    if sampled_negatives is not None:
        protocol["seed"] = seed
    return RankingResult(
        metrics=result_metrics,
        n_users=n_users,
        protocol=protocol,
        eval_seconds=time.perf_counter() - started,
        users=eval_users if per_user else None,
        per_user=per_user_values if per_user else None,
    )


class RankingValidation:
    """A :data:`~behaviorlm.models.base.Validation` for recommenders: ``metric`` of ``targets`` ranked from
    ``history`` under :func:`evaluate_ranking`'s full-ranking protocol (seen items masked).

    ``model.fit(split.train, valid=RankingValidation(split.train, split.valid))`` stops early on validation
    NDCG@10. The caller builds it, so the models package does not import this one (docs/architecture.md).
    With no target events it scores nothing: models fitted with it train without early stopping.
    """

    def __init__(
        self, history: Interactions, targets: Interactions, *, metric: str = "ndcg@10", batch_size: int = 512
    ) -> None:
        _check_index_space(history, targets)
        name, at, k = metric.partition("@")
        ranked = name in ("hr", "ndcg", "recall") and at and k.isdigit() and int(k) >= 1
        if not ranked and metric != "mrr":
            raise ValueError(f"metric must be hr@K, ndcg@K, recall@K (K >= 1) or mrr, got {metric!r}")
        self.history = history
        self.targets = targets
        self.metric = metric
        self.ks = (int(k),) if at else (10,)
        self.batch_size = batch_size

    @property
    def empty(self) -> bool:
        """No target events: nothing to score (models fitted with it do not stop early)."""
        return self.targets.n_events == 0

    def __call__(self, model: Recommender) -> float:
        if self.empty:
            raise ValueError("no validation targets to rank")
        result = evaluate_ranking(
            model,
            history=self.history,
            targets=self.targets,
            ks=self.ks,
            batch_size=self.batch_size,
            split_name="validation",
        )
        return float(result.metrics[self.metric])


def item_popularity_groups(
    item_counts: np.ndarray, *, tail_share: float = 0.8, cold_max_events: int = 2
) -> dict[str, np.ndarray]:
    """Boolean ``[n_items]`` masks of the **long tail** and the **cold** items of a training set.

    ``item_counts`` are training events per item. The head is the ``ceil((1 - tail_share) * n_items)``
    most popular items, widened to every item as popular as the last of them (ties never split);
    the long tail is every other item (the bottom 80% by default, the definition of LLM-ESR, Liu et al.,
    NeurIPS 2024). Cold items have at most ``cold_max_events`` training events (a subset of the tail on
    any catalogue where more than 20% of items are that rare).
    """
    if not 0.0 < tail_share < 1.0:
        raise ValueError(f"tail_share must be in (0, 1), got {tail_share}")
    counts = np.asarray(item_counts)
    n_head = max(1, int(np.ceil((1.0 - tail_share) * len(counts))))
    threshold = np.sort(counts)[::-1][min(n_head, len(counts)) - 1]
    return {"longtail": counts < threshold, "cold": counts <= cold_max_events}


def metrics_by_target_popularity(
    result: RankingResult,
    *,
    targets: Interactions,
    item_counts: np.ndarray,
    tail_share: float = 0.8,
    cold_max_events: int = 2,
    names: tuple[str, ...] = ("ndcg@10", "hr@10"),
) -> dict[str, float]:
    """The mean of ``names`` over users whose target is a long-tail / cold item
    (:func:`item_popularity_groups` of ``item_counts``, the training events per item).

    ``result`` must come from ``evaluate_ranking(..., per_user=True)`` on the same ``targets``. A user
    with several targets belongs to a group when all their targets do. Returns ``longtail_<name>``,
    ``cold_<name>`` (NaN for an empty group) and the group sizes ``longtail_users`` / ``cold_users``.
    """
    if result.per_user is None or result.users is None:
        raise ValueError("metrics_by_target_popularity needs evaluate_ranking(..., per_user=True)")
    if len(item_counts) != targets.n_items:
        raise ValueError(f"item_counts has {len(item_counts)} entries for {targets.n_items} items")
    missing = [name for name in names if name not in result.per_user]
    if missing:
        raise ValueError(f"the ranking result has no per-user {missing}; it has {sorted(result.per_user)}")
    eval_users, ptr, items = _distinct_targets(targets, result.users)
    if not np.array_equal(eval_users, result.users):
        raise ValueError("result was not computed on these targets (its users differ)")
    out: dict[str, float] = {}
    for group, mask in item_popularity_groups(
        item_counts, tail_share=tail_share, cold_max_events=cold_max_events
    ).items():
        # Every target of the user in the group: the minimum over the user's targets of the flag.
        member = np.minimum.reduceat(mask[items].astype(np.int8), ptr[:-1]).astype(bool)
        out[f"{group}_users"] = float(member.sum())
        for name in names:
            values = result.per_user[name][member]
            out[f"{group}_{name}"] = float(values.mean()) if len(values) else float("nan")
    return out


def evaluate_classification(
    y_true: np.ndarray, y_score: np.ndarray, *, threshold: float = 0.5
) -> dict[str, float]:
    """Classification metrics for a propensity / intent task, from :mod:`behaviorlm.evaluation.metrics`.

    Binary (``y_score`` 1-D, the score of class 1): ``accuracy``, ``precision``, ``recall``, ``f1`` at
    ``y_score >= threshold``, threshold-free ``roc_auc`` and ``pr_auc`` (average precision), plus
    ``n_samples``, ``positive_rate`` and ``threshold``. Both classes must be present in ``y_true``.

    Multiclass (``y_score`` 2-D ``[n_samples, n_classes]``, ``y_true`` integer class indices): the
    prediction is the arg-max class; returns ``accuracy``, ``macro_f1`` and ``n_samples``
    (``threshold`` is not used).
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_score.ndim == 2:
        if len(y_true) != len(y_score):
            raise ValueError(
                f"length mismatch: y_true has {len(y_true)} entries, y_score has {len(y_score)} rows"
            )
        if y_true.dtype.kind not in "iu" or (
            y_true.size and (y_true.min() < 0 or y_true.max() >= y_score.shape[1])
        ):
            raise ValueError(f"multiclass y_true must hold class indices in [0, {y_score.shape[1]})")
        y_pred = np.argmax(y_score, axis=1)
        return {
            "accuracy": metrics.accuracy(y_true, y_pred=y_pred),
            "macro_f1": metrics.macro_f1(y_true, y_pred=y_pred),
            "n_samples": float(len(y_true)),
        }
    y_pred = metrics.threshold_scores(y_score, threshold=threshold)
    return {
        "accuracy": metrics.accuracy(y_true, y_pred=y_pred),
        "precision": metrics.precision(y_true, y_pred=y_pred),
        "recall": metrics.recall(y_true, y_pred=y_pred),
        "f1": metrics.f1_score(y_true, y_pred=y_pred),
        "roc_auc": metrics.roc_auc(y_true, y_score=y_score),
        "pr_auc": metrics.average_precision(y_true, y_score=y_score),
        "n_samples": float(len(y_true)),
        "positive_rate": float(np.mean(y_true == 1)),
        "threshold": float(threshold),
    }


# ------------------------------------------------------------------------------------------- internals


def _check_index_space(history: Interactions, targets: Interactions) -> None:
    if history.n_users != targets.n_users or history.n_items != targets.n_items:
        raise ValueError(
            "history and targets must share one index space: history has "
            f"{history.n_users} users x {history.n_items} items, targets {targets.n_users} x {targets.n_items}"
        )
    if not np.array_equal(history.item_ids, targets.item_ids):
        raise ValueError("history and targets index different item ids: build both from one split")


def _check_ks(ks: tuple[int, ...]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty tuple of positive integers, got {ks!r}")
    return tuple(sorted({int(k) for k in ks}))


def _distinct_targets(
    targets: Interactions, users: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluated users and their distinct target items as CSR ``(users, ptr, items)``."""
    keys = np.unique(targets.event_users() * targets.n_items + targets.items)
    key_users = keys // targets.n_items
    if users is not None:
        users = np.unique(np.asarray(users, dtype=np.int64))
        if users.size and (users[0] < 0 or users[-1] >= targets.n_users):
            raise ValueError(
                f"users must be user indices in [0, {targets.n_users}); got {users[0]}..{users[-1]}"
            )
        keys = keys[np.isin(key_users, users)]
        key_users = keys // targets.n_items
    if keys.size == 0:
        raise ValueError("no user to evaluate: no (selected) user has a target event")
    eval_users, counts = np.unique(key_users, return_counts=True)
    ptr = np.zeros(len(eval_users) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return eval_users, ptr, keys % targets.n_items


def _reorder_csr(
    users: np.ndarray, ptr: np.ndarray, items: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR ``(users, ptr, items)`` with its rows taken in ``order``."""
    counts = np.diff(ptr)[order]
    new_ptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_ptr[1:])
    within = np.arange(new_ptr[-1], dtype=np.int64) - np.repeat(new_ptr[:-1], counts)
    return users[order], new_ptr, items[np.repeat(ptr[:-1][order], counts) + within]


def _checked_scores(model: Recommender, batch: ScoringBatch, *, n_items: int) -> torch.Tensor:
    scores = model.score(batch)
    expected = (len(batch.users), n_items)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != expected:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(
            f"{type(model).__name__}.score returned {shape}; expected a tensor of shape {expected}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"{type(model).__name__}.score returned dtype {scores.dtype}; expected float32")
    # The evaluator masks in place; a view (e.g. a broadcast popularity row, or a slice of a cached
    # matrix) must not be written through, so only a tensor that owns exactly its storage is reused.
    owns_storage = (
        scores._base is None and scores.untyped_storage().nbytes() == scores.numel() * scores.element_size()
    )
    if not (scores.is_contiguous() and owns_storage):
        scores = scores.contiguous().clone()
    return scores


def _target_scores(
    scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, model_rows: int
) -> torch.Tensor:
    target_scores = scores[rows, items]
    if torch.isnan(target_scores).any():
        bad = int(rows[torch.isnan(target_scores)][0])
        raise ValueError(f"the model scored a target item NaN (batch row {bad} of {model_rows})")
    return target_scores


def _full_ranks(
    scores: torch.Tensor,
    *,
    batch: ScoringBatch,
    rows: np.ndarray,
    items: np.ndarray,
    ks: tuple[int, ...],
    mask_seen: bool,
    covered: dict[int, np.ndarray],
) -> np.ndarray:
    """0-based pessimistic rank of each target in its row of ``scores``; marks top-K items in ``covered``.

    A target's rank is ``#{items scoring >= it} - 1``. One full pass over the batch counts that for each
    user's best-scored target, which gives the exact minimum rank (MRR). Every other target is ranked
    from the row's top ``K_max + 1`` scores: if the ``(K_max + 1)``-th score is below the target's, all
    items scoring at least as high are among them and the count is exact; otherwise its rank is at
    least ``K_max`` and at least the best target's, and that lower bound is what it gets — it changes
    no metric, since HR/NDCG/Recall@K only look at ranks below ``K <= K_max`` and MRR at the minimum.
    So several targets per user cost no more than one, instead of one full pass each.
    """
    n_rows, n_items = scores.shape
    k_max = ks[-1]
    rows_t = torch.from_numpy(rows).to(scores.device)
    items_t = torch.from_numpy(items).to(scores.device)
    target_scores = _target_scores(scores, rows_t, items_t, n_rows)
    if mask_seen:
        mask_seen_(scores, batch.history_csr)
    top = torch.topk(scores, min(k_max + 1, n_items), dim=1, sorted=True)
    # topk sorts NaN above every number, so a NaN anywhere in a row shows up here.
    if torch.isnan(top.values[:, 0]).any():
        bad = int(torch.isnan(top.values[:, 0]).nonzero()[0, 0])
        raise ValueError(f"the model scored items NaN for user {int(batch.users[bad])}")
    top_items = top.indices[:, :k_max].cpu().numpy()
    listed = (top.values[:, :k_max] > -torch.inf).cpu().numpy()  # fewer than K unseen items: no padding
    for k in ks:
        covered[k][top_items[:, :k][listed[:, :k]]] = True
    if mask_seen:
        masked_targets = scores[rows_t, items_t] != target_scores
        if masked_targets.any():
            # Targets that are also in the history were just masked: put their scores back and
            # recompute the top scores, which the ranks below read.
            scores[rows_t, items_t] = target_scores
            top = torch.topk(scores, min(k_max + 1, n_items), dim=1, sorted=True)

    best_scores = torch.full((n_rows,), torch.inf, dtype=scores.dtype, device=scores.device).scatter_reduce_(
        0, rows_t, target_scores, reduce="amax", include_self=False
    )
    best_ranks = (scores >= best_scores[:, None]).sum(dim=1) - 1
    count_in_top = (top.values[rows_t] >= target_scores[:, None]).sum(dim=1)
    n_top = top.values.shape[1]
    exact = (count_in_top < n_top) | (n_top == n_items)
    lower_bound = torch.clamp(best_ranks[rows_t], min=k_max)
    ranks = torch.where(exact, count_in_top - 1, lower_bound)
    ranks = torch.where(target_scores == best_scores[rows_t], best_ranks[rows_t], ranks)
    return ranks.cpu().numpy()


def _sampled_ranks(
    scores: torch.Tensor,
    *,
    batch: ScoringBatch,
    rows: np.ndarray,
    items: np.ndarray,
    n_negatives: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pessimistic 0-based rank of each target among itself and ``n_negatives`` sampled unseen items."""
    scores = scores.cpu()
    n_items = scores.shape[1]
    rows_t = torch.from_numpy(rows)
    target_scores = _target_scores(scores, rows_t, torch.from_numpy(items), len(batch.users))
    csr = batch.history_csr
    history_rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    excluded = np.unique(np.r_[history_rows * n_items + csr.indices.astype(np.int64), rows * n_items + items])
    n_allowed = n_items - np.bincount(excluded // n_items, minlength=csr.shape[0])
    if np.any(n_allowed[rows] < n_negatives):
        bad = int(rows[np.flatnonzero(n_allowed[rows] < n_negatives)[0]])
        raise ValueError(
            f"user {int(batch.users[bad])} has only {int(n_allowed[bad])} items outside its history and "
            f"targets, fewer than sampled_negatives={n_negatives}"
        )
    negatives = _draw_negatives(rng, rows=rows, excluded=excluded, n_items=n_items, n_negatives=n_negatives)
    ranks = np.empty(len(items), dtype=np.int64)
    chunk = max(1, (len(batch.users) * n_items) // n_negatives)
    for lo in range(0, len(items), chunk):
        hi = min(lo + chunk, len(items))
        neg_scores = scores[rows_t[lo:hi, None], torch.from_numpy(negatives[lo:hi])]
        if torch.isnan(neg_scores).any():
            bad = int(rows[lo + int(torch.isnan(neg_scores).any(dim=1).nonzero()[0, 0])])
            raise ValueError(f"the model scored items NaN for user {int(batch.users[bad])}")
        ranks[lo:hi] = (neg_scores >= target_scores[lo:hi, None]).sum(dim=1).numpy()
    return ranks


def _draw_negatives(
    rng: np.random.Generator, *, rows: np.ndarray, excluded: np.ndarray, n_items: int, n_negatives: int
) -> np.ndarray:
    """``[len(rows), n_negatives]`` distinct items per target, none in its row's sorted ``excluded`` keys.

    Rejection sampling: redraw every slot that hits an excluded item or repeats an earlier slot of the
    same target, until none does; callers have checked that enough items are allowed.
    """
    draws = rng.integers(0, n_items, size=(len(rows), n_negatives), dtype=np.int64)
    redraw = np.ones_like(draws, dtype=bool)
    while True:
        keys = rows[:, None] * n_items + draws
        pos = np.clip(np.searchsorted(excluded, keys), 0, max(len(excluded) - 1, 0))
        bad = excluded[pos] == keys if len(excluded) else np.zeros_like(redraw)
        order = np.argsort(draws, axis=1, kind="stable")
        sorted_draws = np.take_along_axis(draws, order, axis=1)
        repeat = np.zeros_like(bad)
        np.put_along_axis(
            repeat,
            order,
            np.c_[np.zeros(len(rows), dtype=bool), sorted_draws[:, 1:] == sorted_draws[:, :-1]],
            axis=1,
        )
        redraw = bad | repeat
        n_redraw = int(redraw.sum())
        if n_redraw == 0:
            return draws
        draws[redraw] = rng.integers(0, n_items, size=n_redraw, dtype=np.int64)


def _per_user_metrics(
    ranks: np.ndarray, *, target_ptr: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"hr@{k}"] = metrics.hit_rate_at_k(ranks, k=k, target_ptr=target_ptr)
        out[f"ndcg@{k}"] = metrics.ndcg_at_k(ranks, k=k, target_ptr=target_ptr)
        out[f"recall@{k}"] = metrics.recall_at_k(ranks, k=k, target_ptr=target_ptr)
    out["mrr"] = metrics.reciprocal_rank(ranks, target_ptr=target_ptr)
    return out
