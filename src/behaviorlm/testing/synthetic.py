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


FUNNEL_EVENT_TYPES = ("view", "cart", "purchase")
"""Event types of the shopping-funnel generators below."""


def funnel_sequences(*, n_users: int, n_items: int, length: int, seed: int, cyclic: bool) -> Interactions:
    """Event-type patterns over ``view`` / ``cart`` / ``purchase``, items uniform at random.

    ``cyclic=True``: each user's types cycle ``view -> cart -> purchase -> view -> ...`` from a random
    phase, so the next event type is determined by the current one (chance: 1/3, and every type is
    equally common, so the most frequent type does not help). ``cyclic=False``: types are independent and
    uniform, for per-event rules such as :func:`checkout_tags`. Timestamps are one minute apart.
    """
    rng = np.random.default_rng(seed)
    n_types = len(FUNNEL_EVENT_TYPES)
    if cyclic:
        types = (rng.integers(n_types, size=(n_users, 1)) + np.arange(length)[None, :]) % n_types
    else:
        types = rng.integers(n_types, size=(n_users, length))
    return Interactions.from_events(
        user_ids=np.repeat(np.arange(n_users), length),
        item_ids=rng.integers(n_items, size=n_users * length),
        timestamps=np.tile(_START_SECONDS + 60 * np.arange(length), n_users),
        event_types=types.reshape(-1),
        event_type_vocab=FUNNEL_EVENT_TYPES,
        user_universe=np.arange(n_users),
        item_universe=np.arange(n_items),
    )


def checkout_tags(
    interactions: Interactions, *, cart_type: str = "cart", purchase_type: str = "purchase"
) -> np.ndarray:
    """Per-event planted tag: 1 for a ``purchase`` whose predecessor (same user) is a ``cart``, else 0.

    Deciding it needs the event *and* its predecessor: tagging every purchase gets F1 of only about 0.5
    on :func:`funnel_sequences` with ``cyclic=False``.
    """
    vocab = interactions.event_type_vocab
    types = interactions.event_types
    previous = np.full_like(types, -1)
    previous[1:] = types[:-1]
    first = np.zeros(interactions.n_events, dtype=bool)
    first[interactions.user_ptr[:-1][interactions.lengths() > 0]] = True
    previous[first] = -1
    return ((types == vocab.index(purchase_type)) & (previous == vocab.index(cart_type))).astype(np.int64)


def buyer_sequences(*, n_users: int, n_items: int, length: int, n_future: int, seed: int) -> Interactions:
    """Half the users are buyers: a ``cart`` somewhere in their history and a ``purchase`` ahead.

    Every user has ``length`` events. The last ``n_future`` are "the future": for a buyer one of them
    (at random) is a ``purchase``, the rest ``view``; a browser only views. Before them, a buyer has
    one ``cart`` at a random position among ``view`` events (never the last one) and a browser views
    only. So "purchase within the next ``n_future`` events" is decided by whether a cart appears
    *anywhere* in the history, not by the last event. Items uniform at random; timestamps one minute apart.
    """
    if not 1 <= n_future < length - 1:
        raise ValueError(f"need 1 <= n_future < length - 1, got n_future={n_future}, length={length}")
    rng = np.random.default_rng(seed)
    view, cart, purchase = (FUNNEL_EVENT_TYPES.index(t) for t in ("view", "cart", "purchase"))
    types = np.full((n_users, length), view)
    buyers = np.flatnonzero(rng.random(n_users) < 0.5)
    history_length = length - n_future
    # Never the last history event, so that the last event alone never gives the label away.
    types[buyers, rng.integers(history_length - 1, size=len(buyers))] = cart
    types[buyers, history_length + rng.integers(n_future, size=len(buyers))] = purchase
    return Interactions.from_events(
        user_ids=np.repeat(np.arange(n_users), length),
        item_ids=rng.integers(n_items, size=n_users * length),
        timestamps=np.tile(_START_SECONDS + 60 * np.arange(length), n_users),
        event_types=types.reshape(-1),
        event_type_vocab=FUNNEL_EVENT_TYPES,
        user_universe=np.arange(n_users),
        item_universe=np.arange(n_items),
    )


@dataclass(frozen=True, eq=False)
class PlantedIntents:
    """Sequences and each user's planted intent (``intents[u]`` in ``0..n_intents-1``)."""

    interactions: Interactions
    intents: np.ndarray


def intent_sequences(
    *, n_users: int, n_items: int, n_intents: int, length: int, noise_share: float, seed: int
) -> PlantedIntents:
    """Each user has an intent; most of their items come from that intent's block of the catalogue.

    Items are split into ``n_intents`` contiguous blocks. A user's events are, with probability
    ``1 - noise_share`` each, a uniform item of the user's block, else a uniform item of the whole
    catalogue; event type ``interaction``, timestamps one minute apart. An intent can be read from a
    sequence only by knowing which items belong together -- which unlabelled sequences teach (the
    co-occurrence that masked pretraining learns), so few labelled users suffice after pretraining.
    """
    if not 1 <= n_intents <= n_items:
        raise ValueError(f"need 1 <= n_intents <= n_items, got n_intents={n_intents}, n_items={n_items}")
    rng = np.random.default_rng(seed)
    block_starts = np.arange(n_intents) * n_items // n_intents
    block_sizes = np.diff(np.r_[block_starts, n_items])
    intents = rng.integers(n_intents, size=n_users)
    in_block = block_starts[intents][:, None] + (
        rng.random((n_users, length)) * block_sizes[intents][:, None]
    ).astype(np.int64)
    noise = rng.integers(n_items, size=(n_users, length))
    items = np.where(rng.random((n_users, length)) < noise_share, noise, in_block)
    interactions = Interactions.from_events(
        user_ids=np.repeat(np.arange(n_users), length),
        item_ids=items.reshape(-1),
        timestamps=np.tile(_START_SECONDS + 60 * np.arange(length), n_users),
        user_universe=np.arange(n_users),
        item_universe=np.arange(n_items),
    )
    return PlantedIntents(interactions=interactions, intents=intents)


@dataclass(frozen=True, eq=False)
class PlantedCause:
    """Sequences whose last event is caused by one earlier event, and where that event is.

    ``cause_positions[u]`` is the position (0 = oldest) of user ``u``'s causing event; the user's last
    event is the one it causes.
    """

    interactions: Interactions
    cause_positions: np.ndarray


def cart_cause_sequences(*, n_users: int, n_items: int, length: int, seed: int) -> PlantedCause:
    """One ``cart`` among ``view`` noise decides the next item: a known answer for influence methods.

    Every user has ``length - 1`` history events and one final event. Exactly one history event is a
    ``cart`` (at a uniformly random position, never the most recent, so "the latest event matters most"
    is not the answer); the others are ``view`` events of uniformly random items. The final event is a
    ``purchase`` of the carted item's partner ``(cart_item + n_items // 2) % n_items``, and neither the
    carted item nor its partner appears among the views. So the only history event that changes the
    next item is the cart, and removing it should change the prediction most. Timestamps are one minute
    apart.
    """
    if length < 3:
        raise ValueError(f"length must be >= 3 (views, a cart, a final event), got {length}")
    if n_items < 4:
        raise ValueError(f"n_items must be >= 4, got {n_items}")
    rng = np.random.default_rng(seed)
    view, cart, purchase = (FUNNEL_EVENT_TYPES.index(t) for t in ("view", "cart", "purchase"))
    n_history = length - 1
    cart_items = rng.integers(n_items, size=n_users)
    partners = (cart_items + n_items // 2) % n_items
    # Views avoid the carted item and its partner: draw from the other n_items - 2 items by skipping both.
    views = rng.integers(n_items - 2, size=(n_users, n_history))
    low, high = np.minimum(cart_items, partners)[:, None], np.maximum(cart_items, partners)[:, None]
    views = views + (views >= low)
    views = views + (views >= high)
    cause_positions = rng.integers(n_history - 1, size=n_users)
    rows = np.arange(n_users)
    items = np.concatenate([views, partners[:, None]], axis=1)
    items[rows, cause_positions] = cart_items
    types = np.full((n_users, length), view)
    types[rows, cause_positions] = cart
    types[:, -1] = purchase
    interactions = Interactions.from_events(
        user_ids=np.repeat(np.arange(n_users), length),
        item_ids=items.reshape(-1),
        timestamps=np.tile(_START_SECONDS + 60 * np.arange(length), n_users),
        event_types=types.reshape(-1),
        event_type_vocab=FUNNEL_EVENT_TYPES,
        user_universe=np.arange(n_users),
        item_universe=np.arange(n_items),
    )
    return PlantedCause(interactions=interactions, cause_positions=cause_positions)
