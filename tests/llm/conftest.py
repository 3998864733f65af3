"""Fixtures of the LLM-layer tests: a small store with a trained model, review text with planted PII, and
an isolated cache directory so tests never share or leave cached answers."""

from __future__ import annotations

import os

import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore

RAW_USER = "alice.smith.1987"
PLANTED_PII = ("alice@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "Alice Smith")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache_dir(tmp_path_factory):
    """Joined weights, the alias key and cached answers go to a temporary dir, never the user's cache."""
    path = tmp_path_factory.mktemp("behaviorlm-cache")
    old = os.environ.get("BEHAVIORLM_CACHE_DIR")
    os.environ["BEHAVIORLM_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BEHAVIORLM_CACHE_DIR", None)
    else:
        os.environ["BEHAVIORLM_CACHE_DIR"] = old


def shop_records() -> list[dict]:
    """One shopper (raw id RAW_USER) who views, carts and reviews, plus a few others."""
    t0 = 1_700_000_000
    records = [
        {"user_id": RAW_USER, "item_id": "sku-101", "event_type": "view", "timestamp": t0},
        {"user_id": RAW_USER, "item_id": "sku-102", "event_type": "view", "timestamp": t0 + 60},
        {"user_id": RAW_USER, "item_id": "sku-102", "event_type": "cart", "timestamp": t0 + 120},
        {
            "user_id": RAW_USER,
            "item_id": "sku-101",
            "event_type": "review",
            "timestamp": t0 + 180,
            "value": 4,
            "text": "Lovely boots. My name is Alice Smith, write to alice@example.com or call +44 20 7946 0958; "
            "I paid with 4111 1111 1111 1111.",
        },
    ]
    for u in range(5):
        for j in range(4):
            records.append(
                {
                    "user_id": f"other{u}",
                    "item_id": f"sku-{100 + (u + j) % 6}",
                    "event_type": "view",
                    "timestamp": t0 + 10 * j,
                }
            )
    return records


@pytest.fixture
def shop_store(tmp_path):
    path = tmp_path / "shop.duckdb"
    with EventStore(path) as store:
        ingest_records(store, shop_records(), source="test", config=IngestConfig(format="jsonl"))
        store.execute(
            "INSERT INTO items (item_id, title, category) VALUES ('sku-101', 'Leather boots', 'shoes'), "
            "('sku-102', 'Wool socks', 'socks')"
        )
    return path


@pytest.fixture
def untimed_store(tmp_path):
    """An open store of a log without times (an S3-Rec / BERT4Rec sequence file: events stored at
    1970-01-01 + k seconds); user u1 has items 1, 2, 3, 4 in that order."""
    from behaviorlm.data.ingest import ingest_file

    src = tmp_path / "seq.txt"
    src.write_text("u1 1 2 3 4\nu2 2 3 5\n")
    with EventStore(tmp_path / "untimed.duckdb") as store:
        ingest_file(store, src, config=IngestConfig(format="sequence", source_name="seq"))
        yield store
