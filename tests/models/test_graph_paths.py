"""Explanation paths: the planted user -> bought item -> niche category <- item path ranks first."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.graph import BehaviorGraph
from behaviorlm.models.graph_paths import explanation_paths


def _graph(*, planted: bool) -> BehaviorGraph:
    # Items 0..9. Target item 9 is in category "niche" (items 0 and 9 only) and "broad" (items 1..9).
    items = np.array([f"i{n}" for n in range(10)], dtype=object)
    attributes = np.array(["category=broad", "category=niche", "brand=acme"], dtype=object)
    has_category_items = [0, 9, *range(1, 10)]
    has_category_attrs = [1, 1] + [0] * 9
    purchase = {"source": [0], "target": [0 if planted else 2], "count": [1], "last_timestamp": [100]}
    view = {"source": [0, 0], "target": [1, 3], "count": [5, 1], "last_timestamp": [200, 300]}
    return BehaviorGraph(
        node_ids={"user": np.array(["u0"], dtype=object), "item": items, "attribute": attributes},
        edges={
            ("user", "purchase", "item"): {k: np.array(v, dtype=np.int64) for k, v in purchase.items()},
            ("user", "view", "item"): {k: np.array(v, dtype=np.int64) for k, v in view.items()},
            ("item", "has_category", "attribute"): {
                "source": np.array(has_category_items, dtype=np.int64),
                "target": np.array(has_category_attrs, dtype=np.int64),
            },
            ("item", "has_brand", "attribute"): {
                "source": np.array([5], dtype=np.int64),
                "target": np.array([2], dtype=np.int64),
            },
        },
    )


def test_planted_path_ranks_first() -> None:
    facts = explanation_paths(_graph(planted=True), user_id="u0", item_id="i9", k=3)
    top = facts[0]
    assert (top.via_item_id, top.relation, top.attribute) == ("i0", "purchase", "category=niche")
    assert top.attribute_items == 2
    assert [f.score for f in facts] == sorted((f.score for f in facts), reverse=True)
    assert {(f.via_item_id, f.attribute) for f in facts[1:]} == {
        ("i1", "category=broad"),
        ("i3", "category=broad"),
    }
    record = top.to_dict()
    assert record["path"] == [["user", "u0"], ["item", "i0"], ["attribute", "category=niche"], ["item", "i9"]]
    assert "purchase of item i0" in record["text"] and record["score"] == pytest.approx(top.score)


def test_without_the_planted_purchase_the_broad_paths_lead() -> None:
    facts = explanation_paths(_graph(planted=False), user_id="u0", item_id="i9", k=5)
    assert all(f.attribute == "category=broad" for f in facts)
    # The purchase of i2 outranks five views of i1 only through its behaviour weight.
    assert facts[0].via_item_id == "i2"
    with pytest.raises(KeyError, match="user"):
        explanation_paths(_graph(planted=True), user_id="nobody", item_id="i9")
