"""The Spark engine: ingest, validation, dedup and sequence building on PySpark.

This is the ONLY module that imports :mod:`pyspark` (DESIGN rule 12, as ``data/store.py`` is for DuckDB).
It produces the same outputs as the DuckDB path (:func:`behaviorlm.data.prepare.prepare` with
``engine="duckdb"``): a directory in the store's Parquet export layout (``events``, ``items``, ``users``,
``quarantine``, ``kg_triples``, ``item_entities``, ``ingest_log`` + ``manifest.json``) and
``sequences.parquet`` (one row per user: items, event types and times in order). The same rows are
stored, the same rows are quarantined with the same reason and raw text, the same event ids are derived
and duplicates are counted the same way; ``tests/data/test_spark_engine.py`` runs both engines on one
sample and compares every table.

Supported sources: delimited text with one record per line (``csv``/``tsv`` with a column mapping, and
Taobao UserBehavior). Differences from DuckDB's reader, all on malformed input:

* a quoted field that spans lines is not reassembled (DuckDB's reader does): its lines are quarantined
  (wrong column count or unparseable line);
* a line the CSV parser cannot delimit (a stray quote inside an unquoted field) is quarantined with the
  reason ``unparseable line: …`` in both engines, but the detail after the colon differs;
* a line with bytes that are not UTF-8 is quarantined as ``invalid UTF-8 encoding`` in both engines; its
  ``raw`` text differs (Spark has already replaced the bad bytes by U+FFFD) and a line that genuinely
  contains U+FFFD is quarantined too.

Timestamps follow the DuckDB rules: unix numbers in the configured unit (rounded to whole microseconds),
or ISO-8601 dates/times (``YYYY-MM-DD`` with ``-`` or ``/``, optional ``T``/space time, optional
fraction and zone); forms only one engine's parser accepts (``2020-05``, ``2020-01-01T10``) are treated as
unparseable by this engine too.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import IngestSummary
from behaviorlm.data.ingest_delimited import read_header, sniff_delimiter, source_columns
from behaviorlm.data.ingest_readers import TAOBAO_COLUMNS, TAOBAO_EXTRA, is_tianchi_header, require_mapping
from behaviorlm.data.ingest_run import MAX_RAW_CHARS, IngestError
from behaviorlm.data.pseudonyms import pseudonym, pseudonym_key_from
from behaviorlm.data.schema import EVENT_COLUMNS

# pyspark warns that pandas >= 3 is not fully supported each time a UDF is made; the paths used here (no
# pandas UDFs, no toPandas) are tested with the pinned pandas, so in a user's terminal it is only noise.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

try:  # pragma: no cover - exercised only where pyspark is missing
    from pyspark import StorageLevel
    from pyspark.sql import Column, DataFrame, SparkSession, Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as exc:  # pragma: no cover
    raise ImportError(
        "the Spark engine needs pyspark (and Java 17+): pip install 'behaviorlm[spark]'"
    ) from exc

SPARK_FORMATS = ("csv", "tsv", "taobao")
"""Source formats the Spark engine reads."""

_TS_PATTERN = (
    r"^[0-9]{4}[-/][0-9]{1,2}[-/][0-9]{1,2}"
    r"([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z| ?[A-Za-z_/]+|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
"""Date/time strings both engines parse (DuckDB's TIMESTAMPTZ cast, Spark's timestamp cast)."""
_NUM_PATTERN = r"^[+-]?(([0-9]+(_[0-9]+)*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(inf|infinity|nan)$"
"""Numbers DuckDB's DOUBLE cast accepts (digits may be grouped by ``_``); Java's extra forms (``1d``) are not."""


def spark_session(master: str = "local[2]", *, app_name: str = "behaviorlm", **conf: str) -> SparkSession:
    """A Spark session set up for behaviorlm: UTC session time zone, no UI, microsecond Parquet times.

    ``master`` is ``local[N]`` on one machine or a cluster URL (``spark://host:7077``, ``yarn``, ``k8s://…``);
    ``conf`` adds Spark settings (e.g. ``spark_executor_memory="8g"``: underscores become dots).
    """
    # Python UDFs (pseudonyms, number formatting) run in workers that must import behaviorlm: by default
    # they use this interpreter; on a cluster, set PYSPARK_PYTHON to one that has behaviorlm installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.shuffle.partitions", "8")
        .config(
            "spark.driver.extraJavaOptions",
            f"-Duser.timezone=UTC -Dlog4j.configurationFile={Path(__file__).with_name('spark-log4j2.properties')}",
        )
    )
    for key, value in conf.items():
        builder = builder.config(key.replace("_", "."), value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


# ---------------------------------------------------------------------------------------------- entry point
def prepare_spark(
    path: str | Path,
    out_dir: str | Path,
    *,
    config: IngestConfig | None = None,
    spark: SparkSession | None = None,
    master: str = "local[2]",
) -> IngestSummary:
    """Validate, quarantine, dedup and sequence ``path`` with Spark; write the Parquet outputs to ``out_dir``.

    ``out_dir`` gets the store export layout (importable with :meth:`EventStore.import_parquet`) plus
    ``sequences.parquet``. Returns the run's summary (``duplicates_in_store`` is 0: there is no store).
    """
    config = config or IngestConfig()
    for given in (path, out_dir):
        if "://" in str(given):
            raise IngestError(
                f"{given}: URLs are not supported yet; use a path that the driver and every executor see "
                "(a shared or mounted file system)"
            )
    path, out_dir = Path(path), Path(out_dir)
    if config.format not in SPARK_FORMATS:
        raise IngestError(
            f"--engine spark reads {list(SPARK_FORMATS)}, not {config.format!r}; use --engine duckdb for it"
        )
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if path.is_dir() or path.stat().st_size == 0:
        raise IngestError(f"{path}: expected a non-empty file")
    started = time.perf_counter()
    spark = spark or spark_session(master)
    source = config.source_name or str(path.resolve())
    layout = _layout(path, config)
    # The numbered lines are read by several jobs (counts, rejects, the second numbering): keep them
    # rather than re-reading and re-numbering the text file each time.
    lines = _numbered_lines(spark, path, header=layout.header).persist(StorageLevel.MEMORY_AND_DISK)
    parsed, rejects = _parse(lines, layout)
    checked = _validate(parsed, layout, config).persist(StorageLevel.MEMORY_AND_DISK)
    n_parsed = checked.count()
    if n_parsed == 0 and rejects.count() == 0:
        what = "a header but no data rows" if layout.header else "no data rows"
        raise IngestError(f"{path}: file has {what}")
    valid = checked.where(F.col("reason").isNull())
    first = Window.partitionBy("event_id").orderBy("_ord")
    kept = valid.withColumn("_k", F.row_number().over(first)).where(F.col("_k") == 1).drop("_k")
    events = _with_sessions(kept, config).select(
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        F.col("timestamp").cast("timestamp_ntz").alias("timestamp"),
        "session_id",
        "value",
        "text",
        F.lit(source).alias("source"),
        F.col("_row").alias("source_row"),
        F.col("_ord").alias("ingest_seq"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    events.write.mode("overwrite").parquet(str(out_dir / "events.parquet"))
    stored_events = spark.read.parquet(str(out_dir / "events.parquet"))
    if config.pseudonymize_users:  # a raw line may hold a raw user id: keep only the reason
        rejects = rejects.withColumn("raw", F.lit(None).cast("string"))
    quarantine = rejects.unionByName(
        checked.where(F.col("reason").isNotNull()).select("_row", "reason", "raw")
    )
    quarantine.select(
        F.lit(source).alias("source"),
        F.col("_row").alias("source_row"),
        "reason",
        "raw",
        F.current_timestamp().cast("timestamp_ntz").alias("quarantined_at"),
    ).write.mode("overwrite").parquet(str(out_dir / "quarantine.parquet"))
    _write_items(valid, layout, out_dir)
    _sequences(stored_events).write.mode("overwrite").parquet(str(out_dir / "sequences.parquet"))

    n_rejected = rejects.count()
    n_valid, n_distinct = valid.select(F.count("*"), F.countDistinct("event_id")).first()
    stored = stored_events.count()
    reasons = {
        row["kind"]: row["n"]
        for row in spark.read.parquet(str(out_dir / "quarantine.parquet"))
        .groupBy(F.regexp_replace("reason", "'[^']*'", "'…'").alias("kind"))
        .agg(F.count("*").alias("n"))
        .orderBy(F.desc("n"), "kind")
        .collect()
    }
    checked.unpersist()
    lines.unpersist()
    summary = IngestSummary(
        source=source,
        format=config.format,
        rows_read=n_parsed + n_rejected,
        stored=stored,
        quarantined=n_rejected + (n_parsed - n_valid),
        duplicates=n_valid - stored,
        duplicates_in_file=n_valid - n_distinct,
        duplicates_in_store=0,
        quarantine_reasons=reasons,
        items_upserted=_count_rows(out_dir / "items.parquet"),
        seconds=time.perf_counter() - started,
    )
    _write_small_tables(out_dir, summary)
    return summary


# ---------------------------------------------------------------------------------------------- reading
class _Layout:
    """Where the canonical fields are in a line: ``mapping`` field -> column position."""

    def __init__(
        self,
        *,
        columns: list[str],
        mapping: dict[str, str],
        extra: dict[str, str],
        delimiter: str,
        header: bool,
    ):
        self.columns, self.delimiter, self.header = columns, delimiter, header
        self.mapping = {field: columns.index(src) for field, src in mapping.items()}
        self.extra = {name: columns.index(src) for name, src in extra.items()}


def _layout(path: Path, config: IngestConfig) -> _Layout:
    extra: dict[str, str] = {}
    if config.format == "taobao":
        if is_tianchi_header(read_header(path, ",")):
            raise IngestError(f"{path}: the Tianchi Taobao variant is read by --engine duckdb only")
        delimiter, has_header = ",", False
        mapping, extra = dict(TAOBAO_COLUMNS), dict(TAOBAO_EXTRA)
    else:
        delimiter, has_header, mapping = sniff_delimiter(path, config), config.header, dict(config.columns)
        require_mapping(path, config, mapping)
    columns = source_columns(path, delimiter=delimiter, header=has_header, wanted={**mapping, **extra})
    return _Layout(columns=columns, mapping=mapping, extra=extra, delimiter=delimiter, header=has_header)


def _numbered_lines(spark: SparkSession, path: Path, *, header: bool) -> DataFrame:
    """The file's lines with their 1-based line numbers (``_row``), blank lines and the header dropped.

    Line numbers are exact across partitions: each partition's offset is the number of lines in the
    partitions before it (one extra pass that counts lines per partition).
    """
    raw = spark.read.option("lineSep", "\n").text(str(path))
    raw = raw.select(
        F.regexp_replace("value", "^\ufeff|\r$", "").alias("line"),
        F.spark_partition_id().alias("_part"),
        F.monotonically_increasing_id().alias("_mid"),
    )
    return (
        _number(raw, "_row")
        .where(F.col("_row") > int(header))
        .where(F.col("line") != "")
        .drop("_part", "_mid")
    )


def _number(df: DataFrame, name: str) -> DataFrame:
    """Add a 1-based consecutive number in the frame's current order (columns ``_part``, ``_mid`` needed)."""
    counts = sorted(df.groupBy("_part").count().collect())
    offsets, total = {}, 0
    for part, n in counts:
        offsets[part] = total
        total += n
    spark = df.sparkSession
    table = spark.createDataFrame(list(offsets.items()) or [(0, 0)], "_part int, _offset long")
    position = F.col("_mid") - F.shiftleft(F.col("_part").cast("long"), 33)
    return (
        df.join(F.broadcast(table), "_part").withColumn(name, F.col("_offset") + position + 1).drop("_offset")
    )


def _parse(lines: DataFrame, layout: _Layout) -> tuple[DataFrame, DataFrame]:
    """Split lines into fields; lines with the wrong field count or bad encoding become rejects."""
    n_cols, delim = len(layout.columns), layout.delimiter
    delim_re = _java_regex_literal(delim)
    quoted = F.col("line").contains('"')
    # Field count outside quotes: split on delimiters followed by an even number of quotes.
    outside = F.size(F.split("line", f'{delim_re}(?=(?:[^"]*"[^"]*")*[^"]*$)', -1))
    naive = F.size(F.split("line", delim_re, -1))
    schema = ", ".join(f"c{i} STRING" for i in range(n_cols)) + ", _corrupt STRING"
    options = {
        "sep": delim,
        "quote": '"',
        "escape": '"',
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": "_corrupt",
        "nullValue": "",
        "emptyValue": "",
        "ignoreLeadingWhiteSpace": "false",
        "ignoreTrailingWhiteSpace": "false",
    }
    csv = F.from_csv(F.col("line"), schema, options)
    plain = F.split("line", delim_re, -1)
    df = lines.select(
        "_row",
        "line",
        F.when(quoted, outside).otherwise(naive).alias("_n"),
        naive.alias("_naive"),
        F.when(quoted, csv).alias("_csv"),
        F.when(~quoted, plain).alias("_plain"),
    )
    unbalanced = F.size(F.split("line", '"', -1)) % 2 == 0
    reason = (
        F.when(F.col("line").contains("\ufffd"), F.lit("invalid UTF-8 encoding"))
        .when(quoted & unbalanced, F.lit("unparseable line: unterminated quoted field"))
        .when(
            F.col("_n") != n_cols,
            F.concat(F.lit(f"wrong column count: expected {n_cols}, found "), F.col("_naive").cast("string")),
        )
        .when(quoted & F.col("_csv._corrupt").isNotNull(), F.lit("unparseable line: malformed quoting"))
    )
    df = df.withColumn("_reason", reason)
    rejects = df.where(F.col("_reason").isNotNull()).select(
        "_row", F.col("_reason").alias("reason"), F.left("line", F.lit(MAX_RAW_CHARS)).alias("raw")
    )

    def field(i: int) -> Column:
        value = F.when(quoted, F.col(f"_csv.c{i}")).otherwise(F.try_element_at("_plain", F.lit(i + 1)))
        return F.when(value != "", value)  # an empty field is missing, as in DuckDB's reader

    ok = df.where(F.col("_reason").isNull())
    ok = _number(
        ok.select(
            "_row",
            *[field(i).alias(f"_src{i}") for i in range(n_cols)],
            F.spark_partition_id().alias("_part"),
            F.monotonically_increasing_id().alias("_mid"),
        ),
        "_ord",
    ).drop("_part", "_mid")
    selected = [
        (
            F.col(f"_src{layout.mapping[name]}") if name in layout.mapping else F.lit(None).cast("string")
        ).alias(name)
        for name in EVENT_COLUMNS
    ]
    extras = [F.col(f"_src{i}").alias(name) for name, i in layout.extra.items()]
    raw = F.concat_ws(delim, *[F.coalesce(F.col(f"_src{i}"), F.lit("")) for i in range(n_cols)])
    parsed = ok.select("_row", "_ord", *selected, *extras, raw.alias("_raw"))
    return parsed, rejects


def _java_regex_literal(text: str) -> str:
    return "".join("\\" + ch if not ch.isalnum() else ch for ch in text)


# ---------------------------------------------------------------------------------------------- validation
def _trimmed(name: str, config: IngestConfig) -> Column:
    """The field with spaces/tabs/line breaks trimmed, ``NULL`` when blank, then the missing-value fill."""
    value = F.regexp_replace(F.col(name), r"^[ \t\r\n]+|[ \t\r\n]+$", "")
    value = F.when(value != "", value)
    if name == "event_type" and config.event_type is not None:
        value = F.coalesce(value, F.lit(config.event_type))
    policy = config.missing_policy(name)
    if policy.startswith("fill:"):
        value = F.coalesce(value, F.lit(policy[len("fill:") :]))
    return value


def _quote(col: Column) -> Column:
    return F.concat(F.lit("'"), F.left(col, F.lit(100)), F.lit("'"))


def _validate(parsed: DataFrame, layout: _Layout, config: IngestConfig) -> DataFrame:
    """Type every row and give the first failed check as ``reason`` (the checks and messages of DuckDB's
    :mod:`~behaviorlm.data.ingest_validation`, in the same order)."""
    df = parsed.select(
        "_row", "_ord", "_raw", *layout.extra, *[_trimmed(n, config).alias(f"f_{n}") for n in EVENT_COLUMNS]
    )
    vocab = config.vocabulary().mapping()
    type_map = F.create_map(*[F.lit(x) for pair in vocab.items() for x in pair])
    unit = {"s": 1_000_000, "ms": 1_000, "us": 1}[config.timestamp_unit]
    ts_text = F.col("f_timestamp")
    is_num = ts_text.rlike("(?i)" + _NUM_PATTERN)
    ts_num = F.when(is_num, F.regexp_replace(ts_text, "_", "").try_cast("double"))
    in_range = F.abs(F.col("ts_num")) < F.lit(9.2e18 / unit)
    from_num = F.when(in_range, F.timestamp_micros(F.round(F.col("ts_num") * unit).try_cast("long")))
    iso = F.when(
        ts_text.rlike(_TS_PATTERN),
        F.regexp_replace(ts_text, "^([0-9]{4})/([0-9]{1,2})/", "$1-$2-").try_cast("timestamp"),
    )
    df = df.withColumn("ts_num", ts_num)
    df = df.withColumns(
        {
            "ev_type": F.try_element_at(type_map, F.lower(F.col("f_event_type"))),
            "ts": F.when(F.col("ts_num").isNotNull(), from_num).otherwise(iso),
            "val": F.when(
                F.col("f_value").rlike("(?i)" + _NUM_PATTERN),
                F.regexp_replace("f_value", "_", "").try_cast("double"),
            ),
        }
    )
    max_id, max_text = config.max_id_bytes, config.max_text_bytes
    lo, hi = config.min_timestamp, config.max_timestamp
    lo_ts, hi_ts = F.lit(lo).cast("timestamp"), F.lit(hi).cast("timestamp")
    unit_name = config.timestamp_unit
    checks: list[tuple[Column, Column]] = []
    for name in ("user_id", "item_id", "event_type", "timestamp"):
        if config.missing_policy(name) == "quarantine":
            checks.append((F.col(f"f_{name}").isNull(), F.lit(f"missing {name}")))
    for name in ("user_id", "item_id", "event_id", "session_id"):
        size = F.octet_length(F.col(f"f_{name}"))
        checks.append(
            (
                size > max_id,
                F.concat(
                    F.lit(f"{name} is "), size.cast("string"), F.lit(f" bytes, over the limit of {max_id}")
                ),
            )
        )
    finite = ~F.isnan("ts_num") & (F.abs("ts_num") != float("inf"))
    checks += [
        (F.col("ev_type").isNull(), F.concat(F.lit("unknown event type "), _quote(F.col("f_event_type")))),
        (
            F.col("ts").isNull() & F.col("ts_num").isNotNull() & finite,
            F.concat(F.lit("timestamp "), _quote(ts_text), F.lit(f" ({unit_name}) is outside [{lo}, {hi})")),
        ),
        (
            F.col("ts").isNull(),
            F.concat(
                F.lit("timestamp "),
                _quote(ts_text),
                F.lit(f" is not unix time ({unit_name}) or an ISO-8601 time"),
            ),
        ),
        (
            (F.col("ts") < lo_ts) | (F.col("ts") >= hi_ts),
            F.concat(
                F.lit("timestamp "),
                F.date_format("ts", "yyyy-MM-dd HH:mm:ss"),
                F.lit(f" is outside [{lo}, {hi})"),
            ),
        ),
        (
            F.col("f_value").isNotNull() & F.col("val").isNull(),
            F.concat(F.lit("value "), _quote(F.col("f_value")), F.lit(" is not a number")),
        ),
        (
            F.col("val").isNotNull() & (F.isnan("val") | (F.abs("val") == float("inf"))),
            F.concat(F.lit("value "), F.col("f_value"), F.lit(" is not finite")),
        ),
        (F.col("val") < 0, F.concat(F.lit("negative value "), F.col("f_value"))),
        (
            F.octet_length("f_text") > max_text,
            F.concat(
                F.lit("text is "),
                F.octet_length("f_text").cast("string"),
                F.lit(f" bytes, over the limit of {max_text}"),
            ),
        ),
    ]
    for name in ("event_id", "session_id", "value", "text"):
        if config.missing_policy(name) == "quarantine":
            checks.append((F.col(f"f_{name}").isNull(), F.lit(f"missing {name}")))
    reason = F.when(checks[0][0], checks[0][1])
    for cond, msg in checks[1:]:
        reason = reason.when(cond, msg)
    df = df.withColumn("reason", reason)
    if config.pseudonymize_users:
        df = _pseudonymize(df, config)
    content = F.md5(
        F.concat_ws(
            "\x1f",
            "f_user_id",
            "f_item_id",
            "ev_type",
            F.unix_micros("ts").cast("string"),
            F.coalesce(_double_text(F.col("val")), F.lit("")),
            F.coalesce("f_text", F.lit("")),
        )
    )
    raw = F.lit(None).cast("string") if config.pseudonymize_users else F.left("_raw", F.lit(MAX_RAW_CHARS))
    return df.select(
        "_row",
        "_ord",
        F.col("f_user_id").alias("user_id"),
        F.col("f_item_id").alias("item_id"),
        F.col("ev_type").alias("event_type"),
        F.col("ts").alias("timestamp"),
        F.when(F.col("reason").isNull(), F.coalesce("f_event_id", content)).alias("event_id"),
        F.col("f_session_id").alias("session_id"),
        F.col("val").alias("value"),
        F.col("f_text").alias("text"),
        "reason",
        F.when(F.col("reason").isNotNull(), raw).alias("raw"),
        *layout.extra,
    )


@F.udf(returnType=T.StringType(), useArrow=True)
def _repr_udf(value: float | None) -> str | None:
    return None if value is None else repr(value)


def _double_text(col: Column) -> Column:
    """A double as DuckDB's ``::VARCHAR`` writes it (the shortest round-trip form, as Python's ``repr``).

    Integral values below 1e15 are formatted in the JVM; others go through a Python UDF.
    """
    integral = F.abs(col) < 1e15
    integral &= col == F.floor(col)
    return (
        F.when(col.isNull(), F.lit(None))
        .when(integral, F.concat(col.cast("long").cast("string"), F.lit(".0")))
        .otherwise(_repr_udf(col))
    )


def _pseudonymize(checked: DataFrame, config: IngestConfig) -> DataFrame:
    """Replace validated user ids by keyed HMAC pseudonyms (once per distinct id, on the executors).

    As in the DuckDB path, this happens after validation (the id-length check sees the raw id) and before
    event ids are derived (content keys hash the pseudonym)."""
    key = pseudonym_key_from(config)

    @F.udf(returnType=T.StringType(), useArrow=True)
    def keyed(raw_id: str | None) -> str | None:
        return None if raw_id is None else pseudonym(key, raw_id)

    users = checked.select("f_user_id").distinct().withColumn("_pseudo", keyed("f_user_id"))
    joined = checked.join(users, "f_user_id", "left")
    return joined.withColumn("f_user_id", F.col("_pseudo")).drop("_pseudo")


def _with_sessions(events: DataFrame, config: IngestConfig) -> DataFrame:
    gap = config.session_gap_seconds
    if gap is None:
        return events
    order = Window.partitionBy("user_id").orderBy("timestamp", "_ord")
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    prev = F.lag("timestamp").over(order)
    seconds = F.unix_micros("timestamp") / 1e6
    starts = F.when(
        prev.isNull() | (seconds - F.unix_micros(prev) / 1e6 > int(gap)), F.round(seconds).cast("long")
    )
    with_start = events.withColumn("_start", starts)
    session = F.max("_start").over(running)
    return with_start.withColumn(
        "session_id", F.coalesce("session_id", F.concat(F.col("user_id"), F.lit("@"), session.cast("string")))
    ).drop("_start")


# ---------------------------------------------------------------------------------------------- outputs
def _sequences(events: DataFrame) -> DataFrame:
    """One row per user: item ids, event types and unix seconds in time order (ties by ingest order)."""
    ordered = F.sort_array(F.collect_list(F.struct("timestamp", "ingest_seq", "item_id", "event_type")))
    return (
        events.groupBy("user_id")
        .agg(ordered.alias("_s"))
        .select(
            "user_id",
            F.col("_s.item_id").alias("item_ids"),
            F.col("_s.event_type").alias("event_types"),
            F.transform(
                "_s.timestamp", lambda t: F.floor(F.unix_micros(t.cast("timestamp")) / 1_000_000)
            ).alias("timestamps"),
        )
        .orderBy("user_id")
    )


def _write_items(valid: DataFrame, layout: _Layout, out_dir: Path) -> None:
    path = out_dir / "items.parquet"
    if "item_category" not in layout.extra:
        _write_empty(path, _ITEM_SCHEMA)
        return
    first = Window.partitionBy("item_id").orderBy("_ord")
    valid.withColumn("_k", F.row_number().over(first)).where(F.col("_k") == 1).select(
        "item_id",
        F.lit(None).cast("string").alias("title"),
        F.col("item_category").alias("category"),
        F.lit(None).cast("string").alias("brand"),
        F.lit(None).cast("string").alias("attributes"),
        F.lit(None).cast("string").alias("text"),
    ).write.mode("overwrite").parquet(str(path))


_ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("attributes", pa.string()),
        ("text", pa.string()),
    ]
)
_SMALL_SCHEMAS = {
    "users": pa.schema([("user_id", pa.string()), ("attributes", pa.string())]),
    "kg_triples": pa.schema([("head_id", pa.string()), ("relation", pa.string()), ("tail_id", pa.string())]),
    "item_entities": pa.schema([("item_id", pa.string()), ("entity_id", pa.string())]),
}


def _write_empty(path: Path, schema: pa.Schema) -> None:
    pq.write_table(schema.empty_table(), path)


def _write_small_tables(out_dir: Path, summary: IngestSummary) -> None:
    for name, schema in _SMALL_SCHEMAS.items():
        _write_empty(out_dir / f"{name}.parquet", schema)
    log = pa.table(
        {
            "source": [summary.source],
            "format": [summary.format],
            "rows_read": pa.array([summary.rows_read], pa.int64()),
            "stored": pa.array([summary.stored], pa.int64()),
            "quarantined": pa.array([summary.quarantined], pa.int64()),
            "duplicates": pa.array([summary.duplicates], pa.int64()),
            "seconds": [summary.seconds],
            "finished_at": pa.array([int(time.time() * 1e6)], pa.timestamp("us")),
        }
    )
    pq.write_table(log, out_dir / "ingest_log.parquet")
    manifest: dict[str, Any] = {
        "tables": ["events", "items", "users", "quarantine", "kg_triples", "item_entities", "ingest_log"],
        "format": "behaviorlm-store-1",
        "engine": "spark",
        "sequences": "sequences.parquet",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest))


def _count_rows(path: Path) -> int:
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
