"""The service's state: the store and its readers, the models, caches of what is computed over all users,
the event writer, keys and limits. One instance per app (``app.state.service``)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from behaviorlm.config import ServiceConfig
from behaviorlm.data.ingest import IngestError
from behaviorlm.data.pseudonyms import pseudonymize_user_id
from behaviorlm.data.store import EventStore, StoreError
from behaviorlm.models.registry import load_recommender
from behaviorlm.models.sequential import EventHistory
from behaviorlm.models.window import latest_events, model_history, read_window
from behaviorlm.profiling.segments import SegmentMapDrawing, UserSegments
from behaviorlm.serving.history import HistoryCache
from behaviorlm.serving.metrics import RequestMetrics
from behaviorlm.serving.model_copy import SAMPLE_HISTORIES, ServingChoice, choose_serving_copy
from behaviorlm.serving.reports import ReportFile
from behaviorlm.serving.schemas import (
    SegmentOut,
    Segments,
)
from behaviorlm.serving.security import ApiKey, AuthFailureThrottle, KeyRing, RateLimiter
from behaviorlm.serving.writer import EventWriter

Authorize = Callable[[str], Callable[..., ApiKey]]
"""``authorize(scope)``: the dependency a route adds to require an API key with that scope."""

log = logging.getLogger("behaviorlm.serving")

ITEM_DETAILS_CACHED = 500_000
"""Items whose catalogue fields the service keeps in memory (the cache starts over past this)."""
STORE_NOW_SECONDS = 5.0
"""How long ``Service.store_now`` keeps the store's latest event time when the service itself stores none."""


class NotEnoughData(Exception):
    """The store holds too little for a result over all users (answered 409)."""


@dataclass(frozen=True)
class SegmentState:
    """One segmentation of the store's users: the endpoint's answer, each user's segment, and the map."""

    answer: Segments
    users: UserSegments
    drawing: SegmentMapDrawing


class Service:
    """What the endpoints share: the store (one writer, a read cursor per thread), model, keys, limits."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.store = EventStore(config.store)
        self.writer = EventWriter(self.store, config=config.ingest)
        self.keys = KeyRing.load(config.keys_file)
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.auth_failures = AuthFailureThrottle()
        # Logged user pseudonyms are keyed with a secret of this process, so they cannot be reversed by
        # hashing candidate ids (numeric ids are easy to enumerate); they link lines within one run only.
        self.log_key = secrets.token_bytes(32)
        self.metrics = RequestMetrics()
        # Per-thread cursors (reader()): made before the model loads, whose timing reads the store.
        self._local = threading.local()
        self._readers: list[EventStore] = []
        self._readers_lock = threading.Lock()
        self.serving_choice: ServingChoice | None = None
        self.model = self.load_model() if config.model else None
        if config.intent_model:
            from behaviorlm.models.registry import load_intent_model

            self.intent_model = load_intent_model(config.intent_model)
        else:
            self.intent_model = None
        self.history = HistoryCache(
            window=read_window(self.model) if self.model is not None else 1,
            max_users=config.history_cache_users,
        )
        if self.model is not None and self.store.count("events") > 0:
            n_users = self.store.scalar("SELECT count(DISTINCT user_id) FROM events")
            if n_users <= config.history_cache_users:
                self.history.preload(self.store.recent_events(per_user=read_window(self.model)))
        self._anomaly_lock = threading.Lock()
        self._segment_lock = threading.Lock()
        self._topic_lock = threading.Lock()
        self._segment_cache: tuple[SegmentState | str, float] | None = None
        self._anomaly_cache: tuple[Any, Any, datetime, float] | None = None
        self._topic_cache: tuple[Any, float] | None = None
        self._llm_lock = threading.Lock()
        self._llm: Any = None
        self.reports = {
            name: ReportFile(name, path) for name, path in config.reports.model_dump().items() if path
        }
        self._items_lock = threading.Lock()
        self._item_details: dict[str, dict[str, str]] = {}
        """Item id -> its catalogue fields ({} for an item the catalogue does not describe)."""
        self._now_lock = threading.Lock()
        self._now_cache: tuple[int, float] | None = None

    def llm(self) -> Any:
        """The language-model client, started on first use (the embedded model loads in about a second)."""
        with self._llm_lock:
            if self._llm is None:
                from behaviorlm.llm.client import LLMClient

                self._llm = LLMClient(self.config.llm)
            return self._llm

    def load_model(self):
        """The saved model, as the service scores with it: the float model or its quantized copy, as
        ``quantize`` says (``"auto"``: timed on the store's latest users; the choice is kept in
        :attr:`serving_choice`)."""
        model = load_recommender(self.config.model)
        histories = self.timing_histories(model) if self.config.quantize == "auto" else None
        serving, self.serving_choice = choose_serving_copy(
            model, self.config.quantize, histories, source="the store's latest users"
        )
        return serving

    def timing_histories(self, model: Any, n: int = SAMPLE_HISTORIES) -> list[EventHistory]:
        """The histories of the store's ``n`` most recently active users, read as a request reads them
        (through this thread's cursor: ``/v1/model/reload`` runs this on a request thread)."""
        store = self.reader()
        if store.count("events") == 0:
            return []
        users = store.arrow(
            f"SELECT user_id FROM events GROUP BY user_id ORDER BY max(timestamp) DESC, user_id LIMIT {int(n)}"
        )
        return [
            model_history(model, latest_events(store, user, model)) for user in users.column(0).to_pylist()
        ]

    def request_history(self, user_id: str, model: Any) -> tuple[int, EventHistory]:
        """The user's latest stored events as ``model`` reads them (:mod:`behaviorlm.models.window`, as the
        CLI and the LLM facts read them) in ``model``'s index space, and how many events were read; events on
        items or types the model does not know are left out.

        The recommendation model reads them through the history cache; other models from the store.
        """
        try:
            stored_id = pseudonymize_user_id(user_id, config=self.config.ingest)
            if model is self.model:
                events = self.history.get(stored_id, lambda user: latest_events(self.reader(), user, model))
            else:
                events = latest_events(self.reader(), stored_id, model)
        except (IngestError, StoreError) as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return len(events["item_id"]), model_history(model, events)

    def store_now(self) -> int:
        """One second after the store's latest event (:func:`behaviorlm.data.purchase.store_now`), what an
        intent model that reads how long ago events were answers as of. Kept until the service stores
        events (``forget_store_now``) or :data:`STORE_NOW_SECONDS` pass (another process may write): the
        query scans every event's time, 1.4 ms at 354k events, and would grow with the store."""
        from behaviorlm.data.purchase import store_now

        with self._now_lock:
            cached = self._now_cache
            if cached is None or time.monotonic() - cached[1] > STORE_NOW_SECONDS:
                try:
                    cached = (store_now(self.reader()), time.monotonic())
                except StoreError as exc:
                    raise HTTPException(status_code=503, detail=f"event store unavailable: {exc}") from None
                self._now_cache = cached
            return cached[0]

    def forget_store_now(self) -> None:
        """Events were stored: the next ``store_now`` reads the store again."""
        with self._now_lock:
            self._now_cache = None

    def stored_user_id(self, user_id: str) -> str:
        """The id the store keeps for ``user_id`` (its pseudonym, when users are pseudonymized)."""
        try:
            return pseudonymize_user_id(user_id, config=self.config.ingest)
        except IngestError as exc:  # the pseudonym key is not available to the service
            raise HTTPException(status_code=503, detail=str(exc)) from None

    def anomalies(self) -> tuple[Any, Any, datetime]:
        """The fitted anomaly detector over the store's users (recomputed when older than the refresh time)."""
        from behaviorlm.profiling.anomalies import AnomalyDetector

        with self._anomaly_lock:
            cached = self._anomaly_cache
            if cached is not None and time.monotonic() - cached[3] < self.config.anomaly_refresh_seconds:
                return cached[:3]
            reader = self.reader()
            if reader.count("events") == 0:
                raise NotEnoughData("the event store holds no events yet")
            data = reader.interactions()
            detector = AnomalyDetector(utc_offset_hours=self.config.utc_offset_hours).fit(data)
            self._anomaly_cache = (detector, data, datetime.now(UTC), time.monotonic())
            return self._anomaly_cache[:3]

    def segments(self) -> SegmentState:
        """Behaviour segments of the store's users (the model's user states) and their map, recomputed when
        stale; a store too small or too uniform to segment is remembered as such for as long."""
        with self._segment_lock:
            cached = self._segment_cache
            if cached is None or time.monotonic() - cached[1] >= self.config.segment_refresh_seconds:
                cached = self._segment_cache = (self._segment(), time.monotonic())
        if isinstance(cached[0], str):
            raise NotEnoughData(cached[0])
        return cached[0]

    def _segment(self) -> SegmentState | str:
        from behaviorlm.data.features import item_features_from_store
        from behaviorlm.models.base import align_to_model
        from behaviorlm.profiling.segments import (
            segment_kmeans,
            segment_map,
            summarize_segments,
            user_representations,
        )

        reader = self.reader()
        if reader.count("events") == 0:
            return "the event store holds no events yet"
        data = align_to_model(reader.interactions(), self.model)
        if data.n_users < 3:
            return "too few users with known items to segment"
        x = user_representations(self.model, data)
        try:
            found = segment_kmeans(x)
        except ValueError as exc:  # every k gave one cluster: the users look alike
            return str(exc)
        features = item_features_from_store(reader, data.item_ids)
        summaries = summarize_segments(found, data, item_features=features)
        answer = Segments(
            method=found.method,
            silhouette=found.silhouette,
            segments=[SegmentOut(**{f: getattr(s, f) for f in SegmentOut.model_fields}) for s in summaries],
            computed_at=datetime.now(UTC),
        )
        return SegmentState(
            answer=answer,
            users=UserSegments(user_ids=data.user_ids, labels=found.labels),
            # The projection is fitted and laid out here, once per segmentation, not per request.
            drawing=SegmentMapDrawing(segment_map(x, found.labels)),
        )

    def interest_topics(self) -> Any:
        """The interest topics of the store's items for profiles (found again after
        ``segment_refresh_seconds``); None when the items have no texts or the sentence model is missing."""
        from behaviorlm.data.text import TextModelUnavailable
        from behaviorlm.profiling.profile import interest_topics

        with self._topic_lock:
            cached = self._topic_cache
            if cached is not None and time.monotonic() - cached[1] < self.config.segment_refresh_seconds:
                return cached[0]
            try:
                # New text vectors go to the store's embedding cache through this reader: an append-only
                # table that event ingest never touches, so it does not contend with the writer thread.
                topics = interest_topics(self.reader())
            except (TextModelUnavailable, ValueError) as exc:
                log.warning("profiles have no interests: %s", exc)
                topics = None
            self._topic_cache = (topics, time.monotonic())
            return topics

    def item_details(self, item_ids: list[str]) -> dict[str, dict[str, str]]:
        """Title, category and brand of those of ``item_ids`` the store's catalogue describes (others are
        left out), as :meth:`EventStore.item_details` gives them.

        Kept in memory once read (a store query costs about 2 ms, a third of a recommendation): the
        catalogue cannot change while the service runs, since posted events never touch ``items`` and the
        service holds the store's only write connection.
        """
        found: dict[str, dict[str, str]] = {}
        missing = []
        with self._items_lock:
            for item in set(item_ids):
                known = self._item_details.get(item)
                if known is None:
                    missing.append(item)
                elif known:
                    found[item] = known
        if missing:
            read = self.reader().item_details(missing)
            found.update(read)
            with self._items_lock:
                if len(self._item_details) + len(missing) > ITEM_DETAILS_CACHED:
                    self._item_details.clear()
                self._item_details.update({item: read.get(item, {}) for item in missing})
        return found

    def reader(self) -> EventStore:
        handle = getattr(self._local, "reader", None)
        if handle is None:
            handle = self.store.cursor()
            self._local.reader = handle
            with self._readers_lock:
                self._readers.append(handle)
        return handle

    def close(self) -> None:
        self.writer.close()
        with self._readers_lock:
            for handle in self._readers:
                handle.close()
        self.store.close()
