"""What the dashboard draws, through the JSON API: item titles, categories and brands wherever items
appear (recommendations, timelines, explanations), a user's events per day, the typical range behind
each anomaly reason, and the population reports served from the files the config names — with bad
input and unusable files answered 4xx/503 with a message naming the field, never a 500."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.serving.conftest import N_ITEMS, auth

from behaviorlm.causal.effects import analyze_effects
from behaviorlm.causal.learners import EffectConfig
from behaviorlm.config import ConfigError, ServiceConfig, load_config
from behaviorlm.data.splits import leave_one_out
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.audit import audit_recommender
from behaviorlm.marketing.audience import compare_targeting
from behaviorlm.models.registry import load_model
from behaviorlm.profiling.anomalies import FEATURES
from behaviorlm.serving import dashboard
from behaviorlm.serving.app import create_app
from behaviorlm.serving.reports import MAX_REPORT_BYTES
from behaviorlm.synthetic.campaign import synthetic_campaign
from behaviorlm.synthetic.causal import causal_synthetic

FAST = EffectConfig(n_folds=2, placebo_draws=2, subset_draws=2, learner="linear", seed=0)


def catalogue_fields(i: int) -> dict[str, str] | None:
    """Item i's catalogue entry: every third item has none; titles hold markup (untrusted text, kept
    as is); items 15 and up have no category; odd items a brand, even ones a blank brand (no brand)."""
    if i % 3 == 2:
        return None
    fields = {"title": f"Item {i} <b>bold</b>"}
    if i < 15:
        fields["category"] = "shoes"
    if i % 2:
        fields["brand"] = "Acme"
    return fields


@pytest.fixture(scope="module")
def catalogued(deployment, tmp_path_factory):
    """The shared deployment with a partial catalogue, and the three reports written by the library."""
    root = tmp_path_factory.mktemp("reports")
    with EventStore(deployment["store"]) as store:
        for i in range(N_ITEMS):
            fields = catalogue_fields(i)
            if fields is not None:
                store.execute(
                    "INSERT INTO items (item_id, title, category, brand) VALUES (?, ?, ?, ?)",
                    [f"i{i:03d}", fields["title"], fields.get("category"), fields.get("brand", " ")],
                )
        data = store.interactions()
    effects = analyze_effects(causal_synthetic(n_users=1000, seed=0, with_events=False).table, config=FAST)
    split = leave_one_out(data)
    audit = audit_recommender(
        load_model(deployment["model"]),
        history=split.test_history,
        targets=split.test,
        user_attributes={str(u): {"gender": "f" if k % 2 else "m"} for k, u in enumerate(data.user_ids)},
        groups=("gender",),
        n_resamples=100,
    )
    campaign = synthetic_campaign(causal_synthetic(n_users=1000, seed=0).interactions, seed=0)
    targeting = compare_targeting(campaign.table, learners=("t-learner",), config=FAST)
    reports = {}
    for name, report in (
        ("effects", effects.to_dict()),
        ("audit", audit.to_dict()),
        ("targeting", targeting.to_dict(curve_points=21)),
    ):
        reports[name] = root / f"{name}.json"
        reports[name].write_text(json.dumps(report))
    return {**deployment, "reports": reports, "root": root}


def make_client(deployment, **overrides) -> TestClient:
    config = ServiceConfig(
        store=deployment["store"], model=deployment["model"], keys_file=deployment["keys_file"], **overrides
    )
    return TestClient(create_app(config))


@pytest.fixture()
def client(catalogued):
    reports = {name: str(path) for name, path in catalogued["reports"].items()}
    with make_client(catalogued, reports=reports) as test_client:
        yield test_client


def expected_fields(item_id: str) -> dict[str, str | None]:
    fields = catalogue_fields(int(item_id[1:])) or {}
    return {name: fields.get(name) for name in ("title", "category", "brand")}


# ---------------------------------------------------------------------------------------------- items
def test_recommendations_timeline_and_explanation_carry_the_catalogue_fields(client, catalogued) -> None:
    read = auth(catalogued, "reader")
    recs = client.get("/v1/users/user3/recommendations?k=30", headers=read).json()["items"]
    assert len(recs) == 20  # the 30 items less the 10 the user saw
    for rec in recs:
        assert {f: rec[f] for f in ("title", "category", "brand")} == expected_fields(rec["item_id"])
    # Items without a catalogue entry, with and without a title, a category, a brand: all four kinds.
    assert {rec["title"] is None for rec in recs} == {True, False}
    assert {rec["brand"] is None for rec in recs if rec["title"]} == {True, False}
    events = client.get("/v1/users/user3/events", headers=read).json()["events"]
    assert len(events) == 10
    for event in events:
        assert {f: event[f] for f in ("title", "category", "brand")} == expected_fields(event["item_id"])
    why = client.get("/v1/users/user3/explanation?k=3", headers=read).json()
    assert why["item_id"] == recs[0]["item_id"]  # the top recommendation is what it explains
    assert {f: why[f] for f in ("title", "category", "brand")} == expected_fields(why["item_id"])
    assert len(why["because"]) == 3
    for event in why["because"]:
        assert {f: event[f] for f in ("title", "category", "brand")} == expected_fields(event["item_id"])


def test_an_item_outside_the_catalogue_has_null_fields_and_no_markup_is_touched(client, catalogued) -> None:
    write = auth(catalogued, "writer")
    event = {"user_id": "shopper", "item_id": "<i>new</i>", "event_type": "view", "timestamp": 1_800_000_000}
    known = {**event, "item_id": "i001", "timestamp": 1_800_000_060}
    assert client.post("/v1/events", json={"events": [event, known]}, headers=write).json()["stored"] == 2
    events = client.get("/v1/users/shopper/events", headers=write).json()["events"]
    assert [(e["item_id"], e["title"], e["category"], e["brand"]) for e in events] == [
        ("<i>new</i>", None, None, None),
        ("i001", "Item 1 <b>bold</b>", "shoes", "Acme"),
    ]


# ---------------------------------------------------------------------------------------------- activity
def test_activity_counts_a_users_events_per_utc_day_and_type(client, catalogued) -> None:
    write = auth(catalogued, "writer")
    day = 86_400
    start = 1_800_000_000 - 1_800_000_000 % day  # 2027-01-15 00:00:00 UTC
    times_and_types = [
        (start - 1, "view"),  # the day before, one second to midnight
        (start, "view"),
        (start + 60, "cart"),
        (start + 120, "view"),
        (start + 5 * day, "purchase"),
    ]
    events = [
        {"user_id": "daily", "item_id": "i002", "event_type": kind, "timestamp": ts}
        for ts, kind in times_and_types
    ]
    assert client.post("/v1/events", json={"events": events}, headers=write).json()["stored"] == 5
    activity = client.get("/v1/users/daily/activity", headers=auth(catalogued, "reader")).json()
    assert activity == {
        "user_id": "daily",
        "events": 5,
        "event_types": {"view": 3, "cart": 1, "purchase": 1},
        "days": [
            {"day": "2027-01-14", "events": 1, "by_type": {"view": 1}},
            {"day": "2027-01-15", "events": 3, "by_type": {"cart": 1, "view": 2}},
            {"day": "2027-01-20", "events": 1, "by_type": {"purchase": 1}},
        ],
    }
    nobody = client.get("/v1/users/nobody/activity", headers=auth(catalogued, "reader")).json()
    assert nobody == {"user_id": "nobody", "events": 0, "event_types": {}, "days": []}


def test_activity_refuses_bad_input_with_a_4xx_naming_the_field(client, catalogued) -> None:
    read = auth(catalogued, "reader")
    too_long = client.get(f"/v1/users/{'u' * 257}/activity", headers=read)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["path", "user_id"]
    assert client.get("/v1/users/user3/activity").status_code == 401
    denied = client.get("/v1/users/user3/activity", headers=auth(catalogued, "admin"))
    assert denied.status_code == 403 and "'read' scope" in denied.json()["detail"]


# ---------------------------------------------------------------------------------------------- anomalies
def test_anomaly_reasons_carry_the_typical_range_of_all_users(client, catalogued) -> None:
    answer = client.get("/v1/anomalies?limit=5", headers=auth(catalogued, "reader")).json()
    detector = client.app.state.service.anomalies()[0]
    for user in answer["users"]:
        for reason in user["reasons"]:
            column = detector.features_[:, FEATURES.index(reason["feature"])]
            low, median, high = np.nanpercentile(column, [25, 50, 75])
            assert (reason["typical_low"], reason["typical"], reason["typical_high"]) == pytest.approx(
                (low, median, high)
            )
    profile = client.get("/v1/users/user3/profile", headers=auth(catalogued, "reader")).json()
    assert all(r["typical_low"] <= r["typical"] <= r["typical_high"] for r in profile["anomaly_reasons"])


# ---------------------------------------------------------------------------------------------- reports
def test_configured_reports_are_served_as_written(client, catalogued) -> None:
    read = auth(catalogued, "reader")
    assert client.get("/v1/health").json()["reports"] == ["audit", "effects", "targeting"]
    for name, path in catalogued["reports"].items():
        answer = client.get(f"/v1/reports/{name}", headers=read)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["name"], body["file"]) == (name, f"{name}.json")
        assert body["report"] == json.loads(path.read_text())  # every field, declared or not
    # Fields the schema does not declare pass through: the effects report's causal graph, for one.
    effects = client.get("/v1/reports/effects", headers=read).json()["report"]
    assert effects["graph"]["edges"] and effects["segments"]


def test_a_rewritten_report_is_served_at_the_next_request(catalogued, tmp_path) -> None:
    path = tmp_path / "effects.json"
    report = json.loads(catalogued["reports"]["effects"].read_text())
    path.write_text(json.dumps(report))
    with make_client(catalogued, reports={"effects": str(path)}) as client:
        first = client.get("/v1/reports/effects", headers=auth(catalogued, "reader")).json()
        path.write_text(json.dumps({**report, "treatment": "fav"}))
        os.utime(path, ns=(1_900_000_000 * 10**9, 1_900_000_000 * 10**9))
        second = client.get("/v1/reports/effects", headers=auth(catalogued, "reader")).json()
    assert (first["report"]["treatment"], second["report"]["treatment"]) == ("cart", "fav")
    assert second["modified"] == "2030-03-17T17:46:40Z"


def test_without_report_files_there_are_no_report_endpoints(catalogued) -> None:
    with make_client(catalogued) as client:
        assert client.get("/v1/health").json()["reports"] == []
        for name in ("effects", "audit", "targeting"):
            assert client.get(f"/v1/reports/{name}", headers=auth(catalogued, "reader")).status_code == 404
        assert all("/v1/reports" not in path for path in client.get("/openapi.json").json()["paths"])


def test_reports_need_the_read_scope(client, catalogued) -> None:
    assert client.get("/v1/reports/audit").status_code == 401
    denied = client.get("/v1/reports/audit", headers=auth(catalogued, "admin"))
    assert denied.status_code == 403 and "'read' scope" in denied.json()["detail"]


def write_json(path: Path, value: object) -> str:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def test_an_unusable_report_file_is_a_503_naming_the_config_and_report_field(catalogued, tmp_path) -> None:
    audit = json.loads(catalogued["reports"]["audit"].read_text())
    targeting = json.loads(catalogued["reports"]["targeting"].read_text())
    curve = targeting["results"][0]["curve"]
    broken = {
        **targeting,
        "results": [{**targeting["results"][0], "curve": {**curve, "fraction": [0.0, 1.0]}}],
    }
    cases = [
        ("effects", str(tmp_path / "missing.json"), "reports.effects (missing.json): cannot read the file"),
        (
            "effects",
            write_json(tmp_path / "bad.json", "{not json"),
            "reports.effects (bad.json): not valid JSON",
        ),
        # The audit file named as the effects report: the first missing fields are named.
        ("effects", str(catalogued["reports"]["audit"]), "not a effects report: treatment: Field required"),
        (
            "audit",
            write_json(tmp_path / "audit.json", {**audit, "groups": {"gender": {"attribute": "gender"}}}),
            "reports.audit (audit.json): not a audit report: groups.gender.groups: Field required",
        ),
        (
            "targeting",
            write_json(tmp_path / "targeting.json", broken),
            "results.0.curve: Value error, fraction, uplift_per_1000 and qini_per_1000 need one value per point",
        ),
        (
            "targeting",
            write_json(tmp_path / "list.json", [1, 2]),
            "not a targeting report: (report): Input should",
        ),
    ]
    for name, path, message in cases:
        with make_client(catalogued, reports={name: path}) as client:
            answer = client.get(f"/v1/reports/{name}", headers=auth(catalogued, "reader"))
        assert answer.status_code == 503, (name, path, answer.text)
        assert message in answer.json()["detail"], answer.json()


def test_a_report_over_the_size_limit_is_not_read(catalogued, tmp_path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(" " * (MAX_REPORT_BYTES + 1))
    with make_client(catalogued, reports={"audit": str(path)}) as client:
        answer = client.get("/v1/reports/audit", headers=auth(catalogued, "reader"))
    assert answer.status_code == 503
    assert "over the limit of 8,388,608" in answer.json()["detail"]


def test_non_finite_numbers_in_a_report_are_served_as_null(catalogued, tmp_path) -> None:
    report = json.loads(catalogued["reports"]["effects"].read_text())
    report["estimates"][0]["ci_low"] = float("nan")
    report["segments"][0]["ci_high"] = float("inf")
    report["protocol"]["note"] = float("-inf")
    path = tmp_path / "effects.json"
    path.write_text(json.dumps(report))  # Python writes NaN and Infinity, which strict JSON has not
    with make_client(catalogued, reports={"effects": str(path)}) as client:
        answer = client.get("/v1/reports/effects", headers=auth(catalogued, "reader"))
    assert answer.status_code == 200, answer.text
    served = json.loads(answer.text, parse_constant=lambda name: pytest.fail(f"{name} in the answer"))
    body = served["report"]
    assert body["estimates"][0]["ci_low"] is None and body["segments"][0]["ci_high"] is None
    assert body["protocol"]["note"] is None


def test_the_reports_table_rejects_unknown_keys_by_name(catalogued) -> None:
    base = {"store": catalogued["store"], "keys_file": catalogued["keys_file"]}
    with pytest.raises(ConfigError, match=r"reports\.effect: unknown key"):
        load_config(ServiceConfig, {**base, "reports": {"effect": "effects.json"}})
    config = load_config(ServiceConfig, {**base, "reports": {"audit": "audit.json"}})
    assert (config.reports.audit, config.reports.effects, config.reports.targeting) == (
        "audit.json",
        None,
        None,
    )


def test_the_dashboard_page_and_its_icon_come_from_the_service(client) -> None:
    page = client.get("/dashboard")
    assert (
        page.status_code == 200
        and '<link rel="icon" type="image/svg+xml" href="/dashboard/icon.svg">' in page.text
    )
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")  # nothing from elsewhere
    # The stylesheet and script (package data: serving/static/) are inlined whole, placeholders filled.
    static = Path(dashboard.__file__).parent / "static"
    script = (static / "dashboard.js").read_text()
    filled = script.replace("__LIMIT__", str(dashboard.TIMELINE_LIMIT)).replace("__K__", str(dashboard.TOP_K))
    assert "__K__" in script and filled in page.text
    assert (static / "dashboard.css").read_text() in page.text
    assert not re.search(r"__(CSS|JS|VERSION|LIMIT|K)__", page.text)
    icon = client.get("/dashboard/icon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.headers["content-security-policy"] == "default-src 'none'"
    assert icon.text.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and "<script" not in icon.text
