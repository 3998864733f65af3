"""A planted purchase rule for testing purchase predictors on the behaviour graph.

:func:`planted_purchase_events` makes shoppers over ``hours`` hours, items in ``n_categories``
categories, and one rule that only the graph reveals: **a user buys a viewed item (about an hour later)
exactly when they had already bought something in that item's category before the view**. Every user
buys two items of a home category at random times and views ten items at random times, half of them
in the home category; nothing else predicts a purchase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore

START = 1_700_000_000
"""Unix seconds of the first hour."""


def planted_purchase_events(
    *, n_users: int = 300, n_categories: int = 6, items_per_category: int = 15, hours: int = 16, seed: int = 0
) -> tuple[list[dict], dict[str, str]]:
    """``(events, category of each item)``: event dicts (``user_id``, ``item_id``, ``event_type``,
    ``timestamp``) following the planted rule of the module docstring."""
    rng = np.random.default_rng(seed)
    items = [[f"c{c}i{i}" for i in range(items_per_category)] for c in range(n_categories)]
    category = {item: f"cat{c}" for c, row in enumerate(items) for item in row}
    span = hours * 3600
    events = []
    for u in range(n_users):
        user = f"u{u}"
        home = int(rng.integers(n_categories))
        bought_at = np.sort(rng.uniform(0, span * 0.8, size=2))
        for t, item in zip(bought_at, rng.choice(items[home], size=2, replace=False), strict=True):
            events.append(
                {"user_id": user, "item_id": item, "event_type": "purchase", "timestamp": int(START + t)}
            )
        for _ in range(10):
            c = home if rng.random() < 0.5 else int(rng.choice([k for k in range(n_categories) if k != home]))
            item = str(rng.choice(items[c]))
            t = float(rng.uniform(0, span))
            events.append(
                {"user_id": user, "item_id": item, "event_type": "view", "timestamp": int(START + t)}
            )
            if c == home and t > bought_at[0]:
                delay = rng.uniform(0.5, 1.5) * 3600
                events.append(
                    {
                        "user_id": user,
                        "item_id": item,
                        "event_type": "purchase",
                        "timestamp": int(START + t + delay),
                    }
                )
    return events, category


def write_planted_purchase_store(path: str | Path, *, n_users: int = 300, seed: int = 0) -> Path:
    """An event store at ``path`` holding :func:`planted_purchase_events` and the item categories."""
    events, category = planted_purchase_events(n_users=n_users, seed=seed)
    with EventStore(path) as store:
        ingest_records(store, events, source="planted-purchase", config=IngestConfig(format="jsonl"))
        for item, cat in sorted(category.items()):
            store.execute(
                "INSERT INTO items (item_id, category) VALUES (?, ?)",
                [item, cat],
            )
    return Path(path)


def planted_propensity_events(*, n_users: int = 200, days: int = 8, seed: int = 0) -> list[dict]:
    """Event dicts over ``days`` days for the user-level task (will a user buy within a day?). Every user
    views at :data:`START`, a few times a day, and half an hour before each daily cutoff (``START + k``
    days), so recency tells nobody apart; on a day, some users put an item in the cart an hour before the
    cutoff, and exactly those buy it two hours after the cutoff. A model that counts recent carts ranks
    tomorrow's buyers perfectly; the user features alone (recency, frequency, shares) cannot."""
    hour, day = 3600, 86_400
    rng = np.random.default_rng(seed)
    out = []

    def event(user: int, item: str, kind: str, t: int) -> None:
        out.append({"user_id": f"u{user}", "item_id": item, "event_type": kind, "timestamp": int(t)})

    for u in range(n_users):
        event(u, "i0", "view", START)
        for k in range(1, days + 1):
            for _ in range(rng.integers(1, 4)):
                event(
                    u, f"i{rng.integers(30)}", "view", START + (k - 1) * day + rng.integers(0, day - 3 * hour)
                )
            event(u, "i0", "view", START + k * day - hour // 2)
            if rng.random() < 0.3:
                item = f"i{rng.integers(30)}"
                event(u, item, "cart", START + k * day - hour)
                event(u, item, "purchase", START + k * day + 2 * hour)
    return out
