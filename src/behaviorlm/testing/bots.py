"""Plant synthetic bots in real behaviour data, to measure anomaly detectors against known answers.

Four styles, each a kind of automated traffic seen on e-commerce sites:

* ``scraper`` — views a long run of distinct items drawn uniformly from the catalogue (crawling, not
  browsing: no popularity skew), a second or two apart.
* ``click_farm`` — many views and favourites of a handful of target items shared by the whole farm, at
  a steady few seconds apart (boosting those items' popularity).
* ``cart_stuffer`` — adds many popular items to the cart in quick succession and never buys
  (inventory hoarding).
* ``replay`` — re-sends a real user's session: the same items and event types with the same gaps,
  shifted in time (a recorded session replayed by a script).

Bots get user ids ``bot-<style>-<n>`` and timestamps inside the data's time range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorlm.data.sequences import Interactions

BOT_STYLES = ("scraper", "click_farm", "cart_stuffer", "replay")


@dataclass(frozen=True)
class PlantedBots:
    """The data with bots added, and which users are bots of which style (``""`` for real users)."""

    interactions: Interactions
    style: np.ndarray
    """``[n_users]`` style name per user index of ``interactions``, ``""`` for real users."""

    @property
    def is_bot(self) -> np.ndarray:
        return self.style != ""


def plant_bots(
    interactions: Interactions,
    *,
    per_style: int = 50,
    styles: tuple[str, ...] = BOT_STYLES,
    seed: int = 0,
) -> PlantedBots:
    """Add ``per_style`` bots of each style to ``interactions`` (see the module docstring)."""
    unknown = sorted(set(styles) - set(BOT_STYLES))
    if unknown:
        raise ValueError(f"unknown bot styles {unknown}; styles are {list(BOT_STYLES)}")
    vocab = interactions.event_type_vocab
    for needed in ("view", "cart", "fav"):
        if needed not in vocab:
            raise ValueError(f"plant_bots needs event type {needed!r} in the vocabulary {list(vocab)}")
    if np.char.startswith(interactions.user_ids.astype(str), "bot-").any():
        raise ValueError("the data already has users named bot-...; rename them before planting bots")
    rng = np.random.default_rng(seed)
    t_min, t_max = int(interactions.timestamps.min()), int(interactions.timestamps.max())
    n_items = interactions.n_items
    counts = np.bincount(interactions.items, minlength=n_items)
    popular = np.argsort(-counts)[: max(20, n_items // 100)]
    farm_targets = rng.choice(n_items, size=4, replace=False)
    lengths = interactions.lengths()
    replayable = np.flatnonzero(lengths >= 3)

    users, items, times, types = [], [], [], []

    def add(name: str, item_idx: np.ndarray, gaps: np.ndarray, type_names: list[str] | np.ndarray) -> None:
        start = int(rng.integers(t_min, max(t_min + 1, t_max - int(gaps.sum()))))
        times.append(start + np.concatenate([[0], np.cumsum(gaps[:-1])]).astype(np.int64))
        items.append(interactions.item_ids[item_idx])
        users.append(np.full(len(item_idx), name))
        types.append(np.asarray(type_names))

    for style in styles:
        for n in range(per_style):
            name = f"bot-{style}-{n}"
            if style == "scraper":
                length = int(rng.integers(60, 300))
                item_idx = rng.choice(n_items, size=length, replace=length > n_items)
                add(name, item_idx, rng.uniform(1, 3, size=length).round(), ["view"] * length)
            elif style == "click_farm":
                length = int(rng.integers(30, 150))
                item_idx = rng.choice(farm_targets, size=length)
                kinds = np.where(rng.random(length) < 0.3, "fav", "view")
                add(name, item_idx, rng.uniform(5, 8, size=length).round(), kinds)
            elif style == "cart_stuffer":
                length = int(rng.integers(20, 80))
                item_idx = rng.choice(popular, size=length)
                add(name, item_idx, rng.uniform(2, 10, size=length).round(), ["cart"] * length)
            else:  # replay
                source = int(rng.choice(replayable))
                lo, hi = interactions.user_ptr[source], interactions.user_ptr[source + 1]
                ts = interactions.timestamps[lo:hi]
                gaps = np.append(np.diff(ts), 0).astype(np.float64)
                add(
                    name, interactions.items[lo:hi], gaps, [vocab[t] for t in interactions.event_types[lo:hi]]
                )

    real_types = np.array([vocab[t] for t in interactions.event_types])
    real_users = np.repeat(interactions.user_ids, lengths)
    user_ids = np.concatenate([real_users.astype(str), *users])
    merged = Interactions.from_events(
        user_ids=user_ids,
        item_ids=np.concatenate([interactions.item_ids[interactions.items], *items]),
        timestamps=np.concatenate([interactions.timestamps, *times]),
        event_types=np.concatenate([real_types, *types]),
        event_type_vocab=vocab,
        item_universe=interactions.item_ids,
    )
    style = np.array(
        [
            u.split("-")[1] if u.startswith("bot-") and u.split("-")[1] in BOT_STYLES else ""
            for u in merged.user_ids
        ],
        dtype=object,
    )
    return PlantedBots(interactions=merged, style=style.astype(str))
