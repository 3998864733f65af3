"""Data preparation to Parquet with a choice of engine: DuckDB on one machine, Spark on a cluster.

``prepare(source, out_dir, engine=...)`` validates, quarantines, deduplicates and sequences a behaviour log
and writes the results as Parquet, without touching any event store:

* ``out_dir/{events,items,users,quarantine,kg_triples,item_entities,ingest_log}.parquet`` + ``manifest.json``:
  the event store's export layout, loadable with ``EventStore.import_parquet`` (``behaviorlm ingest
  --engine spark`` does exactly that);
* ``out_dir/sequences.parquet``: one row per user with ``item_ids``, ``event_types`` and ``timestamps``
  (unix seconds) in time order, ties broken by ingest order.

Both engines give the same rows, quarantine reasons and sequences (see :mod:`behaviorlm.data.spark` for the
few malformed-input cases where the Spark reader differs). With Spark a table may be a directory of part
files rather than one file; DuckDB, pyarrow and Spark read either.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import IngestError, IngestSummary, ingest_file
from behaviorlm.data.store import EventStore

Engine = Literal["duckdb", "spark"]


def prepare(
    path: str | Path,
    out_dir: str | Path,
    *,
    config: IngestConfig | None = None,
    engine: Engine = "duckdb",
    spark_master: str = "local[2]",
) -> IngestSummary:
    """Validate, quarantine, dedup and sequence ``path``; write the Parquet outputs to ``out_dir``."""
    config = config or IngestConfig()
    out_dir = Path(out_dir)
    if engine == "spark":
        try:
            from behaviorlm.data.spark import prepare_spark
        except ImportError as exc:
            raise IngestError(str(exc)) from None
        return prepare_spark(path, out_dir, config=config, master=spark_master)
    if engine != "duckdb":
        raise IngestError(f"--engine must be 'duckdb' or 'spark', not {engine!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="behaviorlm-prepare-") as tmp,
        EventStore(Path(tmp) / "stage.duckdb") as store,
    ):
        summary = ingest_file(store, path, config=config)
        store.export_parquet(out_dir)
        store.export_sequences(out_dir / "sequences.parquet")
    return summary


def ingest_with_spark(
    store: EventStore,
    path: str | Path,
    *,
    config: IngestConfig | None = None,
    spark_master: str = "local[2]",
) -> IngestSummary:
    """Ingest ``path`` into ``store`` with Spark doing the validation, dedup and sessionization.

    Spark writes the Parquet outputs to a temporary directory; they are then appended to the store, where
    events already stored count as duplicates (``duplicates_in_store``) and quarantined rows already
    recorded for this source are not added twice -- the same accounting as :func:`ingest_file`.
    """
    config = config or IngestConfig()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="behaviorlm-spark-") as tmp:
        prepared = prepare(path, Path(tmp) / "out", config=config, engine="spark", spark_master=spark_master)
        added = store.import_parquet(Path(tmp) / "out", tables=("events", "items", "quarantine"))
    in_store = prepared.stored - added["events"]
    summary = IngestSummary(
        source=prepared.source,
        format=prepared.format,
        rows_read=prepared.rows_read,
        stored=added["events"],
        quarantined=prepared.quarantined,
        duplicates=prepared.duplicates + in_store,
        duplicates_in_file=prepared.duplicates_in_file,
        duplicates_in_store=in_store,
        quarantine_reasons=prepared.quarantine_reasons,
        items_upserted=added["items"],
        seconds=time.perf_counter() - started,
        warnings=prepared.warnings,
    )
    store.execute(
        "INSERT INTO ingest_log (source, format, rows_read, stored, quarantined, duplicates, seconds) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            summary.source,
            f"{summary.format} (spark)",
            summary.rows_read,
            summary.stored,
            summary.quarantined,
            summary.duplicates,
            summary.seconds,
        ],
    )
    return summary
