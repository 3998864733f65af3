"""Users' latest events, kept in memory so that a recommendation does not wait on a store query.

The cache holds each user's last ``window`` events (the model's input window), up to ``max_users``
users in least-recently-used order. Posting events invalidates the users they belong to; a read that
raced with such a write never puts its stale result back (each user has a generation number that a
write bumps, and a load only fills the cache if the generation it started from is still current).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

History = dict[str, list[Any]]


class HistoryCache:
    def __init__(self, *, window: int, max_users: int) -> None:
        self.window = window
        self.max_users = max_users
        self._entries: OrderedDict[str, History] = OrderedDict()
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def preload(self, histories: dict[str, History]) -> None:
        """Fill the cache (e.g. from ``EventStore.recent_events``), keeping at most ``max_users``."""
        with self._lock:
            for user, history in list(histories.items())[-self.max_users :]:
                self._entries[user] = history
            self._evict()

    def get(self, user_id: str, load: Callable[[str], History]) -> History:
        """The user's history from the cache, or from ``load(user_id)`` (then cached)."""
        with self._lock:
            cached = self._entries.get(user_id)
            if cached is not None:
                self._entries.move_to_end(user_id)
                self.hits += 1
                return cached
            self.misses += 1
            generation = self._generation.get(user_id, 0)
        history = load(user_id)
        with self._lock:
            if self._generation.get(user_id, 0) == generation:
                self._entries[user_id] = history
                self._evict()
        return history

    def invalidate(self, user_ids: Iterable[str]) -> None:
        with self._lock:
            for user in set(user_ids):
                self._entries.pop(user, None)
                self._generation[user] = self._generation.get(user, 0) + 1

    def _evict(self) -> None:
        while len(self._entries) > self.max_users:
            self._entries.popitem(last=False)
