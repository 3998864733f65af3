"""Purchase prediction as a temporal task: will a user buy an item they have looked at?

The protocol (one *snapshot* per cutoff time ``t``):

* **graph and features** come only from events strictly before ``t``
  (:func:`behaviorlm.data.graph.build_graph` with ``before=t``); an event at or after ``t`` cannot change them;
* **candidate pairs** are the (user, item) pairs with a view, cart or favourite before ``t``;
* **label** = 1 when the user buys that item in ``[t, t + window)``, else 0.

A model is fitted on the snapshots of early cutoffs, tuned (hyperparameters, early stopping, the
decision threshold) on later *validation* cutoffs and scored on the latest *test* cutoffs
(:func:`purchase_cutoffs`); a cutoff's label window always closes before the next group's first cutoff,
so no label a model learns or is tuned from lies in the period it is tested on.

The pair features (:func:`pair_features`) are the counts and recency a feature baseline sees: per
behaviour type the pair's count and time since its last event, the user's and the item's activity, the
item's purchases per visitor, and the user's activity in the item's category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorlm.data.graph import BehaviorGraph, build_graph
from behaviorlm.data.store import EventStore

INTENT_TYPES: tuple[str, ...] = ("view", "cart", "fav")
"""Behaviours that make a (user, item) pair a candidate."""
PURCHASE_TYPE = "purchase"
BEHAVIOUR_TYPES: tuple[str, ...] = (*INTENT_TYPES, PURCHASE_TYPE)


@dataclass(frozen=True, eq=False)
class PurchaseSnapshot:
    """The candidate pairs at one cutoff, their features and labels, and the graph they were read from.

    ``users[k]`` / ``items[k]`` index ``graph.node_ids["user"]`` / ``["item"]``; ``features[k]`` is pair
    ``k``'s row (columns named by ``feature_names``); ``labels[k]`` is 1 when it was bought in the window.
    """

    cutoff: int
    """UTC seconds; everything in ``graph`` and ``features`` happened strictly before it."""
    window_seconds: int
    graph: BehaviorGraph
    users: np.ndarray
    items: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    labels: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.labels)

    @property
    def n_positives(self) -> int:
        return int(self.labels.sum())

    def pair_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """External (user id, item id) of every pair."""
        return self.graph.node_ids["user"][self.users], self.graph.node_ids["item"][self.items]


def candidate_pairs(
    graph: BehaviorGraph, *, intent_types: tuple[str, ...] = INTENT_TYPES, exclude_purchased: bool = False
) -> np.ndarray:
    """Sorted unique pair keys ``user * n_items + item`` of the pairs with an intent edge in ``graph``
    (without those that already have a purchase edge when ``exclude_purchased``)."""
    n_items = len(graph.node_ids["item"])
    keys = [
        graph.edges[("user", t, "item")]["source"] * n_items + graph.edges[("user", t, "item")]["target"]
        for t in intent_types
        if ("user", t, "item") in graph.edges
    ]
    candidates = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    bought = graph.edges.get(("user", PURCHASE_TYPE, "item"))
    if exclude_purchased and bought is not None:
        candidates = candidates[~np.isin(candidates, bought["source"] * n_items + bought["target"])]
    return candidates


def _find(sorted_keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each ``wanted`` key sits in ``sorted_keys``: (found mask, position; 0 where not found)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(wanted), dtype=bool), np.zeros(len(wanted), dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    found = sorted_keys[at] == wanted
    return found, np.where(found, at, 0)


def _lookup(edge: dict[str, np.ndarray], n_items: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, last_timestamp) of each pair key in a behaviour edge list; count 0 where absent."""
    edge_keys = edge["source"] * n_items + edge["target"]
    order = np.argsort(edge_keys, kind="stable")
    found, at = _find(edge_keys[order], keys)
    if not found.any():
        return np.zeros(len(keys)), np.zeros(len(keys), dtype=np.int64)
    count = np.where(found, edge["count"][order][at], 0)
    last = np.where(found, edge["last_timestamp"][order][at], 0)
    return count.astype(np.float64), last.astype(np.int64)


def item_categories(graph: BehaviorGraph) -> np.ndarray:
    """Each item's category node (first ``has_category`` edge), ``-1`` where it has none."""
    category = np.full(len(graph.node_ids["item"]), -1, dtype=np.int64)
    edge = graph.edges.get(("item", "has_category", "attribute"))
    if edge is not None:
        # Reversed so that, on duplicates, the first edge of an item is the one written last.
        category[edge["source"][::-1]] = edge["target"][::-1]
    return category


def pair_features(
    graph: BehaviorGraph, users: np.ndarray, items: np.ndarray, *, cutoff: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Counts and recency of each (user, item) pair, of the user, of the item, and of the user in the
    item's category, all read from ``graph`` (so from before ``cutoff`` when the graph is a snapshot).

    Counts are ``log1p``; recency is ``log1p(seconds from the last event to cutoff)``, and for a
    behaviour the pair never had, ``log1p`` of the graph's whole time span (as old as anything seen).
    """
    n_users, n_items = len(graph.node_ids["user"]), len(graph.node_ids["item"])
    keys = users * n_items + items
    behaviour = {
        t: graph.edges[("user", t, "item")] for t in BEHAVIOUR_TYPES if ("user", t, "item") in graph.edges
    }
    first_seen = min(
        (int(e["last_timestamp"].min()) for e in behaviour.values() if len(e["source"])), default=cutoff
    )
    never = np.log1p(max(cutoff - first_seen, 0) + 1.0)
    columns: dict[str, np.ndarray] = {}
    last_any = np.zeros(len(keys), dtype=np.int64)
    user_total = np.zeros(n_users)
    item_total = np.zeros(n_items)
    item_buyers = np.zeros(n_items)
    item_visitors = np.zeros(n_items)
    for t in BEHAVIOUR_TYPES:
        edge = behaviour.get(t)
        if edge is None:
            edge = {k: np.zeros(0, dtype=np.int64) for k in ("source", "target", "count", "last_timestamp")}
        count, last = _lookup(edge, n_items, keys)
        columns[f"pair_{t}_count"] = np.log1p(count)
        columns[f"pair_{t}_log_seconds_since"] = np.where(
            count > 0, np.log1p(np.maximum(cutoff - last, 0)), never
        )
        last_any = np.maximum(last_any, np.where(count > 0, last, 0))
        user_count = np.bincount(edge["source"], weights=edge["count"], minlength=n_users)
        item_count = np.bincount(edge["target"], weights=edge["count"], minlength=n_items)
        columns[f"user_{t}_count"] = np.log1p(user_count[users])
        columns[f"item_{t}_count"] = np.log1p(item_count[items])
        user_total += user_count
        item_total += item_count
        if t == PURCHASE_TYPE:
            item_buyers += np.bincount(edge["target"], minlength=n_items)
        else:
            item_visitors += np.bincount(edge["target"], minlength=n_items)
    columns["pair_log_seconds_since_last"] = np.where(
        last_any > 0, np.log1p(np.maximum(cutoff - last_any, 0)), never
    )
    columns["item_buyers_per_visitor"] = item_buyers[items] / (item_visitors[items] + 1.0)
    category = item_categories(graph)
    n_categories = int(category.max()) + 1 if len(category) else 0
    user_in_category = np.zeros(len(keys))
    if n_categories > 0 and behaviour:
        sources = np.concatenate([e["source"] for e in behaviour.values()])
        cats = np.concatenate([category[e["target"]] for e in behaviour.values()])
        counts = np.concatenate([e["count"] for e in behaviour.values()]).astype(np.float64)
        has = cats >= 0
        table, inverse = np.unique(sources[has] * n_categories + cats[has], return_inverse=True)
        sums = np.bincount(inverse, weights=counts[has], minlength=len(table))
        found, at = _find(table, users * n_categories + category[items])
        user_in_category = np.where(found & (category[items] >= 0), sums[at] if len(sums) else 0.0, 0.0)
    columns["user_category_count"] = np.log1p(user_in_category)
    names = tuple(columns)
    return np.column_stack([columns[n] for n in names]).astype(np.float32), names


def purchase_snapshot(
    store: EventStore,
    *,
    cutoff: int,
    window_seconds: int,
    intent_types: tuple[str, ...] = INTENT_TYPES,
    exclude_purchased: bool = False,
) -> PurchaseSnapshot:
    """The snapshot at ``cutoff`` (see the module docstring): graph and features from events before
    ``cutoff``, labels from purchases in ``[cutoff, cutoff + window_seconds)``. With
    ``exclude_purchased``, pairs already bought before ``cutoff`` are no candidates (first purchases only)."""
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    graph = build_graph(store, before=cutoff, with_knowledge_graph=False)
    keys = candidate_pairs(graph, intent_types=intent_types, exclude_purchased=exclude_purchased)
    n_items = len(graph.node_ids["item"])
    users, items = keys // max(n_items, 1), keys % max(n_items, 1)
    features, names = pair_features(graph, users, items, cutoff=cutoff)
    user_index = {u: i for i, u in enumerate(graph.node_ids["user"].tolist())}
    item_index = {it: i for i, it in enumerate(graph.node_ids["item"].tolist())}
    bought = store.rows(
        "SELECT DISTINCT user_id, item_id FROM events WHERE event_type = ? "
        "AND epoch(timestamp) >= ? AND epoch(timestamp) < ?",
        [PURCHASE_TYPE, int(cutoff), int(cutoff) + int(window_seconds)],
    )
    bought_keys = np.array(
        [user_index[u] * n_items + item_index[i] for u, i in bought if u in user_index and i in item_index],
        dtype=np.int64,
    )
    labels = np.isin(keys, bought_keys).astype(np.int64)
    return PurchaseSnapshot(
        cutoff=int(cutoff),
        window_seconds=int(window_seconds),
        graph=graph,
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        features=features,
        feature_names=names,
        labels=labels,
    )


def purchase_cutoffs(
    first_timestamp: int,
    last_timestamp: int,
    *,
    window_seconds: int,
    step_seconds: int,
    warmup_seconds: int,
    n_valid: int = 2,
    n_test: int = 2,
) -> dict[str, list[int]]:
    """Train, validation and test cutoffs over ``[first_timestamp, last_timestamp]``.

    Cutoffs run every ``step_seconds`` from ``first_timestamp + warmup_seconds`` while their label window
    fits in the data. The last ``n_test`` are test cutoffs; validation takes the latest ``n_valid``
    whose windows close by the first test cutoff, and training every cutoff whose window closes by the
    first validation cutoff (cutoffs in between are left out, so no label of one group falls in the
    next group's period).
    """
    if min(window_seconds, step_seconds) <= 0 or warmup_seconds < 0 or min(n_valid, n_test) < 1:
        raise ValueError("window and step must be positive, warmup >= 0, n_valid and n_test >= 1")
    cutoffs = list(range(first_timestamp + warmup_seconds, last_timestamp - window_seconds + 2, step_seconds))
    test = cutoffs[-n_test:] if len(cutoffs) >= n_test else []
    valid = [c for c in cutoffs if test and c + window_seconds <= test[0]][-n_valid:]
    train = [c for c in cutoffs if valid and c + window_seconds <= valid[0]]
    if len(valid) < n_valid or not train:
        span_hours = (last_timestamp - first_timestamp) / 3600
        raise ValueError(
            f"{span_hours:.1f} hours of data are too short for {n_test} test and {n_valid} validation "
            f"cutoffs with a {window_seconds} s window every {step_seconds} s after {warmup_seconds} s warm-up, "
            "plus at least one training cutoff"
        )
    return {"train": train, "valid": valid, "test": test}


def store_now(store: EventStore) -> int:
    """One second after the store's latest event (UTC seconds): "now" in the data's clock, what a model
    that reads how long ago events were answers as of (a live store's latest event was a moment ago)."""
    (latest,) = store.rows("SELECT max(epoch(timestamp))::BIGINT FROM events")[0]
    if latest is None:
        raise ValueError(f"event store {store.path} has no events")
    return int(latest) + 1


def store_time_range(store: EventStore, *, start_quantile: float = 0.0) -> tuple[int, int]:
    """First and last event time in the store (UTC seconds). ``start_quantile`` > 0 starts at that quantile
    of the event times instead: the public Taobao slices hold a few stray events weeks before their nine
    days, which would otherwise make weeks of empty daily snapshots."""
    if not 0.0 <= start_quantile < 1.0:
        raise ValueError(f"start_quantile must be in [0, 1), got {start_quantile}")
    first, last = store.rows(
        "SELECT quantile_disc(epoch(timestamp), ?)::BIGINT, max(epoch(timestamp))::BIGINT FROM events",
        [start_quantile],
    )[0]
    if first is None:
        raise ValueError(f"event store {store.path} has no events")
    return int(first), int(last)
