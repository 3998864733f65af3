"""Every single-user interface reads a user's latest events the same way (behaviorlm.models.window): for a
user with more events than the model's window and an event type the model has never seen, the service's
recommendations, explanation and profile, the LLM facts and ``behaviorlm explain`` agree."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from tests.serving.conftest import N_ITEMS, SMALL, auth, successor_records
from typer.testing import CliRunner

from behaviorlm.causal.influence import deletion_influence
from behaviorlm.cli.main import app as cli
from behaviorlm.config import IngestConfig, ServiceConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore
from behaviorlm.llm.facts import user_facts
from behaviorlm.models.registry import load_recommender
from behaviorlm.models.window import latest_events, model_history, read_window
from behaviorlm.serving.app import create_app

LONG = "long-user"
MAX_LEN = SMALL["max_len"]


def long_history() -> list[dict]:
    """3 * max_len successor views, with 'cart' (a type the model never saw) near the end of the window."""
    n = 3 * MAX_LEN
    records = [
        {
            "user_id": LONG,
            "item_id": f"i{(5 + t) % N_ITEMS:03d}",
            "event_type": "view",
            "timestamp": 1_700_100_000 + 60 * t,
        }
        for t in range(n)
    ]
    for t in (n - 3, n - MAX_LEN):  # one inside the last max_len events, one at the window's edge
        records[t]["event_type"] = "cart"
    return records


@pytest.fixture(scope="module")
def long_store(deployment, tmp_path_factory):
    path = tmp_path_factory.mktemp("window") / "events.duckdb"
    with EventStore(path) as store:
        ingest_records(
            store, successor_records(150) + long_history(), source="seed", config=IngestConfig(format="jsonl")
        )
    return path


def test_the_window_is_max_len_plus_one_and_unknown_types_are_skipped(deployment, long_store) -> None:
    model = load_recommender(deployment["model"])
    assert "cart" not in model.trained_on.event_type_vocab
    with EventStore(long_store, read_only=True) as store:
        events = latest_events(store, LONG, model)
    assert len(events["item_id"]) == read_window(model) == MAX_LEN + 1
    request = model_history(model, events)
    assert request.unknown_event_types == ["cart"]
    assert request.interactions.n_events == MAX_LEN + 1 - 2


def test_service_profile_facts_and_cli_agree_for_a_long_user(deployment, long_store) -> None:
    model = load_recommender(deployment["model"])
    config = ServiceConfig(
        store=str(long_store), model=deployment["model"], keys_file=deployment["keys_file"]
    )
    read = auth(deployment, "reader")
    with TestClient(create_app(config)) as client:
        recs = client.get(f"/v1/users/{LONG}/recommendations?k=5", headers=read).json()
        explanation = client.get(f"/v1/users/{LONG}/explanation?k=5", headers=read).json()
        profile = client.get(f"/v1/users/{LONG}/profile", headers=read).json()
        serving_copy = client.get("/v1/health").json()["serving_copy"]
    top = [item["item_id"] for item in recs["items"]]
    assert recs["history_events"] == MAX_LEN - 1 and recs["skipped_events"] == 2
    # The explanation explains the first recommendation; the profile's next items are the recommendations.
    assert explanation["item_id"] == top[0]
    assert [item["item_id"] for item in profile["next_items"]] == top

    # The library's deletion influence over the same window gives the service's reasons, effect by effect
    # (the service serves the copy quantize = "auto" chose; the CLI and the facts the model as saved).
    def reasons(estimator) -> list[tuple[str, int, float]]:
        request = model_history(estimator, latest_events(store, LONG, estimator))
        influence = deletion_influence(estimator, request.interactions, 0)
        assert str(influence.target_item_id) == top[0]
        return [(str(e["item_id"]), e["events_ago"], round(e["effect"], 5)) for e in influence.top(5)]

    with EventStore(long_store, read_only=True) as store:
        served = [(e["item_id"], e["events_ago"], round(e["effect"], 5)) for e in explanation["because"]]
        assert served == reasons(model.quantized() if serving_copy["quantized"] else model)
        expected = reasons(model)
        facts = user_facts(store, LONG, model=model, with_anomaly=False)
    # The LLM's facts: the same guesses and the same reasons (those that raise the guess).
    by_kind: dict[str, list[dict]] = {}
    for fact in facts.facts:
        by_kind.setdefault(fact.kind, []).append(fact.values)
    assert [f["item_id"] for f in by_kind["next_item"]] == top
    raising = [item for item, _, effect in expected[:3] if effect > 0]
    assert raising and [f["item_id"] for f in by_kind["influence"]] == raising

    # behaviorlm explain --why: the same first guess, explained by the same events.
    result = CliRunner().invoke(
        cli,
        ["explain", LONG, "--model", deployment["model"], "--store", str(long_store), "--why", "--no-words"],
    )
    assert result.exit_code == 0, result.output
    assert re.search(rf"why {top[0]} \(p = ", result.output)
    assert "left out 2 events" in result.output
