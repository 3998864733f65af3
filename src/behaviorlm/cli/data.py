"""Data commands: ``ingest``, ``prepare``, ``stats``, ``split``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from behaviorlm.cli.common import (
    SPLIT_FILE,
    DelimiterOption,
    EngineOption,
    EventTypeOption,
    FormatOption,
    IngestConfigOption,
    JsonSummaryOption,
    MapOption,
    NoHeaderOption,
    ProtocolOption,
    PseudonymizeOption,
    SessionGapOption,
    SparkMasterOption,
    StoreOption,
    TestFraction,
    ValidationUsers,
    ValidFraction,
    app,
    console,
    make_split,
    parse_pairs,
    require_store,
    spinner,
    split_spec,
    user_errors,
)
from behaviorlm.config import IngestConfig, SourceFormat, load_config
from behaviorlm.data.ingest import IngestSummary, ingest_file
from behaviorlm.data.store import EventStore


@app.command()
@user_errors
def ingest(
    path: Annotated[
        Path, typer.Argument(help="Source file (CSV/TSV/Parquet/JSONL/RecBole .inter/sequence/reviews).")
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    format: FormatOption = None,
    map_: MapOption = None,
    event_type: EventTypeOption = None,
    no_header: NoHeaderOption = False,
    delimiter: DelimiterOption = None,
    session_gap: SessionGapOption = None,
    pseudonymize: PseudonymizeOption = False,
    config: IngestConfigOption = None,
    engine: EngineOption = "duckdb",
    spark_master: SparkMasterOption = "local[2]",
    json_out: JsonSummaryOption = False,
) -> None:
    """Validate and load a behaviour log into the event store; bad rows go to quarantine with a reason."""
    cfg = _ingest_config(
        config,
        format=format,
        session_gap=session_gap,
        map_=map_,
        event_type=event_type,
        no_header=no_header,
        delimiter=delimiter,
        pseudonymize=pseudonymize,
    )
    created = not store.exists()
    try:
        with EventStore(store) as st, spinner(f"ingesting {path} with {engine} …"):
            if engine == "spark":
                from behaviorlm.data.prepare import ingest_with_spark

                summary = ingest_with_spark(st, path, config=cfg, spark_master=spark_master)
            else:
                summary = ingest_file(st, path, config=cfg)
    except Exception:
        # A store this command created and then failed to fill (a bad mapping, a missing file) is not
        # left behind as an empty file that later commands would take for data.
        if created:
            for leftover in (store, store.with_name(store.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    if json_out:
        console.print_json(json.dumps(summary.to_dict()))
    else:
        _print_ingest(summary)


def _ingest_config(
    config: Path | None,
    *,
    format: SourceFormat | None,
    session_gap: int | None,
    map_: list[str] | None,
    event_type: str | None,
    no_header: bool,
    delimiter: str | None,
    pseudonymize: bool,
) -> IngestConfig:
    """The ingest config from an optional file, overridden by the command-line flags."""
    base = load_config(IngestConfig, config).model_dump(exclude_unset=True) if config else {}
    overrides: dict[str, Any] = {}
    if format is not None:
        overrides["format"] = format
    if session_gap is not None:
        overrides["session_gap_seconds"] = session_gap or None
    if map_:
        overrides["columns"] = parse_pairs(map_, flag="--map")
    if event_type:
        overrides["event_type"] = event_type
    if no_header:
        overrides["header"] = False
    if delimiter:
        overrides["delimiter"] = delimiter
    if pseudonymize:
        overrides["pseudonymize_users"] = True
    return load_config(IngestConfig, {**base, **overrides})


def _print_ingest(summary: IngestSummary, *, verb: str = "ingest", kept: str = "stored") -> None:
    table = Table(title=f"{verb} {summary.source}", show_header=False, title_justify="left")
    table.add_row("rows read", f"{summary.rows_read:,}")
    table.add_row(kept, f"[green]{summary.stored:,}[/]")
    table.add_row("quarantined", f"[yellow]{summary.quarantined:,}[/]")
    table.add_row(
        "duplicates",
        f"{summary.duplicates:,} ({summary.duplicates_in_file:,} in file, "
        f"{summary.duplicates_in_store:,} already stored)",
    )
    # Catalogue rows written (titles, categories, attributes; user demographics), not distinct ids in
    # events: a log with item categories but no user table has item details and no user details.
    if summary.items_upserted:
        table.add_row("item details", f"{summary.items_upserted:,} items")
    if summary.users_upserted:
        table.add_row("user details", f"{summary.users_upserted:,} users")
    table.add_row("time", f"{summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s)")
    if summary.stage_seconds:
        table.add_row(
            "time by step",
            ", ".join(f"{step} {seconds:.2f} s" for step, seconds in summary.stage_seconds.items()),
        )
    console.print(table)
    if summary.quarantine_reasons:
        reasons = Table("quarantine reason", "rows", title="quarantined rows by reason", title_justify="left")
        for reason, n in summary.quarantine_reasons.items():
            reasons.add_row(reason, f"{n:,}")
        console.print(reasons)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command()
@user_errors
def prepare(
    path: Annotated[
        Path, typer.Argument(help="Source file (CSV/TSV, Taobao UserBehavior; with duckdb any format).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the Parquet outputs.")],
    format: FormatOption = None,
    map_: MapOption = None,
    event_type: EventTypeOption = None,
    no_header: NoHeaderOption = False,
    delimiter: DelimiterOption = None,
    session_gap: SessionGapOption = None,
    pseudonymize: PseudonymizeOption = False,
    config: IngestConfigOption = None,
    engine: EngineOption = "duckdb",
    spark_master: SparkMasterOption = "local[2]",
    json_out: JsonSummaryOption = False,
) -> None:
    """Validate, quarantine, dedup and sequence a log into Parquet files (no store): events, quarantine,
    items, sequences. Same outputs with --engine duckdb and --engine spark."""
    from behaviorlm.data.prepare import prepare as run_prepare

    cfg = _ingest_config(
        config,
        format=format,
        session_gap=session_gap,
        map_=map_,
        event_type=event_type,
        no_header=no_header,
        delimiter=delimiter,
        pseudonymize=pseudonymize,
    )
    with spinner(f"preparing {path} with {engine} …"):
        summary = run_prepare(path, out, config=cfg, engine=engine, spark_master=spark_master)
    if json_out:
        console.print_json(json.dumps(summary.to_dict()))
    else:
        _print_ingest(summary, verb="prepare", kept="written to Parquet")
        console.print(
            f"Parquet outputs in {out}: events, quarantine, items, users, kg_triples, item_entities, ingest_log "
            "(the store's export layout, see EventStore.import_parquet) and sequences",
            markup=False,
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------- stats
@app.command()
@user_errors
def stats(
    store: StoreOption = Path("behaviorlm.duckdb"), json_out: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Summarize the event store: table sizes, event types, users, items, time range, quarantine."""
    require_store(store)
    with EventStore(store, read_only=True) as st:
        info = st.stats()
    if json_out:
        console.print_json(json.dumps(info))
        return
    table = Table(title=f"event store {store}", show_header=False, title_justify="left")
    for name, n in info["tables"].items():
        table.add_row(f"table {name}", f"{n:,}")
    table.add_row("users / items", f"{info['users']:,} / {info['items']:,}")
    table.add_row("sessions", f"{info['sessions']:,}")
    table.add_row("time range", f"{info['first_event']} → {info['last_event']}")
    table.add_row("density", f"{info['density']:.5f}")
    for event_type_name, n in info["event_types"].items():
        table.add_row(f"events: {event_type_name}", f"{n:,}")
    for row in info["quarantine_reasons"]:
        table.add_row(f"quarantine: {row['reason']}", f"{row['rows']:,}")
    console.print(table)


@app.command()
@user_errors
def split(
    store: StoreOption = Path("behaviorlm.duckdb"),
    protocol: ProtocolOption = "loo",
    valid_fraction: ValidFraction = 0.1,
    test_fraction: TestFraction = 0.1,
    validation_users: ValidationUsers = "auto",
    out: Annotated[Path | None, typer.Option(help="Write train/valid/test events as Parquet here.")] = None,
) -> None:
    """Split the stored events into train / validation / test and show the protocol."""
    spec = split_spec(
        protocol=protocol,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        validation_users=validation_users,
    )
    sp = make_split(store, **spec)
    table = Table("part", "users with events", "events", title=f"split {protocol}", title_justify="left")
    for name in ("train", "valid", "test", "test_history"):
        part = getattr(sp, name)
        table.add_row(name, f"{int((part.lengths() > 0).sum()):,}", f"{part.n_events:,}")
    console.print(table)
    console.print_json(json.dumps(sp.protocol))
    if out is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid", "test"):
            part = getattr(sp, name)
            users = part.event_users()
            pq.write_table(
                pa.table(
                    {
                        "user_id": pa.array(part.user_ids[users].astype(str)),
                        "item_id": pa.array(part.item_ids[part.items].astype(str)),
                        "event_type": pa.array(
                            np.asarray(part.event_type_vocab)[part.event_types].astype(str)
                        ),
                        "timestamp": pa.array(part.timestamps, type=pa.timestamp("s")),
                    }
                ),
                out / f"{name}.parquet",
            )
        (out / SPLIT_FILE).write_text(json.dumps(sp.protocol, indent=2))
        console.print(f"wrote {out}/train.parquet, valid.parquet, test.parquet")


# ---------------------------------------------------------------------------------------------- train / evaluate
