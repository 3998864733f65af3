"""The REST service: auth and scopes, validation errors with field paths, idempotent durable ingest,
real-time recommendations, rate limits, body limits, hot reload, metrics."""

from __future__ import annotations

import itertools

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.conftest import N_ITEMS, auth

from behaviorlm.config import ServiceConfig
from behaviorlm.serving.app import create_app


@pytest.fixture()
def client(deployment):
    config = ServiceConfig(
        store=deployment["store"], model=deployment["model"], keys_file=deployment["keys_file"]
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client


def test_keys_are_required_and_scoped(client, deployment) -> None:
    url = "/v1/users/user1/recommendations"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(url, headers={"X-API-Key": deployment["keys"]["reader"]}).status_code == 200
    event = {"user_id": "u", "item_id": "i001", "event_type": "view", "timestamp": 1_700_000_000}
    denied = client.post("/v1/events", json={"events": [event]}, headers=auth(deployment, "reader"))
    assert denied.status_code == 403 and "'write' scope" in denied.json()["detail"]
    assert client.post("/v1/model/reload", headers=auth(deployment, "writer")).status_code == 403
    # The keys file never holds a key itself.
    with open(deployment["keys_file"]) as fh:
        text = fh.read()
    assert not any(secret in text for secret in deployment["keys"].values())
    assert client.get("/v1/health").json()["model_loaded"] is True


def test_bad_input_is_a_422_naming_the_field(client, deployment) -> None:
    good = {"user_id": "u", "item_id": "i001", "event_type": "view", "timestamp": 1_700_000_000}
    headers = auth(deployment, "writer")
    cases = [
        ({"events": [good, {**good, "timestamp": "yesterday-ish"}]}, ["body", "events", 1, "timestamp"]),
        ({"events": [{**good, "value": -3}]}, ["body", "events", 0, "value"]),
        ({"events": [{**good, "color": "red"}]}, ["body", "events", 0, "color"]),
        ({"events": [{k: v for k, v in good.items() if k != "item_id"}]}, ["body", "events", 0, "item_id"]),
        ({"events": []}, ["body", "events"]),
    ]
    for body, loc in cases:
        response = client.post("/v1/events", json=body, headers=headers)
        assert response.status_code == 422, body
        assert any(error["loc"][: len(loc)] == loc for error in response.json()["detail"]), response.json()
    assert client.post("/v1/events", content=b"{not json", headers=headers).status_code == 422
    assert client.get("/v1/users/user1/recommendations?k=0", headers=headers).status_code == 422
    assert client.get("/v1/users/user1/recommendations?k=many", headers=headers).status_code == 422


def test_posted_events_are_stored_once_and_bad_ones_quarantined(client, deployment) -> None:
    headers = auth(deployment, "writer")
    batch = [
        {
            "user_id": "new",
            "item_id": "i002",
            "event_type": "view",
            "timestamp": "2024-05-01T10:00:00Z",
            "event_id": "e1",
        },
        {
            "user_id": "new",
            "item_id": "i003",
            "event_type": "teleport",
            "timestamp": 1_714_557_700,
            "event_id": "e2",
        },
        {
            "user_id": "new",
            "item_id": "i003",
            "event_type": "cart",
            "timestamp": 1_714_557_800,
            "event_id": "e3",
        },
    ]
    first = client.post("/v1/events", json={"events": batch}, headers=headers).json()
    assert first == {
        "received": 3,
        "stored": 2,
        "duplicates": 0,
        "quarantined": 1,
        "quarantine": [{"index": 1, "reason": "unknown event type 'teleport'"}],
    }
    again = client.post("/v1/events", json={"events": batch}, headers=headers).json()
    assert (again["stored"], again["duplicates"], again["quarantined"]) == (0, 2, 1)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    assert samples[("behaviorlm_events_stored_total", ())] == 2
    assert samples[("behaviorlm_events_quarantined_total", ())] == 2
    assert samples[("behaviorlm_events_duplicate_total", ())] == 2
    posts = (("method", "POST"), ("route", "/v1/events"), ("status", "200"))
    assert samples[("behaviorlm_requests_total", posts)] == 2
    seconds = (("le", "+Inf"), ("method", "POST"), ("route", "/v1/events"))
    assert samples[("behaviorlm_request_seconds_bucket", seconds)] == 2


def test_a_posted_event_changes_the_next_recommendation_at_once(client, deployment) -> None:
    read, write = auth(deployment, "reader"), auth(deployment, "writer")
    base = 1_800_000_000
    views = [
        {"user_id": "live", "item_id": f"i{i:03d}", "event_type": "view", "timestamp": base + i}
        for i in (4, 5, 6)
    ]
    assert client.post("/v1/events", json={"events": views}, headers=write).json()["stored"] == 3
    recs = client.get("/v1/users/live/recommendations?k=3", headers=read).json()
    assert recs["items"][0]["item_id"] == "i007"
    assert recs["history_events"] == 3 and recs["model"] == "transformer"
    jump = {"user_id": "live", "item_id": "i020", "event_type": "view", "timestamp": base + 100}
    client.post("/v1/events", json={"events": [jump]}, headers=write)
    assert (
        client.get("/v1/users/live/recommendations?k=1", headers=read).json()["items"][0]["item_id"] == "i021"
    )
    # A user without events still gets an answer (the model's empty-history state).
    cold = client.get("/v1/users/nobody/recommendations", headers=read).json()
    assert cold["history_events"] == 0 and len(cold["items"]) == 10


def test_rate_limit_and_body_limit(deployment) -> None:
    config = ServiceConfig(
        store=deployment["store"],
        model=deployment["model"],
        keys_file=deployment["keys_file"],
        rate_limit_per_minute=3,
        max_body_bytes=2_000,
    )
    with TestClient(create_app(config)) as client:
        headers = auth(deployment, "reader")
        codes = [client.get("/v1/users/user1/recommendations", headers=headers).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/users/user1/recommendations", headers=headers)
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        event = {"user_id": "u", "item_id": "i001", "event_type": "view", "timestamp": 1}
        big = client.post("/v1/events", json={"events": [event] * 100}, headers=auth(deployment, "writer"))
        assert big.status_code == 413 and "2000 bytes" in big.json()["detail"]


def test_model_hot_reload(client, deployment) -> None:
    response = client.post("/v1/model/reload", headers=auth(deployment, "admin"))
    assert response.status_code == 200 and response.json()["status"] == "reloaded"
    assert (
        client.get("/v1/users/user1/recommendations", headers=auth(deployment, "reader")).status_code == 200
    )


def test_without_a_model_there_is_no_recommendations_endpoint(deployment) -> None:
    config = ServiceConfig(store=deployment["store"], keys_file=deployment["keys_file"])
    with TestClient(create_app(config)) as client:
        response = client.get("/v1/users/user1/recommendations", headers=auth(deployment, "reader"))
        assert response.status_code == 404
        assert client.get("/v1/health").json()["model_loaded"] is False
        assert "/v1/users/{user_id}/recommendations" not in client.get("/openapi.json").json()["paths"]


def test_timeline_and_store_stats(client, deployment) -> None:
    read = auth(deployment, "reader")
    timeline = client.get("/v1/users/user3/events?limit=4", headers=read).json()
    assert timeline["user_id"] == "user3" and len(timeline["events"]) == 4
    times = [e["timestamp"] for e in timeline["events"]]
    assert times == sorted(times), "oldest first"
    numbers = [int(e["item_id"][1:]) for e in timeline["events"]]
    assert all((b - a) % N_ITEMS == 1 for a, b in itertools.pairwise(numbers))
    stats = client.get("/v1/stats", headers=read).json()
    assert stats["tables"]["events"] >= 1500 and stats["event_types"]["view"] >= 1500
    assert client.get("/v1/stats").status_code == 401


def test_anomalies_endpoint_ranks_a_scraper_first(client, deployment) -> None:
    write, read = auth(deployment, "writer"), auth(deployment, "reader")
    crawl = [
        {
            "user_id": "crawler",
            "item_id": f"i{i % N_ITEMS:03d}",
            "event_type": "view",
            "timestamp": 1_750_000_000 + i,
        }
        for i in range(200)
    ]
    assert client.post("/v1/events", json={"events": crawl}, headers=write).json()["stored"] == 200
    answer = client.get("/v1/anomalies?limit=3", headers=read).json()
    assert answer["users"][0]["user_id"] == "crawler" and answer["users"][0]["events"] == 200
    assert answer["scored_users"] >= 150 and len(answer["users"]) == 3
    assert {r["feature"] for r in answer["users"][0]["reasons"]} & {
        "events",
        "events_per_hour",
        "burst_share",
    }
    assert client.get("/v1/anomalies").status_code == 401


def test_explanation_names_the_event_behind_the_top_recommendation(client, deployment) -> None:
    read, write = auth(deployment, "reader"), auth(deployment, "writer")
    base = 1_850_000_000
    views = [
        {"user_id": "why", "item_id": f"i{i:03d}", "event_type": "view", "timestamp": base + n}
        for n, i in enumerate((20, 3, 11))
    ]
    client.post("/v1/events", json={"events": views}, headers=write)
    top = client.get("/v1/users/why/recommendations?k=1", headers=read).json()["items"][0]["item_id"]
    answer = client.get("/v1/users/why/explanation?k=3", headers=read).json()
    assert answer["item_id"] == top == "i012"  # successor of the latest view
    assert answer["because"][0]["item_id"] == "i011" and answer["because"][0]["events_ago"] == 1
    assert answer["because"][0]["effect"] > answer["because"][-1]["effect"]
    assert client.get("/v1/users/nobody-at-all/explanation", headers=read).status_code == 404


def test_segments_endpoint(client, deployment) -> None:
    read = auth(deployment, "reader")
    answer = client.get("/v1/segments", headers=read).json()
    assert answer["method"].startswith("kmeans(k=") and len(answer["segments"]) >= 2
    assert sum(s["users"] for s in answer["segments"]) >= 150
    assert abs(sum(s["share"] for s in answer["segments"]) - 1) < 1e-6
    assert client.get("/v1/segments", headers=read).json()["computed_at"] == answer["computed_at"]  # cached
    assert client.get("/v1/segments").status_code == 401


def test_align_to_model_drops_what_the_model_never_saw(deployment) -> None:
    import numpy as np

    from behaviorlm.data.sequences import Interactions
    from behaviorlm.models.base import align_to_model
    from behaviorlm.models.registry import load_model

    model = load_model(deployment["model"])
    data = Interactions.from_events(
        user_ids=np.array(["a", "a", "b"]),
        item_ids=np.array(["i001", "brand-new", "i002"]),
        timestamps=np.array([1, 2, 3]),
        event_types=np.array(["view", "view", "view"]),
        event_type_vocab=("view",),
    )
    aligned = align_to_model(data, model)
    assert aligned.n_items == model.trained_on.n_items and aligned.n_events == 2
    assert [str(aligned.item_ids[i]) for i in aligned.items] == ["i001", "i002"]
