"""Shared fixtures of the service tests: a store with planted successor sequences, a small trained
model and API keys of each scope, in a temporary folder."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.serving.security import create_key

N_ITEMS = 30
SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1, "max_len": 12, "epochs": 40, "lr": 5e-3}


def successor_records(n_users: int, *, seed: int = 0, start_time: int = 1_700_000_000) -> list[dict]:
    """Each user views consecutive items (i007 -> i008 -> ...), 10 events, one minute apart."""
    rng = np.random.default_rng(seed)
    records = []
    for u in range(n_users):
        first = int(rng.integers(N_ITEMS))
        for t in range(10):
            records.append(
                {
                    "user_id": f"user{u}",
                    "item_id": f"i{(first + t) % N_ITEMS:03d}",
                    "event_type": "view",
                    "timestamp": start_time + 60 * t,
                }
            )
    return records


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    store_path = root / "events.duckdb"
    with EventStore(store_path) as store:
        ingest_records(store, successor_records(150), source="seed", config=IngestConfig(format="jsonl"))
        data = store.interactions()
    model = BehaviorTransformer.from_params(SMALL).fit(data)
    model_path = model.save(root / "model")
    keys_file = root / "keys.json"
    keys = {
        "reader": create_key(keys_file, name="reader", scopes=["read"]),
        "writer": create_key(keys_file, name="writer", scopes=["read", "write"]),
        "admin": create_key(keys_file, name="admin", scopes=["admin"]),
        "all": create_key(keys_file, name="all", scopes=["read", "write", "admin"]),
    }
    return {"store": str(store_path), "model": str(model_path), "keys_file": str(keys_file), "keys": keys}


def auth(deployment, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployment['keys'][name]}"}
