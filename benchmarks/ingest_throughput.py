"""Ingest throughput: a generated Taobao-like CSV into the event store, behaviorlm vs pandas.

Both paths do the same job on the same file: parse, validate (required fields, numeric timestamp,
event-type vocabulary), drop exact duplicates, and insert the rows into a fresh DuckDB event store.
The behaviorlm path additionally quarantines every bad row with its line number and reason and writes
the item catalogue; the pandas path (``pd.read_csv`` + boolean masks + ``drop_duplicates`` + one
bulk insert through DuckDB's DataFrame scan) is the usual hand-written pipeline. A third row,
``duckdb-copy``, is a lower bound rather than a pipeline: DuckDB's typed CSV scan written straight into
a table, with no checks, ids or dedup.

    .venv/bin/python benchmarks/ingest_throughput.py --rows 5000000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_file
from behaviorlm.data.store import EventStore, sql_literal
from behaviorlm.evaluation.benchmark import append_jsonl, provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"


def generate(path: Path, *, rows: int, seed: int = 0) -> None:
    """Taobao UserBehavior-like rows: user,item,category,behavior,unix_seconds (no header).

    Zipf-like item popularity, 89% pv / 6% cart / 3% fav / 2% buy, 9 days of timestamps; 0.1% of rows are
    exact duplicates and 0.1% carry an unknown behaviour, so dedup and quarantine do real work.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 1_000_000, rows)
    items = (rng.zipf(1.3, rows) % 4_000_000) + 1
    categories = items % 9_000 + 1
    behaviors = rng.choice(np.array(["pv", "cart", "fav", "buy"]), rows, p=[0.89, 0.06, 0.03, 0.02])
    ts = 1_511_539_200 + rng.integers(0, 9 * 86_400, rows)
    bad = rng.random(rows) < 0.001
    behaviors = np.where(bad, "teleport", behaviors)
    dup_src = rng.integers(0, rows, rows // 1000)
    dup_dst = rng.integers(0, rows, rows // 1000)
    for arr in (users, items, categories, ts):
        arr[dup_dst] = arr[dup_src]
    behaviors[dup_dst] = behaviors[dup_src]
    table = pa.table({"u": users, "i": items, "c": categories, "b": behaviors, "t": ts})
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=False))


def run_behaviorlm(csv_path: Path, store_path: Path) -> dict:
    store_path.unlink(missing_ok=True)
    with EventStore(store_path) as store:
        summary = ingest_file(store, csv_path, config=IngestConfig(format="taobao", session_gap_seconds=None))
    return {
        "seconds": summary.seconds,
        "stored": summary.stored,
        "quarantined": summary.quarantined,
        "duplicates": summary.duplicates,
        "rows_read": summary.rows_read,
        "stage_seconds": summary.stage_seconds,
    }


def run_pandas(csv_path: Path, store_path: Path) -> dict:
    import pandas as pd

    store_path.unlink(missing_ok=True)
    started = time.perf_counter()
    df = pd.read_csv(
        csv_path, header=None, names=["user_id", "item_id", "category", "behavior", "ts"], dtype=str
    )
    vocab = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}
    df["event_type"] = df["behavior"].str.strip().str.lower().map(vocab)
    seconds_since_epoch = pd.to_numeric(df["ts"], errors="coerce")
    ok = (
        df["user_id"].notna() & df["item_id"].notna() & df["event_type"].notna() & seconds_since_epoch.notna()
    )
    good = df.loc[ok, ["user_id", "item_id", "event_type"]].copy()
    good["timestamp"] = pd.to_datetime(seconds_since_epoch[ok], unit="s")
    before = len(good)
    good = good.drop_duplicates()
    with EventStore(store_path) as store:
        store.register("_pandas_events", pa.Table.from_pandas(good, preserve_index=False))
        store.execute(
            "CREATE TABLE pandas_events AS SELECT user_id, item_id, event_type, timestamp FROM _pandas_events"
        )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "stored": len(good),
        "quarantined": int((~ok).sum()),
        "duplicates": before - len(good),
        "rows_read": len(df),
    }


def run_floor(csv_path: Path, store_path: Path) -> dict:
    """A lower bound, not a pipeline: DuckDB's typed CSV scan straight into a table, no checks at all.

    No validation, no event ids, no dedup, no quarantine, no line numbers: what parsing the file and
    writing its rows into a DuckDB file costs on this machine, for reading the other two rows against.
    """
    store_path.unlink(missing_ok=True)
    started = time.perf_counter()
    with EventStore(store_path) as store:
        store.execute(
            f"""CREATE TABLE raw_copy AS SELECT * FROM read_csv({sql_literal(str(csv_path))}, header = false,
                    columns = {{'user_id': 'VARCHAR', 'item_id': 'VARCHAR', 'category': 'VARCHAR',
                                'behavior': 'VARCHAR', 'ts': 'BIGINT'}}, auto_detect = false,
                    ignore_errors = true)"""
        )
        stored = store.scalar("SELECT count(*) FROM raw_copy")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "stored": stored, "quarantined": 0, "duplicates": 0, "rows_read": stored}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = HERE / "_data"
    work.mkdir(exist_ok=True)
    csv_path = work / f"taobao-like-{args.rows}.csv"
    if not csv_path.exists():
        print(f"generating {csv_path} …", flush=True)
        generate(csv_path, rows=args.rows)
    dataset = (
        f"taobao-like-{args.rows // 1_000_000}M" if args.rows >= 1_000_000 else f"taobao-like-{args.rows}"
    )
    results = {}
    pipelines = (("behaviorlm", run_behaviorlm), ("pandas", run_pandas), ("duckdb-copy", run_floor))
    for name, runner in pipelines:
        out = runner(csv_path, work / f"ingest-{name}.duckdb")
        results[name] = out
        record = {
            "dataset": dataset,
            "model": f"ingest-{name}",
            "protocol": {
                "task": "ingest",
                "file_bytes": csv_path.stat().st_size,
                "rows": args.rows,
                "store": "DuckDB file, fresh",
            },
            "metrics": {
                "rows_per_second": out["rows_read"] / out["seconds"],
                "seconds": out["seconds"],
                "stored": out["stored"],
                "quarantined": out["quarantined"],
                "duplicates": out["duplicates"],
                **({"stage_seconds": out["stage_seconds"]} if "stage_seconds" in out else {}),
            },
            "train_seconds": out["seconds"],
            "eval_seconds": 0.0,
            **provenance(),
        }
        append_jsonl(args.out, record)
        print(
            f"{name:10s} {out['seconds']:6.2f} s  {out['rows_read'] / out['seconds']:>12,.0f} rows/s  "
            f"stored {out['stored']:,} quarantined {out['quarantined']:,} duplicates {out['duplicates']:,}",
            flush=True,
        )
    speedup = results["pandas"]["seconds"] / results["behaviorlm"]["seconds"]
    print(json.dumps({"speedup_vs_pandas": round(speedup, 2)}))


if __name__ == "__main__":
    main()
