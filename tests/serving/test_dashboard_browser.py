"""The dashboard end to end in a real browser: Debian's Chromium, driven by Playwright, against the real
server (`behaviorlm serve` in a subprocess) — keys, overview, anomaly reasons as bars, a user's activity
chart and timeline, recommendations and their explanation with item titles, profiles, the segment map,
the population reports (effects by segment, bias audit, Qini curves), error messages, escaping of
untrusted ids and titles, no console errors in the main view, and no request leaving the service's origin.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is absent (`.ci/run` installs
Chromium when apt is available). Screenshots go to ``$BEHAVIORLM_ARTIFACTS`` (default: the test's tmp dir);
with ``BEHAVIORLM_UPDATE_DOCS_IMAGES=1`` the main view also replaces ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from behaviorlm.causal.effects import analyze_effects
from behaviorlm.causal.learners import EffectConfig
from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.splits import leave_one_out
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.audit import audit_recommender
from behaviorlm.marketing.audience import compare_targeting
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.serving.dashboard import CONTENT_SECURITY_POLICY
from behaviorlm.serving.security import create_key
from behaviorlm.synthetic.campaign import synthetic_campaign
from behaviorlm.synthetic.causal import causal_synthetic
from behaviorlm.testing.fake_llm import FakeLLMServer, Step
from behaviorlm.training.options import TrainingOptions

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
RATE_LIMIT_PER_MINUTE = 40
"""Low enough that a key hammered from the test runs dry (one token back every 1.5 s), high enough for the
dashboard's own requests in this test (about 30 with the read key)."""
HOSTILE_USER = '<img src=x onerror="document.body.dataset.pwned=1">'
HOSTILE_ITEM = '<b id="injected">i001</b>'
HOSTILE_TITLE = '<img src=x onerror="document.body.dataset.pwned=2">Totally normal mug'
HOSTILE_TITLED_ITEM = "i013"
CATALOGUE = [
    (
        "shoes",
        "Stridewell",
        [
            "Trail running shoe",
            "Road racing flat",
            "Hiking boot",
            "Barefoot sneaker",
            "Cushioned trainer",
            "Waterproof trail shoe",
            "Lightweight racer",
            "Approach shoe",
            "Recovery sandal",
            "Spikes for the track",
        ],
    ),
    (
        "coffee",
        "Crema & Co",
        [
            "Espresso beans, dark roast",
            "Single-origin filter beans",
            "Hand grinder",
            "Pour-over kettle",
            "Milk frother",
            "Decaf house blend",
            "Cold brew bottle",
            "Moka pot",
            "Paper filters (100)",
            "Cupping spoon",
        ],
    ),
    (
        "outdoor",
        "Northpeak",
        [
            "Two-person tent",
            "Down sleeping bag",
            "Inflatable mat",
            "Camping stove",
            "Head torch",
            "Trekking poles",
            "Water filter",
            "Rain jacket",
            "Daypack 25 l",
            "Enamel mug",
        ],
    ),
]
"""Category, brand and item titles: items i000-i009, i010-i019 and i020-i029."""
HOUR = 3600


WORDS = {
    "intent": "ready to buy",
    "confidence": 0.6,
    "claims": [
        {"fact": "E1", "field": "action", "value": "added to cart"},
        {"fact": "P1", "field": "events", "value": "10"},
    ],
}


def _event_type(t: int) -> str:
    return "cart" if t in (4, 9) else "purchase" if t == 6 else "view"


def _records(n_users: int, start_time: int = 1_700_000_000) -> list[dict[str, Any]]:
    """Each user visits 10 consecutive items (i007 -> i008 -> ...), 10 hours apart over four days: views,
    carts (the 5th and the last event) and a purchase (the 7th); and two bots: a crawler viewing 150 items
    two seconds apart, and a cart stuffer carting 40 items in a minute and a half."""
    humans = [
        {
            "user_id": f"user{u}",
            "item_id": f"i{(7 * u + t) % N_ITEMS:03d}",
            "event_type": _event_type(t),
            "timestamp": start_time + 600 * u + 10 * HOUR * t,
        }
        for u in range(n_users)
        for t in range(10)
    ]
    crawler = [
        {
            "user_id": "crawler",
            "item_id": f"i{t % N_ITEMS:03d}",
            "event_type": "view",
            "timestamp": start_time + 2 * t,
        }
        for t in range(150)
    ]
    stuffer = [
        {
            "user_id": "stuffer",
            "item_id": f"i{(3 * t) % N_ITEMS:03d}",
            "event_type": "cart",
            "timestamp": start_time + 5000 + 2 * t,
        }
        for t in range(40)
    ]
    return humans + crawler + stuffer


def _catalogue(store: EventStore) -> dict[str, dict[str, str]]:
    """Give every item a title, category and brand (one a hostile title); returns item id -> fields."""
    fields = {}
    for block, (category, brand, titles) in enumerate(CATALOGUE):
        for i, title in enumerate(titles):
            item = f"i{10 * block + i:03d}"
            fields[item] = {
                "title": HOSTILE_TITLE if item == HOSTILE_TITLED_ITEM else title,
                "category": category,
                "brand": brand,
            }
    for item, known in fields.items():
        store.execute(
            "INSERT INTO items (item_id, title, category, brand) VALUES (?, ?, ?, ?)",
            [item, known["title"], known["category"], known["brand"]],
        )
    return fields


def _write_reports(root: Path, *, data: Any, model: Any) -> dict[str, str]:
    """The three population reports, computed by the library on small inputs: causal effects by segment on
    a synthetic log with planted effects, a bias audit of the test's model on the test's store (grouped by
    a planted attribute and by activity), and targeting on a synthetic campaign."""
    fast = EffectConfig(n_folds=3, placebo_draws=2, subset_draws=2, learner="linear", seed=0)
    effects = analyze_effects(causal_synthetic(n_users=2000, seed=0, with_events=False).table, config=fast)
    split = leave_one_out(data)
    audit = audit_recommender(
        model,
        history=split.test_history,
        targets=split.test,
        user_attributes={str(u): {"gender": "f" if i % 2 else "m"} for i, u in enumerate(data.user_ids)},
        groups=("gender", "activity"),
        n_resamples=100,
    )
    campaign = synthetic_campaign(causal_synthetic(n_users=2000, seed=0).interactions, seed=0)
    targeting = compare_targeting(
        campaign.table, learners=("x-learner",), config=fast, true_uplift=campaign.true_uplift
    )
    paths = {}
    for name, report in (
        ("effects", effects.to_dict()),
        ("audit", audit.to_dict()),
        ("targeting", targeting.to_dict()),
    ):
        path = root / f"{name}.json"
        path.write_text(json.dumps(report))
        paths[name] = str(path)
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`behaviorlm serve` on a free loopback port over a seeded store with a catalogue, a small model, the
    three population reports and six keys."""
    root = tmp_path_factory.mktemp("dashboard")
    store_path = root / "events.duckdb"
    with EventStore(store_path) as store:
        ingest_records(store, _records(60), source="seed", config=IngestConfig(format="jsonl"))
        bad = [{"user_id": "user0", "item_id": "i001", "event_type": "teleport", "timestamp": 1_700_000_000}]
        ingest_records(store, bad, source="bad", config=IngestConfig(format="jsonl"))
        catalogue = _catalogue(store)
        data = store.interactions()
    model = BehaviorTransformer(
        d_model=32,
        n_layers=1,
        n_heads=2,
        dropout=0.1,
        max_len=12,
        training=TrainingOptions(epochs=5, lr=5e-3),
    ).fit(data)
    reports = _write_reports(root, data=data, model=model)
    keys_file = root / "keys.json"
    keys = {
        "reader": create_key(keys_file, name="reader", scopes=["read"]),
        "writer": create_key(keys_file, name="writer", scopes=["read", "write"]),
        "loader": create_key(keys_file, name="loader", scopes=["write"]),
        "burst": create_key(keys_file, name="burst", scopes=["read"]),
        "hints": create_key(keys_file, name="hints", scopes=["read"]),
        "intent": create_key(keys_file, name="intent", scopes=["read"]),  # its own rate-limit budget
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
                "reports": reports,
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
        yield {"base": base, "keys": keys, "log": log, "catalogue": catalogue, "reports": reports}
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


DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
MAX_IMAGE_BYTES = 300_000
PROVOKED = re.compile(r"^Failed to load resource: the server responded with a status of (401|403|404|429)\b")
"""The console errors Chromium logs for the failures this test provokes (wrong key, missing scope, an
unknown user and an explanation of a user the model cannot read, the rate limit); nothing else may appear."""


def save_small_png(source: Path, target: Path) -> int:
    """``source`` as a 256-colour PNG at ``target`` (flat UI colours survive; a third of the size); returns
    its size in bytes."""
    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target.stat().st_size


def label(catalogue: dict[str, dict[str, str]], item_id: str) -> str:
    """What the page shows for an item: its title, else its id."""
    return catalogue.get(item_id, {}).get("title", item_id)


def test_dashboard_end_to_end(server: dict[str, Any], browser: Any, artifacts: Path) -> None:
    expect = sync_api.expect
    base, keys, catalogue = server["base"], server["keys"], server["catalogue"]
    api = httpx.Client(base_url=base, headers={"X-API-Key": keys["writer"]}, timeout=10)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    requested: list[str] = []
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on(
        "console", lambda message: console_errors.append(message.text) if message.type == "error" else None
    )
    error = page.locator("#error")

    def use_key(key: str) -> None:
        page.fill("#api-key", key)
        page.click("#save-key")

    def look_up(user_id: str) -> None:
        page.fill("#user-id", user_id)
        page.click("#lookup")

    def shot(name: str) -> Path:
        path = artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

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
        assert all(PROVOKED.match(text) for text in console_errors), console_errors
        console_errors.clear()

        # The read key: the overview shows exactly what /v1/stats says, counts with thousands separators.
        use_key(keys["reader"])
        expect(page.locator("#overview-body")).to_be_visible()
        expect(error).to_be_empty()
        stats = api.get("/v1/stats").json()
        expect(page.locator("#stat-events")).to_have_text(f"{stats['tables']['events']:,}")
        expect(page.locator("#stat-users")).to_have_text(f"{stats['users']:,}")
        expect(page.locator("#stat-items")).to_have_text(f"{stats['items']:,}")
        assert (stats["tables"]["events"], stats["users"], stats["items"]) == (790, 62, N_ITEMS)
        bars = page.locator("#event-types .bar-row")
        expect(bars).to_have_count(len(stats["event_types"]))
        shown_types = {
            bars.nth(i).locator(".id").text_content(): bars.nth(i).locator(".count").text_content()
            for i in range(bars.count())
        }
        assert stats["event_types"] == {"view": 420 + 150, "cart": 120 + 40, "purchase": 60}
        assert shown_types == {t: f"{n:,}" for t, n in stats["event_types"].items()}
        expect(page.locator("#quarantine li")).to_have_count(len(stats["quarantine_reasons"]))
        expect(page.locator("#quarantine")).to_contain_text("unknown event type")
        assert page.evaluate("sessionStorage.getItem('behaviorlm.apiKey')") == keys["reader"]
        # The anomaly list shows the API's ranking (same users, same order), the bots first, and each
        # reason as a bar of the user's value against the typical range.
        anomalies = api.get("/v1/anomalies?limit=10").json()["users"]
        ranked = [u["user_id"] for u in anomalies]
        assert set(ranked[:2]) == {"crawler", "stuffer"}
        anomaly_rows = page.locator("#anomalies tbody tr")
        expect(anomaly_rows).to_have_count(len(ranked))
        assert [anomaly_rows.nth(i).locator("button").text_content() for i in range(len(ranked))] == ranked
        expect(anomaly_rows.first.locator(".reason svg.reason-chart")).to_have_count(
            len(anomalies[0]["reasons"])
        )
        expect(anomaly_rows.first.locator(".reason svg .typical-range")).to_have_count(
            len(anomalies[0]["reasons"])
        )
        events_cell = anomaly_rows.nth(ranked.index("crawler")).locator("td").nth(2)
        expect(events_cell).to_have_text("150")
        # The segment map: the service's SVG shown inline, a dot for every segmented user, no ring yet.
        segmented = sum(s["users"] for s in api.get("/v1/segments").json()["segments"])
        assert segmented == 62
        expect(page.locator("#segment-map svg g.segment circle")).to_have_count(segmented)
        expect(page.locator("#segment-map svg .highlight")).to_have_count(0)
        # The population reports, drawn from the files the config names.
        effects = api.get("/v1/reports/effects").json()["report"]
        expect(page.locator("#effects-chart svg")).to_have_count(2)
        expect(page.locator("#effects-chart svg g.estimate")).to_have_count(
            len(effects["estimates"]) + len(effects["segments"])
        )
        expect(page.locator("#effects-note")).to_contain_text(
            f"Effect of cart on purchase ({effects['n_users']:,} users, {effects['n_treated']:,} treated"
        )
        audit = api.get("/v1/reports/audit").json()["report"]
        expect(page.locator("#audit-chart svg")).to_have_count(len(audit["groups"]))
        expect(page.locator("#audit-chart svg g.estimate")).to_have_count(
            sum(len(g["groups"]) for g in audit["groups"].values())
        )
        expect(page.locator("#audit-chart")).to_contain_text("Gini of exposure")
        targeting = api.get("/v1/reports/targeting").json()["report"]
        expect(page.locator("#qini-svg polyline.curve")).to_have_count(len(targeting["results"]))
        expect(page.locator("#targeting-table tbody tr")).to_have_count(len(targeting["results"]))
        expect(page.locator("#targeting-note")).to_contain_text(f"{targeting['n_test']:,} held-out users")
        shot("02-overview")

        # A user's activity (events per day by type), timeline, recommendations and why, with item titles.
        look_up("user3")
        activity = api.get("/v1/users/user3/activity").json()
        assert activity["events"] == 10 and len(activity["days"]) == 5
        expect(page.locator("#activity-svg rect.segment")).to_have_count(
            sum(len(day["by_type"]) for day in activity["days"])
        )
        expect(page.locator("#activity-svg g.bucket")).to_have_count(len(activity["days"]))
        assert [
            int(n)
            for n in page.locator("#activity-svg g.bucket").evaluate_all(
                "groups => groups.map((g) => g.dataset.events)"
            )
        ] == [day["events"] for day in activity["days"]]
        expect(page.locator("#activity-legend")).to_contain_text("view 7")
        expect(page.locator("#timeline-note")).to_have_text("10 events on 5 days, by event type.")
        # The table is folded away under the chart, with titles; the id is on hover.
        expect(page.locator("#timeline-details")).not_to_have_attribute("open", "")
        rows = page.locator("#timeline tbody tr")
        expect(rows).to_have_count(10)
        events = api.get("/v1/users/user3/events").json()["events"]
        assert all(e["title"] == catalogue[e["item_id"]]["title"] for e in events)
        shown = [
            (rows.nth(i).locator(".item").text_content(), rows.nth(i).locator(".event-type").text_content())
            for i in range(10)
        ]
        assert shown == [(label(catalogue, e["item_id"]), e["event_type"]) for e in reversed(events)]
        newest = events[-1]
        expect(rows.first.locator(".item")).to_have_attribute(
            "title", re.compile(f"item id: {newest['item_id']}")
        )
        assert rows.first.locator("td").first.text_content() == "2023-11-18 16:43:20"
        page.click("#timeline-summary")
        expect(rows.first).to_be_visible()
        recs = page.locator("#recommendations li")
        expect(recs).to_have_count(10)
        expected = api.get("/v1/users/user3/recommendations?k=10").json()["items"]
        assert recs.evaluate_all("items => items.map((li) => li.dataset.itemId)") == [
            r["item_id"] for r in expected
        ]
        assert recs.locator(".item").all_text_contents() == [label(catalogue, r["item_id"]) for r in expected]
        expect(recs.first.locator(".item")).to_have_attribute(
            "title", re.compile(f"item id: {expected[0]['item_id']}")
        )
        expect(recs.first.locator(".item-meta")).to_have_text(
            f"{expected[0]['category']} · {expected[0]['brand']}"
        )
        # The explanation: the top item by title, and a bar per event, labelled with its item's title.
        why = api.get("/v1/users/user3/explanation?k=5").json()
        assert why["title"] == label(catalogue, why["item_id"])
        expect(page.locator("#explanation")).to_contain_text(f"Why {why['title']} first")
        influence = page.locator("#explanation-chart .influence")
        expect(influence).to_have_count(len(why["because"]))
        assert influence.locator(".item").all_text_contents() == [
            label(catalogue, e["item_id"]) for e in why["because"]
        ]
        expect(influence.locator("svg .bar-value")).to_have_count(len(why["because"]))
        # On request, the intent in words with the facts it cites (from the language model, grounded).
        page.click("#words-btn")
        expect(page.locator("#words-intent")).to_have_text("Intent: ready to buy")
        expect(page.locator("#words-text")).to_contain_text("Likely intent: ready to buy")
        expect(page.locator("#words-text")).to_contain_text(
            f'The user added to cart "{catalogue["i000"]["title"]}". The user has 10 events in all.'
        )
        expect(page.locator("#words-evidence li")).to_have_count(2)
        expect(page.locator("#words-evidence li").first).to_contain_text("[E1] ")
        expect(page.locator("#words-status")).to_contain_text("checked against the data: 2 verified")
        # The profile panel shows the profile endpoint's facts, and the map rings the user in their segment.
        profile = api.get("/v1/users/user3/profile").json()
        assert profile["events"] == 10 and profile["events_by_type"] == {"cart": 2, "purchase": 1, "view": 7}
        expect(page.locator("#profile-events")).to_have_text("10")
        expect(page.locator("#profile-days")).to_have_text("5")
        expect(page.locator("#profile-segment")).to_have_text(str(profile["segment"]))
        expect(page.locator("#profile-anomaly")).to_have_text(f"{100 * profile['anomaly_percentile']:.0f}%")
        type_rows = page.locator("#profile-types .bar-row")
        expect(type_rows).to_have_count(3)
        assert {
            type_rows.nth(i).locator(".id").text_content(): int(
                type_rows.nth(i).locator(".count").text_content()
            )
            for i in range(3)
        } == profile["events_by_type"]
        # The catalogue's titles, categories and brands are item texts: interest topics, as bars.
        interests = page.locator("#profile-interests .bar-row")
        expect(interests).to_have_count(len(profile["interests"]))
        assert interests.locator(".keywords").all_text_contents() == [
            i["keywords"] for i in profile["interests"]
        ]
        expect(page.locator("#profile-reasons .reason svg")).to_have_count(len(profile["anomaly_reasons"]))
        ring = page.locator("#segment-map svg .highlight")
        expect(ring).to_have_count(1)
        expect(ring).to_have_attribute("data-segment", str(profile["segment"]))
        # The main view, as docs/serving.md shows it: small enough for the repository, and no console error.
        page.click("#timeline-summary")  # folded again, as a visitor first sees it
        main_view = shot("03-user-lookup")
        small = artifacts / "dashboard.png"
        assert save_small_png(main_view, small) < MAX_IMAGE_BYTES
        if os.environ.get("BEHAVIORLM_UPDATE_DOCS_IMAGES") == "1":
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            DOCS_IMAGE.write_bytes(small.read_bytes())
        assert not console_errors, console_errors

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
        expect(rows.first.locator(".item")).to_have_text(catalogue["i029"]["title"])
        expect(rows.first.locator(".event-type")).to_have_text("cart")
        expect(page.locator("#profile-events")).to_have_text("11")
        expect(page.locator("#timeline-note")).to_have_text("11 events on 6 days, by event type.")
        # 2027-01-15 is 1,154 days after the first event: the chart counts per month.
        expect(page.locator("#activity-svg")).to_have_attribute(
            "aria-label", "events per month by event type"
        )
        expected = api.get("/v1/users/user3/recommendations?k=10").json()["items"]
        assert recs.evaluate_all("items => items.map((li) => li.dataset.itemId)") == [
            r["item_id"] for r in expected
        ]
        shot("04-after-post")
        assert not console_errors, console_errors

        # Ids and titles are data, never markup: a hostile user id, item id and title show up as text and
        # run nothing.
        hostile = [
            {
                "user_id": HOSTILE_USER,
                "item_id": HOSTILE_ITEM,
                "event_type": "view",
                "timestamp": 1_800_000_000,
            },
            {
                "user_id": HOSTILE_USER,
                "item_id": HOSTILE_TITLED_ITEM,
                "event_type": "view",
                "timestamp": 1_800_000_060,
            },
        ]
        assert api.post("/v1/events", json={"events": hostile}).json()["stored"] == 2
        look_up(HOSTILE_USER)
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator(".item")).to_have_text(HOSTILE_TITLE)
        expect(rows.nth(1).locator(".item")).to_have_text(HOSTILE_ITEM)
        expect(rows.nth(1).locator(".item")).to_have_attribute("title", f"item id: {HOSTILE_ITEM}")
        expect(page.locator("#timeline-user")).to_have_text(f"— {HOSTILE_USER}")
        assert page.locator("#injected").count() == 0 and page.locator("img").count() == 0
        assert page.evaluate("document.body.dataset.pwned") is None
        expect(page.locator("#recommendations-note")).to_contain_text("1 event unknown to the model skipped")
        expect(page.locator("#profile-user")).to_have_text(f"— {HOSTILE_USER}")
        expect(page.locator("#profile-events")).to_have_text("2")
        expect(page.locator("#segment-map-note")).to_contain_text("not on the map")  # posted after segmenting
        expect(page.locator("#segment-map svg .highlight")).to_have_count(0)
        shot("05-hostile-ids")

        # 404: a user id that is no valid path segment ('/' splits it) names no resource.
        look_up("a/b")
        expect(error).to_contain_text("Not found (HTTP 404)")
        expect(rows).to_have_count(0)
        expect(page.locator("#activity-chart svg")).to_have_count(0)
        expect(page.locator("#timeline-note")).to_have_text(
            "Events over time, by event type (up to the latest 100 also as a table)."
        )
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

        # Without the key, the reports say what they need instead of keeping the last key's data.
        page.click("#clear-key")
        expect(page.locator("#effects-chart svg")).to_have_count(0)
        expect(page.locator("#effects-note")).to_have_text(
            "Enter an API key to see the causal-effects report."
        )

        assert not page_errors, page_errors
        assert all(PROVOKED.match(text) for text in console_errors), console_errors
        foreign = [url for url in requested if not url.startswith(base + "/")]
        assert not foreign, f"the page requested other origins: {foreign}"
    finally:
        context.close()
        api.close()


def open_with_health(page: Any, base: str, *, key: str, **changes: Any) -> None:
    """Open the dashboard with ``changes`` made to every ``/v1/health`` answer the page gets (what the
    service says it serves), enter ``key`` and wait for the overview."""

    def patched(route: Any) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), **changes})

    page.route(f"{base}/v1/health", patched)
    page.goto(f"{base}/dashboard")
    sync_api.expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.fill("#api-key", key)
    page.click("#save-key")
    sync_api.expect(page.locator("#overview-body")).to_be_visible()


def test_without_report_files_the_dashboard_says_how_to_make_them(
    server: dict[str, Any], browser: Any
) -> None:
    """Where the service serves no reports (``/v1/health`` lists none), the page asks for none and names the
    commands that write them and the config keys that serve them."""
    expect = sync_api.expect
    base = server["base"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    try:
        open_with_health(page, base, key=server["keys"]["hints"], reports=[])
        expect(page.locator("#effects-note code").first).to_have_text(
            "behaviorlm effects --treatment cart --outcome purchase --store events.duckdb --json effects.json"
        )
        expect(page.locator("#audit-note")).to_contain_text(
            "behaviorlm audit model/ --store events.duckdb --json"
        )
        expect(page.locator("#targeting-note")).to_contain_text("--compare --json targeting.json")
        for name in ("effects", "audit", "targeting"):
            expect(page.locator(f"#{name}-note")).to_contain_text(f'[reports] {name} = "{name}.json"')
            expect(page.locator(f"#{name}-chart svg")).to_have_count(0)
        assert not [url for url in requested if "/v1/reports/" in url]
    finally:
        context.close()


def test_the_profile_shows_the_intent_models_answer_and_its_reasons(
    server: dict[str, Any], browser: Any
) -> None:
    """With an intent model (``/v1/health`` names it) a looked-up user's profile shows its class
    probabilities as bars and a purchase-propensity model's reasons, worded with their direction. The
    endpoint's own answers are tested in tests/serving/test_intent.py; here it is stubbed."""
    expect = sync_api.expect
    base = server["base"]
    intent = {
        "user_id": "user3",
        "model": "purchase_propensity",
        "probabilities": {"purchase within 24h": 0.71, "no purchase within 24h": 0.29},
        "history_events": 12,
        "reasons": [
            {
                "feature": "cart_last_3h",
                "label": "cart events in the last 3 h",
                "value": 2.0,
                "log_odds": 0.91,
            },
            {
                "feature": "view_last_3h",
                "label": "view events in the last 3 h",
                "value": 23.0,
                "log_odds": -0.5,
            },
        ],
    }
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    page.route(f"{base}/v1/users/user3/intent", lambda route: route.fulfill(json=intent))
    try:
        open_with_health(page, base, key=server["keys"]["intent"], intent_model="purchase_propensity")
        page.fill("#user-id", "user3")
        page.click("#lookup")
        expect(page.locator("#profile-intent")).to_be_visible()
        expect(page.locator("#intent-model")).to_contain_text("purchase_propensity")
        bars = page.locator("#intent-probabilities .bar-row")
        expect(bars).to_have_count(2)
        expect(bars.first).to_contain_text("purchase within 24h")
        expect(bars.first.locator(".count")).to_have_text("0.71")
        expect(page.locator("#intent-reasons li.raises")).to_have_text(
            "cart events in the last 3 h: 2 — makes it more likely (log-odds +0.91)"
        )
        expect(page.locator("#intent-reasons li.lowers")).to_have_text(
            "view events in the last 3 h: 23 — makes it less likely (log-odds −0.50)"
        )
        # A user the intent model reads nothing of (404): no intent block, no error.
        page.route(
            f"{base}/v1/users/user4/intent", lambda route: route.fulfill(status=404, json={"detail": "x"})
        )
        page.fill("#user-id", "user4")
        page.click("#lookup")
        expect(page.locator("#timeline-user")).to_contain_text("user4")
        expect(page.locator("#error")).to_be_empty()
        expect(page.locator("#profile-user")).to_contain_text("user4")
        expect(page.locator("#profile-intent")).to_be_hidden()
        assert not page_errors, page_errors
    finally:
        context.close()
