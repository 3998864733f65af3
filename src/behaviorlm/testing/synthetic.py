"""Tiny generated data with a known answer, for conformance checks and tests.

:func:`planted_pattern_interactions` plants a structure that a personalised model can find and a
popularity model cannot: every user belongs to one cluster of items and mostly interacts inside it,
while the rest of their events are popularity-skewed noise over the whole catalogue. So

* a model that learns item co-occurrence (ItemKNN, EASE, a sequence model) should rank a user's unseen
  cluster items first and hit most held-out targets;
* popularity only catches the noise events, so it beats random but loses to a personalised model;
* random hits about ``k / n_unseen_items`` of the targets.

:func:`hold_out_last_event` is the minimal leave-last-out split those checks need; the full split
protocols live in :mod:`behaviorlm.data.splits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorlm.data.sequences import Interactions

_START_SECONDS = 1_600_000_000
"""Timestamp of the first event (2020-09-13 UTC); the exact value is arbitrary."""


def planted_pattern_interactions(
    *,
    n_users: int = 300,
    n_items: int = 60,
    n_clusters: int = 6,
    events_per_user: int = 12,
    noise_share: float = 0.25,
    popularity_skew: float = 1.2,
    seed: int = 0,
) -> Interactions:
    """Users that mostly interact inside their own item cluster, plus popularity-skewed noise.

    Items are split into ``n_clusters`` contiguous blocks; each user is assigned one block. Every user
    has ``events_per_user`` events on *distinct* items (so a held-out last event is never a repeat of
    the history): about ``1 - noise_share`` of them are drawn uniformly from the user's cluster (at most
    the whole cluster) and the rest from the other items with probability proportional to
    ``1 / rank**popularity_skew`` (Zipf), where item popularity ranks are a seeded permutation so popular
    items are spread over the clusters. Event order is shuffled; timestamps increase per user by random
    gaps of one minute to one day. External ids are the integers ``0..n-1`` and every user and item is
    in the index space even if it has no event. The result is a deterministic function of the arguments.
    """
    if n_clusters < 1 or n_items < n_clusters:
        raise ValueError(f"need 1 <= n_clusters <= n_items, got n_clusters={n_clusters}, n_items={n_items}")
    if not 1 <= events_per_user <= n_items:
        raise ValueError(f"events_per_user must be in [1, n_items={n_items}], got {events_per_user}")
    if not 0.0 <= noise_share <= 1.0:
        raise ValueError(f"noise_share must be in [0, 1], got {noise_share}")
    rng = np.random.default_rng(seed)
    cluster_of_item = np.arange(n_items) * n_clusters // n_items
    popularity_rank = rng.permutation(n_items) + 1
    popularity_weight = 1.0 / popularity_rank.astype(np.float64) ** popularity_skew
    cluster_of_user = rng.integers(0, n_clusters, size=n_users)

    user_col, item_col, time_col = [], [], []
    for user in range(n_users):
        in_cluster = cluster_of_item == cluster_of_user[user]
        cluster_items = np.flatnonzero(in_cluster)
        n_noise = int(rng.binomial(events_per_user, noise_share))
        n_inside = min(events_per_user - n_noise, len(cluster_items))
        n_noise = events_per_user - n_inside
        inside = rng.choice(cluster_items, size=n_inside, replace=False)
        outside_items = np.flatnonzero(~in_cluster)
        weights = popularity_weight[outside_items]
        if n_noise > len(outside_items):
            raise ValueError(
                f"events_per_user={events_per_user} is too many distinct items for {n_items} items "
                f"in {n_clusters} clusters"
            )
        noise = rng.choice(outside_items, size=n_noise, replace=False, p=weights / weights.sum())
        items = rng.permutation(np.concatenate([inside, noise]))
        gaps_seconds = rng.integers(60, 86_400, size=len(items))
        user_col.append(np.full(len(items), user))
        item_col.append(items)
        time_col.append(_START_SECONDS + np.cumsum(gaps_seconds))
    return Interactions.from_events(
        user_ids=np.concatenate(user_col),
        item_ids=np.concatenate(item_col),
        timestamps=np.concatenate(time_col),
        user_universe=np.arange(n_users),
        item_universe=np.arange(n_items),
    )


@dataclass(frozen=True, eq=False)
class HeldOutLastEvent:
    """A leave-last-out split: ``train`` without each user's last event, and those events as targets.

    ``users[i]`` has target item ``targets[i]``; ``train`` shares the index space of the source data.
    """

    train: Interactions
    users: np.ndarray
    targets: np.ndarray


def hold_out_last_event(interactions: Interactions) -> HeldOutLastEvent:
    """Hold out the most recent event of every user with at least two events (leave-last-out)."""
    lengths = interactions.lengths()
    users = np.flatnonzero(lengths >= 2).astype(np.int64)
    last_positions = interactions.user_ptr[users + 1] - 1
    keep = np.ones(interactions.n_events, dtype=bool)
    keep[last_positions] = False
    return HeldOutLastEvent(
        train=interactions.filter_events(keep),
        users=users,
        targets=interactions.items[last_positions],
    )


def successor_sequences(
    *, n_users: int, n_items: int, length: int, seed: int, typed: bool = False
) -> Interactions:
    """Sequences with a planted *order*: each user walks the catalogue, the next item is ``item + step``.

    Untyped: step 1. Typed: each event is a ``view`` or a ``cart`` at random and the type decides the
    step (view -> +1, cart -> +3), so the next item can only be predicted by a model that reads event
    types. A set-based model (popularity, ItemKNN, EASE) cannot recover the order; a sequence model
    should reach HR@1 close to 1. Timestamps are one minute apart.
    """
    rng = np.random.default_rng(seed)
    users, items, times, types = [], [], [], []
    for u in range(n_users):
        item = int(rng.integers(n_items))
        for t in range(length):
            kind = int(rng.integers(2)) if typed else 0
            users.append(f"u{u:04d}")
            items.append(f"i{item:03d}")
            times.append(1_000 + 60 * t)
            types.append(["view", "cart"][kind])
            item = (item + (1 if kind == 0 else 3)) % n_items
    return Interactions.from_events(
        user_ids=np.array(users),
        item_ids=np.array(items),
        timestamps=np.array(times),
        event_types=np.array(types),
        event_type_vocab=("view", "cart"),
        item_universe=np.array([f"i{i:03d}" for i in range(n_items)]),
    )
