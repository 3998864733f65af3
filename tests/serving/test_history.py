"""The in-memory history cache: LRU bound, invalidation, and no stale refill after a racing write."""

from __future__ import annotations

from behaviorlm.serving.history import HistoryCache


def _history(*items: str) -> dict:
    return {"item_id": list(items), "event_type": ["view"] * len(items), "timestamp": list(range(len(items)))}


def test_hits_misses_and_lru_bound() -> None:
    cache = HistoryCache(window=5, max_users=2)
    loads = []

    def load(user: str) -> dict:
        loads.append(user)
        return _history(user + "-item")

    for user in ("a", "b", "a", "c", "b"):
        cache.get(user, load)
    # a, b loaded; a hit; c loaded and evicts b (least recently used); b loaded again.
    assert loads == ["a", "b", "c", "b"]
    assert (cache.hits, cache.misses) == (1, 4)


def test_invalidate_forces_a_reload() -> None:
    cache = HistoryCache(window=5, max_users=10)
    cache.preload({"a": _history("old")})
    assert cache.get("a", lambda u: _history("never"))["item_id"] == ["old"]
    cache.invalidate(["a"])
    assert cache.get("a", lambda u: _history("new"))["item_id"] == ["new"]


def test_a_load_that_raced_a_write_is_not_cached() -> None:
    cache = HistoryCache(window=5, max_users=10)

    def load_while_a_write_lands(user: str) -> dict:
        # The store was read before the write committed; the write's invalidation happens meanwhile.
        cache.invalidate([user])
        return _history("stale")

    assert cache.get("a", load_while_a_write_lands)["item_id"] == ["stale"]
    assert cache.get("a", lambda u: _history("fresh"))["item_id"] == ["fresh"]
