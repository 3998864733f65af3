"""Load test of the REST service on loopback: recommendation latency at a fixed request rate, and event
ingestion throughput with loss accounting. Appends "recommend-api" and "events-api" records to
benchmarks/results.jsonl.

The service runs as `behaviorlm serve` in its own process, with a Beauty-sized model (the full
54,542-item catalogue of Amazon Beauty, d_model 128, max_len 50): latency depends on the catalogue size
and the model's shape, not on how long it was trained, so the model is fitted for one epoch on 2,000
users (its weights are not used for any quality claim). The load generator is an open-loop asyncio
client: requests start on a fixed schedule whether or not earlier ones have finished, so a slow
server shows up as latency instead of as a lower request rate.

    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/service_load.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(config: Path, log: Path, *, wait_seconds: float = 60) -> tuple[subprocess.Popen, str]:
    """Start ``behaviorlm serve --config config`` on a free loopback port (output to ``log``) and wait until
    ``/v1/health`` answers: (the server process, its base URL). Raises if it exits or is not up in time."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "behaviorlm.cli.main", "serve", "--config", str(config), "--port", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"behaviorlm serve exited with {server.returncode}; see {log}")
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_service(server)
    raise RuntimeError(f"behaviorlm serve was not up after {wait_seconds:.0f} s; see {log}")


def stop_service(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)


def prepare(workdir: Path) -> tuple[Path, list[str]]:
    """Store with Amazon Beauty, a Beauty-sized model, a keys file and a service config."""
    from behaviorlm.data.datasets import ingest_dataset
    from behaviorlm.data.store import EventStore
    from behaviorlm.models.transformer import BehaviorTransformer
    from behaviorlm.serving.security import create_key
    from behaviorlm.training.options import TrainingOptions

    store_path = workdir / "events.duckdb"
    with EventStore(store_path) as store:
        ingest_dataset(store, "beauty")
        data = store.interactions()
    users = np.arange(data.n_users)
    subset = data.filter_events(np.repeat(users < 2_000, data.lengths()))
    model = BehaviorTransformer(training=TrainingOptions(epochs=1)).fit(subset)
    assert model.net_.item_table().shape[0] == data.n_items
    model_path = model.save(workdir / "model")
    keys_file = workdir / "keys.json"
    key = create_key(keys_file, name="load", scopes=["read", "write"])
    config = workdir / "service.json"
    config.write_text(
        json.dumps(
            {
                "store": str(store_path),
                "model": str(model_path),
                "keys_file": str(keys_file),
                "rate_limit_per_minute": 1_000_000,
            }
        )
    )
    (workdir / "key").write_text(key)
    return config, [str(u) for u in data.user_ids[:5_000]]


async def open_loop_recommendations(
    http: httpx.AsyncClient, users: list[str], *, rate: float, seconds: float, rng: np.random.Generator
) -> tuple[list[float], int, int, float]:
    """GET /recommendations for random users on a fixed schedule (``rate`` per second for ``seconds``),
    whether or not earlier requests have finished: (latencies in ms, errors, requests, elapsed seconds)."""
    latencies_ms: list[float] = []
    errors = 0

    async def one(user: str) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = await http.get(f"/v1/users/{user}/recommendations", params={"k": 10})
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies_ms.append(1000 * (time.perf_counter() - started))
        errors += not ok

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(users[int(rng.integers(len(users)))])))
    await asyncio.gather(*tasks)
    return latencies_ms, errors, n, time.perf_counter() - start


async def recommend_load(base: str, key: str, users: list[str], *, rps: float, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, timeout=30, limits=limits
    ) as http:
        # Warm up: first requests pay for lazy initialisation.
        for user in users[:20]:
            await http.get(f"/v1/users/{user}/recommendations")

        latencies_ms, errors, n, elapsed = await open_loop_recommendations(
            http, users, rate=rps, seconds=seconds, rng=rng
        )
    ms = np.array(latencies_ms)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "rps": n / elapsed,
        "requests": n,
        "errors": errors,
    }


async def events_load(base: str, key: str, *, batch: int, batches: int, clients: int) -> dict:
    sent = acknowledged = 0

    async def client(worker: int) -> None:
        nonlocal sent, acknowledged
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=60) as http:
            for b in range(batches):
                events = [
                    {
                        "event_id": f"load-{worker}-{b}-{i}",
                        "user_id": f"load-user-{(b * batch + i) % 5000}",
                        "item_id": f"{(b * 7 + i) % 50000 + 1}",
                        "event_type": "view",
                        "timestamp": 1_900_000_000 + b * batch + i,
                    }
                    for i in range(batch)
                ]
                sent += batch
                response = await http.post("/v1/events", json={"events": events})
                if response.status_code == 200:
                    acknowledged += response.json()["stored"]

    start = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        "events_per_s": acknowledged / elapsed,
        "sent": sent,
        "acknowledged": acknowledged,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rps", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from behaviorlm.data.store import EventStore
    from behaviorlm.evaluation.benchmark import append_jsonl, git_commit, machine_description

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config, users = prepare(workdir)
        key = (workdir / "key").read_text()
        server, base = start_service(config, workdir / "server.log")
        try:
            cpu_before = cpu_seconds(server.pid)
            recommend = asyncio.run(recommend_load(base, key, users, rps=args.rps, seconds=args.seconds))
            recommend["server_cpu_ms_per_request"] = (
                1000 * (cpu_seconds(server.pid) - cpu_before) / (recommend["requests"] + 20)
            )
            print("recommend-api", json.dumps(recommend), flush=True)
            events = asyncio.run(
                events_load(base, key, batch=args.batch, batches=args.batches, clients=args.clients)
            )
        finally:
            stop_service(server)
        with EventStore(workdir / "events.duckdb", read_only=True) as store:
            stored = store.scalar("SELECT count(*) FROM events WHERE event_id LIKE 'load-%'")
        events["stored"] = stored
        events["lost"] = events["acknowledged"] - stored
        print("events-api", json.dumps(events), flush=True)

    common = {
        "dataset": "beauty",
        "params": {
            "d_model": 128,
            "max_len": 50,
            "n_items": 54_542,
            "server": "behaviorlm serve (uvicorn, 1 process)",
        },
        "n_users": len(users),
        "train_seconds": 0.0,
        "eval_seconds": 0.0,
        "training": {},
        "peak_rss_mb": 0.0,
        "machine": machine_description(),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    append_jsonl(
        args.out,
        {
            **common,
            "model": "recommend-api",
            "protocol": {
                "target_rps": args.rps,
                "seconds": args.seconds,
                "loop": "open",
                "client": "httpx asyncio, loopback",
            },
            "metrics": recommend,
        },
    )
    append_jsonl(
        args.out,
        {
            **common,
            "model": "events-api",
            "protocol": {
                "batch_events": args.batch,
                "batches_per_client": args.batches,
                "clients": args.clients,
            },
            "metrics": events,
        },
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
