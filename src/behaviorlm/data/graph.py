"""The behaviour knowledge graph: users, items and attribute / knowledge-graph entities as typed nodes;
behaviours, item attributes and knowledge-graph relations as typed edges.

:func:`build_graph` reads the event store into a :class:`BehaviorGraph` of plain numpy edge lists —
node ids per node type, and per edge type ``(source type, relation, target type)`` the source and
target indices plus edge attributes:

* ``("user", <event type>, "item")`` — one edge per (user, item, behaviour) with ``count`` and
  ``last_timestamp`` (UTC seconds): views, carts, favourites, purchases, ratings, ...
* ``("item", "has_<key>", "attribute")`` — category, brand and every textual attribute of the item
  (ML-100k genres are ``has_class``; S3Rec item2attributes are ``has_attribute_ids``).
* ``("item", "is_entity", "entity")`` and ``("entity", <relation>, "entity")`` — the knowledge graph
  (RecBole ``.link`` / ``.kg`` files, e.g. Freebase for ML-100k).

:meth:`BehaviorGraph.to_hetero_data` gives a torch-geometric ``HeteroData`` (node counts, ``edge_index``
and ``edge_attr`` per edge type) for graph neural networks; :meth:`BehaviorGraph.to_parquet` writes
one Parquet edge list per edge type plus the node ids, for other tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from behaviorlm.data.store import EventStore

EdgeType = tuple[str, str, str]


@dataclass
class BehaviorGraph:
    """Typed nodes and edges (see the module docstring)."""

    node_ids: dict[str, np.ndarray] = field(default_factory=dict)
    """External id of each node, per node type; a node's index is its position."""
    edges: dict[EdgeType, dict[str, np.ndarray]] = field(default_factory=dict)
    """Per edge type: ``source``, ``target`` (int64 indices) and optional attributes (``count``, ...)."""

    def stats(self) -> dict[str, Any]:
        """Node and edge counts per type and the bytes the edge lists take in memory."""
        edge_bytes = sum(a.nbytes for e in self.edges.values() for a in e.values())
        n_edges = sum(len(e["source"]) for e in self.edges.values())
        return {
            "nodes": {t: len(ids) for t, ids in self.node_ids.items()},
            "edges": {"__".join(t): len(e["source"]) for t, e in self.edges.items()},
            "total_nodes": int(sum(len(ids) for ids in self.node_ids.values())),
            "total_edges": int(n_edges),
            "edge_bytes": int(edge_bytes),
            "bytes_per_million_edges": int(edge_bytes / n_edges * 1e6) if n_edges else 0,
        }

    def to_hetero_data(self):
        """A torch-geometric ``HeteroData``: ``num_nodes`` per node type; per edge type ``edge_index``
        (``[2, E]``) and, where present, ``edge_attr`` (``[E, 2]``: log1p count, last timestamp)."""
        import torch
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for node_type, ids in self.node_ids.items():
            data[node_type].num_nodes = len(ids)
        for edge_type, edge in self.edges.items():
            store = data[edge_type]
            store.edge_index = torch.from_numpy(np.vstack([edge["source"], edge["target"]]).astype(np.int64))
            if "count" in edge:
                store.edge_attr = torch.from_numpy(
                    np.column_stack([np.log1p(edge["count"]), edge["last_timestamp"]]).astype(np.float32)
                )
        return data

    def to_parquet(self, directory: str | Path) -> list[Path]:
        """Write ``nodes_<type>.parquet`` (index, id) and ``edges_<src>__<rel>__<dst>.parquet`` (source,
        target[, count, last_timestamp]) into ``directory``; returns the files written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for node_type, ids in self.node_ids.items():
            path = directory / f"nodes_{_safe(node_type)}.parquet"
            pq.write_table(pa.table({"index": np.arange(len(ids)), "id": ids.astype(str)}), path)
            written.append(path)
        for edge_type, edge in self.edges.items():
            path = directory / f"edges_{'__'.join(_safe(t) for t in edge_type)}.parquet"
            pq.write_table(pa.table(dict(edge)), path)
            written.append(path)
        return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def build_graph(
    store: EventStore, *, with_knowledge_graph: bool = True, before: int | None = None
) -> BehaviorGraph:
    """Read the store's events, item catalogue and knowledge graph into a :class:`BehaviorGraph`.

    With ``before`` (UTC seconds), only events strictly earlier than ``before`` are read and the item
    nodes are the items of those events (catalogue items first seen later are left out), so nothing
    that happened at or after ``before`` can change the graph -- the snapshot a temporal evaluation
    (:mod:`behaviorlm.data.purchase`) trains and predicts on.
    """
    graph = BehaviorGraph()
    where, params = ("WHERE epoch(timestamp) < ?", [int(before)]) if before is not None else ("", [])
    users = (
        store.arrow(f"SELECT DISTINCT user_id FROM events {where} ORDER BY user_id", params)
        .column(0)
        .to_numpy(zero_copy_only=False)
    )
    catalogue = "" if before is not None else " UNION SELECT item_id FROM items"
    items = (
        store.arrow(
            f"SELECT item_id FROM (SELECT item_id FROM events {where}{catalogue}) ORDER BY item_id", params
        )
        .column(0)
        .to_numpy(zero_copy_only=False)
    )
    graph.node_ids["user"] = users
    graph.node_ids["item"] = items
    user_index = {u: i for i, u in enumerate(users.tolist())}
    item_index = {it: i for i, it in enumerate(items.tolist())}

    behaviour = store.arrow(
        "SELECT event_type, user_id, item_id, count(*) AS n, max(epoch(timestamp))::BIGINT AS last_ts "
        f"FROM events {where} GROUP BY ALL ORDER BY event_type, user_id, item_id",
        params,
    )
    types = behaviour.column("event_type").to_numpy(zero_copy_only=False)
    src = np.array([user_index[u] for u in behaviour.column("user_id").to_pylist()], dtype=np.int64)
    dst = np.array([item_index[i] for i in behaviour.column("item_id").to_pylist()], dtype=np.int64)
    counts = behaviour.column("n").to_numpy()
    last = behaviour.column("last_ts").to_numpy()
    for event_type in np.unique(types):
        keep = types == event_type
        graph.edges[("user", str(event_type), "item")] = {
            "source": src[keep],
            "target": dst[keep],
            "count": counts[keep].astype(np.int64),
            "last_timestamp": last[keep].astype(np.int64),
        }

    attribute_edges: dict[str, list[tuple[int, str]]] = {}
    for item_id, category, brand, attributes in store.rows(
        "SELECT item_id, category, brand, attributes FROM items"
    ):
        i = item_index.get(item_id)
        if i is None:  # a catalogue item first seen at or after ``before``
            continue
        for key, value in (("category", category), ("brand", brand)):
            if value:
                attribute_edges.setdefault(key, []).append((i, f"{key}={value}"))
        for key, value in (json.loads(attributes) if attributes else {}).items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, str | int) and str(v).strip() and str(v).lower() not in ("unknown", "none"):
                    attribute_edges.setdefault(key, []).append((i, f"{key}={v}"))
    attribute_names = sorted({name for pairs in attribute_edges.values() for _, name in pairs})
    if attribute_names:
        graph.node_ids["attribute"] = np.array(attribute_names, dtype=object)
        attribute_index = {a: j for j, a in enumerate(attribute_names)}
        for key, pairs in sorted(attribute_edges.items()):
            graph.edges[("item", f"has_{key}", "attribute")] = {
                "source": np.array([i for i, _ in pairs], dtype=np.int64),
                "target": np.array([attribute_index[a] for _, a in pairs], dtype=np.int64),
            }

    if with_knowledge_graph and store.count("item_entities"):
        links = store.rows("SELECT item_id, entity_id FROM item_entities")
        triples = store.rows("SELECT head_id, relation, tail_id FROM kg_triples")
        entities = sorted({e for _, e in links} | {h for h, _, _ in triples} | {t for _, _, t in triples})
        graph.node_ids["entity"] = np.array(entities, dtype=object)
        entity_index = {e: j for j, e in enumerate(entities)}
        linked = [(item_index[i], entity_index[e]) for i, e in links if i in item_index]
        graph.edges[("item", "is_entity", "entity")] = {
            "source": np.array([a for a, _ in linked], dtype=np.int64),
            "target": np.array([b for _, b in linked], dtype=np.int64),
        }
        by_relation: dict[str, list[tuple[int, int]]] = {}
        for head, relation, tail in triples:
            by_relation.setdefault(relation, []).append((entity_index[head], entity_index[tail]))
        for relation, pairs in sorted(by_relation.items()):
            graph.edges[("entity", relation, "entity")] = {
                "source": np.array([a for a, _ in pairs], dtype=np.int64),
                "target": np.array([b for _, b in pairs], dtype=np.int64),
            }
    return graph
