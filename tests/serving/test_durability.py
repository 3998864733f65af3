"""Acknowledged = durable: kill -9 the real server while clients post events, restart it, and every
acknowledged event is stored exactly once. Also the `keys create` and `serve` commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.data.store import EventStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(config: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "behaviorlm.cli.main", "serve", "--config", str(config), "--port", str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")


def test_every_acknowledged_event_survives_kill_9(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    result = CliRunner().invoke(
        app, ["keys", "create", "--name", "loader", "--scope", "write", "--keys-file", str(keys_file)]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    config = tmp_path / "service.json"
    config.write_text(json.dumps({"store": str(tmp_path / "events.duckdb"), "keys_file": str(keys_file)}))
    port = _free_port()
    log = tmp_path / "server.log"
    server = _start_server(config, port, log)

    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=10
        ) as http:
            for batch in range(1000):
                if stop.is_set():
                    return
                events = [
                    {
                        "event_id": f"w{worker}-b{batch}-e{i}",
                        "user_id": f"u{worker}",
                        "item_id": f"i{i}",
                        "event_type": "view",
                        "timestamp": 1_700_000_000 + batch * 100 + i,
                    }
                    for i in range(50)
                ]
                try:
                    response = http.post("/v1/events", json={"events": events})
                except httpx.HTTPError:
                    return  # the server died mid-request: this batch was not acknowledged
                if response.status_code == 200:
                    assert response.json()["stored"] == 50
                    with lock:
                        acknowledged.extend(e["event_id"] for e in events)

    workers = [threading.Thread(target=client, args=(w,)) for w in range(3)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 1500 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    for worker in workers:
        worker.join()
    assert len(acknowledged) >= 1500, log.read_text()[-2000:]

    # Restart on the same store (DuckDB replays its write-ahead log), then check with the server stopped.
    server = _start_server(config, port, log)
    server.terminate()
    server.wait(timeout=30)
    with EventStore(tmp_path / "events.duckdb", read_only=True) as store:
        rows = store.rows("SELECT event_id, count(*) FROM events GROUP BY event_id")
    counts = dict(rows)
    missing = [e for e in acknowledged if e not in counts]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    assert max(counts.values()) == 1, "an event was stored twice"


def test_serve_reports_a_bad_config_clearly(tmp_path) -> None:
    config = tmp_path / "service.toml"
    config.write_text('store = "x.duckdb"\nkeys_file = "k.json"\nrate_limit = 5\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "rate_limit" in result.output
    bad_scope = CliRunner().invoke(
        app, ["keys", "create", "--name", "x", "--scope", "root", "--keys-file", str(tmp_path / "k.json")]
    )
    assert bad_scope.exit_code == 2 and "scopes must be" in bad_scope.output
