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

``--catalogue`` (issue 24, item 5) generates one log over an exact catalogue instead: ``--users`` users,
``--items`` items (default 10^6 each; bounded Zipf popularity) and ``--events`` events (2 x 10^7), see
:func:`generate_catalogue`, and runs ``ingest-duckdb``, ``sequences`` and

* ``train``: the default behaviour Transformer (``BehaviorTransformer().fit``, every default) over all users
  and the whole item table, its first epoch cut after ``--train-seconds``; seconds per epoch are derived
  from the measured steps (or measured, when the epoch ends within the budget); the model is saved;
* ``serve``: ``behaviorlm serve`` with that model and the store, under service_load.py's open-loop load of
  top-10 recommendations (``--rps`` for ``--serve-seconds``); the service's own peak RSS is sampled.

    taskset -c 1 env OMP_NUM_THREADS=1 BEHAVIORLM_TORCH_THREADS=1 \\
        .venv/bin/python benchmarks/run_scale.py --catalogue --threads 1 --work /tmp/catalogue

Each (size, stage) is one line of benchmarks/results.jsonl (dataset ``synthetic-<N>``, or
``synthetic-catalogue-<items>``, model ``scale-<stage>``); ``--table`` renders them in docs/scale.md's tables.
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
CATALOGUE_STAGES = ("ingest-duckdb", "sequences", "train", "serve")
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


def generate_catalogue(
    path: Path, *, users: int, items: int, events: int, zipf: float = 1.0, seed: int = 0
) -> dict[str, Any]:
    """Taobao UserBehavior-style rows over a catalogue of exactly ``items`` items and ``users`` users.

    The first ``users`` rows give every user one event and the first ``items`` rows every item one event
    (so the store, and the model's item table, has exactly that many of each); the other rows draw the
    user uniformly (each user's count is then about Poisson(events / users)) and the item from a bounded
    Zipf law, item of popularity rank ``r`` with probability proportional to ``r ** -zipf``. Item ids are
    the ranks scattered by a multiplicative hash, so popularity is not the id order. Times are uniform
    over 9 days; no bad rows, no duplicates (the ingest stage of ``--sizes`` covers those).
    """
    if events < max(users, items):
        raise SystemExit(f"--events {events:,} must be at least --users and --items")
    rng = np.random.default_rng(seed)
    user = np.concatenate([np.arange(users), rng.integers(0, users, events - users)]) + 1
    cdf = np.cumsum(np.arange(1, items + 1, dtype=np.float64) ** -zipf)
    cdf /= cdf[-1]
    drawn = np.minimum(np.searchsorted(cdf, rng.random(events - items), side="right"), items - 1)
    rank = np.concatenate([rng.permutation(items), drawn])
    item = (rank + 1) * 2_654_435_761 % 1_000_000_007
    behavior = np.array(["pv", "cart", "fav", "buy"])[rng.choice(4, events, p=[0.89, 0.06, 0.03, 0.02])]
    ts = 1_511_539_200 + rng.integers(0, 9 * 86_400, events)
    table = pa.table({"u": user, "i": item, "c": item % 9_000, "b": behavior, "t": ts})
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=False))
    top = np.bincount(rank, minlength=items)
    return {
        "users": users,
        "items": items,
        "zipf": zipf,
        "top_item_share": float(top.max() / events),
        "top_1pct_items_share": float(np.sort(top)[::-1][: max(1, items // 100)].sum() / events),
    }


# ---------------------------------------------------------------------------------------------- stages
def _ingest_duckdb(csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
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


def _prepare_spark(csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
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


def _sequences(csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
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


def _train_epoch(csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
    import torch

    from behaviorlm.data.store import EventStore
    from behaviorlm.models.transformer import BehaviorTransformer
    from behaviorlm.training.options import TrainingOptions

    torch.set_num_threads(opts["threads"])
    with EventStore(work / "store.duckdb", read_only=True) as store:
        inter = store.interactions()
    subset = inter.filter_events(inter.event_users() < TRAIN_USERS)
    model = BehaviorTransformer(
        loss="sampled", n_negatives=1024, max_len=50, training=TrainingOptions(epochs=1, batch_size=256)
    )
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


def _train(csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """The default behaviour Transformer fitted on every user over the whole catalogue, its first epoch cut
    after ``opts["train_seconds"]`` (or at its end, if sooner); the model is saved for ``serve``.

    The fit is the model's own (``BehaviorTransformer().fit``, every default); only ``loop.train`` is
    wrapped, in this process, so that it runs one epoch whose batches stop at the time budget. Each
    step's time is taken between the loop's requests for consecutive batches (batch slicing, forward,
    loss, backward, clipping, AdamW, schedule); AdamW's own share through torch's global optimizer hooks.
    """
    import dataclasses

    import torch
    import torch.optim.optimizer as optim_hooks

    from behaviorlm.data.store import EventStore
    from behaviorlm.models.sequential import IGNORE
    from behaviorlm.models.transformer import BehaviorTransformer
    from behaviorlm.training import loop

    torch.set_num_threads(opts["threads"])
    started = time.perf_counter()
    with EventStore(work / "store.duckdb", read_only=True) as store:
        inter = store.interactions()
    load_seconds = time.perf_counter() - started
    budget = float(opts["train_seconds"])
    marks: list[float] = []  # when the loop asked for each batch (the last: when it asked past the budget)
    positions: list[int] = []  # positions with a target (trained events) in each batch
    plan: dict[str, int] = {}
    optimizer_seconds: list[float] = []
    real_train = loop.train

    def one_budgeted_epoch(module: Any, *, batches: Any, steps_per_epoch: int, config: Any, **kw: Any) -> Any:
        plan["steps_per_epoch"] = steps_per_epoch

        def cut(epoch: int) -> Any:
            source = iter(batches(epoch))
            while True:
                marks.append(time.perf_counter())
                if marks[-1] - marks[0] >= budget:
                    return
                batch = next(source, None)
                if batch is None:
                    return
                positions.append(int((batch["targets"] != IGNORE).sum()))
                yield batch

        return real_train(
            module,
            batches=cut,
            steps_per_epoch=steps_per_epoch,
            config=dataclasses.replace(config, epochs=1),
            **kw,
        )

    pre = optim_hooks.register_optimizer_step_pre_hook(
        lambda *_: optimizer_seconds.append(-time.perf_counter())
    )
    post = optim_hooks.register_optimizer_step_post_hook(
        lambda *_: optimizer_seconds.__setitem__(-1, optimizer_seconds[-1] + time.perf_counter())
    )
    loop.train = one_budgeted_epoch
    try:
        model = BehaviorTransformer.from_params(
            {} if opts["batch_size"] is None else {"batch_size": opts["batch_size"]}
        )
        fit_started = time.perf_counter()
        model.fit(inter)
        fit_seconds = time.perf_counter() - fit_started
    finally:
        loop.train = real_train
        pre.remove()
        post.remove()
    steps = len(marks) - 1
    step_s = np.diff(marks)
    warm = min(3, steps - 1)  # the first steps pay for first-touch allocations
    steady = float(step_s[warm:].mean())
    lengths = inter.lengths()
    epoch_positions = int(np.minimum(lengths[lengths >= 2] - 1, model.max_len).sum())
    summary = model.training_summary()
    started = time.perf_counter()
    model.save(work / "model")
    save_seconds = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.net_.parameters())
    seconds_per_epoch = plan["steps_per_epoch"] * steady
    return {
        "seconds": float(step_s.sum()),
        "rows_per_s": epoch_positions / seconds_per_epoch,
        "load_seconds": load_seconds,
        "setup_seconds": marks[0] - fit_started,
        "fit_seconds": fit_seconds,
        "save_seconds": save_seconds,
        "model_mb": sum(f.stat().st_size for f in (work / "model").iterdir()) / 2**20,
        "train_users": int((lengths >= 2).sum()),
        "users": inter.n_users,
        "items": inter.n_items,
        "events": inter.n_events,
        "epoch_positions": epoch_positions,
        "steps_measured": steps,
        "steps_per_epoch": plan["steps_per_epoch"],
        "full_epoch": steps == plan["steps_per_epoch"],
        "seconds_per_step": float(step_s.mean()),
        "seconds_per_step_after_warmup": steady,
        "warmup_steps_excluded": warm,
        "optimizer_seconds_per_step": float(np.mean(optimizer_seconds[warm:steps])),
        "positions_per_s": float(sum(positions[warm:steps]) / step_s[warm:].sum()),
        "seconds_per_epoch": seconds_per_epoch,
        "seconds_per_epoch_source": (
            "measured"
            if steps == plan["steps_per_epoch"]
            else f"derived: steps_per_epoch x mean of {steps - warm} measured steps"
        ),
        "parameters": n_params,
        "item_table_mb": model.net_.item_emb.weight.numel() * 4 / 2**20,
        "d_model": model.d_model,
        "max_len": model.max_len,
        "batch_size": model.training.batch_size,
        "n_negatives": model.n_negatives,
        "loss": summary["loss"],
        "group_by_length": summary["group_by_length"],
        "padding_share_random_batches": summary["padding_share_random_batches"],
        "torch_threads": torch.get_num_threads(),
    }


def _serve(csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """``behaviorlm serve`` with the ``train`` stage's model and the event store (default service settings:
    int8 / bfloat16 serving copy, history cache preloaded when the store has at most 10^6 users), under
    service_load.py's open-loop load of top-10 recommendations for random users."""
    import asyncio
    import json
    import sys

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from behaviorlm.data.store import EventStore
    from behaviorlm.serving.security import create_key
    from service_load import cpu_seconds, recommend_load, start_service, stop_service

    store_path = work / "store.duckdb"
    with EventStore(store_path, read_only=True) as store:
        users = [
            str(u)
            for (u,) in store.rows(
                "SELECT user_id FROM (SELECT DISTINCT user_id FROM events) USING SAMPLE 5000 ROWS (reservoir, 0)"
            )
        ]
    keys_file = work / "keys.json"
    keys_file.unlink(missing_ok=True)
    key = create_key(keys_file, name="load", scopes=["read"])
    config = work / "service.json"
    config.write_text(
        json.dumps(
            {
                "store": str(store_path),
                "model": str(work / "model"),
                "keys_file": str(keys_file),
                "rate_limit_per_minute": 1_000_000,
                **(
                    {}
                    if opts["history_cache_users"] is None
                    else {"history_cache_users": opts["history_cache_users"]}
                ),
            }
        )
    )
    peak, done = 0, threading.Event()
    server_pid: list[int] = []

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                if server_pid:
                    peak = max(peak, psutil.Process(server_pid[0]).memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    server, base = start_service(config, work / "server.log", wait_seconds=opts["serve_wait_seconds"])
    server_pid.append(server.pid)
    try:
        startup_seconds = time.perf_counter() - started
        ready_rss = psutil.Process(server.pid).memory_info().rss
        import httpx

        example = httpx.get(
            f"{base}/v1/users/{users[0]}/recommendations",
            params={"k": 10},
            headers={"X-API-Key": key},
            timeout=120,
        )
        example.raise_for_status()
        n_items = len(example.json()["items"])
        cpu_before = cpu_seconds(server.pid)
        load = asyncio.run(recommend_load(base, key, users, rps=opts["rps"], seconds=opts["serve_seconds"]))
        load["server_cpu_ms_per_request"] = (
            1000 * (cpu_seconds(server.pid) - cpu_before) / (load["requests"] + 20)
        )
        end_rss = psutil.Process(server.pid).memory_info().rss
    finally:
        stop_service(server)
        done.set()
        sampler.join()
    return {
        "seconds": startup_seconds,
        "rows_per_s": load["rps"],
        "startup_seconds": startup_seconds,
        "server_ready_rss_mb": ready_rss / 2**20,
        "server_end_rss_mb": end_rss / 2**20,
        "server_peak_rss_mb": peak / 2**20,
        "example_items_returned": n_items,
        "target_rps": opts["rps"],
        "load_seconds": opts["serve_seconds"],
        "k": 10,
        "history_cache_users": opts["history_cache_users"],
        **load,
    }


_STAGE_FUNCS = {
    "ingest-duckdb": _ingest_duckdb,
    "prepare-spark": _prepare_spark,
    "sequences": _sequences,
    "train-epoch": _train_epoch,
    "train": _train,
    "serve": _serve,
}


def _child(stage: str, csv: str, work: str, opts: dict[str, Any], queue: mp.Queue) -> None:
    try:
        queue.put(_STAGE_FUNCS[stage](Path(csv), Path(work), opts))
    except Exception as exc:  # reported by the parent with the stage's name
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_stage(stage: str, csv: Path, work: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` in a spawned process; add the peak RSS of its whole process tree (sampled every 0.1 s)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(stage, str(csv), str(work), opts, queue))
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
    result = None
    while result is None:
        try:
            result = queue.get(timeout=1)
        except Exception:  # queue.Empty: still running, or dead without an answer (e.g. killed for memory)
            if not proc.is_alive():
                result = {"error": f"the process exited with {proc.exitcode} and no result"}
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
        dataset = record.get("dataset", "")
        if (
            record.get("model", "").startswith("scale-")
            and dataset.startswith("synthetic-")
            and not dataset.startswith(CATALOGUE_DATASET)
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


CATALOGUE_DATASET = "synthetic-catalogue-"
CATALOGUE_BEGIN = "<!-- catalogue-table:begin (benchmarks/run_scale.py --table) -->"
CATALOGUE_END = "<!-- catalogue-table:end -->"


def _short(n: int) -> str:
    """1000000 -> '1m', 100000 -> '100k' (dataset names)."""
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def render_catalogue_table() -> str:
    """The latest record of each (users, items, events, stage) of ``--catalogue`` runs as a Markdown table."""
    import json

    latest: dict[tuple[int, int, int, str, tuple[Any, ...]], dict[str, Any]] = {}
    for line in RESULTS.read_text().splitlines():
        record = json.loads(line)
        if record.get("model", "").startswith("scale-") and record.get("dataset", "").startswith(
            CATALOGUE_DATASET
        ):
            p = record["params"]
            stage = record["model"][len("scale-") :]
            # Variants of a stage: serve's history cache setting and request rate, train's batch size.
            m = record["metrics"]
            variant = (m.get("history_cache_users"), m.get("target_rps"), m.get("batch_size"))
            latest[(p["events"], p["items"], p["users"], stage, variant)] = record
    rows = [
        "| users / items / events | stage | seconds | peak RSS (MB) | result |",
        "|---:|---|---:|---:|---|",
    ]
    order = sorted(
        latest.items(), key=lambda kv: (kv[0][:3], CATALOGUE_STAGES.index(kv[0][3]), kv[1]["date"])
    )
    for (events, items, users, stage, _), r in order:
        m = r["metrics"]
        cache = m.get("history_cache_users")
        if stage == "ingest-duckdb":
            result = f"{m['rows_per_s']:,.0f} events/s; store {m['store_mb']:,.0f} MB"
        elif stage == "sequences":
            result = f"{m['rows_per_s']:,.0f} events/s; {m['users']:,} users, {m['items']:,} items in memory"
        elif stage == "train":
            epoch = m["seconds_per_epoch"]
            source = (
                "one full epoch, measured"
                if m["full_epoch"]
                else f"derived: {m['steps_per_epoch']:,} steps x the mean of {m['steps_measured']:,} measured "
                f"steps, first {m['warmup_steps_excluded']} excluded"
            )
            hours = f" = {epoch / 3600:.1f} h" if epoch >= 360 else ""
            result = (
                f"{m['steps_measured']:,} of {m['steps_per_epoch']:,} steps ({m['batch_size']} users each): "
                f"{m['seconds_per_step_after_warmup']:.2f} s/step, of which AdamW "
                f"{m['optimizer_seconds_per_step']:.2f} s; {m['positions_per_s']:,.0f} events/s; "
                f"**{epoch:,.0f} s per epoch{hours}** ({source}); "
                f"d_model {m['d_model']}, max_len {m['max_len']}, loss {m['loss']}, "
                f"{m['n_negatives']:,} negatives, {m['parameters'] / 1e6:.0f} M parameters "
                f"(item table {m['item_table_mb']:,.0f} MB); load from store {m['load_seconds']:.0f} s, "
                f"setup {m['setup_seconds']:.0f} s, save {m['save_seconds']:.0f} s ({m['model_mb']:,.0f} MB)"
            )
        else:
            cached = (
                "history cache preloaded (default)"
                if cache is None
                else f"history_cache_users = {cache:,}"
                + (" (every request reads the store)" if cache == 0 else "")
            )
            result = (
                f"{cached}: top-10 p50 **{m['p50_ms']:,.1f} ms**, p99 **{m['p99_ms']:,.1f} ms**, max {m['max_ms']:,.0f} ms "
                f"at {m['rps']:.1f} req/s (open loop, {m['target_rps']:g} scheduled) for {m['load_seconds']:.0f} s ({m['requests']:,} requests, "
                f"{m['errors']} errors; {m['server_cpu_ms_per_request']:.1f} CPU ms/request); service up in "
                f"{m['startup_seconds']:.0f} s at {m['server_ready_rss_mb']:,.0f} MB, service peak "
                f"{m['server_peak_rss_mb']:,.0f} MB"
            )
        peak = m["server_peak_rss_mb"] if stage == "serve" else r["peak_rss_mb"]
        rows.append(
            f"| {users:,} / {items:,} / {events:,} | {stage} | {m['seconds']:,.1f} | {peak:,.0f} | {result} |"
        )
    machine = next(iter(latest.values()))["machine"] if latest else "n/a"
    threads = {r["params"].get("threads") for r in latest.values()}
    return "\n".join(rows) + (
        f"\n\nMachine: {machine}; CPU only; every stage pinned to one core with "
        f"{', '.join(str(t) for t in sorted(threads, key=str))} thread(s) "
        "(`taskset -c 1`, `--threads 1`, `OMP_NUM_THREADS=1`, `BEHAVIORLM_TORCH_THREADS=1`). "
        "Seconds: ingest and sequences wall time; train the measured steps; serve the service's start-up. "
        "Peak RSS: the stage's process tree, for serve the service process alone.\n"
    )


def _replace_between(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{DOC} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + "\n" + body + end + tail


def write_table() -> None:
    text = _replace_between(DOC.read_text(), BEGIN, END, render_table())
    text = _replace_between(text, CATALOGUE_BEGIN, CATALOGUE_END, render_catalogue_table())
    DOC.write_text(text)
    print(f"wrote the tables to {DOC}")


def _record(dataset: str, stage: str, result: dict[str, Any], params: dict[str, Any]) -> None:
    append_jsonl(
        RESULTS,
        {
            "dataset": dataset,
            "model": f"scale-{stage}",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "machine": machine_description(),
            "metrics": {k: v for k, v in result.items() if k != "peak_rss_mb"},
            "params": params,
            "peak_rss_mb": result["peak_rss_mb"],
        },
    )


def run_catalogue(args: argparse.Namespace, stages: list[str], root: Path, opts: dict[str, Any]) -> None:
    """``--catalogue``: one generated log of ``--users`` users, ``--items`` items, ``--events`` events."""
    work = root / f"catalogue-{args.users}-{args.items}-{args.events}"
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "UserBehavior.csv"
    started = time.perf_counter()
    shape = generate_catalogue(csv, users=args.users, items=args.items, events=args.events, zipf=args.zipf)
    print(f"generated {args.events:,} events in {time.perf_counter() - started:.0f} s: {shape}", flush=True)
    dataset = f"{CATALOGUE_DATASET}{_short(args.items)}"
    params = {
        "events": args.events,
        "csv_mb": csv.stat().st_size / 2**20,
        **shape,
        "threads": args.threads,
        "cores": len(psutil.Process().cpu_affinity()),
        **({"train_seconds": args.train_seconds} if "train" in stages else {}),
    }
    for stage in stages:
        result = run_stage(stage, csv, work, opts)
        print(f"{dataset} {stage:<14} {result}", flush=True)
        _record(dataset, stage, result, params)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--stages", default=None, help="Default: every stage of the mode.")
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (default: a temp dir).")
    parser.add_argument(
        "--table", action="store_true", help="Only render docs/scale.md's tables from results.jsonl."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training stages.")
    catalogue = parser.add_argument_group("catalogue scale (--catalogue)")
    catalogue.add_argument(
        "--catalogue",
        action="store_true",
        help="One log of --users users x --items items x --events events (Zipf popularity) instead of --sizes; "
        f"stages {list(CATALOGUE_STAGES)}.",
    )
    catalogue.add_argument("--users", type=int, default=1_000_000)
    catalogue.add_argument("--items", type=int, default=1_000_000)
    catalogue.add_argument("--events", type=int, default=20_000_000)
    catalogue.add_argument("--zipf", type=float, default=1.0, help="Popularity exponent (rank ** -zipf).")
    catalogue.add_argument(
        "--train-seconds", type=float, default=600, help="Time budget of the train stage's one epoch."
    )
    catalogue.add_argument(
        "--batch-size", type=int, default=None, help="train: the model's batch_size (default: its default)."
    )
    catalogue.add_argument("--rps", type=float, default=10, help="Recommendation requests per second.")
    catalogue.add_argument("--serve-seconds", type=float, default=60, help="Length of the load.")
    catalogue.add_argument(
        "--history-cache-users",
        type=int,
        default=None,
        help="The service's history_cache_users (default: the service's own default).",
    )
    catalogue.add_argument(
        "--serve-wait", type=float, default=1800, help="Seconds the service may take to start."
    )
    args = parser.parse_args()
    if args.table:
        write_table()
        return
    known = CATALOGUE_STAGES if args.catalogue else STAGES
    stages = [s for s in (args.stages or ",".join(known)).split(",") if s]
    unknown = sorted(set(stages) - set(known))
    if unknown:
        parser.error(f"--stages: unknown {unknown}; stages are {list(known)}")
    opts = {
        "threads": args.threads,
        "train_seconds": args.train_seconds,
        "rps": args.rps,
        "serve_seconds": args.serve_seconds,
        "serve_wait_seconds": args.serve_wait,
        "history_cache_users": args.history_cache_users,
        "batch_size": args.batch_size,
    }
    root = args.work or Path(tempfile.mkdtemp(prefix="behaviorlm-scale-"))
    try:
        if args.catalogue:
            run_catalogue(args, stages, root, opts)
        else:
            for size in (int(s) for s in args.sizes.split(",")):
                work = root / str(size)
                work.mkdir(parents=True, exist_ok=True)
                csv = work / "UserBehavior.csv"
                shape = generate(csv, events=size)
                csv_mb = csv.stat().st_size / 2**20
                for stage in stages:
                    result = run_stage(stage, csv, work, opts)
                    print(
                        f"{size:>10,} events  {stage:<14} {result['seconds']:8.1f} s  "
                        f"{result['rows_per_s']:>12,.0f} events/s  peak {result['peak_rss_mb']:8.0f} MB",
                        flush=True,
                    )
                    _record(f"synthetic-{size}", stage, result, {"events": size, "csv_mb": csv_mb, **shape})
                shutil.rmtree(work / "spark-out", ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)
    write_table()


if __name__ == "__main__":
    main()
