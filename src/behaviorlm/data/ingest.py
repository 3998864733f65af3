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
record whose quoted field spans several lines is numbered by its first line), or the line where a JSON
object starts.

Broken files end in one clear :class:`IngestError` line or in quarantined rows, never in a traceback: a
quote that never closes, or that would make one record of lines that cannot be one (wrong column count,
a line break in an id, type, time or value column, a quoted field over the text limit), quarantines its
own line and the lines after it are read on their own; JSON nested deeper than Python's parser allows
quarantines its line; gzip-compressed text sources are decompressed first.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import json
import mmap
import os
import re
import shutil
import tempfile
import time
import uuid
import zlib
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

MAX_COLUMN_NAME_CHARS = 1_024
"""A header field longer than this is not a column name: the file is refused (is line 1 data?)."""

NESTED_TOO_DEEPLY = "nested too deeply"
"""Quarantine reason for JSON nested deeper than Python's parser can follow (about 1,000 levels)."""


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
    with _decompressed(path, config.format) as readable:
        run = _Run(
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
    return pseudonym(pseudonym_key_from(config), raw_id)


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


def _create_empty_rejects(run: _Run) -> None:
    run.store.execute(
        f"CREATE OR REPLACE TEMP TABLE {run.rejects} (_row BIGINT, reason VARCHAR, raw VARCHAR)"
    )


# ---------------------------------------------------------------------------------------------- delimited text
_MAX_FIRST_LINE_BYTES = 1 << 20


def read_header(path: Path, delimiter: str, *, header: bool = False) -> list[str]:
    """The fields of line 1 (a header with ``header``), or of data: the first line of at most 1 MiB.

    A header line over 1 MiB, or with a field over :data:`MAX_COLUMN_NAME_CHARS`, is an error naming
    line 1. Without a header only the number of fields matters, and a longer first line is left to the
    row checks, which quarantine it.
    """
    number, first = 0, b""
    with path.open("rb") as fh:
        while True:
            first = fh.readline(_MAX_FIRST_LINE_BYTES)
            number += 1
            if not first or first.endswith(b"\n") or len(first) < _MAX_FIRST_LINE_BYTES:
                break
            if header:
                raise IngestError(
                    f"{path}: line 1 (the header) is longer than {_MAX_FIRST_LINE_BYTES:,} bytes: is it a "
                    "header? (read the file with header=False if line 1 is data)"
                )
            while (rest := fh.readline(_MAX_FIRST_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            if not rest:
                raise IngestError(
                    f"{path}: no line of at most {_MAX_FIRST_LINE_BYTES:,} bytes to count the columns of"
                )
    try:
        text = first.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: line {number} is not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
        ) from None
    fields = [f.strip() for f in _split_line(text, delimiter)]
    if not fields or all(not f for f in fields):
        raise IngestError(f"{path}: line {number} is blank; expected a header row or data")
    if header:
        for column, name in enumerate(fields, start=1):
            if len(name) > MAX_COLUMN_NAME_CHARS:
                raise IngestError(
                    f"{path}: line 1 (the header) has a field of {len(name):,} characters (column {column}), "
                    f"over the limit of {MAX_COLUMN_NAME_CHARS:,} for a column name: is it a header? (read the "
                    "file with header=False if line 1 is data)"
                )
    return fields


def _split_line(text: str, delimiter: str) -> list[str]:
    """One CSV line's fields. The csv module refuses fields over its process-wide limit (131,072
    characters), which a data line may exceed; the limit is raised for this call only."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, len(text) + 1))
    try:
        return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    finally:
        csv.field_size_limit(previous)


def sniff_delimiter(path: Path, config: IngestConfig) -> str:
    """The configured delimiter; else a tab for TSV and RecBole atomic files, a comma otherwise."""
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


def _count_lines(path: Path) -> tuple[int, bool]:
    """Physical line count (a last line without a line break counts) and whether the file holds a NUL
    byte, in one chunked pass at memory speed."""
    n_lines, last, has_nul = 0, b"\n", False
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            n_lines += chunk.count(b"\n")
            has_nul = has_nul or b"\x00" in chunk
            last = chunk[-1:]
    return n_lines + (last != b"\n"), has_nul


_LONG_RECORD_LINES = 100
"""A kept record spanning more lines than this is named in a warning (its quote may be a stray)."""


@dataclass
class _Layout:
    """How a delimited file's physical lines group into records, as the CSV parser reads them.

    ``continuation``: lines inside a multi-line record after its first. ``strays``: lines whose quote
    opens a field that cannot be a real multi-line value -- (line, reason, raw, byte offset, byte
    length); each is quarantined and the lines after it are read on their own.
    """

    blanks: list[int] = field(default_factory=list)
    continuation: list[int] = field(default_factory=list)
    strays: list[tuple[int, str, str, int, int]] = field(default_factory=list)
    long_records: list[tuple[int, int]] = field(default_factory=list)


class _QuoteScan:
    """RFC 4180 quoting as DuckDB's reader applies it, one physical line at a time: a quote opens a
    quoted field only at the start of a field (elsewhere it is a literal character); inside one, ``""``
    is a quote and a lone quote closes the field, which must then end at a delimiter or the line end."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter
        self.in_quote = False
        self.fields = 1
        self.malformed = False
        self.spanning: list[int] = []  # 0-based fields that contain a line break
        self.field_bytes = 0
        self.longest_spanning_bytes = 0

    def feed(self, line: bytes) -> None:
        """Advance over one physical line (without its line break)."""
        pos, end, delimiter = 0, len(line), self.delimiter
        if self.in_quote:
            self.field_bytes += 1  # the line break belongs to the quoted value
        while True:
            if self.in_quote:
                quote = line.find(b'"', pos)
                if quote < 0:
                    self.field_bytes += end - pos
                    if not self.spanning or self.spanning[-1] != self.fields - 1:
                        self.spanning.append(self.fields - 1)
                    return
                if line.startswith(b'"', quote + 1):  # an escaped quote
                    self.field_bytes += quote + 2 - pos
                    pos = quote + 2
                    continue
                self.field_bytes += quote - pos
                if self.spanning and self.spanning[-1] == self.fields - 1:
                    self.longest_spanning_bytes = max(self.longest_spanning_bytes, self.field_bytes)
                self.in_quote = False
                pos = quote + 1
                if pos >= end:
                    return
                if not line.startswith(delimiter, pos):
                    self.malformed = True
                    return
                self.fields += 1
                pos += len(delimiter)
            elif line.startswith(b'"', pos):
                self.in_quote, self.field_bytes = True, 0
                pos += 1
            else:
                nxt = line.find(delimiter, pos)
                if nxt < 0:
                    return
                self.fields += 1
                pos = nxt + len(delimiter)


def _record_layout(
    path: Path,
    *,
    delimiter: str,
    header: bool,
    columns: list[str],
    single_line_columns: dict[int, str],
    max_field_bytes: int,
) -> _Layout:
    """Group the file's lines into records the way the CSV reader does, and find stray quotes.

    A quoted field may span lines (free text), but a quote that opens one which never closes, or whose
    record is impossible -- a malformed closing quote, the wrong column count, a line break in an id,
    type, time or value column (``single_line_columns``: index -> field), a value over
    ``max_field_bytes`` -- is taken for a stray: its line is reported and scanning resumes on the next
    line, so the lines it would have swallowed are read as the rows they are. Costs one pass in Python;
    it runs only when the reader's records do not match the file's lines one to one.
    """
    layout = _Layout()
    delim = delimiter.encode("utf-8")
    with path.open("rb") as fh:
        number, offset = 0, 0
        if header:
            offset = len(fh.readline())
            number = 1
        readline = fh.readline
        while raw := readline():
            number += 1
            start, offset = offset, offset + len(raw)
            if b'"' not in raw:
                if raw in (b"\n", b"\r\n"):
                    layout.blanks.append(number)
                continue
            line = raw.rstrip(b"\r\n")
            scan = _QuoteScan(delim)
            scan.feed(line)
            if not scan.in_quote:
                continue
            first, resume = number, offset
            while scan.in_quote and (more := readline()):
                number += 1
                offset += len(more)
                scan.feed(more.rstrip(b"\r\n"))
            if number == first:
                continue  # an unclosed quote on the last line swallows nothing: the reader rejects it
            reason = _stray_reason(scan, columns, single_line_columns, max_field_bytes, first, number)
            if reason is None:
                layout.continuation.extend(range(first + 1, number + 1))
                if number - first + 1 > _LONG_RECORD_LINES:
                    layout.long_records.append((first, number))
                continue
            text = line.decode("utf-8", "replace")[:MAX_RAW_CHARS]
            layout.strays.append((first, reason, text, start, resume - start))
            fh.seek(resume)
            number, offset = first, resume
    return layout


def _stray_reason(
    scan: _QuoteScan,
    columns: list[str],
    single_line_columns: dict[int, str],
    max_field_bytes: int,
    first: int,
    last: int,
) -> str | None:
    """Why the multi-line record on lines ``first..last`` must come from a stray quote (None: it may not)."""
    opened = scan.spanning[0]
    where = f"stray quote in column {columns[opened] if opened < len(columns) else opened + 1!r}: "
    span = f"the quoted field it opens runs over {last - first + 1:,} lines"
    if scan.in_quote:
        return where + "the quoted field it opens never closes"
    if scan.malformed:
        return where + f"{span} into a malformed quote on line {last:,}"
    if scan.fields != len(columns):
        return where + f"{span} into a record of {scan.fields} columns, expected {len(columns)}"
    for index in scan.spanning:
        if index in single_line_columns:
            return where + f"{span}, but {single_line_columns[index]} values cannot contain line breaks"
    if scan.longest_spanning_bytes > max_field_bytes:
        return (
            where + f"{span} and {scan.longest_spanning_bytes:,} bytes, over the limit of {max_field_bytes:,}"
        )
    return None


def _without_lines(path: Path, spans: list[tuple[int, int]]) -> Path:
    """A temporary copy of ``path`` with the given (byte offset, length) lines emptied (line numbers kept)."""
    handle, name = tempfile.mkstemp(prefix="behaviorlm-", suffix=path.suffix)
    with path.open("rb") as src, os.fdopen(handle, "wb") as dst:
        pos = 0
        for offset, length in spans:
            src.seek(pos)
            _copy_bytes(src, dst, offset - pos)
            src.seek(offset + length - 2)
            tail = src.read(2)
            dst.write(b"\r\n" if tail == b"\r\n" else b"\n")
            pos = offset + length
        src.seek(pos)
        shutil.copyfileobj(src, dst, 1 << 24)
    return Path(name)


def _copy_bytes(src: Any, dst: Any, n: int) -> None:
    while n > 0:
        chunk = src.read(min(n, 1 << 24))
        if not chunk:
            return
        dst.write(chunk)
        n -= len(chunk)


def source_columns(path: Path, *, delimiter: str, header: bool, wanted: dict[str, str]) -> list[str]:
    """The file's column names (``column0``.. without a header), checked: no repeated name, and every
    source column of ``wanted`` (canonical field -> source column) present."""
    first = read_header(path, delimiter, header=header)
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

    def reader(source: Path, rejects: str, scan: str) -> str:
        return (
            f"read_csv({sql_literal(str(source))}, columns = {col_types}, header = {str(header).lower()}, "
            f"delim = {sql_literal(delimiter)}, quote = '\"', escape = '\"', auto_detect = false, "
            f"ignore_errors = true, store_rejects = true, rejects_table = {sql_literal(rejects)}, "
            f"rejects_scan = {sql_literal(scan)}, max_line_size = {max_line}, null_padding = false)"
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
    store.execute(
        f"CREATE OR REPLACE TEMP TABLE {parsed} AS SELECT * FROM {reader(path, rej_table, rej_scan)}"
    )
    n_lines, run.check_nul = _count_lines(path)
    n_records = store.scalar(f"SELECT count(*) FROM {parsed}") + store.scalar(
        f"SELECT count(DISTINCT line) FROM {rej_table}"
    )
    # The parser skips empty lines (but counts them in its line numbers) and reads a quoted field across
    # lines, so only a file whose records do not match its lines one to one has either -- and only such
    # a file is scanned in Python for blank lines, multi-line records and stray quotes.
    layout = _Layout()
    if n_lines - h != n_records:
        text_like = {"text", *(extra_columns or {})}
        layout = _record_layout(
            path,
            delimiter=delimiter,
            header=header,
            columns=columns,
            single_line_columns={
                columns.index(src): name for name, src in mapping.items() if name not in text_like
            },
            max_field_bytes=run.config.max_text_bytes,
        )
    if layout.strays:
        # Read again with each stray quote's line emptied: the lines it swallowed become rows again.
        cleaned = _without_lines(path, [(offset, length) for *_, offset, length in layout.strays])
        rej_table, rej_scan = f"_rej2_{run.tag}", f"_rejscan2_{run.tag}"
        run.temp_tables += [rej_table, rej_scan]
        try:
            store.execute(
                f"CREATE OR REPLACE TEMP TABLE {parsed} AS SELECT * FROM {reader(cleaned, rej_table, rej_scan)}"
            )
        finally:
            cleaned.unlink()
    stray_table = run.register(
        "strays",
        pa.table(
            {
                "_row": pa.array([line for line, *_ in layout.strays], type=pa.int64()),
                "reason": pa.array([reason for _, reason, *_ in layout.strays], type=pa.string()),
                "raw": pa.array([raw for _, _, raw, *_ in layout.strays], type=pa.string()),
            }
        ),
    )
    store.execute(
        f"""CREATE OR REPLACE TEMP VIEW {run.stage} AS
            SELECT {", ".join(select + missing + passthrough)},
                   rowid + 1 AS _ord, rowid + 1 + {h} AS _row
            FROM {parsed}"""
    )
    run.extra_columns = list(extra_columns or {})

    def after_scan(checked: str) -> None:
        # The parser numbers a multi-line record as one line; its physical line is that number plus the
        # continuation lines before it (the same as-of mapping as _fix_source_rows).
        line_sql, line_join = "line", ""
        if layout.continuation:
            continued = run.register(
                "continued", pa.table({"c": pa.array(layout.continuation, type=pa.int64())})
            )
            shifts = run.temp("shifts")
            store.execute(
                f"""CREATE OR REPLACE TEMP TABLE {shifts} AS
                    SELECT a, max(i) AS j FROM (
                        SELECT c - row_number() OVER (ORDER BY c) AS a, row_number() OVER (ORDER BY c) AS i
                        FROM {continued}) GROUP BY a"""
            )
            line_sql = "line + coalesce(o.j, 0)"
            line_join = f"ASOF LEFT JOIN {shifts} o ON r.line > o.a"
        # Structural rejects: one row per bad line, however many errors the parser reported on it.
        store.execute(
            f"""CREATE OR REPLACE TEMP TABLE {run.rejects} AS
                SELECT {line_sql} AS _row,
                       CASE
                         WHEN bool_or(error_type = 'INVALID ENCODING') THEN 'invalid UTF-8 encoding'
                         WHEN bool_or(error_type IN ('MISSING COLUMNS', 'TOO MANY COLUMNS')) THEN
                           'wrong column count: expected {len(columns)}, found ' ||
                           (len(string_split(any_value(csv_line), {sql_literal(delimiter)})))::VARCHAR
                         WHEN bool_or(error_type = 'LINE SIZE OVER MAXIMUM') THEN 'line longer than {max_line} bytes'
                         ELSE 'unparseable line: ' || any_value(error_message)
                       END AS reason,
                       left(any_value(csv_line), {MAX_RAW_CHARS}) AS raw
                FROM {rej_table} r {line_join} GROUP BY {line_sql}
                UNION ALL SELECT _row, reason, raw FROM {stray_table}"""
        )
        n_staged = store.scalar(f"SELECT count(*) FROM {checked}")
        n_rejected = store.scalar(f"SELECT count(*) FROM {run.rejects}")
        if n_staged + n_rejected == 0:
            what = "a header but no data rows" if header else "no data rows"
            raise IngestError(f"{path}: file has {what}")
        _fix_source_rows(run, checked, header=header, skipped=layout.blanks + layout.continuation)
        expected = n_lines - h - len(layout.blanks) - len(layout.continuation)
        if expected != n_staged + n_rejected:
            run.warnings.append(
                f"the parser delimited {n_staged + n_rejected} records but the file has {expected} non-blank "
                "data lines outside quoted fields (lines the parser could not delimit)"
            )
        if layout.long_records:
            first, last = layout.long_records[0]
            others = len(layout.long_records) - 1
            run.warnings.append(
                f"line {first:,} starts a quoted field that runs over {last - first + 1:,} lines (to line "
                f"{last:,}){f', and {others:,} more records span over {_LONG_RECORD_LINES} lines' if others else ''}:"
                " if its opening quote is a stray, the rows inside it were read as text"
            )

    run.after_scan = after_scan
    return columns


def _fix_source_rows(run: _Run, checked: str, *, header: bool, skipped: list[int]) -> None:
    """Map each accepted record's ordinal to its line number, skipping rejected, blank and continuation
    lines (the lines of a multi-line record after its first).

    The k-th accepted record sits on line ``h + k + j`` where ``h`` is the header line count and ``j`` the
    number of skipped lines before it. For the i-th skipped line ``s_i`` (sorted, 1-based ``i``),
    ``a_i = s_i - h - i`` accepted records precede it, so ``j = #{i : a_i < k}`` -- an as-of join. With
    nothing skipped (the common case) the line is simply ``h + k`` and nothing needs fixing.
    """
    store, h = run.store, int(header)
    table = run.temp("skipped")
    store.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT _row AS s FROM {run.rejects}")
    if skipped:
        extra = run.register("skiplines", pa.table({"s": pa.array(skipped, type=pa.int64())}))
        store.execute(f"INSERT INTO {table} SELECT s FROM {extra} WHERE s > {h}")
    if store.scalar(f"SELECT count(*) FROM {table}") == 0:
        return
    offsets = run.temp("offsets")
    store.execute(
        f"""CREATE OR REPLACE TEMP TABLE {offsets} AS
            SELECT a, max(i) AS j FROM (
                SELECT s - {h} - row_number() OVER (ORDER BY s) AS a, row_number() OVER (ORDER BY s) AS i
                FROM {table}) GROUP BY a"""
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
    delimiter = sniff_delimiter(run.path, config)
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
            text = None if value is None else str(value)
            if text is not None and "\x00" in text:
                run.check_nul = True
            cols[name].append(text)
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
    """Yield ``(line_number, text | None, raw_bytes)``; text is None when the line is not valid UTF-8.
    A UTF-8 byte order mark before line 1 is dropped."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
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
            if not isinstance(obj, dict):
                rejects.append((number, f"JSON value is a {type(obj).__name__}, expected an object", text))
                continue
            rec = {"_row": number, "_raw": text[:MAX_RAW_CHARS]}
            for canonical, key in mapping.items():
                value = obj.get(key)
                rec[canonical] = json.dumps(value) if isinstance(value, dict | list) else value
        except json.JSONDecodeError as exc:
            rejects.append((number, f"invalid JSON: {exc.msg} at column {exc.colno}", text))
            continue
        except RecursionError:
            # json recurses once per level: a line nested ~1,000 deep is valid JSON it cannot follow.
            rejects.append((number, NESTED_TOO_DEEPLY, text))
            continue
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
        except RecursionError:
            nxt = content.find("\n", pos)
            end = len(content) if nxt < 0 else nxt + 1
            rejects.append(
                (line_at, NESTED_TOO_DEEPLY, _REVIEWER_NAME.sub('"reviewerName": null', content[pos:end]))
            )
            pos = end
            continue
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
        try:
            text = "\n".join(str(t) for t in (summary, body) if t) or None
            raw = json.dumps({k: v for k, v in obj.items() if k != "reviewerName"})[:MAX_RAW_CHARS]
        except RecursionError:
            rejects.append((line_at, NESTED_TOO_DEEPLY, _REVIEWER_NAME.sub('"reviewerName": null', snippet)))
            continue
        records.append(
            {
                "_row": line_at,
                "user_id": obj.get("reviewerID"),
                "item_id": obj.get("asin"),
                "event_type": "review",
                "timestamp": obj.get("unixReviewTime"),
                "value": obj.get("overall"),
                "text": text,
                "_raw": raw,
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
    header = read_header(run.path, ",")  # line 1 may be data: its fields are only looked at
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
    return {col.split(":", 1)[0]: col for col in read_header(path, "\t", header=True)}


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
            user_ids = [pseudonym(key, u) for u in user_ids]
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
    return pseudonym_key_from(run.config)


def pseudonym_key_from(config: IngestConfig) -> bytes:
    """The pseudonym key from the environment variable ``config`` names (the Spark engine reads it too)."""
    key = os.environ.get(config.pseudonym_key_env)
    if not key:
        raise IngestError(
            f"pseudonymize_users is on but the environment variable {config.pseudonym_key_env} is not set; "
            "set it to a secret key (keep it: the same key gives the same pseudonyms)"
        )
    return key.encode("utf-8")


def pseudonym(key: bytes, raw_id: str) -> str:
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
    if run.check_nul:
        checks += [(f"strpos(f_{name}, chr(0)) > 0", f"'NUL byte in {name}'") for name in EVENT_COLUMNS]
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
                "pseudo": pa.array([pseudonym(key, u) for u in raw_users], type=pa.string()),
            }
        ),
    )
    store.execute(f"UPDATE {checked} SET user_id = m.pseudo FROM {mapping} m WHERE {checked}.user_id = m.raw")
    key_sql = (
        "md5(concat_ws(chr(31), user_id, item_id, event_type, epoch_us(timestamp)::VARCHAR, "
        "coalesce(value::VARCHAR, ''), coalesce(text, '')))"
    )
    store.execute(f"UPDATE {checked} SET event_id = coalesce(event_id, {key_sql}) WHERE reason IS NULL")
