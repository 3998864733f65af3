"""Train / validation / test splits, k-core filtering and sessionization of :class:`Interactions`.

Every split returns a :class:`Split` whose five parts share one index space (the same ``user_ids`` /
``item_ids`` arrays), so a model fitted on ``train`` scores ``valid`` and ``test`` targets without
re-mapping, and every split states its protocol (the parameters and what was dropped, counted) in
``Split.protocol`` so evaluation reports can quote it.

Two protocols are provided:

* :func:`leave_one_out` — per user, the last event is the test target and the second-last the validation
  target (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018; Sun et al., "BERT4Rec",
  CIKM 2019).
* :func:`temporal_split` — one global pair of cut times for all users, so no training event happens after
  a target event ("global temporal split"; Meng, McCreadie, Macdonald & Ounis, "Exploring Data Splitting
  Strategies for the Evaluation of Recommendation Models", RecSys 2020).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from behaviorlm.data.sequences import Interactions

__all__ = [
    "Split",
    "auto_validation_users",
    "k_core",
    "leave_one_out",
    "sessionize",
    "temporal_split",
    "temporal_split_by_quantile",
]


@dataclass(frozen=True, eq=False)
class Split:
    """A train / validation / test split of one :class:`Interactions`.

    Attributes:
        train: the events models are fitted on.
        valid: validation targets; the history they are predicted from is ``train``.
        test: test targets; the history they are predicted from is ``test_history``.
        test_history: the history used when ranking ``test`` targets — the training events plus the
            validation-period events (for :func:`leave_one_out` every event but the test targets: exactly
            ``train`` + ``valid`` unless ``validation_users`` moved some validation events into ``train``).
        protocol: JSON-serializable description of the split: ``{"split": <name>, <parameters>,
            <counts of evaluated / dropped users and events>}``.

    All five parts share the same ``user_ids`` / ``item_ids`` arrays (one index space).
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    test_history: Interactions
    protocol: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = {"valid": self.valid, "test": self.test, "test_history": self.test_history}
        for name, part in parts.items():
            if not _same_array(part.user_ids, self.train.user_ids):
                raise ValueError(
                    f"Split.{name} has different user_ids from Split.train (index space differs)"
                )
            if not _same_array(part.item_ids, self.train.item_ids):
                raise ValueError(
                    f"Split.{name} has different item_ids from Split.train (index space differs)"
                )


# ---------------------------------------------------------------------------------------------- splits
def leave_one_out(
    interactions: Interactions,
    *,
    min_events: int = 3,
    validation_users: int | str | None = None,
    seed: int = 0,
) -> Split:
    """Leave-one-out split (the SASRec / BERT4Rec protocol).

    For every user with at least ``min_events`` events, in the container's chronological order (ties
    already broken by it): the last event is the test target, the second-last the validation target,
    and all earlier events are training events. Users with fewer than ``min_events`` events keep all of
    their events in ``train`` and have no targets. ``test_history`` is every event but the test targets.

    ``validation_users`` says whose validation targets are held out:

    * ``None`` (the default): every evaluated user's -- ``test_history`` is exactly ``train`` + ``valid``;
    * an int ``n``: a random sample of ``n`` evaluated users (``seed``); every other user's second-last
      event is a training event, so a model also learns each of those users' latest transition before
      the test target. Test targets and ``test_history`` do not change;
    * ``"auto"``: :func:`auto_validation_users` of the evaluated users (10%, at least 2,000: all of them
      on small sets, where nothing changes).

    ``protocol`` holds ``split="leave-one-out"``, ``min_events``, ``n_users_evaluated`` (users with
    targets), ``n_users_train_only`` (users with 1 to ``min_events - 1`` events, kept in train only),
    ``validation_users`` (how many users have a validation target; with a sample, also
    ``validation_users_rule``, ``validation_seed`` and ``n_valid_events_in_train``) and the event counts
    of each part.

    Raises:
        ValueError: if ``min_events < 3`` (a held-out user needs a training, a validation and a test
            event), or ``validation_users`` is not None, "auto" or a positive int.
    """
    if min_events < 3:
        raise ValueError(
            f"min_events must be >= 3 (one training, one validation and one test event), got {min_events}"
        )
    rule = validation_users
    is_count = isinstance(rule, int) and not isinstance(rule, bool) and rule > 0
    if not (rule is None or rule == "auto" or is_count):
        raise ValueError(f"validation_users must be None, 'auto' or a positive int, got {validation_users!r}")
    lengths = interactions.lengths()
    evaluated = lengths >= min_events
    last = interactions.user_ptr[1:][evaluated] - 1
    test_mask = np.zeros(interactions.n_events, dtype=bool)
    test_mask[last] = True
    n_targets = int(evaluated.sum())
    held = last - 1  # every evaluated user's validation event
    sample: dict[str, Any] = {}
    if rule is None:
        n_held = n_targets
    else:
        n_held = min(n_targets, auto_validation_users(n_targets) if rule == "auto" else int(rule))
    if n_held < n_targets:
        rng = np.random.default_rng(seed)
        held = np.sort(rng.choice(held, size=n_held, replace=False))
        sample = {
            "validation_users_rule": str(rule),
            "validation_seed": int(seed),
            "n_valid_events_in_train": n_targets - n_held,
        }
    valid_mask = np.zeros(interactions.n_events, dtype=bool)
    valid_mask[held] = True
    train_mask = ~(test_mask | valid_mask)
    protocol = {
        "split": "leave-one-out",
        "min_events": int(min_events),
        "n_users_evaluated": n_targets,
        "n_users_train_only": int(((lengths > 0) & ~evaluated).sum()),
        "validation_users": n_held,
        **sample,
        "n_train_events": int(train_mask.sum()),
        "n_valid_targets": n_held,
        "n_test_targets": n_targets,
    }
    return Split(
        train=interactions.filter_events(train_mask),
        valid=interactions.filter_events(valid_mask),
        test=interactions.filter_events(test_mask),
        test_history=interactions.filter_events(~test_mask),
        protocol=protocol,
    )


AUTO_VALIDATION_SHARE = 0.1
AUTO_VALIDATION_MIN_USERS = 2_000


def auto_validation_users(n_users: int) -> int:
    """How many users keep a validation target under ``validation_users="auto"``: 10% of ``n_users``, at
    least 2,000 (or all of them when there are fewer).

    Early stopping needs a validation score steady enough to pick an epoch, which a couple of thousand
    users give (S3-Rec Beauty: 2,236 of 22,363 users); every other user's validation event is worth more
    as training data. On S3-Rec Beauty that moved test NDCG@10 from 0.0542 to 0.0625 (IDs only), on Amazon Beauty
    from 0.0338 to 0.0379 (docs/transformer.md, "Validation on a sample of users").
    """
    return min(n_users, max(AUTO_VALIDATION_MIN_USERS, round(AUTO_VALIDATION_SHARE * n_users)))


def temporal_split(
    interactions: Interactions,
    *,
    valid_start: int,
    test_start: int,
    exclude_history_items: bool = False,
) -> Split:
    """Global temporal split at two cut times (UTC seconds), the same for every user.

    With ``t`` an event's timestamp:

    * ``train`` = events with ``t < valid_start``;
    * ``valid`` = events with ``valid_start <= t < test_start``, predicted from ``train``;
    * ``test`` = events with ``t >= test_start``, predicted from ``test_history``;
    * ``test_history`` = all events with ``t < test_start`` (training and validation-period events,
      including validation-period events that were dropped as targets below — they still happened).

    Cold-start users — those whose history for a target window is empty (no ``train`` events for
    ``valid``, no ``test_history`` events for ``test``) — have their targets dropped from that window;
    the dropped users and events are counted in ``protocol`` (``n_cold_users_valid``,
    ``n_cold_events_valid``, ``n_cold_users_test``, ``n_cold_events_test``). With
    ``exclude_history_items`` a target event whose item already occurs in that user's history for the
    window is dropped too (counted as ``n_history_item_events_valid`` / ``_test``); repeats of an item
    inside one target window are kept.

    Raises:
        ValueError: if ``valid_start > test_start``.
    """
    valid_start = int(valid_start)
    test_start = int(test_start)
    if valid_start > test_start:
        raise ValueError(f"valid_start ({valid_start}) must be <= test_start ({test_start})")
    ts = interactions.timestamps
    users = interactions.event_users()
    train_mask = ts < valid_start
    history_mask = ts < test_start
    valid_mask, valid_counts = _target_mask(
        interactions,
        users,
        window=history_mask & ~train_mask,
        history=train_mask,
        exclude_history_items=exclude_history_items,
    )
    test_mask, test_counts = _target_mask(
        interactions,
        users,
        window=~history_mask,
        history=history_mask,
        exclude_history_items=exclude_history_items,
    )
    protocol: dict[str, Any] = {
        "split": "temporal",
        "time_unit": "UTC seconds",
        "valid_start": valid_start,
        "test_start": test_start,
        "exclude_history_items": bool(exclude_history_items),
        "n_train_events": int(train_mask.sum()),
        "n_valid_targets": int(valid_mask.sum()),
        "n_test_targets": int(test_mask.sum()),
        "n_users_valid": int(np.unique(users[valid_mask]).size),
        "n_users_test": int(np.unique(users[test_mask]).size),
    }
    protocol.update({f"{key}_valid": value for key, value in valid_counts.items()})
    protocol.update({f"{key}_test": value for key, value in test_counts.items()})
    return Split(
        train=interactions.filter_events(train_mask),
        valid=interactions.filter_events(valid_mask),
        test=interactions.filter_events(test_mask),
        test_history=interactions.filter_events(history_mask),
        protocol=protocol,
    )


def temporal_split_by_quantile(
    interactions: Interactions,
    *,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    exclude_history_items: bool = False,
) -> Split:
    """Global temporal split whose cut times are event-time quantiles.

    With the ``n`` event timestamps sorted ascending as ``s[0..n-1]``, ``n_test = round(test_fraction *
    n)`` and ``n_valid = round(valid_fraction * n)``: ``test_start = s[n - n_test]`` and
    ``valid_start = s[n - n_test - n_valid]`` (a cut past the last event is ``s[n-1] + 1``). Events
    sharing the cut timestamp all fall on the later side, so a window may receive slightly more than its
    fraction. The split itself is :func:`temporal_split` with these cuts; ``protocol`` also records
    ``valid_fraction`` and ``test_fraction``.

    Raises:
        ValueError: if a fraction is outside ``[0, 1)``, they sum to 1 or more, or there are no events.
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"valid_fraction + test_fraction must be < 1 (something must remain for training), "
            f"got {valid_fraction} + {test_fraction}"
        )
    n = interactions.n_events
    if n == 0:
        raise ValueError("interactions has no events, so there are no event-time quantiles")
    sorted_ts = np.sort(interactions.timestamps)
    n_test = round(test_fraction * n)
    n_valid = round(valid_fraction * n)

    def cut(n_after: int) -> int:
        return int(sorted_ts[n - n_after]) if n_after > 0 else int(sorted_ts[-1]) + 1

    split = temporal_split(
        interactions,
        valid_start=cut(n_test + n_valid),
        test_start=cut(n_test),
        exclude_history_items=exclude_history_items,
    )
    protocol = {
        **split.protocol,
        "valid_fraction": float(valid_fraction),
        "test_fraction": float(test_fraction),
    }
    return Split(
        train=split.train,
        valid=split.valid,
        test=split.test,
        test_history=split.test_history,
        protocol=protocol,
    )


# ---------------------------------------------------------------------------------------------- filtering
def k_core(interactions: Interactions, *, user_k: int = 5, item_k: int = 5) -> Interactions:
    """The (``user_k``, ``item_k``)-core: iteratively drop users with fewer than ``user_k`` events and
    items with fewer than ``item_k`` events until every remaining user and item meets its threshold.

    Counts are of events (a repeated user-item pair counts each time). The core is the largest event
    subset meeting both thresholds, so it does not depend on removal order. Returns a NEW
    :class:`Interactions` reindexed to the surviving users and items (dense indices ``0..n-1`` in the
    original index order); their external ids, event order, timestamps and event types are preserved.
    The result may be empty.

    Raises:
        ValueError: if ``user_k < 1`` or ``item_k < 1``.
    """
    for name, value in (("user_k", user_k), ("item_k", item_k)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    users = interactions.event_users()
    items = interactions.items
    keep = np.ones(interactions.n_events, dtype=bool)
    # Each pass removes every event of an under-threshold user or item; the kept set only shrinks, so
    # this stops after at most n_events passes (in practice a handful).
    while True:
        user_counts = np.bincount(users[keep], minlength=interactions.n_users)
        item_counts = np.bincount(items[keep], minlength=interactions.n_items)
        new_keep = keep & (user_counts[users] >= user_k) & (item_counts[items] >= item_k)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return _compact(interactions.filter_events(keep))


# ---------------------------------------------------------------------------------------------- sessions
def sessionize(interactions: Interactions, *, gap_seconds: int = 1800) -> np.ndarray:
    """Session index of every event, ``int64 [n_events]``.

    A new session starts at each user's first event and at every event more than ``gap_seconds`` after
    that user's previous event (a gap of exactly ``gap_seconds`` stays in the session). Session indices
    are global (unique across users), start at 0 and are non-decreasing in the container's event order.
    The 30-minute default is the usual web-analytics inactivity timeout.

    Raises:
        ValueError: if ``gap_seconds < 0``.
    """
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    n = interactions.n_events
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[1:] = np.diff(interactions.timestamps) > gap_seconds
        first = interactions.user_ptr[:-1][interactions.lengths() > 0]
        starts[first] = True
    return np.cumsum(starts, dtype=np.int64) - 1


# ---------------------------------------------------------------------------------------------- helpers
def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))


def _target_mask(
    interactions: Interactions,
    users: np.ndarray,
    *,
    window: np.ndarray,
    history: np.ndarray,
    exclude_history_items: bool,
) -> tuple[np.ndarray, dict[str, int]]:
    """Targets of one window: its events minus cold-start users' (and optionally history items)."""
    has_history = np.bincount(users[history], minlength=interactions.n_users) > 0
    cold = window & ~has_history[users]
    targets = window & ~cold
    counts = {
        "n_cold_users": int(np.unique(users[cold]).size),
        "n_cold_events": int(cold.sum()),
    }
    if exclude_history_items:
        # One int64 key per (user, item) pair; n_users * n_items stays far below 2**63.
        keys = users * interactions.n_items + interactions.items
        seen = np.isin(keys, np.unique(keys[history]))
        repeat = targets & seen
        targets &= ~repeat
        counts["n_history_item_events"] = int(repeat.sum())
    return targets, counts


def _compact(interactions: Interactions) -> Interactions:
    """Drop users and items without events, reindexing densely and keeping their external ids."""
    kept_users = np.flatnonzero(interactions.lengths() > 0)
    kept_items = np.flatnonzero(interactions.item_counts() > 0)
    new_item_index = np.full(interactions.n_items, -1, dtype=np.int64)
    new_item_index[kept_items] = np.arange(len(kept_items), dtype=np.int64)
    # Dropped users have empty slices, so the kept users' end pointers are unchanged.
    user_ptr = np.concatenate(([0], interactions.user_ptr[1:][kept_users])).astype(np.int64)
    return Interactions(
        user_ids=interactions.user_ids[kept_users],
        item_ids=interactions.item_ids[kept_items],
        user_ptr=user_ptr,
        items=new_item_index[interactions.items],
        timestamps=interactions.timestamps,
        event_types=interactions.event_types,
        event_type_vocab=interactions.event_type_vocab,
    )
