"""The dashboard end to end in a real browser: Debian's Chromium, driven by Playwright, against the real
server (`behaviorlm serve` in a subprocess) — keys, overview, timelines, recommendations, profiles, the
segment map, error messages, escaping of untrusted ids, and no request leaving the service's origin.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is absent (`.ci/run` installs
Chromium when apt is available). Screenshots go to ``$BEHAVIORLM_ARTIFACTS`` (default: the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.serving.dashboard import CONTENT_SECURITY_POLICY
from behaviorlm.serving.security import create_key
from behaviorlm.testing.fake_llm import FakeLLMServer, Step

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing (pip install -e '.[test]')"
)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_ITEMS = 30
RATE_LIMIT_PER_MINUTE = 30
"""Low enough that a key hammered from the test runs dry (one token back every 2 s), high enough for the
dashboard's own requests in this test (about 20 with the read key)."""
HOSTILE_USER = '<img src=x onerror="document.body.dataset.pwned=1">'
HOSTILE_ITEM = '<b id="injected">i001</b>'


WORDS = {
    "intent": "ready to buy",
    "confidence": 0.6,
    "claims": [
        {"fact": "E1", "field": "action", "value": "added to cart"},
        {"fact": "P1", "field": "events", "value": "10"},
    ],
}


def _records(n_users: int, start_time: int = 1_700_000_000) -> list[dict[str, Any]]:
    """Each user views 10 consecutive items (i007 -> i008 -> ...), one minute apart."""
    return [
        {
            "user_id": f"user{u}",
            "item_id": f"i{(7 * u + t) % N_ITEMS:03d}",
            "event_type": "cart" if t == 9 else "view",
            "timestamp": start_time + 60 * t,
        }
        for u in range(n_users)
        for t in range(10)
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`behaviorlm serve` on a free loopback port over a seeded store, a small model and four keys."""
    root = tmp_path_factory.mktemp("dashboard")
    store_path = root / "events.duckdb"
    with EventStore(store_path) as store:
        ingest_records(store, _records(60), source="seed", config=IngestConfig(format="jsonl"))
        bad = [{"user_id": "user0", "item_id": "i001", "event_type": "teleport", "timestamp": 1_700_000_000}]
        ingest_records(store, bad, source="bad", config=IngestConfig(format="jsonl"))
        data = store.interactions()
    model = BehaviorTransformer(
        d_model=32, n_layers=1, n_heads=2, dropout=0.1, max_len=12, epochs=5, lr=5e-3
    ).fit(data)
    keys_file = root / "keys.json"
    keys = {
        "reader": create_key(keys_file, name="reader", scopes=["read"]),
        "writer": create_key(keys_file, name="writer", scopes=["read", "write"]),
        "loader": create_key(keys_file, name="loader", scopes=["write"]),
        "burst": create_key(keys_file, name="burst", scopes=["read"]),
    }
    # A scripted OpenAI-compatible server stands in for the language model of the words panel.
    llm = FakeLLMServer(default=Step(text=json.dumps(WORDS)))
    llm.__enter__()
    config = root / "service.json"
    config.write_text(
        json.dumps(
            {
                "store": str(store_path),
                "model": str(model.save(root / "model")),
                "keys_file": str(keys_file),
                "rate_limit_per_minute": RATE_LIMIT_PER_MINUTE,
                "llm": {"base_url": llm.url, "model": "fake", "cache_dir": ""},
            }
        )
    )
    port = _free_port()
    log = root / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "behaviorlm.cli.main", "serve", "--config", str(config), "--port", str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield {"base": base, "keys": keys, "log": log}
    finally:
        llm.__exit__(None, None, None)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, with its background network features off (nothing is downloaded)."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BEHAVIORLM_ARTIFACTS") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_dashboard_end_to_end(server: dict[str, Any], browser: Any, artifacts: Path) -> None:
    expect = sync_api.expect
    base, keys = server["base"], server["keys"]
    api = httpx.Client(base_url=base, headers={"X-API-Key": keys["writer"]}, timeout=10)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    requested: list[str] = []
    page_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    error = page.locator("#error")

    def use_key(key: str) -> None:
        page.fill("#api-key", key)
        page.click("#save-key")

    def look_up(user_id: str) -> None:
        page.fill("#user-id", user_id)
        page.click("#lookup")

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

    try:
        # The page itself: no key needed, served with the CSP.
        response = page.goto(f"{base}/dashboard")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#overview-empty")).to_be_visible()

        # A wrong key is refused, and the page says so instead of showing data.
        use_key("definitely-not-a-key")
        expect(error).to_contain_text("Invalid API key")
        expect(page.locator("#overview-body")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('behaviorlm.apiKey')") is None
        shot("01-wrong-key")

        # A key without the read scope: 403, explained.
        use_key(keys["loader"])
        expect(error).to_contain_text("lacks the scope")
        expect(error).to_contain_text("'read'")

        # The read key: the overview shows exactly what /v1/stats says.
        use_key(keys["reader"])
        expect(page.locator("#overview-body")).to_be_visible()
        expect(error).to_be_empty()
        stats = api.get("/v1/stats").json()
        expect(page.locator("#stat-events")).to_have_text(str(stats["tables"]["events"]))
        expect(page.locator("#stat-users")).to_have_text(str(stats["users"]))
        expect(page.locator("#stat-items")).to_have_text(str(stats["items"]))
        assert (stats["tables"]["events"], stats["users"], stats["items"]) == (600, 60, N_ITEMS)
        bars = page.locator("#event-types .bar-row")
        expect(bars).to_have_count(len(stats["event_types"]))
        shown_types = {
            bars.nth(i).locator(".id").text_content(): int(bars.nth(i).locator(".count").text_content())
            for i in range(bars.count())
        }
        assert shown_types == stats["event_types"] == {"view": 540, "cart": 60}
        expect(page.locator("#quarantine li")).to_have_count(len(stats["quarantine_reasons"]))
        expect(page.locator("#quarantine")).to_contain_text("unknown event type")
        assert page.evaluate("sessionStorage.getItem('behaviorlm.apiKey')") == keys["reader"]
        # The anomaly list shows the API's ranking (same users, same order).
        ranked = [u["user_id"] for u in api.get("/v1/anomalies?limit=10").json()["users"]]
        anomaly_rows = page.locator("#anomalies tbody tr")
        expect(anomaly_rows).to_have_count(len(ranked))
        assert [anomaly_rows.nth(i).locator("button").text_content() for i in range(len(ranked))] == ranked
        # The segment map: the service's SVG shown inline, a dot for every segmented user, no ring yet.
        segmented = sum(s["users"] for s in api.get("/v1/segments").json()["segments"])
        assert segmented == 60
        expect(page.locator("#segment-map svg g.segment circle")).to_have_count(segmented)
        expect(page.locator("#segment-map svg .highlight")).to_have_count(0)
        shot("02-overview")

        # A user's timeline (newest first) and top-10 recommendations, as the API gives them.
        look_up("user3")
        rows = page.locator("#timeline tbody tr")
        expect(rows).to_have_count(10)
        events = api.get("/v1/users/user3/events").json()["events"]
        shown = [
            (rows.nth(i).locator(".item").text_content(), rows.nth(i).locator(".event-type").text_content())
            for i in range(10)
        ]
        assert shown == [(e["item_id"], e["event_type"]) for e in reversed(events)]
        assert rows.first.locator("td").first.text_content() == "2023-11-14 22:22:20"
        recs = page.locator("#recommendations li .item")
        expect(recs).to_have_count(10)
        expected = [r["item_id"] for r in api.get("/v1/users/user3/recommendations?k=10").json()["items"]]
        assert recs.first.text_content() == expected[0]
        assert recs.all_text_contents() == expected
        # The explanation names the top item and the events the API's explanation gives.
        why = api.get("/v1/users/user3/explanation?k=3").json()
        expect(page.locator("#explanation")).to_contain_text(f"Why {why['item_id']} first")
        expect(page.locator("#explanation")).to_contain_text(why["because"][0]["item_id"])
        # On request, the intent in words with the facts it cites (from the language model, grounded).
        page.click("#words-btn")
        expect(page.locator("#words-intent")).to_have_text("Intent: ready to buy")
        expect(page.locator("#words-text")).to_contain_text("Likely intent: ready to buy")
        expect(page.locator("#words-text")).to_contain_text(
            "The user added to cart item i000. The user has 10 events in all."
        )
        expect(page.locator("#words-evidence li")).to_have_count(2)
        expect(page.locator("#words-evidence li").first).to_contain_text("[E1] ")
        expect(page.locator("#words-status")).to_contain_text("checked against the data: 2 verified")
        # The profile panel shows the profile endpoint's facts, and the map rings the user in their segment.
        profile = api.get("/v1/users/user3/profile").json()
        assert profile["events"] == 10 and profile["events_by_type"] == {"cart": 1, "view": 9}
        expect(page.locator("#profile-events")).to_have_text("10")
        expect(page.locator("#profile-segment")).to_have_text(str(profile["segment"]))
        expect(page.locator("#profile-anomaly")).to_have_text(f"{100 * profile['anomaly_percentile']:.0f}%")
        type_rows = page.locator("#profile-types .bar-row")
        expect(type_rows).to_have_count(2)
        assert {
            type_rows.nth(i).locator(".id").text_content(): int(
                type_rows.nth(i).locator(".count").text_content()
            )
            for i in range(2)
        } == profile["events_by_type"]
        expect(page.locator("#profile-interests")).to_have_text("No item texts to read interests from.")
        expect(page.locator("#profile-reasons li")).to_have_count(len(profile["anomaly_reasons"]))
        ring = page.locator("#segment-map svg .highlight")
        expect(ring).to_have_count(1)
        expect(ring).to_have_attribute("data-segment", str(profile["segment"]))
        shot("03-user-lookup")

        # An event posted through the API shows up in the timeline at the next lookup.
        posted = {
            "user_id": "user3",
            "item_id": "i029",
            "event_type": "cart",
            "timestamp": 1_800_000_000,
            "event_id": "dashboard-e1",
        }
        assert api.post("/v1/events", json={"events": [posted]}).json()["stored"] == 1
        page.click("#lookup")
        expect(rows).to_have_count(11)
        expect(rows.first.locator(".item")).to_have_text("i029")
        expect(rows.first.locator(".event-type")).to_have_text("cart")
        expect(page.locator("#profile-events")).to_have_text("11")
        expected = [r["item_id"] for r in api.get("/v1/users/user3/recommendations?k=10").json()["items"]]
        assert recs.all_text_contents() == expected
        shot("04-after-post")

        # Ids are data, never markup: a hostile user and item id show up as text and run nothing.
        hostile = {
            "user_id": HOSTILE_USER,
            "item_id": HOSTILE_ITEM,
            "event_type": "view",
            "timestamp": 1_800_000_000,
        }
        assert api.post("/v1/events", json={"events": [hostile]}).json()["stored"] == 1
        look_up(HOSTILE_USER)
        expect(rows).to_have_count(1)
        expect(rows.first.locator(".item")).to_have_text(HOSTILE_ITEM)
        expect(page.locator("#timeline-user")).to_have_text(f"— {HOSTILE_USER}")
        assert page.locator("#injected").count() == 0 and page.locator("img").count() == 0
        assert page.evaluate("document.body.dataset.pwned") is None
        expect(page.locator("#recommendations-note")).to_contain_text("1 event unknown to the model skipped")
        expect(page.locator("#profile-user")).to_have_text(f"— {HOSTILE_USER}")
        expect(page.locator("#profile-events")).to_have_text("1")
        expect(page.locator("#segment-map-note")).to_contain_text("not on the map")  # posted after segmenting
        expect(page.locator("#segment-map svg .highlight")).to_have_count(0)
        shot("05-hostile-ids")

        # 404: a user id that is no valid path segment ('/' splits it) names no resource.
        look_up("a/b")
        expect(error).to_contain_text("Not found (HTTP 404)")
        expect(rows).to_have_count(0)
        expect(page.locator("#timeline-note")).to_have_text("Latest events first (up to 100).")
        expect(page.locator("#profile-body")).to_be_hidden()

        # 429: a key already run dry by another client gets a rate-limit message with the wait.
        for _ in range(RATE_LIMIT_PER_MINUTE + 5):
            if httpx.get(f"{base}/v1/stats", headers={"X-API-Key": keys["burst"]}).status_code == 429:
                break
        else:
            raise AssertionError("the burst key was never rate-limited")
        use_key(keys["burst"])
        expect(error).to_contain_text("Rate limit exceeded")
        expect(error).to_contain_text("retry in")
        shot("06-rate-limited")

        assert not page_errors, page_errors
        foreign = [url for url in requested if not url.startswith(base + "/")]
        assert not foreign, f"the page requested other origins: {foreign}"
    finally:
        context.close()
        api.close()
