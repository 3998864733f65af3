"""Delimited text (CSV, TSV, RecBole atomic, Taobao): header, delimiter, record layout and staging.

Owns how a delimited file's lines become staged rows: :func:`read_header` and :func:`sniff_delimiter`,
:func:`source_columns` (the checked column names), and :func:`stage_delimited`, which stages the file
through DuckDB's parallel CSV reader and turns structurally bad lines -- wrong column count, invalid
UTF-8, over-long lines, stray quotes -- into quarantine rejects with their physical line numbers. The
per-format readers that call it live in :mod:`behaviorlm.data.ingest_readers`.
"""

from __future__ import annotations

import csv
import io
import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest_run import MAX_RAW_CHARS, IngestError, IngestRun
from behaviorlm.data.schema import EVENT_COLUMNS
from behaviorlm.data.store import sql_identifier, sql_literal

MAX_COLUMN_NAME_CHARS = 1_024
"""A header field longer than this is not a column name: the file is refused (is line 1 data?)."""

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
    run: IngestRun,
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

    select = [f"{sql_identifier(src)} AS {name}" for name, src in wanted.items()]
    missing = [f"NULL::VARCHAR AS {name}" for name in EVENT_COLUMNS if name not in wanted]
    # The raw line is rebuilt only for quarantined rows: the stage passes the source columns through
    # (as _src0, _src1, ...) and validation joins them when a row has a reason.
    passthrough = [f"{sql_identifier(c)} AS _src{i}" for i, c in enumerate(columns)]
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


def _fix_source_rows(run: IngestRun, checked: str, *, header: bool, skipped: list[int]) -> None:
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
