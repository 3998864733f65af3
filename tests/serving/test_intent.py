"""The intent endpoint: a next-event-type model read over the user's latest stored events."""

from __future__ import annotations

from fastapi.testclient import TestClient

from behaviorlm.config import IngestConfig, ServiceConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore
from behaviorlm.models.heads import NextEventTypeModel
from behaviorlm.models.pretraining import ENCODER_TRAINING
from behaviorlm.models.registry import load_intent_model
from behaviorlm.serving.app import create_app
from behaviorlm.serving.security import create_key

FUNNEL = ("view", "cart", "purchase")


def test_intent_follows_the_funnel(tmp_path) -> None:
    # Every user cycles view -> cart -> purchase; the next type is decided by the last one.
    records = [
        {
            "user_id": f"u{u}",
            "item_id": f"i{(u + t) % 20}",
            "event_type": FUNNEL[(u + t) % 3],
            "timestamp": 1_700_000_000 + 60 * t,
        }
        for u in range(150)
        for t in range(9)
    ]
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, records, source="seed", config=IngestConfig(format="jsonl"))
        data = store.interactions()
    model = NextEventTypeModel(
        d_model=32,
        n_layers=1,
        n_heads=2,
        dropout=0.0,
        max_len=8,
        training=ENCODER_TRAINING.replace(lr=1e-2, batch_size=50, epochs=20),
    )
    path = model.fit(data).save(tmp_path / "intent")
    assert list(load_intent_model(path).item_ids_) == [str(i) for i in data.item_ids]
    key = create_key(tmp_path / "keys.json", name="r", scopes=["read", "write"])
    config = ServiceConfig(
        store=str(tmp_path / "s.duckdb"), keys_file=str(tmp_path / "keys.json"), intent_model=str(path)
    )
    with TestClient(create_app(config)) as client:
        headers = {"X-API-Key": key}
        client.post(
            "/v1/events",
            json={
                "events": [
                    {"user_id": "shopper", "item_id": "i3", "event_type": "cart", "timestamp": 1_800_000_000}
                ]
            },
            headers=headers,
        )
        answer = client.get("/v1/users/shopper/intent", headers=headers).json()
        assert answer["model"] == "next_event_type" and answer["history_events"] == 1
        assert next(iter(answer["probabilities"])) == "purchase"
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-5
        assert client.get("/v1/users/ghost/intent", headers=headers).status_code == 404


def test_intent_of_a_purchase_propensity_model_is_as_of_the_stores_latest_event(tmp_path) -> None:
    """A user-level propensity model as the service's intent model: a cart an hour before the store's
    latest event makes a purchase within 24 h likely; the same cart days before that "now" does not."""
    from behaviorlm.data.purchase import store_time_range
    from behaviorlm.evaluation.purchase import fit_purchase_propensity
    from behaviorlm.testing.purchase import planted_propensity_events

    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, planted_propensity_events(), source="seed", config=IngestConfig(format="jsonl"))
        first, last = store_time_range(store)
        model, _ = fit_purchase_propensity(
            store.interactions(), first_timestamp=first, last_timestamp=last, n_boot=10
        )
    path = model.save(tmp_path / "propensity")
    key = create_key(tmp_path / "keys.json", name="r", scopes=["read", "write"])
    config = ServiceConfig(
        store=str(tmp_path / "s.duckdb"), keys_file=str(tmp_path / "keys.json"), intent_model=str(path)
    )
    now = last + 3600
    events = [
        {"user_id": "keen", "item_id": "i1", "event_type": "view", "timestamp": now - 7200},
        {"user_id": "keen", "item_id": "i1", "event_type": "cart", "timestamp": now - 3600},
        {"user_id": "gone", "item_id": "i1", "event_type": "view", "timestamp": now - 4 * 86_400 - 7200},
        {"user_id": "gone", "item_id": "i1", "event_type": "cart", "timestamp": now - 4 * 86_400 - 3600},
        {"user_id": "clock", "item_id": "i2", "event_type": "view", "timestamp": now},  # the store's latest
    ]
    with TestClient(create_app(config)) as client:
        headers = {"X-API-Key": key}
        assert client.post("/v1/events", json={"events": events}, headers=headers).status_code < 300
        keen = client.get("/v1/users/keen/intent", headers=headers).json()
        gone = client.get("/v1/users/gone/intent", headers=headers).json()
        # A later event anywhere moves the store's "now" at once (the cached time is dropped on a write):
        # the same cart, three days old now, says less.
        later = [{"user_id": "clock", "item_id": "i2", "event_type": "view", "timestamp": now + 3 * 86_400}]
        assert client.post("/v1/events", json={"events": later}, headers=headers).status_code < 300
        keen_later = client.get("/v1/users/keen/intent", headers=headers).json()
    assert keen["model"] == "purchase_propensity" and keen["history_events"] == 2
    assert abs(sum(keen["probabilities"].values()) - 1) < 1e-6
    assert keen["reasons"] and any(r["feature"].startswith("cart_last_") for r in keen["reasons"])
    assert {"feature", "label", "value", "log_odds"} <= set(keen["reasons"][0])
    assert keen["probabilities"]["purchase within 24h"] > 2 * gone["probabilities"]["purchase within 24h"]
    assert keen_later["probabilities"]["purchase within 24h"] < keen["probabilities"]["purchase within 24h"]
