"""The dataset registry's cached stores: built once, then shared read-only between processes."""

from __future__ import annotations

import multiprocessing as mp

from behaviorlm.data.datasets import load_interactions, open_dataset_store
from behaviorlm.data.store import EventStore


def _count_events(cache_dir: str, queue: mp.Queue) -> None:
    queue.put(load_interactions("ml-100k", cache_dir=cache_dir).n_events)


def test_cached_store_is_built_once_and_read_by_several_processes(tmp_path) -> None:
    first = load_interactions("ml-100k", cache_dir=tmp_path)
    assert first.n_events == 100_000
    path = tmp_path / "stores" / "ml-100k.duckdb"
    modified = path.stat().st_mtime_ns
    # While this process holds the cache open read-only, two other processes read it at the same time.
    with open_dataset_store("ml-100k", cache_dir=tmp_path, read_only=True):
        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()
        procs = [ctx.Process(target=_count_events, args=(str(tmp_path), queue)) for _ in range(2)]
        for proc in procs:
            proc.start()
        counts = [queue.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join()
    assert counts == [100_000, 100_000]
    assert path.stat().st_mtime_ns == modified, "a complete cache is not rewritten"


def test_incomplete_cache_is_rebuilt(tmp_path) -> None:
    path = tmp_path / "stores" / "ml-100k.duckdb"
    EventStore(path).close()  # schema only: no completed ingest recorded
    assert load_interactions("ml-100k", cache_dir=tmp_path).n_events == 100_000
