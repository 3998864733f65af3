"""Explanation paths: why the graph connects a user to an item, as scored, citable facts.

For a (user, item) pair, :func:`explanation_paths` enumerates the meta-paths

    user --<behaviour>--> item j --has_<key>--> attribute <--has_<key>-- item

("you bought j, which shares category=c with the recommended item"), scores each and returns the top
``k`` as :class:`PathFact` objects. The score is a product of three readable parts, in the spirit of
path-based explanation in knowledge-graph recommenders (e.g. Xian et al., "Reinforcement Knowledge Graph
Reasoning for Explainable Recommendation", SIGIR 2019, which also ranks user→item paths by relation):

* the behaviour's weight (:data:`BEHAVIOUR_WEIGHTS`: a purchase says more than a view),
* ``log1p`` of how often the user did it on ``j``,
* the attribute's specificity ``1 / log2(1 + n_items(attribute))`` -- sharing a niche category says more
  than sharing a catch-all one (an inverse-document-frequency weight).

A fact's ``to_dict()`` carries the ids of every node on the path, so a language model's explanation can
cite it (see docs/graph.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from behaviorlm.data.graph import BehaviorGraph

BEHAVIOUR_WEIGHTS: dict[str, float] = {
    "purchase": 1.0,
    "rate": 0.8,
    "review": 0.8,
    "cart": 0.6,
    "fav": 0.5,
    "click": 0.2,
    "view": 0.2,
}
"""How much one behaviour on an item says about the user's taste; other types get :data:`OTHER_WEIGHT`."""
OTHER_WEIGHT = 0.3


@dataclass(frozen=True)
class PathFact:
    """One path ``user --relation--> via_item --has_<key>--> attribute <--has_<key>-- item``, scored."""

    user_id: str
    item_id: str
    via_item_id: str
    relation: str
    """The user's behaviour on ``via_item_id`` (``purchase``, ``view``, ...)."""
    count: int
    """How many times the user did it."""
    last_timestamp: int
    """When they last did it (UTC seconds)."""
    attribute: str
    """The shared attribute node, ``key=value`` (``category=4756105``, ``class=Comedy``)."""
    attribute_items: int
    """How many items have that attribute."""
    score: float

    @property
    def text(self) -> str:
        times = "once" if self.count == 1 else f"{self.count} times"
        return (
            f"the user's {self.relation} of item {self.via_item_id} ({times}) shares {self.attribute} "
            f"with item {self.item_id} ({self.attribute_items} items have it)"
        )

    def nodes(self) -> list[tuple[str, str]]:
        """The path as (node type, id) pairs, user first."""
        return [
            ("user", self.user_id),
            ("item", self.via_item_id),
            ("attribute", self.attribute),
            ("item", self.item_id),
        ]

    def to_dict(self) -> dict:
        return {**asdict(self), "text": self.text, "path": [list(n) for n in self.nodes()]}


def explanation_paths(graph: BehaviorGraph, *, user_id: str, item_id: str, k: int = 3) -> list[PathFact]:
    """The ``k`` best-scored user→item→attribute←item paths from ``user_id`` to ``item_id`` (see the
    module docstring), best first; empty when the graph has no such path. Unknown ids are an error."""
    users, items = graph.node_ids["user"].tolist(), graph.node_ids["item"].tolist()
    if user_id not in users:
        raise KeyError(f"user {user_id!r} is not in the graph")
    if item_id not in items:
        raise KeyError(f"item {item_id!r} is not in the graph")
    user, target = users.index(user_id), items.index(item_id)
    attribute_names = graph.node_ids.get("attribute", np.array([], dtype=object))
    attribute_relations = [
        graph.edges[et] for et in sorted(graph.edges) if et[0] == "item" and et[2] == "attribute"
    ]
    if not attribute_relations:
        return []
    item_of = np.concatenate([e["source"] for e in attribute_relations])
    attribute_of = np.concatenate([e["target"] for e in attribute_relations])
    attribute_degree = np.bincount(attribute_of, minlength=len(attribute_names))
    target_attributes = set(attribute_of[item_of == target].tolist())
    if not target_attributes:
        return []
    facts = []
    for (source_type, relation, target_type), edge in sorted(graph.edges.items()):
        if source_type != "user" or target_type != "item":
            continue
        mine = np.flatnonzero(edge["source"] == user)
        weight = BEHAVIOUR_WEIGHTS.get(relation, OTHER_WEIGHT)
        for e in mine:
            via = int(edge["target"][e])
            if via == target:
                continue
            count = int(edge["count"][e]) if "count" in edge else 1
            for a in sorted(set(attribute_of[item_of == via].tolist()) & target_attributes):
                specificity = 1.0 / np.log2(1.0 + attribute_degree[a])
                facts.append(
                    PathFact(
                        user_id=user_id,
                        item_id=item_id,
                        via_item_id=str(items[via]),
                        relation=relation,
                        count=count,
                        last_timestamp=int(edge["last_timestamp"][e]) if "last_timestamp" in edge else 0,
                        attribute=str(attribute_names[a]),
                        attribute_items=int(attribute_degree[a]),
                        score=float(weight * np.log1p(count) * specificity),
                    )
                )
    facts.sort(key=lambda f: (-f.score, -f.last_timestamp, f.via_item_id, f.attribute))
    return facts[:k]
