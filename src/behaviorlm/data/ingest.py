"""Ingest raw behaviour logs into the event store: validate every row, quarantine bad ones, dedup.

Every ingest run reconciles: ``rows_read == stored + quarantined + duplicates``. A row is *read* when the
parser delimits it as a record (blank lines are not rows); it is then either stored, quarantined with a
reason, or counted as a duplicate of an event already stored or earlier in the same file. Re-ingesting a
file is idempotent: its events come back as duplicates and its quarantined rows are not added twice.

The pipeline is the same for every format: a *reader* stages the source as text columns named after the
canonical event fields (plus the source row number); :func:`_commit` then validates all rows in one
vectorised SQL pass, pseudonymizes user ids (keyed HMAC-SHA256, the raw id is never stored), derives
event ids and sessions, and writes events, quarantine rows and the ingest log in one transaction.

``source_row`` is the 1-based line number of the record in its file, counting the header as line 1 (a
quoted field spanning several lines counts as one line), or the object number for JSON sources.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import mmap
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from behaviorlm.config import IngestConfig
from behaviorlm.data.schema import EVENT_COLUMNS
from behaviorlm.data.store import EventStore, StoreError, sql_literal

MAX_RAW_CHARS = 1_000
"""Quarantined rows keep at most this many characters of their raw text (enough to diagnose)."""


class IngestError(ValueError):
    """The source cannot be ingested at all (missing, empty, unreadable header, bad mapping)."""


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
    reader = _READERS[config.format]
    run = _Run(store=store, path=path, config=config, source=config.source_name or str(path.resolve()))
    try:
        with run.timed("read"):
            reader(run)
        summary = _commit(run)
    except StoreError as exc:
        raise IngestError(f"{path}: {exc}") from None
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
    run = _Run(store=store, path=Path(source), config=config, source=source)
    staged = []
    for number, record in enumerate(records, start=1):
        row: dict[str, Any] = {"_row": number, "_raw": json.dumps(record, default=str)[:MAX_RAW_CHARS]}
        for name in EVENT_COLUMNS:
            value = record.get(name)
            row[name] = json.dumps(value) if isinstance(value, dict | list) else value
        staged.append(row)
    try:
        with run.timed("read"):
            _stage_records(run, staged, [])
        summary = _commit(run)
    except StoreError as exc:
        raise IngestError(f"{source}: {exc}") from None
    finally:
        run.cleanup()
    summary.seconds = time.perf_counter() - started
    return summary


def pseudonymize_user_id(raw_id: str, *, config: IngestConfig) -> str:
    """The id under which ``raw_id`` is stored: its keyed pseudonym when ``config.pseudonymize_users``,
    else ``raw_id`` itself. Lets a service look up a user by the id its caller knows."""
    if not config.pseudonymize_users:
        return raw_id
    return _pseudonym(_pseudonym_key_from(config), raw_id)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if path.is_dir():
        raise IngestError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty (0 bytes): nothing to ingest")


# ---------------------------------------------------------------------------------------------- run state
@dataclass
class _Run:
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


def _create_empty_rejects(run: _Run) -> None:
    run.store.execute(
        f"CREATE OR REPLACE TEMP TABLE {run.rejects} (_row BIGINT, reason VARCHAR, raw VARCHAR)"
    )


# ---------------------------------------------------------------------------------------------- delimited text
def _read_header(path: Path, delimiter: str) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline(1 << 20)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: line 1 is not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
        ) from None
    fields = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    fields = [f.strip() for f in fields]
    if not fields or all(not f for f in fields):
        raise IngestError(f"{path}: line 1 is blank; expected a header row or data")
    return fields


def _sniff_delimiter(path: Path, config: IngestConfig) -> str:
    if config.delimiter:
        return config.delimiter
    if config.format == "tsv" or path.suffix.lower() in (
        ".tsv",
        ".tab",
        ".inter",
        ".item",
        ".user",
        ".kg",
        ".link",
    ):
        return "\t"
    return ","


_DEFAULT_MAX_LINE = 1 << 21


def _has_line_longer_than(path: Path, limit: int) -> bool:
    """Whether any line of the file (without its line break) is longer than ``limit`` bytes.

    Jumps from line start to the last line break within ``limit`` bytes, so it touches about one page
    per ``limit`` bytes of file instead of reading it all.
    """
    size = path.stat().st_size
    if size <= limit:
        return False
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start = 0
        while size - start > limit:
            newline = mm.rfind(b"\n", start, start + limit + 1)
            if newline < 0:
                return True
            start = newline + 1
    return False


def _count_lines(path: Path) -> int:
    """Physical line count (a last line without a line break counts), in one chunked pass at memory speed."""
    n_lines, last = 0, b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            n_lines += chunk.count(b"\n")
            last = chunk[-1:]
    return n_lines + (last != b"\n")


def _blank_lines(path: Path) -> list[int]:
    """The 1-based numbers of empty lines (``\\n`` or ``\\r\\n`` alone)."""
    with path.open("rb") as fh:
        return [number for number, line in enumerate(fh, start=1) if line in (b"\n", b"\r\n")]


def source_columns(path: Path, *, delimiter: str, header: bool, wanted: dict[str, str]) -> list[str]:
    """The file's column names (``column0``.. without a header), checked: no repeated name, and every
    source column of ``wanted`` (canonical field -> source column) present."""
    first = _read_header(path, delimiter)
    columns = first if header else [f"column{i}" for i in range(len(first))]
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise IngestError(f"{path}: header repeats column name(s) {dupes}")
    for canonical, source_col in wanted.items():
        if source_col not in columns:
            raise IngestError(
                f"{path}: column {source_col!r} (mapped to {canonical!r}) is not in the file; columns are {columns}"
            )
    return columns


def stage_delimited(
    run: _Run,
    *,
    mapping: dict[str, str],
    delimiter: str,
    header: bool,
    extra_columns: dict[str, str] | None = None,
) -> list[str]:
    """Stage a CSV/TSV file for DuckDB's parallel reader; structurally bad lines become rejects.

    The parser's records are materialized as they are (all text); the stage is a view over them, so
    validation and typing happen in one parallel pass when the commit step materializes it. ``mapping``
    maps canonical fields to source column names; ``extra_columns`` maps additional stage columns (e.g.
    ``item_category``) to source columns. Returns the source columns.
    """
    path, store = run.path, run.store
    wanted = {**mapping, **(extra_columns or {})}
    columns = source_columns(path, delimiter=delimiter, header=header, wanted=wanted)
    col_types = "{" + ", ".join(f"{sql_literal(c)}: 'VARCHAR'" for c in columns) + "}"
    rej_table, rej_scan = f"_rej_{run.tag}", f"_rejscan_{run.tag}"
    run.temp_tables += [rej_table, rej_scan]
    # Lines longer than max_line_size vanish without a reject record, so a file with a line over 2 MiB
    # is read with lines as long as the file (capped at 1 GiB); oversized *fields* are then quarantined
    # by the field-size checks. The large setting is not the default because it also sizes the reader's
    # buffers, which halves the parallel scan's speed (0.5 s -> 1.0 s for 5M Taobao rows on 2 cores).
    # The default also stays above twice the text limit, so that a quoted text within the limit that
    # spans lines (which the probe below cannot see) is never cut off by the line limit.
    max_line = max(_DEFAULT_MAX_LINE, 2 * run.config.max_text_bytes)
    if _has_line_longer_than(path, max_line - 2):
        max_line = max(max_line, min(path.stat().st_size + 1024, 1 << 30))
    reader = (
        f"read_csv({sql_literal(str(path))}, columns = {col_types}, header = {str(header).lower()}, "
        f"delim = {sql_literal(delimiter)}, quote = '\"', escape = '\"', auto_detect = false, "
        f"ignore_errors = true, store_rejects = true, rejects_table = {sql_literal(rej_table)}, "
        f"rejects_scan = {sql_literal(rej_scan)}, max_line_size = {max_line}, null_padding = false)"
    )
    select = [f"{_quote_ident(src)} AS {name}" for name, src in wanted.items()]
    missing = [f"NULL::VARCHAR AS {name}" for name in EVENT_COLUMNS if name not in wanted]
    # The raw line is rebuilt only for quarantined rows: the stage passes the source columns through
    # (as _src0, _src1, ...) and validation joins them when a row has a reason.
    passthrough = [f"{_quote_ident(c)} AS _src{i}" for i, c in enumerate(columns)]
    run.raw_columns = [f"_src{i}" for i in range(len(columns))]
    run.raw_sql = (
        f"concat_ws({sql_literal(delimiter)}, "
        + ", ".join(f"coalesce({c}, '')" for c in run.raw_columns)
        + ")"
    )
    h = int(header)
    # The parsed records are materialized first and numbered by their rowid (insertion order, which
    # DuckDB preserves for a parallel CSV scan). Numbering the scan itself with row_number() OVER ()
    # made every later step -- validation, event ids -- run on one thread: 3.1 s instead of 1.8 s for
    # 5M Taobao rows on 2 cores.
    parsed = run.temp("parsed")
    store.execute(f"CREATE OR REPLACE TEMP TABLE {parsed} AS SELECT * FROM {reader}")
    store.execute(
        f"""CREATE OR REPLACE TEMP VIEW {run.stage} AS
            SELECT {", ".join(select + missing + passthrough)},
                   rowid + 1 AS _ord, rowid + 1 + {h} AS _row
            FROM {parsed}"""
    )
    run.extra_columns = list(extra_columns or {})

    def after_scan(checked: str) -> None:
        # Structural rejects: one row per bad line, however many errors the parser reported on it.
        store.execute(
            f"""CREATE OR REPLACE TEMP TABLE {run.rejects} AS
                SELECT line AS _row,
                       CASE
                         WHEN bool_or(error_type = 'INVALID ENCODING') THEN 'invalid UTF-8 encoding'
                         WHEN bool_or(error_type IN ('MISSING COLUMNS', 'TOO MANY COLUMNS')) THEN
                           'wrong column count: expected {len(columns)}, found ' ||
                           (len(string_split(any_value(csv_line), {sql_literal(delimiter)})))::VARCHAR
                         WHEN bool_or(error_type = 'LINE SIZE OVER MAXIMUM') THEN 'line longer than {max_line} bytes'
                         ELSE 'unparseable line: ' || any_value(error_message)
                       END AS reason,
                       left(any_value(csv_line), {MAX_RAW_CHARS}) AS raw
                FROM {rej_table} GROUP BY line"""
        )
        n_staged = store.scalar(f"SELECT count(*) FROM {checked}")
        n_rejected = store.scalar(f"SELECT count(*) FROM {run.rejects}")
        if n_staged + n_rejected == 0:
            what = "a header but no data rows" if header else "no data rows"
            raise IngestError(f"{path}: file has {what}")
        # The parser skips empty lines but counts them in its line numbers, so they must be known to
        # map records to lines. Only a file whose records and rejects do not add up to its line count
        # can have any, and only such a file is read line by line.
        n_lines = _count_lines(path)
        blanks = _blank_lines(path) if n_lines - h != n_staged + n_rejected else []
        _fix_source_rows(run, checked, header=header, blanks=blanks)
        expected = n_lines - h - len(blanks)
        if expected != n_staged + n_rejected:
            run.warnings.append(
                f"the parser delimited {n_staged + n_rejected} records but the file has {expected} non-blank "
                "data lines (quoted fields spanning lines, or lines the parser could not delimit)"
            )

    run.after_scan = after_scan
    return columns


def _fix_source_rows(run: _Run, checked: str, *, header: bool, blanks: list[int]) -> None:
    """Map each accepted record's ordinal to its line number, skipping rejected and blank lines.

    The k-th accepted record sits on line ``h + k + j`` where ``h`` is the header line count and ``j`` the
    number of skipped lines before it. For the i-th skipped line ``s_i`` (sorted, 1-based ``i``),
    ``a_i = s_i - h - i`` accepted records precede it, so ``j = #{i : a_i < k}`` -- an as-of join. With
    nothing skipped (the common case) the line is simply ``h + k`` and nothing needs fixing.
    """
    store, h = run.store, int(header)
    skipped = run.temp("skipped")
    store.execute(f"CREATE OR REPLACE TEMP TABLE {skipped} AS SELECT _row AS s FROM {run.rejects}")
    if blanks:
        blank_table = run.register("blanks", pa.table({"s": pa.array(blanks, type=pa.int64())}))
        store.execute(f"INSERT INTO {skipped} SELECT s FROM {blank_table} WHERE s > {h}")
    if store.scalar(f"SELECT count(*) FROM {skipped}") == 0:
        return
    offsets = run.temp("offsets")
    store.execute(
        f"""CREATE OR REPLACE TEMP TABLE {offsets} AS
            SELECT a, max(i) AS j FROM (
                SELECT s - {h} - row_number() OVER (ORDER BY s) AS a, row_number() OVER (ORDER BY s) AS i
                FROM {skipped}) GROUP BY a"""
    )
    store.execute(
        f"""UPDATE {checked} SET _row = m._row FROM (
                SELECT c._ord, c._ord + {h} + coalesce(o.j, 0) AS _row
                FROM {checked} c ASOF LEFT JOIN {offsets} o ON c._ord > o.a) m
            WHERE {checked}._ord = m._ord"""
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_csv_source(run: _Run) -> None:
    config = run.config
    delimiter = _sniff_delimiter(run.path, config)
    mapping = dict(config.columns)
    require_mapping(run.path, run.config, mapping)
    stage_delimited(run, mapping=mapping, delimiter=delimiter, header=config.header)


def require_mapping(path: Path, config: IngestConfig, mapping: dict[str, str]) -> None:
    """Every required event field has a source column (``event_type`` may be a constant instead)."""
    needed = ["user_id", "item_id", "timestamp"] + ([] if config.event_type else ["event_type"])
    absent = [f for f in needed if f not in mapping]
    if absent:
        raise IngestError(
            f"{path}: no source column mapped to {absent}; pass columns={{field: source_column}}"
            + (" or a constant event_type" if "event_type" in absent else "")
        )


# ---------------------------------------------------------------------------------------------- parquet
def _read_parquet_source(run: _Run) -> None:
    store, path, mapping = run.store, run.path, dict(run.config.columns)
    require_mapping(run.path, run.config, mapping)
    src = f"read_parquet({sql_literal(str(path))}, file_row_number = true)"
    try:
        columns = [r[0] for r in store.rows(f"DESCRIBE SELECT * FROM {src}")]
    except Exception as exc:  # duckdb raises its own error types; name the file instead
        raise IngestError(f"{path}: not a readable Parquet file ({exc})") from None
    for canonical, source_col in mapping.items():
        if source_col not in columns:
            raise IngestError(
                f"{path}: column {source_col!r} (mapped to {canonical!r}) is not in the file; columns are {columns}"
            )
    select = [f"{_quote_ident(src_col)}::VARCHAR AS {name}" for name, src_col in mapping.items()]
    missing = [f"NULL::VARCHAR AS {name}" for name in EVENT_COLUMNS if name not in mapping]
    raw = (
        "to_json(struct_pack("
        + ", ".join(f"{_quote_ident(c)} := {_quote_ident(c)}" for c in columns if c != "file_row_number")
        + "))::VARCHAR"
    )
    store.execute(
        f"""CREATE OR REPLACE TEMP TABLE {run.stage} AS
            SELECT {", ".join(select + missing)}, {raw} AS _raw,
                   file_row_number + 1 AS _row, file_row_number + 1 AS _ord
            FROM {src}"""
    )
    _create_empty_rejects(run)
    if store.scalar(f"SELECT count(*) FROM {run.stage}") == 0:
        raise IngestError(f"{path}: Parquet file has no rows")


# ---------------------------------------------------------------------------------------------- python-parsed
def _stage_records(run: _Run, records: list[dict[str, Any]], rejects: list[tuple[int, str, str]]) -> None:
    """Stage records parsed in Python: each has ``_row``, canonical fields (any type) and ``_raw``."""
    store = run.store
    if not records and not rejects:
        raise IngestError(f"{run.path}: no records found")
    cols: dict[str, list[Any]] = {name: [] for name in EVENT_COLUMNS}
    rows, raws = [], []
    for rec in records:
        rows.append(rec["_row"])
        raws.append(rec.get("_raw"))
        for name in EVENT_COLUMNS:
            value = rec.get(name)
            cols[name].append(None if value is None else str(value))
    table = pa.table(
        {
            **{name: pa.array(values, type=pa.string()) for name, values in cols.items()},
            "_raw": pa.array(raws, type=pa.string()),
            "_row": pa.array(rows, type=pa.int64()),
        }
    )
    name = run.register("records", table)
    store.execute(f"CREATE OR REPLACE TEMP TABLE {run.stage} AS SELECT *, _row AS _ord FROM {name}")
    rej = pa.table(
        {
            "_row": pa.array([r[0] for r in rejects], type=pa.int64()),
            "reason": pa.array([r[1] for r in rejects], type=pa.string()),
            "raw": pa.array([r[2][:MAX_RAW_CHARS] for r in rejects], type=pa.string()),
        }
    )
    rej_name = run.register("rejrecords", rej)
    store.execute(f"CREATE OR REPLACE TEMP TABLE {run.rejects} AS SELECT * FROM {rej_name}")


def _iter_lines(path: Path):
    """Yield ``(line_number, text | None, raw_bytes)``; text is None when the line is not valid UTF-8."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield number, raw.decode("utf-8"), raw
            except UnicodeDecodeError:
                yield number, None, raw


def _read_jsonl_source(run: _Run) -> None:
    mapping = dict(run.config.columns)
    require_mapping(run.path, run.config, mapping)
    records, rejects = [], []
    for number, text, raw in _iter_lines(run.path):
        if text is None:
            rejects.append((number, "invalid UTF-8 encoding", raw.decode("utf-8", "replace")))
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            rejects.append((number, f"invalid JSON: {exc.msg} at column {exc.colno}", text))
            continue
        if not isinstance(obj, dict):
            rejects.append((number, f"JSON value is a {type(obj).__name__}, expected an object", text))
            continue
        rec = {"_row": number, "_raw": text[:MAX_RAW_CHARS]}
        for canonical, key in mapping.items():
            value = obj.get(key)
            rec[canonical] = json.dumps(value) if isinstance(value, dict | list) else value
        records.append(rec)
    _stage_records(run, records, rejects)


def _read_sequence_source(run: _Run) -> None:
    """SASRec/BERT4Rec/S3Rec text: ``user item [item ...]`` per line, chronological per user.

    These files carry no timestamps; event order is kept as ordinal time (the k-th event of a user is
    stored at ``1970-01-01 + k seconds``). ``<stem>_item2attributes.json`` beside the file, when present,
    fills ``items.attributes`` with ``{"attribute_ids": [...]}``.
    """
    if run.config.event_type is None:
        run.config = run.config.model_copy(update={"event_type": "click"})
    records, rejects = [], []
    position: dict[str, int] = {}
    for number, text, raw in _iter_lines(run.path):
        if text is None:
            rejects.append((number, "invalid UTF-8 encoding", raw.decode("utf-8", "replace")))
            continue
        parts = text.split()
        if not parts:
            continue
        if len(parts) < 2:
            rejects.append(
                (number, "wrong column count: expected a user id and at least one item id, found 1", text)
            )
            continue
        user = parts[0]
        for item in parts[1:]:
            k = position.get(user, 0)
            position[user] = k + 1
            records.append({"_row": number, "user_id": user, "item_id": item, "timestamp": k, "_raw": None})
    run.warnings.append("source has no timestamps: event order is stored as ordinal seconds since 1970-01-01")
    # One line can hold many events: make _ord unique per event while _row stays the line number.
    _stage_records(run, records, rejects)
    run.store.execute(
        f"CREATE OR REPLACE TEMP TABLE {run.stage} AS SELECT * EXCLUDE (_ord), row_number() OVER (ORDER BY _row) AS _ord FROM {run.stage}"
    )
    attr_file = run.path.with_name(run.path.stem + "_item2attributes.json")
    if attr_file.exists():
        run.after_commit.append(lambda: _upsert_item_attributes(run, attr_file))


def _upsert_item_attributes(run: _Run, attr_file: Path) -> None:
    try:
        mapping = json.loads(attr_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"{attr_file}: not a valid item->attributes JSON object ({exc})") from None
    if not isinstance(mapping, dict):
        raise IngestError(f"{attr_file}: expected a JSON object of item id -> attribute id list")
    table = pa.table(
        {
            "item_id": pa.array(list(mapping.keys()), type=pa.string()),
            "attributes": pa.array(
                [json.dumps({"attribute_ids": v}) for v in mapping.values()], type=pa.string()
            ),
        }
    )
    name = run.register("itemattrs", table)
    run.items_upserted += _upsert_items(
        run.store,
        f"SELECT item_id, NULL AS title, NULL AS category, NULL AS brand, attributes, NULL AS text FROM {name}",
    )


_REVIEWER_NAME = re.compile(r'"reviewerName"\s*:\s*"(?:[^"\\]|\\.)*"')
"""A reviewer-name field in raw JSON text, removed from quarantined raw rows (data minimization)."""


def _read_reviews_source(run: _Run) -> None:
    """Amazon review JSON (JSON lines, or concatenated pretty-printed objects).

    Maps ``reviewerID -> user_id``, ``asin -> item_id``, ``unixReviewTime -> timestamp``,
    ``overall -> value`` and ``summary + reviewText -> text``; event type ``review``. Reviewer names are
    personal data the models do not need and are never stored (data minimization).
    """
    try:
        content = run.path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{run.path}: not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
        ) from None
    decoder = json.JSONDecoder()
    records, rejects = [], []
    pos, counted_to, line_at = 0, 0, 1
    while True:
        while pos < len(content) and content[pos] in " \t\r\n":
            pos += 1
        if pos >= len(content):
            break
        line_at += content.count("\n", counted_to, pos)
        counted_to = pos
        try:
            obj, end = decoder.raw_decode(content, pos)
        except json.JSONDecodeError as exc:
            nxt = content.find("\n", exc.pos)
            end = len(content) if nxt < 0 else nxt + 1
            rejects.append(
                (
                    line_at,
                    f"invalid JSON: {exc.msg}",
                    _REVIEWER_NAME.sub('"reviewerName": null', content[pos:end]),
                )
            )
            pos = end
            continue
        snippet = content[pos:end]
        pos = end
        if not isinstance(obj, dict):
            rejects.append((line_at, f"JSON value is a {type(obj).__name__}, expected an object", snippet))
            continue
        summary, body = obj.get("summary"), obj.get("reviewText")
        text = "\n".join(str(t) for t in (summary, body) if t) or None
        records.append(
            {
                "_row": line_at,
                "user_id": obj.get("reviewerID"),
                "item_id": obj.get("asin"),
                "event_type": "review",
                "timestamp": obj.get("unixReviewTime"),
                "value": obj.get("overall"),
                "text": text,
                "_raw": json.dumps({k: v for k, v in obj.items() if k != "reviewerName"})[:MAX_RAW_CHARS],
            }
        )
    _stage_records(run, records, rejects)


# ---------------------------------------------------------------------------------------------- presets
TAOBAO_COLUMNS = {"user_id": "column0", "item_id": "column1", "event_type": "column3", "timestamp": "column4"}
"""Where the event fields are in a headerless Taobao UserBehavior line (``user,item,category,behavior,time``)."""
TAOBAO_EXTRA = {"item_category": "column2"}


def is_tianchi_header(header: list[str]) -> bool:
    """Whether a Taobao file's first line is the Tianchi 216549 variant's header (Chinese or English)."""
    return bool(header) and header[0] in ("用户ID", "user_id", "userid")


def _read_taobao_source(run: _Run) -> None:
    """Taobao UserBehavior CSV (``user,item,category,behavior,unix_seconds``, no header), or the Tianchi
    216549 variant with a Chinese header (adds brand, item name, category name and price)."""
    header = _read_header(run.path, ",")
    if is_tianchi_header(header):
        if len(header) < 10:
            raise IngestError(
                f"{run.path}: Tianchi-style header has {len(header)} columns, expected 10: {header}"
            )
        names = header
        mapping = {
            "user_id": names[0],
            "item_id": names[1],
            "event_type": names[7],
            "timestamp": names[8],
            "value": names[9],
        }
        extra = {"item_brand": names[2], "item_title": names[4], "item_category": names[5]}
        stage_delimited(run, mapping=mapping, delimiter=",", header=True, extra_columns=extra)
        run.items_sql = (
            "SELECT item_id, any_value(item_title) AS title, any_value(item_category) AS category, "
            "any_value(item_brand) AS brand, NULL AS attributes, NULL AS text FROM {ok} GROUP BY item_id"
        )
    else:
        stage_delimited(
            run, mapping=dict(TAOBAO_COLUMNS), delimiter=",", header=False, extra_columns=dict(TAOBAO_EXTRA)
        )
        run.items_sql = (
            "SELECT item_id, NULL AS title, any_value(item_category) AS category, NULL AS brand, "
            "NULL AS attributes, NULL AS text FROM {ok} GROUP BY item_id"
        )


def _recbole_columns(path: Path) -> dict[str, str]:
    """Header ``name:type`` -> ``{name: "name:type"}`` for a RecBole atomic file."""
    return {col.split(":", 1)[0]: col for col in _read_header(path, "\t")}


def _read_recbole_source(run: _Run) -> None:
    """RecBole atomic files: ``<name>.inter`` plus, when present beside it, ``.item``, ``.user``, ``.kg``, ``.link``.

    ``.inter`` rows become events (``rating`` -> ``value``; event type ``rate`` when a rating column
    exists, else ``click``, unless configured); ``.item`` and ``.user`` fill the catalogue and user
    tables (token_seq fields become JSON lists); ``.kg``/``.link`` fill ``kg_triples``/``item_entities``.
    """
    path = run.path
    if path.suffix != ".inter":
        raise IngestError(f"{path}: RecBole ingest starts from the .inter file (got {path.suffix!r})")
    cols = _recbole_columns(path)
    mapping = {
        "user_id": cols.get("user_id", ""),
        "item_id": cols.get("item_id", ""),
        "timestamp": cols.get("timestamp", ""),
    }
    if not all(mapping.values()):
        raise IngestError(
            f"{path}: RecBole .inter needs user_id, item_id and timestamp columns; found {list(cols)}"
        )
    for name, canonical in (
        ("rating", "value"),
        ("label", "value"),
        ("event_type", "event_type"),
        ("session_id", "session_id"),
    ):
        if name in cols and canonical not in mapping:
            mapping[canonical] = cols[name]
    if "event_type" not in mapping and run.config.event_type is None:
        run.config = run.config.model_copy(update={"event_type": "rate" if "value" in mapping else "click"})
    stage_delimited(run, mapping=mapping, delimiter="\t", header=True)
    stem = path.with_suffix("")
    if stem.with_suffix(".item").exists():
        run.after_commit.append(lambda: _recbole_items(run, stem.with_suffix(".item")))
    if stem.with_suffix(".user").exists():
        run.after_commit.append(lambda: _recbole_users(run, stem.with_suffix(".user")))
    if stem.with_suffix(".kg").exists():
        run.after_commit.append(lambda: _recbole_kg(run, stem.with_suffix(".kg")))
    if stem.with_suffix(".link").exists():
        run.after_commit.append(lambda: _recbole_link(run, stem.with_suffix(".link")))


def _recbole_table_sql(path: Path) -> tuple[str, dict[str, str]]:
    cols = _recbole_columns(path)
    types = "{" + ", ".join(f"{sql_literal(c)}: 'VARCHAR'" for c in cols.values()) + "}"
    reader = (
        f"read_csv({sql_literal(str(path))}, columns = {types}, header = true, delim = '\t', quote = '', "
        "escape = '', auto_detect = false, encoding = 'utf-8')"
    )
    return reader, cols


def _json_object_sql(cols: dict[str, str], skip: set[str]) -> str:
    parts = []
    for name, full in cols.items():
        if name in skip:
            continue
        value = (
            f"string_split({_quote_ident(full)}, ' ')" if full.endswith(":token_seq") else _quote_ident(full)
        )
        parts.append(f"{sql_literal(name)}, {value}")
    return f"json_object({', '.join(parts)})" if parts else "NULL"


def _recbole_items(run: _Run, path: Path) -> None:
    with _errors_name(path):
        reader, cols = _recbole_table_sql(path)
        title = next((c for n, c in cols.items() if "title" in n), None)
        title_sql = _quote_ident(title) if title else "NULL"
        attrs = _json_object_sql(cols, {"item_id", *(n for n, c in cols.items() if c == title)})
        run.items_upserted += _upsert_items(
            run.store,
            f"SELECT {_quote_ident(cols['item_id'])} AS item_id, {title_sql} AS title, NULL AS category, "
            f"NULL AS brand, {attrs} AS attributes, {title_sql} AS text FROM {reader}",
        )


def _recbole_users(run: _Run, path: Path) -> None:
    with _errors_name(path):
        reader, cols = _recbole_table_sql(path)
        attrs = _json_object_sql(cols, {"user_id"})
        users = run.store.arrow(
            f"SELECT {_quote_ident(cols['user_id'])} AS user_id, {attrs}::VARCHAR AS attributes FROM {reader}"
        )
        user_ids = users.column("user_id").to_pylist()
        if run.config.pseudonymize_users:
            key = _pseudonym_key(run)
            user_ids = [_pseudonym(key, u) for u in user_ids]
        name = run.register(
            "users",
            pa.table(
                {"user_id": pa.array(user_ids, type=pa.string()), "attributes": users.column("attributes")}
            ),
        )
        run.store.upsert(
            "users", key="user_id", select_sql=f"SELECT user_id, attributes::JSON AS attributes FROM {name}"
        )
        run.users_upserted += len(user_ids)


def _recbole_kg(run: _Run, kg: Path) -> None:
    reader, cols = _recbole_table_sql(kg)
    names = list(cols.values())
    if len(names) != 3:
        raise IngestError(f"{kg}: expected 3 columns head/relation/tail, found {names}")
    _companion_sql(
        run,
        kg,
        f"""INSERT INTO kg_triples SELECT * FROM (
              SELECT {_quote_ident(names[0])}, {_quote_ident(names[1])}, {_quote_ident(names[2])} FROM {reader}
              EXCEPT SELECT * FROM kg_triples)""",
    )


def _recbole_link(run: _Run, link: Path) -> None:
    reader, cols = _recbole_table_sql(link)
    names = list(cols.values())
    if len(names) != 2:
        raise IngestError(f"{link}: expected 2 columns item_id/entity_id, found {names}")
    _companion_sql(
        run,
        link,
        f"""INSERT INTO item_entities SELECT * FROM (
              SELECT {_quote_ident(names[0])}, {_quote_ident(names[1])} FROM {reader}
              EXCEPT SELECT * FROM item_entities)""",
    )


def _companion_sql(run: _Run, path: Path, sql: str) -> None:
    with _errors_name(path):
        run.store.execute(sql)


@contextmanager
def _errors_name(path: Path) -> Iterator[None]:
    """Report a store error while loading a side file (.item/.user/.kg/.link) against that file."""
    try:
        yield
    except StoreError as exc:
        raise IngestError(f"{path}: cannot be read as a RecBole atomic file ({exc})") from None


def _upsert_items(store: EventStore, select_sql: str) -> int:
    return store.upsert("items", key="item_id", select_sql=select_sql)


_READERS: dict[str, Callable[[_Run], None]] = {
    "csv": _read_csv_source,
    "tsv": _read_csv_source,
    "parquet": _read_parquet_source,
    "jsonl": _read_jsonl_source,
    "sequence": _read_sequence_source,
    "reviews": _read_reviews_source,
    "taobao": _read_taobao_source,
    "recbole": _read_recbole_source,
}


# ---------------------------------------------------------------------------------------------- pseudonyms
def _pseudonym_key(run: _Run) -> bytes:
    return _pseudonym_key_from(run.config)


def _pseudonym_key_from(config: IngestConfig) -> bytes:
    key = os.environ.get(config.pseudonym_key_env)
    if not key:
        raise IngestError(
            f"pseudonymize_users is on but the environment variable {config.pseudonym_key_env} is not set; "
            "set it to a secret key (keep it: the same key gives the same pseudonyms)"
        )
    return key.encode("utf-8")


def _pseudonym(key: bytes, raw_id: str) -> str:
    """Keyed pseudonym: ``u_`` + the first 20 hex digits (80 bits) of HMAC-SHA256(key, raw id)."""
    return "u_" + hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------- validation
def _field_expr(config: IngestConfig, name: str) -> str:
    """The trimmed field, with the configured fill value substituted when it is missing."""
    policy = config.missing_policy(name)
    # Tabs and line breaks count as blank too (DuckDB's one-argument trim strips only spaces). Trimming
    # with a character set is the costliest step of validation, so only fields that start or end with
    # a control or space character (or are empty) take that path.
    base = (
        f"CASE WHEN ascii({name}) > 32 AND ascii(right({name}, 1)) > 32 THEN {name} "
        f"ELSE nullif(trim({name}, ' \t\r\n'), '') END"
    )
    if name == "event_type" and config.event_type is not None:
        base = f"coalesce({base}, {sql_literal(config.event_type)})"
    if policy.startswith("fill:"):
        base = f"coalesce({base}, {sql_literal(policy[len('fill:') :])})"
    return base


def _validation_sql(run: _Run) -> str:
    """One SELECT that types every staged row and gives the first failed check as ``reason``.

    Without pseudonymization it also derives ``event_id`` (the source's id, else the MD5 of the event's
    content) so that the stage is scanned exactly once; with pseudonymization the id is derived after
    the user ids are replaced (see :func:`_pseudonymize`).
    """
    config = run.config
    vocab = config.vocabulary().mapping()
    type_case = (
        "CASE lower(f_event_type) "
        + " ".join(f"WHEN {sql_literal(src)} THEN {sql_literal(dst)}" for src, dst in vocab.items())
        + " END"
    )
    unit = {"s": 1_000_000, "ms": 1_000, "us": 1}[config.timestamp_unit]
    ts_numeric = "ts_num"
    ts_sql = (
        f"CASE WHEN {ts_numeric} IS NOT NULL THEN "
        f"  CASE WHEN abs({ts_numeric}) < 9.2e18 / {unit} THEN make_timestamp(({ts_numeric} * {unit})::BIGINT) END "
        "ELSE TRY_CAST(TRY_CAST(f_timestamp AS TIMESTAMPTZ) AS TIMESTAMP) END"
    )
    max_id, max_text = config.max_id_bytes, config.max_text_bytes
    checks: list[tuple[str, str]] = []
    for name in ("user_id", "item_id", "event_type", "timestamp"):
        if config.missing_policy(name) == "quarantine":
            checks.append((f"f_{name} IS NULL", f"'missing {name}'"))
    for name in ("user_id", "item_id", "event_id", "session_id"):
        checks.append(
            (
                f"strlen(f_{name}) > {max_id}",
                f"'{name} is ' || strlen(f_{name}) || ' bytes, over the limit of {max_id}'",
            )
        )
    unit_name = config.timestamp_unit
    lo, hi = config.min_timestamp, config.max_timestamp
    checks += [
        ("ev_type IS NULL", "'unknown event type ' || quote_text(f_event_type)"),
        (
            # A finite number too large for a timestamp is out of range, not unparseable.
            f"ts IS NULL AND isfinite({ts_numeric})",
            f"'timestamp ' || quote_text(f_timestamp) || ' ({unit_name}) is outside [{lo}, {hi})'",
        ),
        (
            "ts IS NULL",
            f"'timestamp ' || quote_text(f_timestamp) || ' is not unix time ({unit_name}) or an ISO-8601 time'",
        ),
        (
            f"ts < TIMESTAMP {sql_literal(lo)} OR ts >= TIMESTAMP {sql_literal(hi)}",
            f"'timestamp ' || strftime(ts, '%Y-%m-%d %H:%M:%S') || ' is outside [{lo}, {hi})'",
        ),
        ("f_value IS NOT NULL AND val IS NULL", "'value ' || quote_text(f_value) || ' is not a number'"),
        ("val IS NOT NULL AND (isnan(val) OR isinf(val))", "'value ' || f_value || ' is not finite'"),
        ("val < 0", "'negative value ' || f_value"),
        (
            f"strlen(f_text) > {max_text}",
            f"'text is ' || strlen(f_text) || ' bytes, over the limit of {max_text}'",
        ),
    ]
    for name in ("event_id", "session_id", "value", "text"):
        if config.missing_policy(name) == "quarantine":
            checks.append((f"f_{name} IS NULL", f"'missing {name}'"))
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {msg}" for cond, msg in checks) + " END"
    fields = ", ".join(f"{_field_expr(config, n)} AS f_{n}" for n in EVENT_COLUMNS)
    extras = "".join(f", {c}" for c in run.extra_columns)
    event_id = "f_event_id" if config.pseudonymize_users else f"coalesce(f_event_id, {_CONTENT_KEY})"
    raw = "NULL" if config.pseudonymize_users else f"left({run.raw_sql}, {MAX_RAW_CHARS})"
    raw_columns = "".join(f", {c}" for c in run.raw_columns)
    return f"""
        WITH f AS (SELECT _row, _ord{raw_columns}, {fields}{extras} FROM {run.stage}),
             n AS (SELECT *, TRY_CAST(f_timestamp AS DOUBLE) AS ts_num FROM f),
             t AS (SELECT *, {type_case} AS ev_type, {ts_sql} AS ts, TRY_CAST(f_value AS DOUBLE) AS val FROM n),
             r AS (SELECT *, {reason} AS reason FROM t)
        SELECT _row, _ord, f_user_id AS user_id, f_item_id AS item_id, ev_type AS event_type,
               ts AS timestamp, CASE WHEN reason IS NULL THEN {event_id} END AS event_id,
               f_session_id AS session_id, val AS value, f_text AS text, reason,
               CASE WHEN reason IS NOT NULL THEN {raw} END AS raw{extras}
        FROM r"""


_CONTENT_KEY = (
    "md5(concat_ws(chr(31), f_user_id, f_item_id, ev_type, epoch_us(ts)::VARCHAR, "
    "coalesce(val::VARCHAR, ''), coalesce(f_text, '')))"
)
"""Deterministic event id from content: MD5 over user, item, type, time (µs), value and text."""


# ---------------------------------------------------------------------------------------------- commit
def _commit(run: _Run) -> IngestSummary:
    store, config, source = run.store, run.config, run.source
    store.execute("CREATE OR REPLACE TEMP MACRO quote_text(x) AS '''' || left(x, 100) || ''''")
    checked = run.temp("checked")
    with run.timed("validate"):
        store.execute(f"CREATE OR REPLACE TEMP TABLE {checked} AS {_validation_sql(run)}")
        if run.after_scan is not None:
            run.after_scan(checked)
        if config.pseudonymize_users:
            _pseudonymize(run, checked)
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
            run.items_upserted += _upsert_items(store, run.items_sql.format(ok=ok))
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


def _pseudonymize(run: _Run, checked: str) -> None:
    """Replace raw user ids by keyed pseudonyms (computed once per distinct id), then derive event ids."""
    store = run.store
    key = _pseudonym_key(run)
    raw_users = (
        store.arrow(f"SELECT DISTINCT user_id FROM {checked} WHERE user_id IS NOT NULL").column(0).to_pylist()
    )
    mapping = run.register(
        "pseudo",
        pa.table(
            {
                "raw": pa.array(raw_users, type=pa.string()),
                "pseudo": pa.array([_pseudonym(key, u) for u in raw_users], type=pa.string()),
            }
        ),
    )
    store.execute(f"UPDATE {checked} SET user_id = m.pseudo FROM {mapping} m WHERE {checked}.user_id = m.raw")
    key_sql = (
        "md5(concat_ws(chr(31), user_id, item_id, event_type, epoch_us(timestamp)::VARCHAR, "
        "coalesce(value::VARCHAR, ''), coalesce(text, '')))"
    )
    store.execute(f"UPDATE {checked} SET event_id = coalesce(event_id, {key_sql}) WHERE reason IS NULL")
