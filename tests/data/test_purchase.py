"""Purchase snapshots: candidates, labels and features by hand; no leakage from after the cutoff; cutoffs."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.purchase import purchase_cutoffs, purchase_snapshot
from behaviorlm.data.store import EventStore

CUTOFF = 1000
EVENTS = [
    ("u1", "i1", "view", 100),
    ("u1", "i1", "view", 900),
    ("u1", "i2", "cart", 500),
    ("u2", "i1", "fav", 300),
    ("u2", "i3", "purchase", 200),  # a purchase alone makes no candidate
    ("u1", "i1", "purchase", 1100),  # in the window: u1-i1 is bought
    ("u2", "i1", "purchase", 5000),  # after the window
]


def _ingest(store: EventStore, events, source: str) -> None:
    ingest_records(
        store,
        [{"user_id": u, "item_id": i, "event_type": t, "timestamp": ts} for u, i, t, ts in events],
        source=source,
        config=IngestConfig(format="jsonl"),
    )


@pytest.fixture()
def store(tmp_path):
    with EventStore(tmp_path / "p.duckdb") as s:
        _ingest(s, EVENTS, "t")
        s.execute(
            "INSERT INTO items (item_id, category) VALUES ('i1', 'shoes'), ('i2', 'shoes'), ('i3', 'tents')"
        )
        yield s


def test_snapshot_by_hand(store) -> None:
    snap = purchase_snapshot(store, cutoff=CUTOFF, window_seconds=1000)
    users, items = snap.pair_ids()
    pairs = sorted(zip(users.tolist(), items.tolist(), snap.labels.tolist(), strict=True))
    assert pairs == [("u1", "i1", 1), ("u1", "i2", 0), ("u2", "i1", 0)]
    row = dict(
        zip(
            snap.feature_names,
            snap.features[[u == "u1" and i == "i1" for u, i in zip(users, items, strict=True)].index(True)],
            strict=True,
        )
    )
    assert row["pair_view_count"] == pytest.approx(np.log1p(2))
    assert row["pair_view_log_seconds_since"] == pytest.approx(np.log1p(CUTOFF - 900))
    assert row["pair_cart_count"] == 0.0
    assert row["user_cart_count"] == pytest.approx(np.log1p(1))
    assert row["item_view_count"] == pytest.approx(np.log1p(2))
    assert row["item_fav_count"] == pytest.approx(np.log1p(1))
    # u1 has 2 views of i1 and 1 cart of i2, both shoes.
    assert row["user_category_count"] == pytest.approx(np.log1p(3))
    # The item had one visitor who bought nothing yet.
    assert row["item_buyers_per_visitor"] == 0.0
    assert snap.n_positives == 1
    wide = purchase_snapshot(store, cutoff=CUTOFF, window_seconds=10_000)
    assert wide.n_positives == 2  # u2-i1 is bought at 5000


def test_events_after_the_cutoff_change_neither_graph_nor_features(store) -> None:
    before = purchase_snapshot(store, cutoff=CUTOFF, window_seconds=1000)
    _ingest(
        store,
        [
            ("u1", "i2", "purchase", CUTOFF),  # exactly at the cutoff: a label, not a feature
            ("u3", "i9", "view", CUTOFF + 1),  # a new user and item
            ("u2", "i1", "cart", CUTOFF + 50),
            ("u1", "i1", "view", CUTOFF + 200),
        ],
        "later",
    )
    store.execute("INSERT INTO items (item_id, category) VALUES ('i9', 'tents')")
    after = purchase_snapshot(store, cutoff=CUTOFF, window_seconds=1000)
    for node_type, ids in before.graph.node_ids.items():
        assert after.graph.node_ids[node_type].tolist() == ids.tolist()
    assert set(after.graph.edges) == set(before.graph.edges)
    for edge_type, edge in before.graph.edges.items():
        for key, values in edge.items():
            np.testing.assert_array_equal(after.graph.edges[edge_type][key], values)
    np.testing.assert_array_equal(after.features, before.features)
    np.testing.assert_array_equal(after.users, before.users)
    np.testing.assert_array_equal(after.items, before.items)
    # ... while the purchase at the cutoff is a new label.
    assert after.n_positives == before.n_positives + 1


def test_exclude_purchased(store) -> None:
    _ingest(store, [("u1", "i2", "purchase", 600)], "bought")
    assert purchase_snapshot(store, cutoff=CUTOFF, window_seconds=1000).n_pairs == 3
    snap = purchase_snapshot(store, cutoff=CUTOFF, window_seconds=1000, exclude_purchased=True)
    assert sorted(zip(*(a.tolist() for a in snap.pair_ids()), strict=True)) == [("u1", "i1"), ("u2", "i1")]


def test_cutoffs_keep_label_windows_out_of_the_next_group() -> None:
    cutoffs = purchase_cutoffs(0, 130 * 60, window_seconds=1200, step_seconds=600, warmup_seconds=1200)
    minutes = {group: [c // 60 for c in cs] for group, cs in cutoffs.items()}
    assert minutes == {"train": [20, 30, 40, 50], "valid": [70, 80], "test": [100, 110]}
    with pytest.raises(ValueError, match="too short"):
        purchase_cutoffs(0, 30 * 60, window_seconds=1200, step_seconds=600, warmup_seconds=600)
