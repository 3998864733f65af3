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
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


def _arrow_table(data: Any) -> Any:
    """``data`` as a ``pyarrow.Table``: a table as is; record batches, or any object exporting Arrow."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return pa.table(data)
    if type(data).__module__.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(
        f"expected a pyarrow Table or a DataFrame that exports Arrow (polars, pandas), got {type(data).__name__}"
    )


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

    @classmethod
    def from_arrow(
        cls,
        data: Any,
        *,
        user: str = "user_id",
        item: str = "item_id",
        timestamp: str = "timestamp",
        event_type: str | None = "event_type",
        event_type_vocab: tuple[str, ...] | None = None,
    ) -> Interactions:
        """Build from a table of events: a ``pyarrow.Table`` or anything that exports Arrow — a polars or
        pandas DataFrame, a DuckDB relation (the Arrow PyCapsule interface), pyarrow record batches.

        ``user`` / ``item`` / ``timestamp`` / ``event_type`` name the columns. Ids may be strings or
        integers (kept as their text); ``timestamp`` holds integers (UTC seconds) or Arrow timestamps (any
        unit; naive ones are read as UTC); a missing ``event_type`` column (or ``event_type=None``) means
        one type, ``"interaction"``. The vocabulary is the sorted distinct types unless given. A missing
        column, a null, or a column of the wrong type is a ``ValueError`` that names the column (and the
        first bad row). Events of a user keep their order when times tie (row order).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        table = _arrow_table(data)
        names = table.column_names
        wanted = [c for c in (user, item, timestamp) if c not in names]
        if event_type is not None and event_type not in names and event_type != "event_type":
            wanted.append(event_type)
        if wanted:
            raise ValueError(f"columns {wanted} not found; the table has {names}")
        columns = [user, item, timestamp] + ([event_type] if event_type in names else [])
        for name in columns:
            nulls = table.column(name).null_count
            if nulls:
                row = int(pc.index(pc.is_null(table.column(name)), True).as_py())
                raise ValueError(f"column {name!r} has {nulls} null value(s), the first at row {row}")

        def ids(name: str) -> np.ndarray:
            column = table.column(name)
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                if not (pa.types.is_integer(column.type) or pa.types.is_dictionary(column.type)):
                    raise ValueError(f"column {name!r} must hold string or integer ids, not {column.type}")
                column = column.cast(pa.string())
            return column.to_numpy(zero_copy_only=False).astype(str)

        times = table.column(timestamp)
        if pa.types.is_timestamp(times.type):
            # Sub-second parts are cut (the models read whole seconds).
            times = times.cast(pa.timestamp("s", tz=times.type.tz), safe=False).cast(pa.int64())
        elif not pa.types.is_integer(times.type):
            raise ValueError(
                f"column {timestamp!r} must hold integer UTC seconds or timestamps, not {times.type}"
            )
        if event_type in names:
            types = table.column(event_type).cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
            vocab = event_type_vocab or tuple(sorted(set(types.tolist())))
        else:
            types, vocab = None, ("interaction",)
        return cls.from_events(
            user_ids=ids(user),
            item_ids=ids(item),
            timestamps=times.to_numpy().astype(np.int64),
            event_types=types,
            event_type_vocab=vocab,
        )

    @classmethod
    def from_pandas(cls, frame: Any, **columns: Any) -> Interactions:
        """:meth:`from_arrow` for a pandas DataFrame (its index is not read)."""
        import pyarrow as pa

        return cls.from_arrow(pa.Table.from_pandas(frame, preserve_index=False), **columns)

    def to_arrow(self) -> Any:
        """The events as a ``pyarrow.Table`` in user, then time order: ``user_id``, ``item_id`` (strings),
        ``timestamp`` (UTC, seconds), ``event_type`` (strings). :meth:`from_arrow` reads it back to the
        same interactions; ``polars.from_arrow`` and ``.to_pandas()`` give DataFrames."""
        import pyarrow as pa

        users = np.repeat(np.arange(self.n_users), self.lengths())
        return pa.table(
            {
                "user_id": pa.array(self.user_ids.astype(str)[users], pa.string()),
                "item_id": pa.array(self.item_ids.astype(str)[self.items], pa.string()),
                "timestamp": pa.array(self.timestamps, pa.int64()).cast(pa.timestamp("s", tz="UTC")),
                "event_type": pa.array(
                    np.asarray(self.event_type_vocab, dtype=object)[self.event_types], pa.string()
                ),
            }
        )

    def to_pandas(self) -> Any:
        """:meth:`to_arrow` as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

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
