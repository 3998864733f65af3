"""Scale: time and memory of each stage vs the number of events (generated Taobao-like logs).

For each size (10^5, 10^6, 10^7 events by default) a log is generated with N/25 users and N/100 items
(Zipf-like item popularity, 0.1% bad rows, 0.1% duplicates), then each stage runs in a fresh process
whose peak memory (the whole process tree: the Spark JVM and its Python workers included) is sampled:

* ``ingest-duckdb``: ``ingest_file`` into a new event store (validation, quarantine, dedup, sessions);
* ``prepare-spark``: the same job on PySpark ``local[2]`` to Parquet (``--engine spark``);
* ``sequences``: the store's events to the in-memory :class:`Interactions` every model trains on;
* ``train-epoch``: one epoch of the behaviour Transformer (sampled softmax, 1,024 negatives, d = 64,
  max_len 50) over the first 5,000 users, with the item table sized to the full catalogue.

    .venv/bin/python benchmarks/run_scale.py                    # 1e5, 1e6, 1e7
    .venv/bin/python benchmarks/run_scale.py --sizes 100000 --stages ingest-duckdb,sequences

Each (size, stage) is one line of benchmarks/results.jsonl (dataset ``synthetic-<N>``, model ``scale-<stage>``);
``make_tables.py`` renders them in docs/scale.md's table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

from behaviorlm.evaluation.benchmark import append_jsonl, git_commit, machine_description

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
STAGES = ("ingest-duckdb", "prepare-spark", "sequences", "train-epoch")
TRAIN_USERS = 5_000


def generate(path: Path, *, events: int, seed: int = 0) -> dict[str, int]:
    """Taobao UserBehavior-style rows (user,item,category,behavior,unix_seconds; no header)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, events // 25), max(10, events // 100)
    users = rng.integers(1, n_users + 1, events)
    items = (rng.zipf(1.2, events) - 1) % n_items + 1
    items = (items * 2_654_435_761) % 1_000_000_007  # spread ids so popularity is not the id order
    behaviors = rng.choice(np.array(["pv", "cart", "fav", "buy"]), events, p=[0.89, 0.06, 0.03, 0.02])
    behaviors = np.where(rng.random(events) < 0.001, "teleport", behaviors)
    ts = 1_511_539_200 + rng.integers(0, 9 * 86_400, events)
    dup = rng.integers(0, events, events // 1000)
    users[dup[1:]], items[dup[1:]], ts[dup[1:]] = users[dup[:-1]], items[dup[:-1]], ts[dup[:-1]]
    behaviors[dup[1:]] = behaviors[dup[:-1]]
    table = pa.table({"u": users, "i": items, "c": items % 9_000, "b": behaviors, "t": ts})
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=False))
    return {"users": n_users, "items": n_items}


# ---------------------------------------------------------------------------------------------- stages
def _ingest_duckdb(csv: Path, work: Path) -> dict[str, Any]:
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.ingest import ingest_file
    from behaviorlm.data.store import EventStore

    store_path = work / "store.duckdb"
    store_path.unlink(missing_ok=True)
    with EventStore(store_path) as store:
        summary = ingest_file(store, csv, config=IngestConfig(format="taobao"))
    return {
        "seconds": summary.seconds,
        "rows_per_s": summary.rows_per_second,
        "stored": summary.stored,
        "store_mb": store_path.stat().st_size / 2**20,
    }


def _prepare_spark(csv: Path, work: Path) -> dict[str, Any]:
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.spark import prepare_spark, spark_session

    started = time.perf_counter()
    spark = spark_session("local[2]", spark_driver_memory="6g")
    session_s = time.perf_counter() - started
    out = work / "spark-out"
    summary = prepare_spark(csv, out, config=IngestConfig(format="taobao"), spark=spark)
    size = sum(f.stat().st_size for f in out.rglob("*.parquet") if f.is_file())
    spark.stop()
    return {
        "seconds": summary.seconds,
        "rows_per_s": summary.rows_per_second,
        "session_start_s": session_s,
        "stored": summary.stored,
        "parquet_mb": size / 2**20,
    }


def _sequences(csv: Path, work: Path) -> dict[str, Any]:
    from behaviorlm.data.store import EventStore

    started = time.perf_counter()
    with EventStore(work / "store.duckdb", read_only=True) as store:
        inter = store.interactions()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows_per_s": inter.n_events / seconds,
        "users": inter.n_users,
        "items": inter.n_items,
        "events": inter.n_events,
    }


def _train_epoch(csv: Path, work: Path) -> dict[str, Any]:
    import torch

    from behaviorlm.data.store import EventStore
    from behaviorlm.models.transformer import BehaviorTransformer

    torch.set_num_threads(2)
    with EventStore(work / "store.duckdb", read_only=True) as store:
        inter = store.interactions()
    subset = inter.filter_events(inter.event_users() < TRAIN_USERS)
    model = BehaviorTransformer(epochs=1, loss="sampled", n_negatives=1024, max_len=50, batch_size=256)
    started = time.perf_counter()
    model.fit(subset)
    seconds = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.net_.parameters())
    return {
        "seconds": seconds,
        "rows_per_s": subset.n_events / seconds,
        "train_users": int(min(TRAIN_USERS, inter.n_users)),
        "train_events": subset.n_events,
        "items": inter.n_items,
        "parameters": n_params,
    }


_STAGE_FUNCS = {
    "ingest-duckdb": _ingest_duckdb,
    "prepare-spark": _prepare_spark,
    "sequences": _sequences,
    "train-epoch": _train_epoch,
}


def _child(stage: str, csv: str, work: str, queue: mp.Queue) -> None:
    try:
        queue.put(_STAGE_FUNCS[stage](Path(csv), Path(work)))
    except Exception as exc:  # reported by the parent with the stage's name
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_stage(stage: str, csv: Path, work: Path) -> dict[str, Any]:
    """Run ``stage`` in a spawned process; add the peak RSS of its whole process tree (sampled every 0.1 s)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(stage, str(csv), str(work), queue))
    proc.start()
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = queue.get()
    proc.join()
    done.set()
    sampler.join()
    if "error" in result:
        raise RuntimeError(f"stage {stage}: {result['error']}")
    result["peak_rss_mb"] = peak / 2**20
    return result


# ---------------------------------------------------------------------------------------------- table
DOC = HERE.parent / "docs" / "scale.md"
BEGIN, END = "<!-- scale-table:begin (benchmarks/run_scale.py --table) -->", "<!-- scale-table:end -->"


def render_table() -> str:
    """The latest record of each (size, stage) in results.jsonl as a Markdown table."""
    import json

    latest: dict[tuple[int, str], dict[str, Any]] = {}
    for line in RESULTS.read_text().splitlines():
        record = json.loads(line)
        if record.get("model", "").startswith("scale-") and record.get("dataset", "").startswith(
            "synthetic-"
        ):
            latest[(record["params"]["events"], record["model"][len("scale-") :])] = record
    rows = [
        "| events | users / items | stage | seconds | events/s | peak RSS (MB) | output |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for (events, stage), r in sorted(latest.items(), key=lambda kv: (kv[0][0], STAGES.index(kv[0][1]))):
        m, p = r["metrics"], r["params"]
        if stage == "ingest-duckdb":
            output = f"store {m['store_mb']:.0f} MB"
        elif stage == "prepare-spark":
            output = (
                f"Parquet {m['parquet_mb']:.0f} MB; session start {m['session_start_s']:.0f} s not included"
            )
        elif stage == "train-epoch":
            output = f"{m['train_users']:,} users, {m['train_events']:,} events, {m['parameters'] / 1e6:.1f} M parameters"
        else:
            output = f"{m['events']:,} events in memory"
        rows.append(
            f"| {events:,} | {p['users']:,} / {p['items']:,} | {stage} | {m['seconds']:.1f} | {m['rows_per_s']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} | {output} |"
        )
    machine = next(iter(latest.values()))["machine"] if latest else "n/a"
    return "\n".join(rows) + f"\n\nMachine: {machine}; CPU only.\n"


def write_table() -> None:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + BEGIN + "\n" + render_table() + END + tail)
    print(f"wrote the table to {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (default: a temp dir).")
    parser.add_argument(
        "--table", action="store_true", help="Only render docs/scale.md's table from results.jsonl."
    )
    args = parser.parse_args()
    if args.table:
        write_table()
        return
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown {unknown}; stages are {list(STAGES)}")
    root = args.work or Path(tempfile.mkdtemp(prefix="behaviorlm-scale-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            work = root / str(size)
            work.mkdir(parents=True, exist_ok=True)
            csv = work / "UserBehavior.csv"
            shape = generate(csv, events=size)
            csv_mb = csv.stat().st_size / 2**20
            for stage in stages:
                result = run_stage(stage, csv, work)
                print(
                    f"{size:>10,} events  {stage:<14} {result['seconds']:8.1f} s  "
                    f"{result['rows_per_s']:>12,.0f} events/s  peak {result['peak_rss_mb']:8.0f} MB",
                    flush=True,
                )
                append_jsonl(
                    RESULTS,
                    {
                        "dataset": f"synthetic-{size}",
                        "model": f"scale-{stage}",
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "git_commit": git_commit(),
                        "machine": machine_description(),
                        "metrics": {k: v for k, v in result.items() if k != "peak_rss_mb"},
                        "params": {"events": size, "csv_mb": csv_mb, **shape},
                        "peak_rss_mb": result["peak_rss_mb"],
                    },
                )
            shutil.rmtree(work / "spark-out", ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)
    write_table()


if __name__ == "__main__":
    main()
