"""The profile and segment-map endpoints: the user's real facts from the store, the shared parts (anomaly
detector, segments, interest topics) taken from the service's caches instead of refitted per request,
auth and errors as for the other user endpoints, pseudonymized ids, and the map as SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from tests.serving.conftest import N_ITEMS, auth

from behaviorlm.config import IngestConfig, ServiceConfig
from behaviorlm.data.store import EventStore
from behaviorlm.profiling.profile import build_profile
from behaviorlm.serving.app import create_app
from behaviorlm.serving.security import create_key

SVG = {"svg": "http://www.w3.org/2000/svg"}
THEMES = ("trail running shoes", "espresso coffee beans", "camping tent")


@pytest.fixture(scope="module")
def titled(deployment):
    """The shared deployment with a title for every item (10 per theme), and the library's own profile
    of user3 computed on the store before the service opens it."""
    with EventStore(deployment["store"]) as store:
        for i in range(N_ITEMS):
            title = f"{THEMES[i // 10]} model {i}"
            store.execute("INSERT INTO items (item_id, title) VALUES (?, ?)", [f"i{i:03d}", title])
        expected = build_profile(store, "user3")
    return {**deployment, "user3": expected}


def make_client(deployment, **overrides) -> TestClient:
    config = ServiceConfig(
        store=deployment["store"], model=deployment["model"], keys_file=deployment["keys_file"], **overrides
    )
    return TestClient(create_app(config))


@pytest.fixture()
def client(titled):
    with make_client(titled) as test_client:
        yield test_client


def when(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def test_profile_reports_what_the_store_holds(client, titled) -> None:
    answer = client.get("/v1/users/user3/profile?recent=4", headers=auth(titled, "reader"))
    assert answer.status_code == 200, answer.text
    card = answer.json()
    stored = client.app.state.service.reader().user_events("user3")
    assert card["user_id"] == "user3" and card["events"] == len(stored["item_id"]) == 10
    assert card["events_by_type"] == {"view": 10}
    assert datetime.fromisoformat(card["first_event"]) == when(min(stored["timestamp"]))
    assert datetime.fromisoformat(card["last_event"]) == when(max(stored["timestamp"]))
    assert card["active_days"] == 1
    assert [e["item_id"] for e in card["recent_items"]] == stored["item_id"][::-1][:4]  # newest first
    newest = int(card["recent_items"][0]["item_id"][1:])
    assert card["recent_items"][0]["title"] == f"{THEMES[newest // 10]} model {newest}"
    # The shared parts are the library's, computed over the same store.
    expected = titled["user3"]
    assert [(i["topic"], i["keywords"]) for i in card["interests"]] == [
        (i["topic"], i["keywords"]) for i in expected.interests
    ]
    assert [i["share"] for i in card["interests"]] == pytest.approx([i["share"] for i in expected.interests])
    assert card["anomaly_percentile"] == pytest.approx(expected.anomaly_percentile)
    assert [r["feature"] for r in card["anomaly_reasons"]] == [r["feature"] for r in expected.anomaly_reasons]
    # With the model: the successor of the latest item comes first (the planted pattern).
    assert (
        card["next_items"][0]["item_id"] == f"i{(newest + 1) % N_ITEMS:03d}" and len(card["next_items"]) == 5
    )
    # The segment is the one /v1/segments counts the user in, and the one the map rings.
    segments = client.get("/v1/segments", headers=auth(titled, "reader")).json()
    assert card["segment"] in {s["segment"] for s in segments["segments"]}
    ring = ET.fromstring(client.get("/v1/segments/map?user_id=user3", headers=auth(titled, "reader")).text)
    assert ring.find("svg:g[@class='highlight']", SVG).get("data-segment") == str(card["segment"])


def test_profile_auth_and_errors(client, titled) -> None:
    url = "/v1/users/user3/profile"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    denied = client.get(url, headers=auth(titled, "admin"))
    assert denied.status_code == 403 and "'read' scope" in denied.json()["detail"]
    assert client.get(url, headers={"X-API-Key": titled["keys"]["reader"]}).status_code == 200
    missing = client.get("/v1/users/nobody-at-all/profile", headers=auth(titled, "reader"))
    assert missing.status_code == 404 and missing.json()["detail"] == "user 'nobody-at-all' has no events"
    for bad in ("recent=0", "recent=101", "recent=some"):
        assert client.get(f"{url}?{bad}", headers=auth(titled, "reader")).status_code == 422
    assert "/v1/users/{user_id}/profile" in client.get("/openapi.json").json()["paths"]


def test_profiles_reuse_the_cached_detector_segments_and_topics(titled, monkeypatch) -> None:
    import behaviorlm.profiling.profile as profile_module
    import behaviorlm.profiling.segments as segments_module
    from behaviorlm.profiling.anomalies import AnomalyDetector

    calls = {"fit": 0, "segments": 0, "topics": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(AnomalyDetector, "fit", counted("fit", AnomalyDetector.fit))
    # Encoding every user is the first step of a segmentation (k-means also finds the interest topics).
    monkeypatch.setattr(
        segments_module, "user_representations", counted("segments", segments_module.user_representations)
    )
    monkeypatch.setattr(profile_module, "interest_topics", counted("topics", profile_module.interest_topics))
    read = auth(titled, "reader")
    with make_client(titled) as client:
        for user in range(10):
            assert client.get(f"/v1/users/user{user}/profile", headers=read).status_code == 200
        assert client.get("/v1/anomalies", headers=read).status_code == 200
        assert client.get("/v1/segments/map", headers=read).status_code == 200
    assert calls == {"fit": 1, "segments": 1, "topics": 1}, calls
    # Stale caches are what make a request compute: with no reuse time, every profile refits.
    with make_client(titled, anomaly_refresh_seconds=0, segment_refresh_seconds=0) as client:
        for user in range(3):
            assert client.get(f"/v1/users/user{user}/profile", headers=read).status_code == 200
    assert calls == {"fit": 4, "segments": 4, "topics": 4}, calls


def test_a_posted_event_shows_in_the_profile_at_once(client, titled) -> None:
    read, write = auth(titled, "reader"), auth(titled, "writer")
    before = client.get("/v1/users/user7/profile", headers=read).json()
    posted = {"user_id": "user7", "item_id": "i025", "event_type": "cart", "timestamp": 1_800_000_000}
    assert client.post("/v1/events", json={"events": [posted]}, headers=write).json()["stored"] == 1
    after = client.get("/v1/users/user7/profile", headers=read).json()
    assert after["events"] == before["events"] + 1
    assert after["events_by_type"] == {"cart": 1, "view": before["events_by_type"]["view"]}
    assert after["recent_items"][0] == {
        "item_id": "i025",
        "title": "camping tent model 25",
        "event_type": "cart",
        "time": "2027-01-15T08:00:00Z",
    }
    assert after["last_event"] == "2027-01-15T08:00:00Z" and after["active_days"] == 2
    # The model has never seen 'cart': it reads the latest events without it, as /recommendations does.
    recs = client.get("/v1/users/user7/recommendations?k=5", headers=read).json()
    assert recs["skipped_events"] == 1
    assert [i["item_id"] for i in after["next_items"]] == [i["item_id"] for i in recs["items"]]
    viewed = {**posted, "event_type": "view", "timestamp": 1_800_000_060}
    assert client.post("/v1/events", json={"events": [viewed]}, headers=write).json()["stored"] == 1
    after = client.get("/v1/users/user7/profile", headers=read).json()
    assert after["next_items"][0]["item_id"] == "i026"  # the model reads the new latest event at once
    # Scored and segmented before the post: those parts stay until the caches refresh.
    assert (
        after["anomaly_percentile"] == before["anomaly_percentile"] and after["segment"] == before["segment"]
    )
    # A user who first appears now has a profile at once, without a score or segment until the refresh.
    newcomer = {"user_id": "newcomer", "item_id": "i004", "event_type": "view", "timestamp": 1_800_000_000}
    client.post("/v1/events", json={"events": [newcomer]}, headers=write)
    card = client.get("/v1/users/newcomer/profile", headers=read).json()
    assert card["events"] == 1 and card["recent_items"][0]["item_id"] == "i004"
    assert card["anomaly_percentile"] is None and card["segment"] is None
    assert card["interests"][0]["share"] > 0 and card["next_items"][0]["item_id"] == "i005"


def test_segment_map_is_svg_with_the_user_ringed(client, titled) -> None:
    read = auth(titled, "reader")
    assert client.get("/v1/segments/map").status_code == 401
    response = client.get("/v1/segments/map", headers=read)
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["content-security-policy"] == "default-src 'none'"
    root = ET.fromstring(response.text)
    groups = root.findall("svg:g[@class='segment']", SVG)
    segments = client.get("/v1/segments", headers=read).json()["segments"]
    sizes = {int(g.get("data-segment")): len(g.findall("svg:circle", SVG)) for g in groups}
    assert sizes == {s["segment"]: s["users"] for s in segments}  # every segmented user is a dot
    assert root.find("svg:g[@class='highlight']", SVG) is None
    # A user who was not segmented (or does not exist) is simply not ringed.
    unknown = ET.fromstring(client.get("/v1/segments/map?user_id=ghost", headers=read).text)
    assert unknown.find("svg:g[@class='highlight']", SVG) is None
    assert client.get("/v1/segments/map?user_id=", headers=read).status_code == 422


def test_profile_by_the_callers_id_when_users_are_pseudonymized(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BEHAVIORLM_PSEUDONYM_KEY", "a test key that is long enough")
    keys = tmp_path / "keys.json"
    key = {"X-API-Key": create_key(keys, name="rw", scopes=["read", "write"])}
    config = ServiceConfig(
        store=str(tmp_path / "s.duckdb"),
        keys_file=str(keys),
        ingest=IngestConfig(format="jsonl", pseudonymize_users=True),
    )
    with TestClient(create_app(config)) as client:
        assert client.get("/v1/users/alice/profile", headers=key).status_code == 404  # an empty store
        assert client.get("/v1/anomalies", headers=key).status_code == 409  # nothing to score yet
        events = [
            {"user_id": name, "item_id": f"i{n}", "event_type": "view", "timestamp": 1_700_000_000 + n}
            for n, name in enumerate(["alice", "bob"] * 3)
        ]
        assert client.post("/v1/events", json={"events": events}, headers=key).json()["stored"] == 6
        card = client.get("/v1/users/alice/profile", headers=key).json()
        stored = client.app.state.service.stored_user_id("alice")
        assert stored != "alice" and client.app.state.service.reader().user_events("alice")["item_id"] == []
    assert card["user_id"] == "alice" and card["events"] == 3 and card["recent_items"][0]["item_id"] == "i4"
    # Without a model: no segment and no next items, the rest as ever.
    assert card["segment"] is None and card["next_items"] == [] and card["anomaly_percentile"] is not None
