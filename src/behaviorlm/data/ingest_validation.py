"""Row validation: one vectorised SQL pass that types every staged row and names why a bad one fails.

Owns the row checks and their quarantine reasons (missing required fields, NUL bytes, ids and text over
their byte limits, unknown event types, unparseable or out-of-range timestamps, non-numeric, non-finite
or negative values), the per-field missing-value policy (``quarantine`` or ``fill:<value>``) and the
content-derived event id used for deduplication. :func:`validate_stage` materializes the checked table
the commit step reads. The Spark engine (:mod:`behaviorlm.data.spark`) applies the same checks in the
same order.
"""

from __future__ import annotations

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest_run import MAX_RAW_CHARS, IngestRun
from behaviorlm.data.schema import EVENT_COLUMNS
from behaviorlm.data.store import sql_literal


def validate_stage(run: IngestRun) -> str:
    """Validate the run's staged rows into a new temporary table and return its name.

    The table has one row per staged row: the typed event fields, ``reason`` (NULL for a valid row) and
    ``raw`` (the row's text, for quarantined rows). The reader's ``after_scan`` step runs on it.
    """
    store = run.store
    store.execute("CREATE OR REPLACE TEMP MACRO quote_text(x) AS '''' || left(x, 100) || ''''")
    checked = run.temp("checked")
    store.execute(f"CREATE OR REPLACE TEMP TABLE {checked} AS {_validation_sql(run)}")
    if run.after_scan is not None:
        run.after_scan(checked)
    return checked


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


def _validation_sql(run: IngestRun) -> str:
    """One SELECT that types every staged row and gives the first failed check as ``reason``.

    Without pseudonymization it also derives ``event_id`` (the source's id, else the MD5 of the event's
    content) so that the stage is scanned exactly once; with pseudonymization the id is derived after
    the user ids are replaced (see :func:`~behaviorlm.data.pseudonyms.pseudonymize_checked`).
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
