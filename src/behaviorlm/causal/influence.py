"""Per-user influence: which past events made a sequence model predict what it predicts.

For a user with history ``x = (e_1, ..., e_n)`` (only the model's last ``max_len`` events are read) and a
target item ``y`` (by default the model's top-1 next item), the influence of event ``e_i`` is

    influence_i = log p(y | x) - log p(y | x without e_i)

with ``log p`` the log-softmax of the model's scores over the whole catalogue. This is counterfactual
*deletion* (occlusion) attribution: Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", ECCV 2014 (occlusion); Li, Monroe & Jurafsky, "Understanding Neural Networks through
Representation Erasure", 2016 (erasing input tokens). Removing an event removes its item, type and
timestamp together; the gap buckets of the events after it are recomputed, and an older event that the
deletion lets into the ``max_len`` window enters it -- exactly what the model would read had the event
never happened. All single-event deletions of a history are scored as one batch of left-padded
sequences.

:func:`gradient_influence` is the one-backward-pass approximation for long histories: gradient x input
on each position's summed input embedding ``x_t`` (item + position + event type + time gap), taken
against the input of an empty slot and averaged along the path to it (Simonyan, Vedaldi & Zisserman,
"Deep Inside Convolutional Networks", 2013; Shrikumar et al., "Not Just a Black Box", 2016;
Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017).

:func:`deletion_curve` measures how faithful an ordering of events is: remove the first 1, 2, ..., k
events of the ordering and follow the target's log-probability; the faster it falls, the more the
ordering put the events the model really used first (the deletion metric of Petsiuk, Das & Saenko,
"RISE", BMVC 2018; "comprehensiveness" in DeYoung et al., "ERASER", ACL 2020).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import ScoringBatch, mask_seen_
from behaviorlm.models.sequential import SequenceTensors, SequentialRecommender

__all__ = [
    "DELETION_ORDERS",
    "DeletionCurve",
    "Influence",
    "deletion_curve",
    "deletion_influence",
    "gradient_influence",
]

DELETION_ORDERS = ("greedy", "influence", "gradient", "random", "recency")
"""Orders :func:`deletion_curve` can remove events in."""


@dataclass(frozen=True, eq=False)
class Influence:
    """The influence of each event in a user's window on the log-probability of one target item.

    Arrays have one entry per event the model reads (the user's last ``max_len`` events), oldest first.

    Attributes:
        method: ``"deletion"`` (exact counterfactual) or ``"gradient_x_input"`` (approximation).
        user: user index in the history; ``user_id`` its external id.
        positions: position of each event in the user's whole history (0 = oldest).
        event_indices: flat index of each event in the history's arrays.
        item_indices / item_ids: item index and external id of each event.
        event_types: event type name of each event.
        timestamps: event time (UTC seconds).
        values: the influence, in nats of the target's log-probability; positive = the event supports
            the prediction (removing it lowers the target's probability).
        target_item / target_item_id: the explained item (index and external id).
        base_log_prob: ``log p(target | full history)``.
    """

    method: str
    user: int
    user_id: str
    positions: np.ndarray
    event_indices: np.ndarray
    item_indices: np.ndarray
    item_ids: np.ndarray
    event_types: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    target_item: int
    target_item_id: str
    base_log_prob: float

    def top(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` events that support the target most, as plain JSON-ready facts, strongest first.

        Each fact: ``event_index`` (position in the user's history, 0 = oldest), ``events_ago`` (1 = the
        latest event), ``item_id``, ``event_type``, ``timestamp`` (UTC seconds), ``time`` (ISO 8601,
        UTC) and ``effect`` (the influence in nats; for deletion, how much ``log p(target)`` falls
        without the event).
        """
        n_history = int(self.positions[-1]) + 1 if len(self.positions) else 0
        order = np.argsort(-self.values, kind="stable")[: max(0, k)]
        return [
            {
                "event_index": int(self.positions[i]),
                "events_ago": n_history - int(self.positions[i]),
                "item_id": str(self.item_ids[i]),
                "event_type": str(self.event_types[i]),
                "timestamp": int(self.timestamps[i]),
                "time": datetime.fromtimestamp(int(self.timestamps[i]), tz=UTC).isoformat(),
                "effect": float(self.values[i]),
            }
            for i in order
        ]


# ---------------------------------------------------------------------------------------------- public API
def deletion_influence(
    model: SequentialRecommender,
    history: Interactions,
    user: int,
    *,
    target_item: int | None = None,
    exclude_seen: bool = True,
    batch_size: int = 512,
) -> Influence:
    """Exact leave-one-event-out influence of each of ``user``'s window events on ``target_item``.

    ``influence_i = log p(target | history) - log p(target | history without event i)`` (deletion /
    occlusion; see the module docstring). ``target_item`` is an item index; by default it is the model's
    top-1 next item for the full history (seen items excluded when ``exclude_seen``, as in
    :meth:`~behaviorlm.models.base.Recommender.recommend`). The full history and every single-event
    deletion are scored together as one batch of ``window + 1`` left-padded sequences (split into
    ``batch_size`` rows only for very long windows).
    """
    _check_model(model, history)
    user = _check_user(history, user)
    windows = _Windows.build(history, np.array([user]), max_len=model.max_len, extra=1)
    width = windows.index.shape[1]
    candidates = np.flatnonzero(windows.candidate[0])
    keep = np.repeat(windows.index[:1] >= 0, 1 + len(candidates), axis=0)
    keep[1 + np.arange(len(candidates)), candidates] = False
    index = np.broadcast_to(windows.index[:1], (len(keep), width))
    scores = _score_rows(model, history, index, keep, batch_size=batch_size)
    target = _resolve_targets(model, history, np.array([user]), scores[:1], target_item, exclude_seen)[0]
    log_probs, _ = _log_prob_and_rank(scores, np.full(len(scores), target))
    return _influence(
        history,
        user,
        method="deletion",
        event_indices=windows.index[0, candidates],
        values=log_probs[0] - log_probs[1:],
        target=int(target),
        base_log_prob=float(log_probs[0]),
    )


def gradient_influence(
    model: SequentialRecommender,
    history: Interactions,
    user: int,
    *,
    target_item: int | None = None,
    exclude_seen: bool = True,
    steps: int = 8,
    batch_size: int = 512,
) -> Influence:
    """Gradient x input influence of each of ``user``'s window events on ``target_item``, for long histories.

    ``influence_t = (x_t - r_t) · mean_k g_t(r + (k / steps)(x - r))`` for ``k = 1..steps``, where ``x_t``
    is the summed input embedding of position ``t``, ``r_t`` the encoder's input for an empty slot (the
    position embedding alone in the Transformer, zeros in GRU4Rec) and ``g_t(z) = d log p(target) / d z_t``.
    ``steps=1`` is gradient x input against that reference (Shrikumar et al., "Not Just a Black Box",
    2016; Simonyan et al. 2013 for input gradients); more steps average the gradient along the straight
    path from the reference, i.e. integrated gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution
    for Deep Networks", ICML 2017). The path points are one batch: one forward and one backward pass
    however long the history, where :func:`deletion_influence` scores one sequence per event.

    Why a reference and a path: plain gradient x input (``x_t · d log p / d x_t``) is almost zero for
    every event but the latest in a pre-norm Transformer, because the LayerNorm that reads ``x_t`` is
    scale-invariant (``LN(a x) = LN(x)``, so the derivative along ``x_t`` vanishes). On the planted
    cart data (tests/causal) it ranked the causing event first for 89% (1 layer) and 43% (2 layers) of
    users, against 100% and 90% with the reference and 8 steps. It stays an estimate: it moves an
    event's embedding to an empty slot instead of removing the event, so the shift of positions and
    gaps that a real deletion causes is not seen. Target as in :func:`deletion_influence`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _check_model(model, history)
    user = _check_user(history, user)
    users = np.array([user])
    windows = _Windows.build(history, users, max_len=model.max_len, extra=0)
    scores = None
    if target_item is None:
        scores = _score_rows(model, history, windows.index, windows.index >= 0, batch_size=1)
    target = _resolve_targets(model, history, users, scores, target_item, exclude_seen)
    values, base = _path_gradients(model, history, users, target, steps=steps, batch_size=batch_size)
    candidates = np.flatnonzero(windows.candidate[0])
    return _influence(
        history,
        user,
        method="gradient_x_input" if steps == 1 else "integrated_gradients",
        event_indices=windows.index[0, candidates],
        values=values[0, candidates],
        target=int(target[0]),
        base_log_prob=float(base[0]),
    )


@dataclass(frozen=True)
class DeletionCurve:
    """Mean effect of removing the first 1..k events of an ordering on each user's target item.

    Attributes:
        order: the ordering (one of :data:`DELETION_ORDERS`).
        steps: ``k``; the curves have ``k + 1`` entries, entry ``s`` after removing ``s`` events.
        n_users: users averaged; ``skipped_users`` had fewer than ``k + 1`` events in their window.
        log_prob_change: mean ``log p_s(target) - log p_0(target)`` (0 at ``s = 0``; more negative =
            the prediction fell further).
        mean_rank: mean rank of the target among all items (1 = top; full catalogue, nothing masked).
        top1_share: share of users whose target is still ranked first among all items.
    """

    order: str
    steps: int
    n_users: int
    skipped_users: int
    log_prob_change: np.ndarray
    mean_rank: np.ndarray
    top1_share: np.ndarray

    @property
    def auc(self) -> float:
        """Area under ``log_prob_change`` over removed share ``s / k`` in ``[0, 1]`` (trapezoid rule), in
        nats; lower = the ordering found the events the prediction depends on sooner (more faithful)."""
        curve = self.log_prob_change
        return float(((curve[1:] + curve[:-1]) / 2).sum() / self.steps)

    def drop_at(self, removed: int) -> float:
        """Mean fall of the target's log-probability after removing the first ``removed`` events (nats)."""
        return float(-self.log_prob_change[removed])

    def metrics(self) -> dict[str, float]:
        """``deletion_auc`` and, at 1, 5 and 10 removals (those <= k), ``drop_at_*``, ``rank_at_*`` and
        ``top1_share_at_*``."""
        out = {"deletion_auc": self.auc}
        for removed in (1, 5, 10):
            if removed <= self.steps:
                out[f"drop_at_{removed}"] = self.drop_at(removed)
                out[f"rank_at_{removed}"] = float(self.mean_rank[removed])
                out[f"top1_share_at_{removed}"] = float(self.top1_share[removed])
        return out


def deletion_curve(
    model: SequentialRecommender,
    history: Interactions,
    users: np.ndarray,
    *,
    order: str,
    steps: int,
    target_items: np.ndarray | None = None,
    exclude_seen: bool = True,
    seed: int = 0,
    gradient_steps: int = 8,
    batch_size: int = 512,
) -> DeletionCurve:
    """Faithfulness of an event ordering: remove its first ``1..steps`` events, follow the target.

    Orders: ``"greedy"`` (largest deletion influence first, recomputed after every removal),
    ``"influence"`` (largest :func:`deletion_influence` first), ``"gradient"`` (largest
    :func:`gradient_influence` with ``gradient_steps`` first), ``"random"`` (a seeded permutation per
    user) and ``"recency"`` (most recent first). Each user's target is ``target_items[i]`` or, by
    default, the model's top-1 next item for the full history. Removals are cumulative and the history
    is re-read as the model would (later gaps recomputed, older events entering the window). Users with
    fewer than ``steps + 1`` events in their window are skipped (counted in ``skipped_users``). Every
    scoring step is batched over users (deletion metric: Petsiuk et al. 2018; DeYoung et al. 2020).
    """
    if order not in DELETION_ORDERS:
        raise ValueError(f"order must be one of {DELETION_ORDERS}, got {order!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _check_model(model, history)
    users = np.asarray(users, dtype=np.int64)
    if target_items is not None:
        target_items = np.asarray(target_items, dtype=np.int64)
        if target_items.shape != users.shape:
            raise ValueError(f"target_items has {len(target_items)} entries for {len(users)} users")
    for user in users:
        _check_user(history, int(user))
    windows = _Windows.build(history, users, max_len=model.max_len, extra=steps)
    eligible = windows.candidate.sum(1) >= steps + 1
    users, windows = users[eligible], windows.rows(eligible)
    if target_items is not None:
        target_items = target_items[eligible]
    if len(users) == 0:
        raise ValueError(f"no user has {steps + 1} or more events in the model's window of {model.max_len}")
    n_users, width = windows.index.shape
    present = windows.index >= 0
    base_scores = _score_rows(model, history, windows.index, present, batch_size=batch_size)
    targets = _resolve_targets(model, history, users, base_scores, target_items, exclude_seen)
    base_lp, base_rank = _log_prob_and_rank(base_scores, targets)

    if order == "greedy":
        ranked = _greedy_order(model, history, windows, targets, base_lp, steps=steps, batch_size=batch_size)
    else:
        priority = _priorities(
            model,
            history,
            users,
            windows,
            targets,
            base_lp,
            order=order,
            seed=seed,
            gradient_steps=gradient_steps,
            batch_size=batch_size,
        )
        priority = np.where(windows.candidate, priority, -np.inf)
        ranked = np.argsort(-priority, axis=1, kind="stable")[:, :steps]  # columns to remove, in order

    # Row (u, s) keeps user u's events minus the first s + 1 of the ordering: event j goes from row j on.
    keep = np.repeat(present[:, None, :], steps, axis=1)
    rows = np.arange(n_users)[:, None]
    for j in range(steps):
        keep[rows, np.arange(j, steps)[None, :], ranked[:, j : j + 1]] = False
    removed_lp, removed_rank = _row_log_probs(
        model,
        history,
        np.repeat(windows.index, steps, axis=0),
        keep.reshape(-1, width),
        np.repeat(targets, steps),
        batch_size=batch_size,
    )
    change = np.concatenate(
        [np.zeros((n_users, 1)), removed_lp.reshape(n_users, steps) - base_lp[:, None]], axis=1
    )
    rank = np.concatenate([base_rank[:, None], removed_rank.reshape(n_users, steps)], axis=1).astype(
        np.float64
    )
    return DeletionCurve(
        order=order,
        steps=steps,
        n_users=n_users,
        skipped_users=int((~eligible).sum()),
        log_prob_change=change.mean(0),
        mean_rank=rank.mean(0),
        top1_share=(rank == 1).mean(0),
    )


# ---------------------------------------------------------------------------------------------- internals
@dataclass(frozen=True, eq=False)
class _Windows:
    """Per user, the flat indices of the last ``max_len + extra`` events (``[U, C]``, left-padded with -1)
    and which of them are in the model's window (the last ``max_len``): the events whose influence is
    measured. The ``extra`` older events are what a deletion lets slide into the window."""

    index: np.ndarray
    candidate: np.ndarray

    @classmethod
    def build(cls, history: Interactions, users: np.ndarray, *, max_len: int, extra: int) -> _Windows:
        index = history.padded_event_index(users, max_len=max_len + extra)
        candidate = index >= 0
        candidate[:, :extra] = False
        return cls(index=index, candidate=candidate)

    def rows(self, mask: np.ndarray) -> _Windows:
        return _Windows(index=self.index[mask], candidate=self.candidate[mask])


def _check_model(model: SequentialRecommender, history: Interactions) -> None:
    if not isinstance(model, SequentialRecommender):
        raise TypeError(
            f"influence needs a sequence model (SequentialRecommender), got {type(model).__name__}"
        )
    train = model.trained_on
    if history.n_items != train.n_items:
        raise ValueError(f"history has {history.n_items} items, the model {train.n_items}")


def _check_user(history: Interactions, user: int) -> int:
    if not 0 <= user < history.n_users:
        raise ValueError(f"user index {user} is out of range for {history.n_users} users")
    if history.lengths()[user] == 0:
        raise ValueError(f"user {history.user_ids[user]} has no events in the history")
    return int(user)


def _rows_as_interactions(history: Interactions, index: np.ndarray, keep: np.ndarray) -> Interactions:
    """One pseudo-user per row: the kept events of ``index`` (flat event indices, oldest first)."""
    keep = keep & (index >= 0)
    flat = index[keep]  # row-major: each row's events stay in time order
    ptr = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(keep.sum(1), out=ptr[1:])
    return Interactions(
        user_ids=np.arange(len(index)),
        item_ids=history.item_ids,
        user_ptr=ptr,
        items=history.items[flat],
        timestamps=history.timestamps[flat],
        event_types=history.event_types[flat],
        event_type_vocab=history.event_type_vocab,
    )


def _score_rows(
    model: SequentialRecommender,
    history: Interactions,
    index: np.ndarray,
    keep: np.ndarray,
    *,
    batch_size: int,
) -> torch.Tensor:
    """Scores ``[R, n_items]`` of each counterfactual row, through the model's own :meth:`score` (the same
    left padding, time buckets and window as every other prediction)."""
    rows = _rows_as_interactions(history, index, keep)
    out = []
    for start in range(0, len(index), max(1, batch_size)):
        users = np.arange(start, min(start + max(1, batch_size), len(index)))
        out.append(model.score(ScoringBatch(users=users, history=rows)))
    return torch.cat(out)


def _row_log_probs(
    model: SequentialRecommender,
    history: Interactions,
    index: np.ndarray,
    keep: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_log_prob_and_rank` of :func:`_score_rows`, one chunk of rows at a time (the
    ``[rows, n_items]`` scores of every row are never held at once)."""
    rows = _rows_as_interactions(history, index, keep)
    step = max(1, batch_size)
    log_probs, ranks = [], []
    for start in range(0, len(index), step):
        users = np.arange(start, min(start + step, len(index)))
        scores = model.score(ScoringBatch(users=users, history=rows))
        lp, rank = _log_prob_and_rank(scores, targets[users])
        log_probs.append(lp)
        ranks.append(rank)
    return np.concatenate(log_probs), np.concatenate(ranks)


def _resolve_targets(
    model: SequentialRecommender,
    history: Interactions,
    users: np.ndarray,
    base_scores: torch.Tensor | None,
    targets: int | np.ndarray | None,
    exclude_seen: bool,
) -> np.ndarray:
    """The explained item of each user: the given one(s), else the top-1 of the full-history scores."""
    if targets is not None:
        targets = np.atleast_1d(np.asarray(targets, dtype=np.int64))
        bad = targets[(targets < 0) | (targets >= model.n_items)]
        if len(bad):
            raise ValueError(f"target item index {int(bad[0])} is out of range for {model.n_items} items")
        return np.broadcast_to(targets, (len(users),)).copy()
    if base_scores is None:
        raise ValueError("base_scores are needed to choose the top-1 target")
    scores = base_scores.clone()
    if exclude_seen:
        mask_seen_(scores, history.csr_rows(users))
    return torch.topk(scores, 1, dim=1).indices[:, 0].cpu().numpy()


def _log_prob_and_rank(scores: torch.Tensor, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-softmax probability of each row's target over the catalogue, and its rank (1 = top)."""
    rows = torch.arange(len(targets), device=scores.device)
    cols = torch.as_tensor(targets, device=scores.device)
    log_probs = torch.log_softmax(scores.double(), dim=1)[rows, cols]
    ranks = 1 + (scores > scores[rows, cols][:, None]).sum(1)
    return log_probs.cpu().numpy(), ranks.cpu().numpy()


def _path_gradients(
    model: SequentialRecommender,
    history: Interactions,
    users: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient x (input - reference) per position, path-averaged over ``steps`` points (see
    :func:`gradient_influence`): ``[len(users), max_len]`` (0 at padding), and each row's target
    log-probability for the real input.

    The summed input embedding is the tensor each built-in encoder computes and then hands its input
    dropout (``self.drop``) first. A forward hook reads it, and in the attribution pass replaces that
    call's output by the interpolated inputs (a leaf tensor), so ``torch.autograd.grad`` returns
    ``d log p / d x`` without touching the weights' gradients. Dropout is the identity in eval mode.
    The reference is the same hook's reading for an all-padding sequence: the encoder's input for an
    empty slot (a position embedding and nothing else in the Transformer, zeros in GRU4Rec).
    """
    net = model.net_
    drop = getattr(net, "drop", None)
    if not isinstance(drop, nn.Dropout):
        raise TypeError(
            f"gradient influence needs an encoder that applies `self.drop` (nn.Dropout) to its summed input "
            f"embedding; {type(net).__name__} has none"
        )
    device = next(net.parameters()).device
    n_types = len(model.trained_on.event_type_vocab)
    alphas = torch.arange(1, steps + 1, device=device, dtype=torch.float32) / steps
    users_per_batch = max(1, batch_size // steps)
    was_training = net.training
    net.eval()
    values, log_probs = [], []
    try:
        for start in range(0, len(users), users_per_batch):
            chunk = users[start : start + users_per_batch]
            data = SequenceTensors(
                history, chunk, length=model.max_len, n_buckets=model.n_time_buckets, with_targets=False
            )
            items, types, buckets = (t.to(device) for t in (data.items, data.types, data.buckets))
            with torch.no_grad():
                x = _input_embedding(net, drop, items, types, buckets)
                reference = _input_embedding(
                    net,
                    drop,
                    torch.full_like(items, model.n_items),
                    torch.full_like(types, n_types),
                    torch.zeros_like(buckets),
                )
            path = (reference[None] + alphas[:, None, None, None] * (x - reference)[None]).flatten(0, 1)
            path.requires_grad_(True)
            rows = torch.arange(len(path), device=device)
            target = torch.as_tensor(targets[start : start + len(chunk)], device=device).repeat(steps)
            with _replace_input_embedding(drop, path), torch.enable_grad():
                hidden = net(items.repeat(steps, 1), types.repeat(steps, 1), buckets.repeat(steps, 1))
                logits = (hidden[:, -1] @ net.item_table().T).float()
                chosen = torch.log_softmax(logits, dim=1)[rows, target]
                (grad,) = torch.autograd.grad(chosen.sum(), path)
            mean_grad = grad.view(steps, *x.shape).mean(0)
            attribution = (mean_grad * (x - reference)).sum(-1) * (items != model.n_items)
            values.append(attribution.double().cpu().numpy())
            log_probs.append(chosen.detach().view(steps, len(chunk))[-1].double().cpu().numpy())
    finally:
        net.train(was_training)
    return np.concatenate(values), np.concatenate(log_probs)


def _input_embedding(
    net: nn.Module, drop: nn.Module, items: torch.Tensor, types: torch.Tensor, buckets: torch.Tensor
) -> torch.Tensor:
    """The summed input embedding ``[B, L, d]`` the encoder computes for these inputs (its first
    ``drop`` call)."""
    captured: list[torch.Tensor] = []

    def read(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not captured:
            captured.append(output.detach())

    handle = drop.register_forward_hook(read)
    try:
        net(items, types, buckets)
    finally:
        handle.remove()
    return captured[0]


@contextlib.contextmanager
def _replace_input_embedding(drop: nn.Module, replacement: torch.Tensor) -> Iterator[None]:
    """While active, the first ``drop`` output of a forward pass is ``replacement``; later calls (e.g.
    GRU4Rec's output dropout) pass through."""
    done: list[bool] = []

    def replace(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if done:
            return output
        done.append(True)
        return replacement

    handle = drop.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def _priorities(
    model: SequentialRecommender,
    history: Interactions,
    users: np.ndarray,
    windows: _Windows,
    targets: np.ndarray,
    base_log_probs: np.ndarray,
    *,
    order: str,
    seed: int,
    gradient_steps: int,
    batch_size: int,
) -> np.ndarray:
    """``[U, C]`` removal priority of each window event (higher = removed earlier) under ``order``."""
    n_users, width = windows.index.shape
    if order == "recency":
        return np.broadcast_to(np.arange(width, dtype=np.float64), (n_users, width)).copy()
    if order == "random":
        rng = np.random.default_rng(seed)
        return rng.random((n_users, width))
    if order == "gradient":
        values, _ = _path_gradients(
            model, history, users, targets, steps=gradient_steps, batch_size=batch_size
        )
        out = np.zeros((n_users, width))
        out[:, width - model.max_len :] = values  # the gradient covers the last max_len columns
        return out
    # "influence": all single-event deletions of all users, one batch of rows per batch_size.
    present = windows.index >= 0
    user_of_row, column_of_row = np.nonzero(windows.candidate)
    keep = present[user_of_row].copy()
    keep[np.arange(len(keep)), column_of_row] = False
    deleted_lp, _ = _row_log_probs(
        model, history, windows.index[user_of_row], keep, targets[user_of_row], batch_size=batch_size
    )
    out = np.zeros((n_users, width))
    out[user_of_row, column_of_row] = base_log_probs[user_of_row] - deleted_lp
    return out


def _greedy_order(
    model: SequentialRecommender,
    history: Interactions,
    windows: _Windows,
    targets: np.ndarray,
    base_log_probs: np.ndarray,
    *,
    steps: int,
    batch_size: int,
) -> np.ndarray:
    """``[U, steps]`` columns removed one at a time, each the event whose deletion now lowers the
    target's log-probability most (single-event influences recomputed after every removal, so an event
    that takes over the role of a removed one is found next). Costs ``steps`` deletion passes."""
    n_users = len(targets)
    keep_now = windows.index >= 0
    current = base_log_probs.copy()
    ranked = np.zeros((n_users, steps), dtype=np.int64)
    everyone = np.arange(n_users)
    for step in range(steps):
        user_of_row, column_of_row = np.nonzero(windows.candidate & keep_now)
        keep = keep_now[user_of_row].copy()
        keep[np.arange(len(keep)), column_of_row] = False
        deleted_lp, _ = _row_log_probs(
            model, history, windows.index[user_of_row], keep, targets[user_of_row], batch_size=batch_size
        )
        drop = np.full(keep_now.shape, -np.inf)
        drop[user_of_row, column_of_row] = current[user_of_row] - deleted_lp
        pick = drop.argmax(axis=1)
        ranked[:, step] = pick
        chosen = np.full(keep_now.shape, False)
        chosen[user_of_row, column_of_row] = True
        lookup = np.full(keep_now.shape, np.nan)
        lookup[user_of_row, column_of_row] = deleted_lp
        current = lookup[everyone, pick]
        keep_now[everyone, pick] = False
    return ranked


def _influence(
    history: Interactions,
    user: int,
    *,
    method: str,
    event_indices: np.ndarray,
    values: np.ndarray,
    target: int,
    base_log_prob: float,
) -> Influence:
    items = history.items[event_indices]
    return Influence(
        method=method,
        user=user,
        user_id=str(history.user_ids[user]),
        positions=event_indices - history.user_ptr[user],
        event_indices=event_indices,
        item_indices=items,
        item_ids=history.item_ids[items].astype(str),
        event_types=np.asarray(history.event_type_vocab)[history.event_types[event_indices]],
        timestamps=history.timestamps[event_indices],
        values=np.asarray(values, dtype=np.float64),
        target_item=target,
        target_item_id=str(history.item_ids[target]),
        base_log_prob=base_log_prob,
    )
