"""The user profile card: facts from the store, interests from item texts, anomaly percentile, segment,
next items; the parts shared by all users can be computed once and reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore
from behaviorlm.profiling.anomalies import AnomalyDetector
from behaviorlm.profiling.profile import build_profile, interest_topics
from behaviorlm.profiling.segments import UserSegments
from behaviorlm.training.options import TrainingOptions

THEMES = {
    "run": ["trail running shoes", "running socks", "marathon running watch", "running jacket"],
    "coffee": ["espresso coffee beans", "coffee grinder", "espresso machine", "coffee filter papers"],
    "camp": ["camping tent", "sleeping bag for camping", "camping stove", "camping lantern"],
    "book": ["mystery novel paperback", "fantasy novel hardcover", "novel box set", "poetry book"],
}


@pytest.fixture()
def shop(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "shop.duckdb"
    records = []
    for u in range(80):
        theme = list(THEMES)[u % 4]
        for t in range(8):
            records.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"{theme}-{int(rng.integers(4))}",
                    "event_type": "purchase" if t == 7 else "view",
                    "timestamp": 1_700_000_000 + 3600 * t + u,
                }
            )
    with EventStore(path) as store:
        ingest_records(store, records, source="seed", config=IngestConfig(format="jsonl"))
        for theme, titles in THEMES.items():
            for i, title in enumerate(titles):
                store.execute("INSERT INTO items (item_id, title) VALUES (?, ?)", [f"{theme}-{i}", title])
    return path


def test_profile_facts_and_interests(shop) -> None:
    with EventStore(shop) as store:
        card = build_profile(store, "u0")  # a "run" user
    assert card.events == 8 and card.events_by_type == {"purchase": 1, "view": 7}
    assert card.active_days == 2 and card.first_event < card.last_event  # 22:13 UTC + 7 h crosses midnight
    assert card.recent_items[0]["event_type"] == "purchase"  # newest first
    assert all(r["item_id"].startswith("run-") and r["title"] for r in card.recent_items)
    assert "running" in card.interests[0]["keywords"], card.interests
    assert card.interests[0]["share"] > 0.5
    assert 0.0 <= card.anomaly_percentile <= 1.0 and len(card.anomaly_reasons) == 3
    with EventStore(shop) as store, pytest.raises(KeyError, match="nobody"):
        build_profile(store, "nobody", with_interests=False)


def test_profile_command(shop, tmp_path) -> None:
    out = tmp_path / "card.json"
    result = CliRunner().invoke(app, ["profile", "u1", "--store", str(shop), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads(out.read_text())
    assert card["user_id"] == "u1" and "coffee" in card["interests"][0]["keywords"]
    assert "interests:" in result.output and "anomaly:" in result.output
    missing = CliRunner().invoke(app, ["profile", "ghost", "--store", str(shop), "--no-interests"])
    assert missing.exit_code == 2 and "ghost" in missing.output


def test_profile_with_a_model_lists_likely_next_items(shop) -> None:
    from behaviorlm.models.transformer import BehaviorTransformer

    with EventStore(shop) as store:
        model = BehaviorTransformer(
            d_model=16, n_layers=1, n_heads=1, max_len=8, training=TrainingOptions(epochs=5)
        ).fit(store.interactions())
        card = build_profile(store, "u2", model=model, with_interests=False, with_anomaly=False)
    assert len(card.next_items) == 5 and all(i["title"] for i in card.next_items)
    assert card.anomaly_percentile is None and card.interests == []


def test_shared_parts_are_reused_not_recomputed(shop, monkeypatch) -> None:
    from dataclasses import replace

    with EventStore(shop) as store:
        alone = build_profile(store, "u5")
        detector = AnomalyDetector().fit(store.interactions())
        topics = interest_topics(store)
        segments = UserSegments(user_ids=np.array(["u4", "u5"], dtype=object), labels=np.array([0, 3]))

        def refit(*args, **kwargs):
            raise AssertionError("a shared part was computed again")

        monkeypatch.setattr(AnomalyDetector, "fit", refit)
        monkeypatch.setattr("behaviorlm.profiling.profile.find_topics", refit)
        shared = build_profile(store, "u5", detector=detector, topics=topics, segments=segments)
        assert shared == replace(alone, segment=3)  # the same facts, and the segment it was given
        # A user who arrived after the shared parts were computed: their own facts and interests now,
        # no anomaly score or segment (they were not among the users scored and segmented).
        late = [
            {"user_id": "late", "item_id": "camp-1", "event_type": "view", "timestamp": 1_700_100_000 + t}
            for t in range(3)
        ]
        ingest_records(store, late, source="late", config=IngestConfig(format="jsonl"))
        card = build_profile(store, "late", detector=detector, topics=topics, segments=segments)
    assert card.events == 3 and card.events_by_type == {"view": 3}
    assert (
        "camping" in card.interests[0]["keywords"]
        and card.recent_items[0]["title"] == "sleeping bag for camping"
    )
    assert card.anomaly_percentile is None and card.anomaly_reasons == [] and card.segment is None


def test_no_item_texts_no_topics(tmp_path) -> None:
    records = [
        {"user_id": "u", "item_id": f"i{i}", "event_type": "view", "timestamp": 1_700_000_000 + i}
        for i in range(5)
    ]
    with EventStore(tmp_path / "bare.duckdb") as store:
        ingest_records(store, records, source="seed", config=IngestConfig(format="jsonl"))
        assert interest_topics(store) is None
        card = build_profile(store, "u")
    assert card.interests == [] and card.events == 5 and card.recent_items[0]["item_id"] == "i4"
