"""One reader per source format: each stages its source as text columns named after the event fields.

A reader takes an :class:`~behaviorlm.data.ingest_run.IngestRun` and leaves the staged rows (``_row``,
``_ord``, the canonical fields as text, the raw row) and the rows it rejected before validation in the
run's tables; :data:`READERS` maps ``IngestConfig.format`` to it. Formats: CSV/TSV (through
:func:`~behaviorlm.data.ingest_delimited.stage_delimited`), Parquet, JSON lines, SASRec-style sequence
files, Amazon review JSON, Taobao UserBehavior (and the Tianchi variant), RecBole atomic files with
their side files. :func:`stage_records` stages rows parsed in Python (and the API's in-memory events).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest_delimited import read_header, sniff_delimiter, stage_delimited
from behaviorlm.data.ingest_run import MAX_RAW_CHARS, IngestError, IngestRun
from behaviorlm.data.pseudonyms import pseudonym, pseudonym_key_from
from behaviorlm.data.schema import EVENT_COLUMNS
from behaviorlm.data.store import EventStore, StoreError, sql_identifier, sql_literal

NESTED_TOO_DEEPLY = "nested too deeply"
"""Quarantine reason for JSON nested deeper than Python's parser can follow (about 1,000 levels)."""


# ---------------------------------------------------------------------------------------------- csv / tsv
def require_mapping(path: Path, config: IngestConfig, mapping: dict[str, str]) -> None:
    """Every required event field has a source column (``event_type`` may be a constant instead)."""
    needed = ["user_id", "item_id", "timestamp"] + ([] if config.event_type else ["event_type"])
    absent = [f for f in needed if f not in mapping]
    if absent:
        raise IngestError(
            f"{path}: no source column mapped to {absent}; pass columns={{field: source_column}}"
            + (" or a constant event_type" if "event_type" in absent else "")
        )


def _read_csv_source(run: IngestRun) -> None:
    config = run.config
    delimiter = sniff_delimiter(run.path, config)
    mapping = dict(config.columns)
    require_mapping(run.path, run.config, mapping)
    stage_delimited(run, mapping=mapping, delimiter=delimiter, header=config.header)


def _create_empty_rejects(run: IngestRun) -> None:
    run.store.execute(
        f"CREATE OR REPLACE TEMP TABLE {run.rejects} (_row BIGINT, reason VARCHAR, raw VARCHAR)"
    )


# ---------------------------------------------------------------------------------------------- parquet
def _read_parquet_source(run: IngestRun) -> None:
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
    select = [f"{sql_identifier(src_col)}::VARCHAR AS {name}" for name, src_col in mapping.items()]
    missing = [f"NULL::VARCHAR AS {name}" for name in EVENT_COLUMNS if name not in mapping]
    raw = (
        "to_json(struct_pack("
        + ", ".join(f"{sql_identifier(c)} := {sql_identifier(c)}" for c in columns if c != "file_row_number")
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
def stage_records(run: IngestRun, records: list[dict[str, Any]], rejects: list[tuple[int, str, str]]) -> None:
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


def _read_jsonl_source(run: IngestRun) -> None:
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
    stage_records(run, records, rejects)


def _read_sequence_source(run: IngestRun) -> None:
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
    stage_records(run, records, rejects)
    run.store.execute(
        f"CREATE OR REPLACE TEMP TABLE {run.stage} AS SELECT * EXCLUDE (_ord), row_number() OVER (ORDER BY _row) AS _ord FROM {run.stage}"
    )
    attr_file = run.path.with_name(run.path.stem + "_item2attributes.json")
    if attr_file.exists():
        run.after_commit.append(lambda: _upsert_item_attributes(run, attr_file))


def _upsert_item_attributes(run: IngestRun, attr_file: Path) -> None:
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
    run.items_upserted += upsert_items(
        run.store,
        f"SELECT item_id, NULL AS title, NULL AS category, NULL AS brand, attributes, NULL AS text FROM {name}",
    )


_REVIEWER_NAME = re.compile(r'"reviewerName"\s*:\s*"(?:[^"\\]|\\.)*"')
"""A reviewer-name field in raw JSON text, removed from quarantined raw rows (data minimization)."""


def _read_reviews_source(run: IngestRun) -> None:
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
    stage_records(run, records, rejects)


# ---------------------------------------------------------------------------------------------- presets
TAOBAO_COLUMNS = {"user_id": "column0", "item_id": "column1", "event_type": "column3", "timestamp": "column4"}
"""Where the event fields are in a headerless Taobao UserBehavior line (``user,item,category,behavior,time``)."""
TAOBAO_EXTRA = {"item_category": "column2"}


def is_tianchi_header(header: list[str]) -> bool:
    """Whether a Taobao file's first line is the Tianchi 216549 variant's header (Chinese or English)."""
    return bool(header) and header[0] in ("用户ID", "user_id", "userid")


def _read_taobao_source(run: IngestRun) -> None:
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


def _read_recbole_source(run: IngestRun) -> None:
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
            f"string_split({sql_identifier(full)}, ' ')"
            if full.endswith(":token_seq")
            else sql_identifier(full)
        )
        parts.append(f"{sql_literal(name)}, {value}")
    return f"json_object({', '.join(parts)})" if parts else "NULL"


def _recbole_items(run: IngestRun, path: Path) -> None:
    with _errors_name(path):
        reader, cols = _recbole_table_sql(path)
        title = next((c for n, c in cols.items() if "title" in n), None)
        title_sql = sql_identifier(title) if title else "NULL"
        attrs = _json_object_sql(cols, {"item_id", *(n for n, c in cols.items() if c == title)})
        run.items_upserted += upsert_items(
            run.store,
            f"SELECT {sql_identifier(cols['item_id'])} AS item_id, {title_sql} AS title, NULL AS category, "
            f"NULL AS brand, {attrs} AS attributes, {title_sql} AS text FROM {reader}",
        )


def _recbole_users(run: IngestRun, path: Path) -> None:
    with _errors_name(path):
        reader, cols = _recbole_table_sql(path)
        attrs = _json_object_sql(cols, {"user_id"})
        users = run.store.arrow(
            f"SELECT {sql_identifier(cols['user_id'])} AS user_id, {attrs}::VARCHAR AS attributes FROM {reader}"
        )
        user_ids = users.column("user_id").to_pylist()
        if run.config.pseudonymize_users:
            key = pseudonym_key_from(run.config)
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


def _recbole_kg(run: IngestRun, kg: Path) -> None:
    _recbole_pairs(run, kg, table="kg_triples", expected="head/relation/tail")


def _recbole_link(run: IngestRun, link: Path) -> None:
    _recbole_pairs(run, link, table="item_entities", expected="item_id/entity_id")


def _recbole_pairs(run: IngestRun, path: Path, *, table: str, expected: str) -> None:
    """Add the rows of a RecBole ``.kg`` / ``.link`` file to ``table`` (its columns in file order, one per
    name of ``expected``), leaving out rows the table already holds."""
    reader, cols = _recbole_table_sql(path)
    names = list(cols.values())
    width = len(expected.split("/"))
    if len(names) != width:
        raise IngestError(f"{path}: expected {width} columns {expected}, found {names}")
    columns = ", ".join(sql_identifier(name) for name in names)
    _companion_sql(
        run,
        path,
        f"INSERT INTO {table} SELECT * FROM (SELECT {columns} FROM {reader} EXCEPT SELECT * FROM {table})",
    )


def _companion_sql(run: IngestRun, path: Path, sql: str) -> None:
    with _errors_name(path):
        run.store.execute(sql)


@contextmanager
def _errors_name(path: Path) -> Iterator[None]:
    """Report a store error while loading a side file (.item/.user/.kg/.link) against that file."""
    try:
        yield
    except StoreError as exc:
        raise IngestError(f"{path}: cannot be read as a RecBole atomic file ({exc})") from None


def upsert_items(store: EventStore, select_sql: str) -> int:
    """Merge catalogue rows (``item_id, title, category, brand, attributes, text`` from ``select_sql``)
    into ``items`` through :meth:`EventStore.upsert`; returns the number of distinct items merged."""
    return store.upsert("items", key="item_id", select_sql=select_sql)


# ---------------------------------------------------------------------------------------------- registry
READERS: dict[str, Callable[[IngestRun], None]] = {
    "csv": _read_csv_source,
    "tsv": _read_csv_source,
    "parquet": _read_parquet_source,
    "jsonl": _read_jsonl_source,
    "sequence": _read_sequence_source,
    "reviews": _read_reviews_source,
    "taobao": _read_taobao_source,
    "recbole": _read_recbole_source,
}
