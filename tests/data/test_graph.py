"""The behaviour knowledge graph: typed nodes and edges by hand, HeteroData and Parquet exports."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.graph import build_graph
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore


@pytest.fixture()
def store(tmp_path):
    events = [
        ("u1", "i1", "view", 100),
        ("u1", "i1", "view", 200),
        ("u1", "i1", "purchase", 300),
        ("u2", "i2", "cart", 150),
        ("u2", "i1", "view", 160),
    ]
    with EventStore(tmp_path / "g.duckdb") as s:
        ingest_records(
            s,
            [{"user_id": u, "item_id": i, "event_type": t, "timestamp": ts} for u, i, t, ts in events],
            source="t",
            config=IngestConfig(format="jsonl"),
        )
        s.execute(
            "INSERT INTO items VALUES ('i1', 'Trail shoe', 'shoes', 'acme', '{\"class\": [\"outdoor\", \"running\"]}', NULL),"
            " ('i2', 'Tent', 'camping', 'acme', NULL, NULL), ('i3', 'Cold item', 'camping', NULL, NULL, NULL)"
        )
        s.execute("INSERT INTO item_entities VALUES ('i1', 'm.shoe'), ('i2', 'm.tent')")
        s.execute(
            "INSERT INTO kg_triples VALUES ('m.shoe', 'made_by', 'm.acme'), ('m.tent', 'made_by', 'm.acme')"
        )
        yield s


def test_graph_by_hand(store) -> None:
    g = build_graph(store)
    assert g.node_ids["user"].tolist() == ["u1", "u2"]
    assert g.node_ids["item"].tolist() == ["i1", "i2", "i3"]  # the never-seen catalogue item is a node too
    views = g.edges[("user", "view", "item")]
    assert list(
        zip(views["source"], views["target"], views["count"], views["last_timestamp"], strict=True)
    ) == [
        (0, 0, 2, 200),
        (1, 0, 1, 160),
    ]
    assert g.edges[("user", "purchase", "item")]["count"].tolist() == [1]
    attributes = g.node_ids["attribute"].tolist()
    assert set(attributes) == {
        "brand=acme",
        "category=camping",
        "category=shoes",
        "class=outdoor",
        "class=running",
    }
    brands = g.edges[("item", "has_brand", "attribute")]
    assert sorted(brands["source"].tolist()) == [0, 1] and {attributes[j] for j in brands["target"]} == {
        "brand=acme"
    }
    assert len(g.edges[("item", "has_category", "attribute")]["source"]) == 3
    made_by = g.edges[("entity", "made_by", "entity")]
    entities = g.node_ids["entity"].tolist()
    assert {entities[t] for t in made_by["target"]} == {"m.acme"}
    stats = g.stats()
    assert stats["total_nodes"] == 2 + 3 + 5 + 3 and stats["edges"]["user__view__item"] == 2


def test_exports(store, tmp_path) -> None:
    g = build_graph(store, with_knowledge_graph=False)
    assert "entity" not in g.node_ids
    data = g.to_hetero_data()
    assert data["user"].num_nodes == 2 and data["item"].num_nodes == 3
    edge_index = data["user", "view", "item"].edge_index
    assert edge_index.tolist() == [[0, 1], [0, 0]]
    np.testing.assert_allclose(
        data["user", "view", "item"].edge_attr[:, 0].numpy(), np.log1p([2, 1]), rtol=1e-6
    )
    files = g.to_parquet(tmp_path / "graph")
    names = {f.name for f in files}
    assert {
        "nodes_user.parquet",
        "edges_user__purchase__item.parquet",
        "edges_item__has_class__attribute.parquet",
    } <= names
    table = pq.read_table(tmp_path / "graph" / "edges_user__view__item.parquet")
    assert table.column_names == ["source", "target", "count", "last_timestamp"] and table.num_rows == 2


def test_graph_commands(store, tmp_path) -> None:
    from typer.testing import CliRunner

    from behaviorlm.cli.main import app

    path = store.path
    store.close()
    result = CliRunner().invoke(app, ["graph", "build", "--store", path, "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "user__view__item" in result.output and (tmp_path / "g" / "nodes_item.parquet").exists()
    stats = CliRunner().invoke(app, ["graph", "stats", "--store", path])
    assert stats.exit_code == 0 and "MiB per million edges" in stats.output
