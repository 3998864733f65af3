"""Hardening of the service (issue 21): out-of-range timestamps and non-finite numbers are readable 422s,
chunked bodies over the limit are 413s, keys can be revoked while the service runs, failed
authentications are throttled per address, tampered model folders are refused (409, old model kept)
with one clear error from ``load_model``, request logs carry keyed pseudonyms, and a corpus of broken
requests never gets a 5xx."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from tests.serving.conftest import auth

from behaviorlm.config import ServiceConfig
from behaviorlm.models.base import MODEL_JSON, WEIGHTS_FILE
from behaviorlm.models.registry import ModelLoadError, load_model
from behaviorlm.serving.app import create_app
from behaviorlm.serving.security import create_key

GOOD_EVENT = {"user_id": "u", "item_id": "i001", "event_type": "view", "timestamp": 1_700_000_000}


def _strict_json(text: str):
    """Parse ``text`` as JSON that a strict parser (a browser, jq) accepts: no NaN or Infinity literals."""

    def refuse(literal: str):
        raise AssertionError(f"the body holds the non-standard JSON literal {literal}")

    return json.loads(text, parse_constant=refuse)


def _assert_readable_4xx(response: httpx.Response, *, status: int | None = None) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = _strict_json(response.text)
    assert body["detail"], body
    return body


@pytest.fixture(scope="module")
def live_model(deployment, tmp_path_factory) -> Path:
    """A copy of the deployment's model that the reload tests tamper with (restored after each)."""
    folder = tmp_path_factory.mktemp("live") / "model"
    shutil.copytree(deployment["model"], folder)
    return folder


@pytest.fixture(scope="module")
def client(deployment, live_model):
    config = ServiceConfig(
        store=deployment["store"], model=str(live_model), keys_file=deployment["keys_file"]
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client


def _bare_app(tmp_path: Path, **overrides) -> tuple[TestClient, dict[str, str], Path]:
    """A service without a model over an empty store of its own, with its own keys file."""
    keys_file = tmp_path / "keys.json"
    keys = {
        "reader": create_key(keys_file, name="reader", scopes=["read"]),
        "writer": create_key(keys_file, name="writer", scopes=["read", "write"]),
    }
    config = ServiceConfig(store=str(tmp_path / "events.duckdb"), keys_file=str(keys_file), **overrides)
    return TestClient(create_app(config)), keys, keys_file


# ---------------------------------------------------------------------------------------------- item 5
@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_timestamp_whose_utc_time_is_out_of_range_is_a_422_naming_the_field(
    client, deployment, timestamp
) -> None:
    event = {**GOOD_EVENT, "timestamp": timestamp}
    response = client.post("/v1/events", json={"events": [event]}, headers=auth(deployment, "writer"))
    body = _assert_readable_4xx(response, status=422)
    assert any(error["loc"][:4] == ["body", "events", 0, "timestamp"] for error in body["detail"]), body
    assert any("range" in error["msg"] for error in body["detail"]), body


# ---------------------------------------------------------------------------------------------- item 6
@pytest.mark.parametrize(
    ("field", "literal"),
    [("value", "NaN"), ("value", "Infinity"), ("value", "-Infinity"), ("timestamp", "NaN")],
)
def test_non_finite_numbers_are_a_readable_422(client, deployment, field, literal) -> None:
    event = json.dumps({**GOOD_EVENT, field: 0}).replace(f'"{field}": 0', f'"{field}": {literal}')
    response = client.post(
        "/v1/events",
        content=f'{{"events": [{event}]}}',
        headers={**auth(deployment, "writer"), "content-type": "application/json"},
    )
    body = _assert_readable_4xx(response, status=422)
    assert any(error["loc"][:4] == ["body", "events", 0, field] for error in body["detail"]), body


@pytest.fixture()
def live_server(tmp_path):
    """The service under uvicorn on a free local port (a real socket: keep-alive, chunked bodies)."""
    import uvicorn

    keys_file = tmp_path / "keys.json"
    key = create_key(keys_file, name="writer", scopes=["read", "write"])
    config = ServiceConfig(store=str(tmp_path / "events.duckdb"), keys_file=str(keys_file))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", {"X-API-Key": key}
    server.should_exit = True
    thread.join(timeout=30)


def test_a_rejected_number_keeps_the_keep_alive_connection_usable(live_server) -> None:
    url, headers = live_server
    event = json.dumps(GOOD_EVENT).replace('"timestamp": 1700000000', '"timestamp": 1700000000, "value": NaN')
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        first = http.post(
            "/v1/events", content=f'{{"events": [{event}]}}', headers={"content-type": "application/json"}
        )
        _assert_readable_4xx(first, status=422)
        second = http.post("/v1/events", json={"events": [GOOD_EVENT]})
        assert second.status_code == 200 and second.json()["stored"] == 1


# ---------------------------------------------------------------------------------------------- item 7
def _chunks(total_bytes: int, *, chunk: int = 2**20):
    yield b'{"events": ['
    sent = 0
    while sent < total_bytes:
        piece = b" " * chunk
        sent += len(piece)
        yield piece


def test_a_chunked_body_over_the_limit_is_a_413(client, deployment) -> None:
    response = client.post(
        "/v1/events",
        content=_chunks(17 * 2**20),
        headers={**auth(deployment, "writer"), "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    body = _assert_readable_4xx(response, status=413)
    assert f"{16 * 2**20} bytes" in body["detail"]


def test_a_chunked_body_over_the_limit_is_a_413_on_a_real_socket(live_server) -> None:
    url, headers = live_server
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        response = http.post(
            "/v1/events", content=_chunks(17 * 2**20), headers={"content-type": "application/json"}
        )
        _assert_readable_4xx(response, status=413)
    # A chunked body under the limit still goes through.
    body = json.dumps({"events": [GOOD_EVENT]}).encode()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        ok = http.post(
            "/v1/events", content=iter([body[:10], body[10:]]), headers={"content-type": "application/json"}
        )
    assert ok.status_code == 200 and ok.json()["received"] == 1, ok.text


# ---------------------------------------------------------------------------------------------- item 8
def test_a_revoked_key_is_refused_without_a_restart_and_a_new_key_accepted(tmp_path) -> None:
    from behaviorlm.serving.security import revoke_key

    test_client, keys, keys_file = _bare_app(tmp_path)
    with test_client as http:
        assert http.get("/v1/stats", headers={"X-API-Key": keys["reader"]}).status_code == 200
        revoke_key(keys_file, name="reader")
        refused = http.get("/v1/stats", headers={"X-API-Key": keys["reader"]})
        assert refused.status_code == 401
        assert http.get("/v1/stats", headers={"X-API-Key": keys["writer"]}).status_code == 200
        added = create_key(keys_file, name="late", scopes=["read"])
        assert http.get("/v1/stats", headers={"X-API-Key": added}).status_code == 200
        # Deleting the keys file revokes every key (fail closed), and restoring it brings them back.
        saved = keys_file.read_text()
        keys_file.unlink()
        assert http.get("/v1/stats", headers={"X-API-Key": keys["writer"]}).status_code == 401
        keys_file.write_text(saved)
        assert http.get("/v1/stats", headers={"X-API-Key": keys["writer"]}).status_code == 200


def test_a_keys_file_edited_in_place_within_the_same_second_is_seen(tmp_path) -> None:
    test_client, keys, keys_file = _bare_app(tmp_path)
    with test_client as http:
        assert http.get("/v1/stats", headers={"X-API-Key": keys["writer"]}).status_code == 200
        stat = keys_file.stat()
        entries = [e for e in json.loads(keys_file.read_text()) if e["name"] != "writer"]
        keys_file.write_text(json.dumps(entries))
        os.utime(keys_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, other size
        assert http.get("/v1/stats", headers={"X-API-Key": keys["writer"]}).status_code == 401


def test_failed_authentications_are_throttled_per_client_address(tmp_path) -> None:
    from behaviorlm.serving.security import AUTH_FAILURES_PER_WINDOW

    test_client, keys, _ = _bare_app(tmp_path)
    with test_client as http:
        codes = [
            http.get("/v1/stats", headers={"X-API-Key": f"guess{n}"}).status_code
            for n in range(AUTH_FAILURES_PER_WINDOW)
        ]
        assert codes == [401] * AUTH_FAILURES_PER_WINDOW
        throttled = http.get("/v1/stats", headers={"X-API-Key": "one more guess"})
        body = _assert_readable_4xx(throttled, status=429)
        assert int(throttled.headers["Retry-After"]) >= 1 and "authentication" in body["detail"]
        # The address is blocked, even with a valid key, until the window passes.
        assert http.get("/v1/stats", headers={"X-API-Key": keys["reader"]}).status_code == 429
        # Another address is not.
        other = TestClient(http.app, client=("203.0.113.7", 40000))
        assert other.get("/v1/stats", headers={"X-API-Key": keys["reader"]}).status_code == 200


def test_the_failure_throttle_forgets_after_its_window() -> None:
    from behaviorlm.serving.security import AuthFailureThrottle

    clock = [1000.0]
    throttle = AuthFailureThrottle(max_failures=3, window_seconds=60, clock=lambda: clock[0])
    for _ in range(3):
        assert throttle.blocked_for("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert 59 <= throttle.blocked_for("10.0.0.1") <= 60
    assert throttle.blocked_for("10.0.0.2") == 0
    clock[0] += 61
    assert throttle.blocked_for("10.0.0.1") == 0


# ---------------------------------------------------------------------------------------------- item 9
def _meta(folder: Path) -> dict:
    return json.loads((folder / MODEL_JSON).read_text())


def _edit_meta(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change ``model.json`` in place (``edit`` mutates the parsed object)."""

    def tamper(folder: Path) -> None:
        meta = _meta(folder)
        edit(meta)
        (folder / MODEL_JSON).write_text(json.dumps(meta))

    return tamper


def _replace_meta(replacement: Callable[[dict], object]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        (folder / MODEL_JSON).write_text(json.dumps(replacement(_meta(folder))))

    return tamper


def _edit_tensors(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        tensors = load_file(str(folder / WEIGHTS_FILE))
        edit(tensors)
        save_file(tensors, str(folder / WEIGHTS_FILE))

    return tamper


def _first_weight(tensors: dict[str, torch.Tensor]) -> str:
    return next(
        k for k, v in tensors.items() if k.startswith("state.") and v.is_floating_point() and v.ndim == 2
    )


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).write_bytes(data)

    return tamper


def _symlink(name: str, target: str) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).symlink_to(target)

    return tamper


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _huge_header(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2**62) + data[8:])


def _set(tensors: dict, key: str | Callable, value: Callable) -> None:
    name = key(tensors) if callable(key) else key
    tensors[name] = value(tensors[name])


TAMPERED: dict[str, Callable[[Path], None]] = {
    "model.json missing": lambda folder: (folder / MODEL_JSON).unlink(),
    "model.json not JSON": _write(MODEL_JSON, b"{not json"),
    "model.json empty": _write(MODEL_JSON, b""),
    "model.json a JSON list": _replace_meta(lambda meta: [meta]),
    "model.json a symlink to /etc/passwd": _symlink(MODEL_JSON, "/etc/passwd"),
    "model.json a symlink to /dev/zero": _symlink(MODEL_JSON, "/dev/zero"),
    "unknown model class": _edit_meta(lambda meta: meta.update(model="gpt-7")),
    "params missing": _edit_meta(lambda meta: meta.pop("params")),
    "params a list": _edit_meta(lambda meta: meta.update(params=[1, 2])),
    "params of the wrong type": _edit_meta(lambda meta: meta["params"].update(d_model="wide")),
    "params with an unknown key": _edit_meta(lambda meta: meta["params"].update(colour="red")),
    "params that build no network": _edit_meta(lambda meta: meta["params"].update(n_heads=0)),
    "params of absurd size": _edit_meta(lambda meta: meta["params"].update(d_model=2**20, n_heads=1)),
    "item ids not a list": _edit_meta(lambda meta: meta.update(item_ids="i001")),
    "item ids holding objects": _edit_meta(
        lambda meta: meta.update(item_ids=[{"x": 1}] * len(meta["item_ids"]))
    ),
    "event-type vocabulary not a list": _edit_meta(lambda meta: meta.update(event_type_vocab=7)),
    "weights missing": lambda folder: (folder / WEIGHTS_FILE).unlink(),
    "weights empty": _write(WEIGHTS_FILE, b""),
    "weights truncated": _truncate,
    "weights with an oversized header": _huge_header,
    "weights a symlink to /etc/passwd": _symlink(WEIGHTS_FILE, "/etc/passwd"),
    "weights a directory": lambda folder: ((folder / WEIGHTS_FILE).unlink(), (folder / WEIGHTS_FILE).mkdir()),
    "tensor of the wrong shape": _edit_tensors(
        lambda t: _set(t, _first_weight, lambda v: torch.cat([v, v[:1]]))
    ),
    "tensor of the wrong dtype": _edit_tensors(lambda t: _set(t, _first_weight, lambda v: v.to(torch.int64))),
    "tensor missing": _edit_tensors(lambda t: t.pop(_first_weight(t))),
    "unexpected tensor": _edit_tensors(lambda t: t.update({"state.backdoor": torch.zeros(3)})),
    "training tensor missing": _edit_tensors(lambda t: t.pop("train.items")),
    "item index out of range": _edit_tensors(lambda t: _set(t, "train.items", lambda v: v + 10_000)),
    "event-type index out of range": _edit_tensors(lambda t: _set(t, "train.event_types", lambda v: v + 50)),
    "user pointers inconsistent": _edit_tensors(lambda t: _set(t, "train.user_ptr", lambda v: v[:-1])),
    "NaN weights": _edit_tensors(lambda t: _set(t, _first_weight, lambda v: torch.full_like(v, math.nan))),
    "infinite weights": _edit_tensors(
        lambda t: _set(t, _first_weight, lambda v: torch.full_like(v, math.inf))
    ),
}


@pytest.fixture()
def tampered(request, live_model: Path):
    """The live model folder tampered with as the test's parameter says; restored afterwards."""
    pristine = live_model.parent / "pristine"
    if not pristine.exists():
        shutil.copytree(live_model, pristine)
    TAMPERED[request.param](live_model)
    yield live_model
    shutil.rmtree(live_model)
    shutil.copytree(pristine, live_model)


@pytest.mark.parametrize("tampered", list(TAMPERED), indirect=True)
def test_load_model_refuses_a_tampered_folder_with_one_clear_error(tampered: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(tampered)
    message = str(caught.value)
    assert "\n" not in message and str(tampered) in message, message
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working


@pytest.mark.parametrize("tampered", list(TAMPERED), indirect=True)
def test_reloading_a_tampered_model_is_a_409_and_keeps_the_old_one(client, deployment, tampered) -> None:
    read = auth(deployment, "reader")
    before = client.get("/v1/users/user1/recommendations?k=3", headers=read).json()
    response = client.post("/v1/model/reload", headers=auth(deployment, "admin"))
    body = _assert_readable_4xx(response, status=409)
    assert "could not load" in body["detail"] and "\n" not in body["detail"]
    after = client.get("/v1/users/user1/recommendations?k=3", headers=read)
    assert after.status_code == 200 and after.json() == before


@pytest.mark.parametrize("tampered", list(TAMPERED), indirect=True)
def test_the_cli_names_a_tampered_model_in_one_line(tampered, deployment, monkeypatch, tmp_path) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from behaviorlm.cli.common import SPLIT_FILE
    from behaviorlm.cli.main import app as cli

    def never(*args, **kwargs):
        raise AssertionError("the service started on a tampered model")

    monkeypatch.setattr(uvicorn, "run", never)
    config = tmp_path / "service.json"
    config.write_text(
        json.dumps(
            {"store": deployment["store"], "model": str(tampered), "keys_file": deployment["keys_file"]}
        )
    )
    split = {"protocol": "leave_one_out", "valid_fraction": 0.1, "test_fraction": 0.1}
    (tampered / SPLIT_FILE).write_text(json.dumps({"split": split}))
    runner = CliRunner()
    for args in (
        ["serve", "--config", str(config)],
        ["evaluate", str(tampered), "--store", deployment["store"]],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(tampered) in result.output.replace("\n", ""), result.output


def test_the_untampered_model_still_reloads(client, deployment) -> None:
    response = client.post("/v1/model/reload", headers=auth(deployment, "admin"))
    assert response.status_code == 200 and response.json()["status"] == "reloaded"


def test_recommendations_never_carry_non_finite_scores(client, deployment) -> None:
    # k at the catalogue size reaches past the unseen items into the masked (seen) ones.
    response = client.get("/v1/users/user1/recommendations?k=100", headers=auth(deployment, "reader"))
    assert response.status_code == 200, response.text[:300]
    items = _strict_json(response.text)["items"]
    assert items and all(math.isfinite(item["score"]) for item in items)
    seen = {
        e["item_id"]
        for e in client.get("/v1/users/user1/events", headers=auth(deployment, "reader")).json()["events"]
    }
    assert not seen & {item["item_id"] for item in items}


# ---------------------------------------------------------------------------------------------- item 10
def test_request_logs_carry_a_keyed_pseudonym_of_the_user_id(client, deployment, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="behaviorlm.serving"):
        client.get("/v1/users/12345/events", headers=auth(deployment, "reader"))
    lines = [r.getMessage() for r in caplog.records if "/v1/users/{user_id}/events" in r.getMessage()]
    assert lines, caplog.text
    logged = lines[-1].split("user=")[1].split()[0]
    assert logged != "-" and "12345" not in lines[-1]
    assert logged != hashlib.sha256(b"12345").hexdigest()[: len(logged)]
    # Enumerating numeric ids with an unkeyed hash finds nothing.
    assert logged not in {hashlib.sha256(str(n).encode()).hexdigest()[: len(logged)] for n in range(20_000)}


# ---------------------------------------------------------------------------------------------- corpus
def _events(*events: dict) -> dict:
    return {"events": list(events)}


BAD_REQUESTS: dict[str, dict] = {
    "malformed JSON": {"content": b'{"events": [{"user_id": "u",'},
    "JSON that is not an object": {"json": [GOOD_EVENT]},
    "JSON null": {"content": b"null"},
    "events not a list": {"json": {"events": GOOD_EVENT}},
    "user id a number": {"json": _events({**GOOD_EVENT, "user_id": 12})},
    "user id an object": {"json": _events({**GOOD_EVENT, "user_id": {"$ne": ""}})},
    "timestamp a boolean": {"json": _events({**GOOD_EVENT, "timestamp": True})},
    "timestamp an empty string": {"json": _events({**GOOD_EVENT, "timestamp": ""})},
    "events holding null": {"json": {"events": [None]}},
    "timestamp a 400-digit integer": {
        "content": (
            '{"events": [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1'
            + "0" * 400
            + "}]}"
        ).encode()
    },
    "timestamp year 10000": {"json": _events({**GOOD_EVENT, "timestamp": "10000-01-01T00:00:00Z"})},
    "timestamp out of range after UTC": {
        "json": _events({**GOOD_EVENT, "timestamp": "9999-12-31T23:59:59-14:00"})
    },
    "value NaN": {
        "content": b'{"events": [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1, "value": NaN}]}'
    },
    "value Infinity": {
        "content": b'{"events": [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1, "value": Infinity}]}'
    },
    "value 1e400": {
        "content": b'{"events": [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1, "value": 1e400}]}'
    },
    "value negative": {"json": _events({**GOOD_EVENT, "value": -1})},
    "missing field": {"json": _events({k: v for k, v in GOOD_EVENT.items() if k != "event_type"})},
    "extra field": {"json": _events({**GOOD_EVENT, "is_admin": True})},
    "extra top-level field": {"json": {**_events(GOOD_EVENT), "dry_run": False}},
    "empty batch": {"json": _events()},
    "oversize batch": {"json": _events(*[GOOD_EVENT] * 10_001)},
    "empty user id": {"json": _events({**GOOD_EVENT, "user_id": ""})},
    "user id too long": {"json": _events({**GOOD_EVENT, "user_id": "u" * 257})},
    "lone surrogate in a string": {
        "content": b'{"events": [{"user_id": "\\ud800", "item_id": "i", "event_type": "view", "timestamp": 1}]}'
    },
    "invalid UTF-8": {
        "content": b'{"events": [{"user_id": "\xff\xfe", "item_id": "i", "event_type": "view", "timestamp": 1}]}'
    },
    "deeply nested JSON": {"content": b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}"},
    "wrong content type": {
        "content": b"user_id=u&item_id=i",
        "content_type": "application/x-www-form-urlencoded",
    },
    "text/plain JSON": {"content": json.dumps(_events(GOOD_EVENT)).encode(), "content_type": "text/plain"},
    "no body": {"content": b""},
}

BAD_GETS: dict[str, str] = {
    "user id too long in the path": "/v1/users/" + "u" * 300 + "/recommendations",
    "k zero": "/v1/users/user1/recommendations?k=0",
    "k not a number": "/v1/users/user1/recommendations?k=many",
    "k huge": "/v1/users/user1/recommendations?k=" + "9" * 40,
    "k NaN": "/v1/users/user1/recommendations?k=NaN",
    "limit negative": "/v1/users/user1/events?limit=-1",
    "recent over the maximum": "/v1/users/user1/profile?recent=101",
    "empty user id in the segment map": "/v1/segments/map?user_id=",
    "unknown user's profile": "/v1/users/%00%ff/profile",
    "unknown user's explanation": "/v1/users/%E2%80%AE%F0%9F%98%80/explanation",
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_broken_post_is_a_readable_4xx(client, deployment, case) -> None:
    spec = BAD_REQUESTS[case]
    headers = {**auth(deployment, "writer"), "content-type": spec.get("content_type", "application/json")}
    if "json" in spec:
        response = client.post("/v1/events", json=spec["json"], headers=headers)
    else:
        response = client.post("/v1/events", content=spec["content"], headers=headers)
    _assert_readable_4xx(response)


def test_an_event_that_fits_the_schema_but_not_the_store_is_quarantined_not_an_error(
    client, deployment
) -> None:
    event = {**GOOD_EVENT, "timestamp": 1e300}
    response = client.post("/v1/events", json={"events": [event]}, headers=auth(deployment, "writer"))
    assert response.status_code == 200
    assert "outside" in response.json()["quarantine"][0]["reason"]


@pytest.mark.parametrize("case", list(BAD_GETS))
def test_a_broken_get_is_a_readable_4xx(client, deployment, case) -> None:
    _assert_readable_4xx(client.get(BAD_GETS[case], headers=auth(deployment, "reader")))
