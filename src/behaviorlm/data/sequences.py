"""The one place that turns events into per-user behaviour sequences.

:class:`Interactions` is the in-memory form every model, split and evaluator works on: each user's
events in chronological order, stored CSR-style (``user_ptr`` delimits each user's slice of the flat
``items`` / ``timestamps`` / ``event_types`` arrays). Users and items are dense indices ``0..n-1``; the
external ids they stand for are kept in ``user_ids`` / ``item_ids`` so results can be mapped back.

Splits keep the index space: a train split and its test targets index the same users and items, so a
model fitted on one can score the other without any re-mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True, eq=False)
class Interactions:
    """Chronologically ordered interactions grouped by user (CSR layout).

    Attributes:
        user_ids: external id of each user index, shape ``[n_users]``.
        item_ids: external id of each item index, shape ``[n_items]``.
        user_ptr: ``int64 [n_users + 1]``; user ``u``'s events are ``items[user_ptr[u]:user_ptr[u+1]]``.
        items: ``int64 [n_events]`` item index of each event.
        timestamps: ``int64 [n_events]`` event time in UTC seconds.
        event_types: ``int16 [n_events]`` index into ``event_type_vocab``.
        event_type_vocab: names of the event types.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_ptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    event_types: np.ndarray
    event_type_vocab: tuple[str, ...]

    def __post_init__(self) -> None:
        n_events = len(self.items)
        if self.user_ptr.shape != (len(self.user_ids) + 1,):
            raise ValueError("user_ptr must have n_users + 1 entries")
        if self.user_ptr[0] != 0 or self.user_ptr[-1] != n_events:
            raise ValueError("user_ptr must start at 0 and end at the number of events")
        if len(self.timestamps) != n_events or len(self.event_types) != n_events:
            raise ValueError("items, timestamps and event_types must have the same length")
        if n_events and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise ValueError("item index out of range")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_events(
        cls,
        *,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        timestamps: np.ndarray,
        event_types: np.ndarray | None = None,
        event_type_vocab: tuple[str, ...] = ("interaction",),
        order: np.ndarray | None = None,
        user_universe: np.ndarray | None = None,
        item_universe: np.ndarray | None = None,
    ) -> Interactions:
        """Build from flat event arrays (external ids), sorting each user's events by time.

        Ties in ``timestamps`` are broken by ``order`` (e.g. the source row), else by input position, so
        the result is deterministic. ``event_types`` holds type names (strings) or indices into
        ``event_type_vocab``. ``user_universe``/``item_universe`` fix the index space (ids not in them are
        an error); by default it is the sorted distinct ids present.
        """
        user_ids = np.asarray(user_ids)
        item_ids = np.asarray(item_ids)
        n = len(user_ids)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        if len(item_ids) != n or len(timestamps) != n:
            raise ValueError("user_ids, item_ids and timestamps must have the same length")
        users_u, user_idx = _index(user_ids, user_universe, what="user")
        items_u, item_idx = _index(item_ids, item_universe, what="item")
        if event_types is None:
            type_idx = np.zeros(n, dtype=np.int16)
        else:
            event_types = np.asarray(event_types)
            if event_types.dtype.kind in "iu":
                type_idx = event_types.astype(np.int16)
            else:
                lookup = {name: i for i, name in enumerate(event_type_vocab)}
                unknown = set(np.unique(event_types).tolist()) - lookup.keys()
                if unknown:
                    raise ValueError(f"event types {sorted(unknown)} are not in {list(event_type_vocab)}")
                type_idx = np.array([lookup[t] for t in event_types.tolist()], dtype=np.int16)
        tie = np.arange(n) if order is None else np.asarray(order)
        perm = np.lexsort((tie, timestamps, user_idx))
        counts = np.bincount(user_idx, minlength=len(users_u))
        ptr = np.zeros(len(users_u) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return cls(
            user_ids=users_u,
            item_ids=items_u,
            user_ptr=ptr,
            items=item_idx[perm].astype(np.int64),
            timestamps=timestamps[perm],
            event_types=type_idx[perm],
            event_type_vocab=tuple(event_type_vocab),
        )

    # ------------------------------------------------------------------ shape
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        """Number of events of each user, ``int64 [n_users]``."""
        return np.diff(self.user_ptr)

    def event_users(self) -> np.ndarray:
        """User index of each event, ``int64 [n_events]``."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.lengths())

    def history(self, user: int) -> np.ndarray:
        """Item indices of one user's events, oldest first."""
        return self.items[self.user_ptr[user] : self.user_ptr[user + 1]]

    # ------------------------------------------------------------------ derived views
    def filter_events(self, keep: np.ndarray) -> Interactions:
        """Keep the events where the boolean mask ``keep`` is true; the index space is unchanged."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_events,):
            raise ValueError("keep mask must have one entry per event")
        counts = np.bincount(self.event_users()[keep], minlength=self.n_users)
        ptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return Interactions(
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            user_ptr=ptr,
            items=self.items[keep],
            timestamps=self.timestamps[keep],
            event_types=self.event_types[keep],
            event_type_vocab=self.event_type_vocab,
        )

    def to_csr(self, *, binary: bool = True) -> sp.csr_matrix:
        """User x item sparse matrix (float32); counts repeated events unless ``binary``."""
        return self.csr_rows(np.arange(self.n_users), binary=binary)

    def csr_rows(self, users: np.ndarray, *, binary: bool = True) -> sp.csr_matrix:
        """Sparse ``[len(users), n_items]`` matrix of the given users' histories."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.user_ptr[users]
        lengths = self.user_ptr[users + 1] - starts
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # Gather each selected user's contiguous slice without a Python loop.
        offsets = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], lengths)
        cols = self.items[np.repeat(starts, lengths) + offsets]
        data = np.ones(len(cols), dtype=np.float32)
        mat = sp.csr_matrix((data, cols, indptr), shape=(len(users), self.n_items))
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat

    def item_counts(self) -> np.ndarray:
        """Number of events per item, ``int64 [n_items]``."""
        return np.bincount(self.items, minlength=self.n_items)

    def padded_event_index(self, users: np.ndarray, *, max_len: int) -> np.ndarray:
        """``int64 [len(users), max_len]``: the flat event index of each user's last ``max_len`` events,
        left-padded with ``-1`` (the most recent event is in the last column).

        Every left-padded per-event tensor (items, types, timestamps, tags) is a gather through this.
        """
        users = np.asarray(users, dtype=np.int64)
        ends = self.user_ptr[users + 1]
        lengths = np.minimum(ends - self.user_ptr[users], max_len)
        out = np.full((len(users), max_len), -1, dtype=np.int64)
        rows = np.repeat(np.arange(len(users)), lengths)
        pos_from_end = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cols = max_len - np.repeat(lengths, lengths) + pos_from_end
        out[rows, cols] = np.repeat(ends - lengths, lengths) + pos_from_end
        return out

    def padded_sequences(
        self, users: np.ndarray, *, max_len: int, pad_value: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``max_len`` items and event types of each user, left-padded.

        Returns ``(items, event_types)``, both ``int64 [len(users), max_len]``; padding positions hold
        ``pad_value``. Left padding keeps the most recent event in the last column.
        """
        index = self.padded_event_index(users, max_len=max_len)
        return (
            torch.from_numpy(gather_padded(self.items, index, pad_value=pad_value)),
            torch.from_numpy(gather_padded(self.event_types, index, pad_value=pad_value)),
        )


def gather_padded(values: np.ndarray, index: np.ndarray, *, pad_value: int) -> np.ndarray:
    """``int64`` array shaped like ``index``: ``values[index]`` where ``index >= 0``, else ``pad_value``."""
    out = np.full(index.shape, pad_value, dtype=np.int64)
    real = index >= 0
    out[real] = values[index[real]]
    return out


def _index(ids: np.ndarray, universe: np.ndarray | None, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    if universe is None:
        uniq, inverse = np.unique(ids, return_inverse=True)
        return uniq, inverse.astype(np.int64)
    universe = np.asarray(universe)
    order = np.argsort(universe, kind="stable")
    pos = np.searchsorted(universe, ids, sorter=order)
    pos = np.clip(pos, 0, len(universe) - 1)
    found = universe[order[pos]] == ids
    if not np.all(found):
        missing = ids[~found][:5].tolist()
        raise ValueError(f"{what} ids {missing} are not in the given {what} universe")
    return universe, order[pos].astype(np.int64)
