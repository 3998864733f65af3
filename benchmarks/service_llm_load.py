"""Do the service's LLM endpoints block recommendation requests? Recommendation latency of the REST
service on loopback at a fixed request rate, first alone ("quiet") and then while ``--explainers``
clients keep asking for explanations in words ("with LLM"). Appends a "recommend-api-with-llm" record
to benchmarks/results.jsonl.

The service runs as ``behaviorlm serve`` in its own process with ML-100k, a Transformer of the demo's
shape (d_model 128, max_len 200) fitted for one epoch (latency depends on the shape, not on the
training; its weights are not used for any quality claim), and the embedded language model
(``[llm]`` with the response cache off, so every explanation is generated). Before the quiet phase
one explanation is asked for and waited on: it loads the language model and the anomaly scores, so
both phases run against the same warm process and differ only in whether explanations run.

Recommendations (``GET /v1/users/{id}/recommendations?k=10``, random users) come from an open-loop
asyncio client: requests start on a fixed schedule whether or not earlier ones have finished, so a
blocked server shows up as latency instead of as a lower request rate. Each explainer is closed-loop:
it asks ``GET /v1/users/{id}/explanation/words`` for a random user, waits for the answer, and asks
again until the phase ends. Explanations still running when the phase ends are cancelled and not
counted (``explanations_cancelled``); ``explanations`` is the number completed inside the phase.

    .venv/bin/python benchmarks/service_llm_load.py \\
        --seconds 30 --rate 20 --explainers 4 --llm-threads 1

A smoke test: ``--seconds 5 --rate 5 --explainers 1 --no-record``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from service_load import cpu_seconds, free_port, open_loop_recommendations

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
MAX_EXPLANATION_SECONDS = 600.0
"""Client timeout of one explanation: queued behind the others on one embedded model, it may wait long."""


def peak_rss_mb_of(pid: int) -> float:
    """Peak resident memory of process ``pid`` so far, in MiB (``VmHWM`` in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prepare(workdir: Path, *, llm_threads: int | None) -> tuple[Path, str, list[str], dict]:
    """Store with ML-100k, a demo-shaped Transformer, a key and a service config with ``[llm]``.

    Returns the config path, the API key, the user ids and the model's shape."""
    from behaviorlm.data.datasets import ingest_dataset
    from behaviorlm.data.store import EventStore
    from behaviorlm.demo import ML100K_TRANSFORMER
    from behaviorlm.models.transformer import BehaviorTransformer
    from behaviorlm.serving.security import create_key

    store_path = workdir / "events.duckdb"
    with EventStore(store_path) as store:
        ingest_dataset(store, "ml-100k")
        data = store.interactions()
    model = BehaviorTransformer.from_params({**ML100K_TRANSFORMER, "epochs": 1, "seed": 0}).fit(data)
    model_path = model.save(workdir / "model")
    keys_file = workdir / "keys.json"
    key = create_key(keys_file, name="llm-load", scopes=["read", "write", "admin"])
    llm_lines = ['cache_dir = ""  # every explanation is generated, none read from the cache']
    if llm_threads is not None:
        llm_lines.append(f"threads = {llm_threads}")
    config = workdir / "service.toml"
    config.write_text(
        f'store = "{store_path}"\nmodel = "{model_path}"\nkeys_file = "{keys_file}"\n'
        "rate_limit_per_minute = 1000000\n\n[llm]\n" + "\n".join(llm_lines) + "\n"
    )
    shape = {
        "d_model": ML100K_TRANSFORMER["d_model"],
        "max_len": ML100K_TRANSFORMER["max_len"],
        "n_items": int(data.n_items),
    }
    return config, key, [str(u) for u in data.user_ids], shape


def _percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile, or ``None`` (JSON null) when nothing was measured."""
    return float(np.percentile(values, q)) if values else None


async def recommend_load(
    http: httpx.AsyncClient, users: list[str], *, rate: float, seconds: float
) -> dict[str, float]:
    """Open-loop recommendation requests at ``rate`` per second for ``seconds``; latency percentiles."""
    latencies_ms, errors, n, elapsed = await open_loop_recommendations(
        http,
        users,
        rate=rate,
        seconds=seconds,
        rng=np.random.default_rng(0),  # the same users in both phases
    )
    return {
        "rec_p50_ms": _percentile(latencies_ms, 50),
        "rec_p95_ms": _percentile(latencies_ms, 95),
        "rec_p99_ms": _percentile(latencies_ms, 99),
        "rec_max_ms": max(latencies_ms),
        "rec_requests": n,
        "rec_rps": n / elapsed,
        "rec_errors": errors,
    }


async def explain_once(http: httpx.AsyncClient, user: str) -> tuple[bool, float, str]:
    """One explanation: (answered with 200, seconds, status and the model's seconds, or the error)."""
    started = time.perf_counter()
    try:
        response = await http.get(f"/v1/users/{user}/explanation/words", timeout=MAX_EXPLANATION_SECONDS)
        outcome = str(response.status_code)
        if response.status_code == 200:
            outcome += f" (language model {response.json()['latency_s']:.1f} s)"
        else:
            outcome += f" {response.text[:200]}"
        ok = response.status_code == 200
    except httpx.HTTPError as exc:
        ok, outcome = False, f"{type(exc).__name__}: {exc}"
    return ok, time.perf_counter() - started, outcome


async def explainer(
    http: httpx.AsyncClient,
    users: list[str],
    *,
    seed: int,
    until: float,
    done: list[float],
    failed: list[str],
) -> None:
    """Closed loop: ask for an explanation, wait for it, ask again, until ``until`` (perf_counter)."""
    rng = np.random.default_rng(1_000 + seed)
    while time.perf_counter() < until:
        ok, seconds, outcome = await explain_once(http, users[int(rng.integers(len(users)))])
        if time.perf_counter() > until:
            break  # finished after the phase: not part of it
        if ok:
            done.append(seconds)
        else:
            failed.append(outcome)


async def run_phases(
    base: str, key: str, users: list[str], *, rate: float, seconds: float, explainers: int, server_pid: int
) -> tuple[dict, dict, float]:
    """Warm-up, the quiet phase and the phase with explainers; returns both phases' metrics and the
    warm-up explanation's seconds."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, timeout=30, limits=limits
    ) as http:
        for user in users[:20]:  # first requests pay for lazy initialisation
            await http.get(f"/v1/users/{user}/recommendations")
        ok, warmup_s, outcome = await explain_once(http, users[0])
        if not ok:
            raise SystemExit(f"the warm-up explanation failed: {outcome}")
        print(f"warm-up explanation (loads the language model): {warmup_s:.1f} s, {outcome}", flush=True)

        cpu_before = cpu_seconds(server_pid)
        quiet = await recommend_load(http, users, rate=rate, seconds=seconds)
        quiet["server_cpu_s"] = cpu_seconds(server_pid) - cpu_before

        cpu_before = cpu_seconds(server_pid)
        done: list[float] = []
        failed: list[str] = []
        until = time.perf_counter() + seconds
        explaining = [
            asyncio.create_task(explainer(http, users, seed=s, until=until, done=done, failed=failed))
            for s in range(explainers)
        ]
        with_llm = await recommend_load(http, users, rate=rate, seconds=seconds)
        with_llm["server_cpu_s"] = cpu_seconds(server_pid) - cpu_before
        # Explanations still being generated are cancelled (closing their connections); the server's
        # threads finish them, but the measurement is over.
        unfinished = sum(not task.done() for task in explaining)
        for task in explaining:
            task.cancel()
        await asyncio.gather(*explaining, return_exceptions=True)
        with_llm.update(
            explanations=len(done),
            explain_errors=len(failed),
            explanations_cancelled=unfinished,
            explain_latency_s_p50=_percentile(done, 50),
            explain_latency_s_p95=_percentile(done, 95),
        )
        for outcome in sorted(set(failed)):
            print(f"explanation failed: {outcome}", flush=True)
    return quiet, with_llm, warmup_s


def print_table(quiet: dict, with_llm: dict, *, explainers: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "",
        "quiet",
        f"with {explainers} explainers",
        title="recommendations while explanations run (open loop, loopback)",
        title_justify="left",
    )
    for label, name in (
        ("rec p50 ms", "rec_p50_ms"),
        ("rec p95 ms", "rec_p95_ms"),
        ("rec p99 ms", "rec_p99_ms"),
        ("rec max ms", "rec_max_ms"),
    ):
        table.add_row(label, f"{quiet[name]:.1f}", f"{with_llm[name]:.1f}")
    table.add_row(
        "rec requests (errors)", *(f"{m['rec_requests']} ({m['rec_errors']})" for m in (quiet, with_llm))
    )
    table.add_row("server CPU s", *(f"{m['server_cpu_s']:.1f}" for m in (quiet, with_llm)))
    table.add_row("explanations (errors)", "-", f"{with_llm['explanations']} ({with_llm['explain_errors']})")
    for label, name in (
        ("explain p50 s", "explain_latency_s_p50"),
        ("explain p95 s", "explain_latency_s_p95"),
    ):
        value = with_llm[name]
        table.add_row(label, "-", "-" if value is None else f"{value:.1f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20, help="recommendation requests per second")
    parser.add_argument("--explainers", type=int, default=4, help="concurrent explanation clients")
    parser.add_argument(
        "--llm-threads",
        type=int,
        default=None,
        help="embedded model CPU threads (default: $BEHAVIORLM_LLM_THREADS or 2, as LLMConfig)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only; append nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from behaviorlm.config import LLMConfig
    from behaviorlm.evaluation.benchmark import (
        append_jsonl,
        provenance,
    )

    llm_threads = args.llm_threads if args.llm_threads is not None else LLMConfig().threads
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        config, key, users, shape = prepare(workdir, llm_threads=args.llm_threads)
        print(f"prepared store, model and config in {time.perf_counter() - started:.0f} s", flush=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = workdir / "server.log"
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("behaviorlm")),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(1200):
                if server.poll() is not None:
                    raise SystemExit(f"the service stopped at start:\n{log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise SystemExit(f"the service did not answer /v1/health:\n{log.read_text()[-2000:]}")
            quiet, with_llm, warmup_s = asyncio.run(
                run_phases(
                    base,
                    key,
                    users,
                    rate=args.rate,
                    seconds=args.seconds,
                    explainers=args.explainers,
                    server_pid=server.pid,
                )
            )
            server_rss_mb = peak_rss_mb_of(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    print_table(quiet, with_llm, explainers=args.explainers)
    metrics = {
        **{f"quiet_{k}": v for k, v in quiet.items()},
        **{f"llm_{k}": v for k, v in with_llm.items() if k.startswith(("rec_", "server_"))},
        "rec_p99_ratio": with_llm["rec_p99_ms"] / quiet["rec_p99_ms"],
        **{k: v for k, v in with_llm.items() if k.startswith("expla")},
        "warmup_explanation_s": warmup_s,
        "server_peak_rss_mb": server_rss_mb,
    }
    print("recommend-api-with-llm", json.dumps(metrics), flush=True)
    if args.no_record:
        return
    append_jsonl(
        args.out,
        {
            "dataset": "ml-100k",
            "model": "recommend-api-with-llm",
            "params": {
                **shape,
                "epochs": 1,
                "llm": LLMConfig().model,
                "llm_threads": llm_threads,
                "server": "behaviorlm serve (uvicorn, 1 process), embedded LLM in-process",
            },
            "protocol": {
                "target_rps": args.rate,
                "seconds_per_phase": args.seconds,
                "explainers": args.explainers,
                "loop": "open (recommendations), closed (each explainer)",
                "client": "httpx asyncio, loopback",
                "llm_cache": "off",
                "explanations": "completed inside the phase; in-flight ones at its end cancelled",
            },
            "metrics": metrics,
            "n_users": len(users),
            "train_seconds": 0.0,
            "eval_seconds": 0.0,
            "training": {},
            **provenance(),
        },
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
