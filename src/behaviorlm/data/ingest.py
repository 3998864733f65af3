"""Ingest raw behaviour logs into the event store: validate every row, quarantine bad ones, dedup.

Every ingest run reconciles: ``rows_read == stored + quarantined + duplicates``. A row is *read* when the
parser delimits it as a record (blank lines are not rows); it is then either stored, quarantined with a
reason, or counted as a duplicate of an event already stored or earlier in the same file. Re-ingesting a
file is idempotent: its events come back as duplicates and its quarantined rows are not added twice.

The pipeline is the same for every format: a *reader* stages the source as text columns named after the
canonical event fields (plus the source row number); :func:`_commit` then validates all rows in one
vectorised SQL pass, pseudonymizes user ids (keyed HMAC-SHA256, the raw id is never stored), derives
event ids and sessions, and writes events, quarantine rows and the ingest log in one transaction.

This module is the entry point (:func:`ingest_file`, :func:`ingest_records`, :class:`IngestSummary`)
and the commit step. The steps it runs live beside it: ``ingest_run`` (the state of one run,
:class:`IngestError`), ``ingest_readers`` (one reader per format), ``ingest_delimited`` (CSV/TSV
header, record layout and staging), ``ingest_validation`` (the row checks and their quarantine
reasons) and ``pseudonyms``. Their public helpers are re-exported here, so callers keep one import.

``source_row`` is the 1-based line number of the record in its file, counting the header as line 1 (a
record whose quoted field spans several lines is numbered by its first line), or the line where a JSON
object starts.

Broken files end in one clear :class:`IngestError` line or in quarantined rows, never in a traceback: a
quote that never closes, or that would make one record of lines that cannot be one (wrong column count,
a line break in an id, type, time or value column, a quoted field over the text limit), quarantines its
own line and the lines after it are read on their own; JSON nested deeper than Python's parser allows
quarantines its line; gzip-compressed text sources are decompressed first.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest_delimited import (
    MAX_COLUMN_NAME_CHARS,
    read_header,
    sniff_delimiter,
    source_columns,
    stage_delimited,
)
from behaviorlm.data.ingest_readers import (
    NESTED_TOO_DEEPLY,
    READERS,
    TAOBAO_COLUMNS,
    TAOBAO_EXTRA,
    is_tianchi_header,
    require_mapping,
    stage_records,
    upsert_items,
)
from behaviorlm.data.ingest_run import MAX_RAW_CHARS, IngestError, IngestRun
from behaviorlm.data.ingest_validation import validate_stage
from behaviorlm.data.pseudonyms import (
    pseudonym,
    pseudonym_key_from,
    pseudonymize_checked,
    pseudonymize_user_id,
)
from behaviorlm.data.schema import EVENT_COLUMNS
from behaviorlm.data.store import EventStore, StoreError, sql_literal

__all__ = [
    "MAX_COLUMN_NAME_CHARS",
    "MAX_RAW_CHARS",
    "NESTED_TOO_DEEPLY",
    "TAOBAO_COLUMNS",
    "TAOBAO_EXTRA",
    "IngestError",
    "IngestSummary",
    "ingest_file",
    "ingest_records",
    "is_tianchi_header",
    "pseudonym",
    "pseudonym_key_from",
    "pseudonymize_user_id",
    "read_header",
    "require_mapping",
    "sniff_delimiter",
    "source_columns",
    "stage_delimited",
]


@dataclass
class IngestSummary:
    """What one ingest run did. ``rows_read == stored + quarantined + duplicates`` always holds."""

    source: str
    format: str
    rows_read: int
    stored: int
    quarantined: int
    duplicates: int
    duplicates_in_file: int
    duplicates_in_store: int
    quarantine_reasons: dict[str, int]
    items_upserted: int = 0
    users_upserted: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Where ``seconds`` went: ``read`` (parse/stage), ``validate``, ``dedup``, ``store`` (the commit)."""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rows_read != self.stored + self.quarantined + self.duplicates:
            raise AssertionError(
                f"ingest of {self.source} does not reconcile: read {self.rows_read} != stored {self.stored}"
                f" + quarantined {self.quarantined} + duplicates {self.duplicates}"
            )

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows_per_second"] = self.rows_per_second
        return out


# ---------------------------------------------------------------------------------------------- entry point
def ingest_file(
    store: EventStore,
    path: str | Path,
    *,
    config: IngestConfig | None = None,
) -> IngestSummary:
    """Ingest one source file (format and column mapping from ``config``) into ``store``."""
    config = config or IngestConfig()
    path = Path(path)
    _check_readable(path)
    started = time.perf_counter()
    reader = READERS[config.format]
    with _decompressed(path, config.format) as readable:
        run = IngestRun(
            store=store, path=readable, config=config, source=config.source_name or str(path.resolve())
        )
        try:
            with run.timed("read"):
                reader(run)
            summary = _commit(run)
        except StoreError as exc:
            raise IngestError(f"{path}: {exc}") from None
        except IngestError as exc:
            if readable == path:
                raise
            # Messages name the file the reader saw; the user knows the compressed one.
            raise IngestError(str(exc).replace(str(readable), str(path))) from None
        finally:
            run.cleanup()
    summary.seconds = time.perf_counter() - started
    store.execute(
        "UPDATE ingest_log SET seconds = ? WHERE rowid = (SELECT max(rowid) FROM ingest_log)",
        [summary.seconds],
    )
    return summary


def ingest_records(
    store: EventStore,
    records: Sequence[Mapping[str, Any]],
    *,
    source: str,
    config: IngestConfig | None = None,
) -> IngestSummary:
    """Ingest in-memory events (dicts keyed by the canonical field names) into ``store``.

    This is the path of events that arrive through the API: the same validation, quarantine,
    pseudonymization and deduplication as :func:`ingest_file`, in one transaction. A record's row
    number (in the summary and the quarantine table) is its 1-based position in ``records``; ``source``
    names the batch and must be unique per batch (quarantined rows are keyed by source and row).
    Re-sending a batch stores nothing twice: events are deduplicated on ``event_id`` (given, or derived
    from the content).
    """
    config = config or IngestConfig(format="jsonl")
    if not records:
        raise IngestError(f"{source}: no events to ingest")
    started = time.perf_counter()
    run = IngestRun(store=store, path=Path(source), config=config, source=source)
    staged = []
    for number, record in enumerate(records, start=1):
        row: dict[str, Any] = {"_row": number, "_raw": json.dumps(record, default=str)[:MAX_RAW_CHARS]}
        for name in EVENT_COLUMNS:
            value = record.get(name)
            row[name] = json.dumps(value) if isinstance(value, dict | list) else value
        staged.append(row)
    try:
        with run.timed("read"):
            stage_records(run, staged, [])
        summary = _commit(run)
    except StoreError as exc:
        raise IngestError(f"{source}: {exc}") from None
    finally:
        run.cleanup()
    summary.seconds = time.perf_counter() - started
    return summary


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if path.is_dir():
        raise IngestError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty (0 bytes): nothing to ingest")


_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_FORMATS = ("csv", "tsv", "jsonl", "taobao", "reviews")
"""Formats read from a gzip file (one source file each; RecBole and sequence files have side files)."""
_NOT_TEXT = {
    b"PK\x03\x04": "a zip archive; extract it first",
    b"BZh": "bzip2-compressed; decompress it first (bunzip2), or compress it with gzip",
    b"\xfd7zXZ\x00": "xz-compressed; decompress it first (unxz), or compress it with gzip",
    b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it first (unzstd), or compress it with gzip",
    b"PAR1": "a Parquet file; ingest it with format 'parquet'",
}


@contextmanager
def _decompressed(path: Path, source_format: str) -> Iterator[Path]:
    """``path`` itself, or for a gzip file (recognised by its magic bytes, whatever its name) a
    decompressed copy in a temporary folder, named like the source without ``.gz`` (so a ``.tsv.gz`` is
    still read as TSV). DuckDB could read gzip itself, but the reader also scans the raw bytes (line
    count, long lines, quotes), and a gzip stream is read on one thread anyway."""
    with path.open("rb") as fh:
        magic = fh.read(6)
    if source_format != "parquet":
        for prefix, what in _NOT_TEXT.items():
            if magic.startswith(prefix):
                raise IngestError(f"{path}: is {what}")
    if not magic.startswith(_GZIP_MAGIC):
        yield path
        return
    if source_format not in _GZIP_FORMATS:
        raise IngestError(
            f"{path}: is gzip-compressed; decompress it first (gzip -d): {source_format} sources are read "
            f"uncompressed (gzip is read directly for {', '.join(_GZIP_FORMATS)})"
        )
    folder = Path(tempfile.mkdtemp(prefix="behaviorlm-gunzip-"))
    try:
        target = folder / (path.name[: -len(".gz")] if path.name.lower().endswith(".gz") else path.name)
        try:
            with gzip.open(path, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
        except (OSError, EOFError, zlib.error) as exc:
            raise IngestError(f"{path}: not a readable gzip file ({exc})") from None
        if target.stat().st_size == 0:
            raise IngestError(f"{path}: gzip file is empty once decompressed: nothing to ingest")
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- commit
def _commit(run: IngestRun) -> IngestSummary:
    """Validate the staged rows, find repeats, and write quarantine rows, events (with sessions), items,
    side tables and the ingest log in one transaction."""
    store, config, source = run.store, run.config, run.source
    with run.timed("validate"):
        checked = validate_stage(run)
        if config.pseudonymize_users:
            pseudonymize_checked(run, checked)
    with run.timed("dedup"):
        n_staged, n_valid = store.rows(f"SELECT count(*), count(event_id) FROM {checked}")[0]
        n_rejected = store.scalar(f"SELECT count(*) FROM {run.rejects}")
        # Positions of the repeats of an event within this source (every occurrence after the first). They
        # are usually few, so candidates are found by grouping 64-bit hashes of the ids (cheaper than grouping
        # the strings), the window runs over candidates only, and the insert drops the repeats with an integer
        # anti-join (a string join or a window over all rows cost 0.5 s more for 5M rows).
        repeats = run.temp("repeats")
        store.execute(
            f"""CREATE OR REPLACE TEMP TABLE {repeats} AS
                SELECT _ord FROM (
                    SELECT _ord, row_number() OVER (PARTITION BY event_id ORDER BY _ord) AS occurrence
                    FROM {checked}
                    WHERE event_id IS NOT NULL AND hash(event_id) IN (
                        SELECT hash(event_id) AS h FROM {checked} WHERE event_id IS NOT NULL
                        GROUP BY h HAVING count(*) > 1))
                WHERE occurrence > 1"""
        )
        dup_in_file = int(store.scalar(f"SELECT count(*) FROM {repeats}"))
    src = sql_literal(source)

    with run.timed("store"), store.transaction():
        store.execute(
            f"""INSERT INTO quarantine (source, source_row, reason, raw)
                SELECT {src}, _row, reason, raw FROM (
                    SELECT _row, reason, {"NULL" if config.pseudonymize_users else "raw"} AS raw FROM {run.rejects}
                    UNION ALL
                    SELECT _row, reason, raw FROM {checked} WHERE reason IS NOT NULL) q
                WHERE NOT EXISTS (
                    SELECT 1 FROM quarantine e WHERE e.source = {src} AND e.source_row = q._row)"""
        )
        seq0 = store.next_ingest_seq()
        before = store.count("events")
        filters = ["reason IS NULL"]
        if before:
            filters.append("event_id NOT IN (SELECT event_id FROM events)")
        if dup_in_file:
            filters.append(f"NOT EXISTS (SELECT 1 FROM {repeats} d WHERE d._ord = c._ord)")
        inner = f"SELECT * FROM {checked} c WHERE {' AND '.join(filters)}"
        session = "session_id"
        gap = config.session_gap_seconds
        if gap is not None:
            # A session starts at a user's first event in this source or after a gap > gap_seconds; its id
            # is "<user>@<start unix seconds>": deterministic and unique without a global counter.
            inner = (
                "SELECT *, lag(timestamp) OVER (PARTITION BY user_id ORDER BY timestamp, _ord) AS prev_ts "
                f"FROM ({inner})"
            )
            session = (
                "coalesce(session_id, user_id || '@' || max(CASE WHEN prev_ts IS NULL OR "
                f"epoch(timestamp) - epoch(prev_ts) > {int(gap)} THEN epoch(timestamp)::BIGINT END) "
                "OVER (PARTITION BY user_id ORDER BY timestamp, _ord ROWS UNBOUNDED PRECEDING)::VARCHAR)"
            )
        with store.unordered_writes():
            store.execute(
                f"""INSERT INTO events
                    SELECT event_id, user_id, item_id, event_type, timestamp, {session}, value, text,
                           {src}, _row, {seq0} + _ord FROM ({inner})"""
            )
        stored = store.count("events") - before
        if run.items_sql is not None:
            ok = f"(SELECT * FROM {checked} WHERE reason IS NULL)"
            run.items_upserted += upsert_items(store, run.items_sql.format(ok=ok))
        for step in run.after_commit:
            step()
        reasons = dict(
            store.rows(
                f"""SELECT regexp_replace(reason, '''[^'']*''', '''…''', 'g') AS kind, count(*) FROM (
                      SELECT reason FROM {run.rejects} UNION ALL SELECT reason FROM {checked} WHERE reason IS NOT NULL)
                    GROUP BY 1 ORDER BY 2 DESC"""
            )
        )
        n_quarantined = n_rejected + (n_staged - n_valid)
        duplicates = n_valid - stored
        summary = IngestSummary(
            source=source,
            format=config.format,
            rows_read=n_staged + n_rejected,
            stored=stored,
            quarantined=n_quarantined,
            duplicates=duplicates,
            duplicates_in_file=dup_in_file,
            duplicates_in_store=duplicates - dup_in_file,
            quarantine_reasons=reasons,
            items_upserted=run.items_upserted,
            users_upserted=run.users_upserted,
            warnings=run.warnings,
        )
        store.execute(
            "INSERT INTO ingest_log (source, format, rows_read, stored, quarantined, duplicates, seconds) "
            "VALUES (?, ?, ?, ?, ?, ?, 0)",
            [source, config.format, summary.rows_read, stored, n_quarantined, duplicates],
        )
    summary.stage_seconds = {step: round(seconds, 4) for step, seconds in run.timings.items()}
    return summary
