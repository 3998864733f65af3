"""The state of one ingest run, shared by the readers, validation and the commit step.

Owns :class:`IngestRun` (the store, source, config, staged table names, temporary tables and per-step
timings of one run), :class:`IngestError` (a source that cannot be ingested at all) and
:data:`MAX_RAW_CHARS`. Every other ``ingest_*`` module builds on it; it imports none of them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from behaviorlm.config import IngestConfig
from behaviorlm.data.store import EventStore

MAX_RAW_CHARS = 1_000
"""Quarantined rows keep at most this many characters of their raw text (enough to diagnose)."""


class IngestError(ValueError):
    """The source cannot be ingested at all (missing, empty, unreadable header, bad mapping)."""


@dataclass
class IngestRun:
    """State shared by a reader and the commit step of one ingest run."""

    store: EventStore
    path: Path
    config: IngestConfig
    source: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    warnings: list[str] = field(default_factory=list)
    items_sql: str | None = None
    """Optional ``SELECT item_id, title, category, brand, attributes, text`` over ``{stage}`` rows."""
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    """Steps run inside the commit transaction after the events (items, users, knowledge graph)."""
    items_upserted: int = 0
    users_upserted: int = 0
    extra_columns: list[str] = field(default_factory=list)
    """Stage columns beyond the event fields that ``items_sql`` reads (carried through validation)."""
    raw_columns: list[str] = field(default_factory=lambda: ["_raw"])
    """Stage columns from which ``raw_sql`` rebuilds a quarantined row's raw text."""
    raw_sql: str = "_raw"
    after_scan: Callable[[str], None] | None = None
    """Called with the validated table's name once the (lazy) stage has been scanned."""
    check_nul: bool = False
    """Whether validation looks for NUL characters (only when the source has any: it costs a pass)."""
    temp_tables: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the block's wall time to ``timings[step]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    @property
    def stage(self) -> str:
        """Staged rows: ``_row``, ``_ord``, canonical fields as VARCHAR, and ``raw_columns``."""
        return f"_stage_{self.tag}"

    @property
    def rejects(self) -> str:
        """Rows rejected before validation: ``_row``, ``reason``, ``raw``."""
        return f"_rejects_{self.tag}"

    def temp(self, name: str) -> str:
        table = f"_{name}_{self.tag}"
        self.temp_tables.append(table)
        return table

    def register(self, name: str, table: pa.Table) -> str:
        full = f"_{name}_{self.tag}"
        self.store.register(full, table)
        self.registered.append(full)
        return full

    def cleanup(self) -> None:
        for name in [*self.temp_tables, self.stage, self.rejects]:
            kind = self.store.scalar(
                "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
            )
            if kind is not None:
                self.store.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} {name}")
        for name in self.registered:
            self.store.unregister(name)
