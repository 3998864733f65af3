"""The one writer of the service's event store.

DuckDB allows a single writing connection; request handlers therefore never write themselves. They
hand each batch of posted events to :class:`EventWriter`, whose thread ingests the batches one after
another (validation, quarantine, deduplication on ``event_id``, one transaction each) and resolves the
batch's future only after the transaction has committed: an acknowledged batch is durable.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import IngestSummary, ingest_records
from behaviorlm.data.store import EventStore

_STOP = object()


class EventWriter:
    """A thread that owns ``store``'s writes; :meth:`submit` queues a batch and returns its future."""

    def __init__(self, store: EventStore, *, config: IngestConfig) -> None:
        self._store = store
        self._config = config
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="behaviorlm-event-writer", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[Mapping[str, Any]]) -> Future[IngestSummary]:
        """Queue ``records`` for ingest; the future holds the batch's :class:`IngestSummary` once committed."""
        future: Future[IngestSummary] = Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the event writer has stopped"))
            return future
        self._queue.put((records, future))
        return future

    def close(self) -> None:
        """Finish the queued batches, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            records, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                source = f"api:{uuid.uuid4().hex}"
                future.set_result(ingest_records(self._store, records, source=source, config=self._config))
            except Exception as exc:  # handed to the waiting request, which answers with an error
                future.set_exception(exc)
