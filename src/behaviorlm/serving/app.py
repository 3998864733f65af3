"""The REST service: post events, get real-time recommendations — authenticated, rate-limited, bounded.

Thin by design (docs/architecture.md): each endpoint parses, authorizes and calls the library —
:func:`behaviorlm.data.ingest.ingest_records` through the single :class:`~.writer.EventWriter`, and a
saved sequence model's ``predict_next`` over the user's latest events read from the store. Endpoints
appear only for capabilities that exist: without a model there is no recommendations endpoint.

Security: every ``/v1`` endpoint except health needs an API key (``Authorization: Bearer <key>`` or
``X-API-Key``) with the right scope (401 without a valid key, 403 without the scope, 429 over the
key's rate limit, and to an address after too many failed authentications); request bodies are capped
(413, also for chunked bodies); CORS is off unless origins are configured; logs carry a route template
and a keyed pseudonym of the user id, never the raw id. Input the schema rejects is a 422 whose body
is always valid JSON (a NaN or an unpaired surrogate in the input is echoed as text); a model folder
that does not load is a 409 on reload, and the old model keeps serving.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and those refer to the local ``authorize`` dependency.
import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from behaviorlm import __version__
from behaviorlm.config import ServiceConfig
from behaviorlm.data.ingest import IngestError, pseudonymize_user_id
from behaviorlm.data.store import EventStore, StoreError
from behaviorlm.models.registry import load_recommender
from behaviorlm.models.sequential import EventHistory
from behaviorlm.models.window import latest_events, model_history, read_window
from behaviorlm.profiling.segments import SegmentMapDrawing, UserSegments
from behaviorlm.serving.dashboard import mount_dashboard
from behaviorlm.serving.history import HistoryCache
from behaviorlm.serving.metrics import RequestMetrics
from behaviorlm.serving.reports import (
    AuditReportOut,
    EffectsReportOut,
    ReportFile,
    ReportUnavailable,
    TargetingReportOut,
)
from behaviorlm.serving.schemas import (
    MAX_ID,
    ActivityDay,
    Anomalies,
    AnomalousUser,
    AnomalyReasonOut,
    AnswerOut,
    CitedFact,
    ClaimVerdict,
    EventBatch,
    Explanation,
    Health,
    IngestResult,
    Intent,
    IntentInWords,
    Profile,
    QuarantinedEvent,
    QuestionIn,
    Recommendations,
    RecommendedItem,
    SegmentOut,
    Segments,
    StoredEvent,
    SupportingEvent,
    ToolCallOut,
    UserActivity,
    UserEvents,
)
from behaviorlm.serving.security import ApiKey, AuthFailureThrottle, KeyRing, RateLimiter
from behaviorlm.serving.writer import EventWriter

log = logging.getLogger("behaviorlm.serving")

ITEM_DETAILS_CACHED = 500_000
"""Items whose catalogue fields the service keeps in memory (the cache starts over past this)."""


class _NotEnoughData(Exception):
    """The store holds too little for a result over all users (answered 409)."""


@dataclass(frozen=True)
class _SegmentState:
    """One segmentation of the store's users: the endpoint's answer, each user's segment, and the map."""

    answer: Segments
    users: UserSegments
    drawing: SegmentMapDrawing


class _Service:
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
        self._local = threading.local()
        self._readers: list[EventStore] = []
        self._readers_lock = threading.Lock()
        self._anomaly_lock = threading.Lock()
        self._segment_lock = threading.Lock()
        self._topic_lock = threading.Lock()
        self._segment_cache: tuple[_SegmentState | str, float] | None = None
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

    def llm(self) -> Any:
        """The language-model client, started on first use (the embedded model loads in about a second)."""
        with self._llm_lock:
            if self._llm is None:
                from behaviorlm.llm.client import LLMClient

                self._llm = LLMClient(self.config.llm)
            return self._llm

    def load_model(self):
        model = load_recommender(self.config.model)
        return model.quantized() if self.config.quantize and hasattr(model, "quantized") else model

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
                raise _NotEnoughData("the event store holds no events yet")
            data = reader.interactions()
            detector = AnomalyDetector(utc_offset_hours=self.config.utc_offset_hours).fit(data)
            self._anomaly_cache = (detector, data, datetime.now(UTC), time.monotonic())
            return self._anomaly_cache[:3]

    def segments(self) -> _SegmentState:
        """Behaviour segments of the store's users (the model's user states) and their map, recomputed when
        stale; a store too small or too uniform to segment is remembered as such for as long."""
        with self._segment_lock:
            cached = self._segment_cache
            if cached is None or time.monotonic() - cached[1] >= self.config.segment_refresh_seconds:
                cached = self._segment_cache = (self._segment(), time.monotonic())
        if isinstance(cached[0], str):
            raise _NotEnoughData(cached[0])
        return cached[0]

    def _segment(self) -> _SegmentState | str:
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
        return _SegmentState(
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


def _user_pseudonym_for_logs(user_id: str, *, key: bytes) -> str:
    """HMAC-SHA256 of the user id under the process's log key (an unkeyed hash of an id is reversible
    by enumerating ids)."""
    digest = hmac.new(key, user_id.encode("utf-8", "backslashreplace"), hashlib.sha256)
    return digest.hexdigest()[:12]


def _json_safe(value: Any) -> Any:
    """``value`` with what strict JSON cannot carry made text: NaN and infinities (Python's JSON reader
    accepts those literals) and unpaired surrogates; other objects (exceptions in an error's context)
    become their message."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {str(_json_safe(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _json_safe(str(value))


# ---------------------------------------------------------------------------------------------- app
def create_app(config: ServiceConfig) -> FastAPI:
    """Build the service for ``config`` (the store is opened and the model loaded here)."""
    import torch

    torch.set_num_threads(config.torch_threads)
    service = _Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="behaviorlm",
        version=__version__,
        summary="Behaviour events in, real-time recommendations out.",
        lifespan=lifespan,
    )
    app.state.service = service
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "unmatched")
        service.metrics.observe(
            method=request.method, route=route, status=response.status_code, seconds=elapsed
        )
        user = request.path_params.get("user_id")
        log.info(
            "%s %s %d %.1fms key=%s user=%s",
            request.method,
            route,
            response.status_code,
            1000 * elapsed,
            getattr(request.state, "key_name", "-"),
            _user_pseudonym_for_logs(user, key=service.log_key) if user else "-",
        )
        return response

    def authorize(scope: str):
        def dependency(request: Request) -> ApiKey:
            address = request.client.host if request.client else "unknown"
            blocked = service.auth_failures.blocked_for(address)
            if blocked:
                raise HTTPException(
                    status_code=429,
                    detail=f"too many failed authentications from {address}; retry in {math.ceil(blocked)} s",
                    headers={"Retry-After": str(max(1, math.ceil(blocked)))},
                )
            secret = request.headers.get("x-api-key")
            auth = request.headers.get("authorization", "")
            if secret is None and auth.lower().startswith("bearer "):
                secret = auth[7:].strip()
            key = service.keys.lookup(secret) if secret else None
            if key is None:
                service.auth_failures.failed(address)
                raise HTTPException(
                    status_code=401,
                    detail="missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key')",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            request.state.key_name = key.name
            if scope not in key.scopes:
                raise HTTPException(
                    status_code=403,
                    detail=f"API key {key.name!r} lacks the {scope!r} scope ({list(key.scopes)})",
                )
            wait = service.limiter.acquire(key.name)
            if wait:
                raise HTTPException(
                    status_code=429,
                    detail=f"rate limit of {config.rate_limit_per_minute} requests per minute exceeded",
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
            return key

        return dependency

    @app.get("/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        return Health(
            status="ok",
            version=__version__,
            model_loaded=service.model is not None,
            explanations_in_words=service.model is not None and config.llm is not None,
            reports=sorted(service.reports),
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def metrics() -> str:
        """Prometheus text format."""
        return service.metrics.render()

    @app.get("/v1/stats", tags=["events"])
    def stats(_: Annotated[ApiKey, Depends(authorize("read"))]) -> dict[str, Any]:
        """Table sizes, event-type counts, time range and quarantine reasons of the event store."""
        return service.reader().stats()

    @app.get("/v1/users/{user_id}/events", response_model=UserEvents, tags=["users"])
    def user_events(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        _: Annotated[ApiKey, Depends(authorize("read"))],
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    ) -> UserEvents:
        """The user's latest events (their timeline), oldest first, with each item's title, category and
        brand where the store's catalogue has them."""
        stored_id = pseudonymize_user_id(user_id, config=config.ingest)
        history = service.reader().user_events(stored_id, limit=limit)
        details = service.item_details(history["item_id"])
        return UserEvents(
            user_id=user_id,
            events=[
                StoredEvent(
                    item_id=i,
                    event_type=t,
                    timestamp=datetime.fromtimestamp(ts, tz=UTC),
                    **details.get(i, {}),
                )
                for i, t, ts in zip(
                    history["item_id"], history["event_type"], history["timestamp"], strict=True
                )
            ],
        )

    @app.get("/v1/users/{user_id}/activity", response_model=UserActivity, tags=["users"])
    def user_activity(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        _: Annotated[ApiKey, Depends(authorize("read"))],
    ) -> UserActivity:
        """The user's events per UTC day and event type, over all their stored events (no days, and
        ``events`` 0, for a user without events)."""
        stored_id = pseudonymize_user_id(user_id, config=config.ingest)
        days: dict[date, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for day, event_type, n in service.reader().user_daily_counts(stored_id):
            days.setdefault(day, {})[event_type] = n
            totals[event_type] = totals.get(event_type, 0) + n
        return UserActivity(
            user_id=user_id,
            events=sum(totals.values()),
            event_types=dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))),
            days=[ActivityDay(day=d, events=sum(c.values()), by_type=c) for d, c in days.items()],
        )

    if service.intent_model is not None:

        @app.get("/v1/users/{user_id}/intent", response_model=Intent, tags=["users"])
        def intent(
            user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
            _: Annotated[ApiKey, Depends(authorize("read"))],
        ) -> Intent:
            """The user's intent from their latest events: the intent model's class probabilities."""
            from behaviorlm.models.heads import intent_classes

            head = service.intent_model
            _, request = service.request_history(user_id, head)
            if request.interactions.n_events == 0:
                raise HTTPException(
                    status_code=404, detail=f"user {user_id!r} has no events the intent model can read"
                )
            proba = head.predict_proba(request.interactions, users=np.array([0]))[0]
            ranked = sorted(zip(intent_classes(head), proba.tolist(), strict=True), key=lambda kv: -kv[1])
            return Intent(
                user_id=user_id,
                model=head.name,
                probabilities=dict(ranked),
                history_events=request.interactions.n_events,
            )

    @app.get("/v1/users/{user_id}/profile", response_model=Profile, tags=["users"])
    def profile(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        _: Annotated[ApiKey, Depends(authorize("read"))],
        recent: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> Profile:
        """The user's profile: activity (events by type, first and last event, active days, the ``recent``
        latest events), interest topics, how anomalous their behaviour is among all users (with reasons),
        their behaviour segment and, with a model, likely next items (docs/profiling.md).

        The user's events are read per request (a posted event counts at once). What is computed over all
        users is shared with the other endpoints and refreshed with them: anomaly scores as in
        ``/v1/anomalies``, segments as in ``/v1/segments``, interest topics with the segments. A user who
        arrived since the last refresh has no anomaly score or segment until the next.
        """
        from behaviorlm.profiling.profile import UnknownUser, build_profile

        stored_id = service.stored_user_id(user_id)
        detector = segments = None
        with suppress(_NotEnoughData):  # an empty store: the user has no events either (404 below)
            detector = service.anomalies()[0]
        if service.model is not None:
            with suppress(_NotEnoughData):  # too few or too uniform users to segment: no segment
                segments = service.segments().users
        topics = service.interest_topics()
        try:
            card = build_profile(
                service.reader(),
                stored_id,
                model=service.model,
                recent=recent,
                with_anomaly=detector is not None,
                detector=detector,
                with_interests=topics is not None,
                topics=topics,
                segments=segments,
            )
        except UnknownUser:
            raise HTTPException(status_code=404, detail=f"user {user_id!r} has no events") from None
        return Profile(**{**card.to_dict(), "user_id": user_id})

    @app.get("/v1/anomalies", response_model=Anomalies, tags=["users"])
    def anomalies(
        _: Annotated[ApiKey, Depends(authorize("read"))],
        limit: Annotated[int, Query(ge=1, le=1_000)] = 20,
    ) -> Anomalies:
        """The users whose behaviour is most anomalous (bots, scrapers, fraud), with the reasons.

        Scored by an isolation forest over behaviour features (docs/profiling.md); computed from the whole
        store and reused for ``anomaly_refresh_seconds``.
        """
        detector, data, computed_at = service.anomalies()
        lengths = data.lengths()
        users = []
        for user in detector.top(limit):
            users.append(
                AnomalousUser(
                    user_id=str(data.user_ids[user]),
                    score=float(detector.scores_[user]),
                    events=int(lengths[user]),
                    reasons=[AnomalyReasonOut(**vars(r)) for r in detector.reasons(int(user))],
                )
            )
        return Anomalies(users=users, scored_users=int(data.n_users), computed_at=computed_at)

    @app.post("/v1/events", response_model=IngestResult, tags=["events"])
    async def post_events(
        batch: EventBatch, _: Annotated[ApiKey, Depends(authorize("write"))]
    ) -> IngestResult:
        """Store a batch of events (validated, deduplicated on ``event_id``); answered once durable."""
        if len(batch.events) > config.max_batch_events:
            raise HTTPException(
                status_code=422,
                detail=[
                    {
                        "loc": ["body", "events"],
                        "msg": f"at most {config.max_batch_events} events per request, got {len(batch.events)}",
                        "type": "too_long",
                    }
                ],
            )
        records = [event.record() for event in batch.events]
        try:
            summary = await asyncio.wrap_future(service.writer.submit(records))
        except IngestError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except StoreError as exc:
            raise HTTPException(status_code=503, detail=f"event store unavailable: {exc}") from None
        if summary.stored:
            service.history.invalidate(
                {pseudonymize_user_id(record["user_id"], config=config.ingest) for record in records}
            )
        quarantine = []
        if summary.quarantined:
            rows = await asyncio.to_thread(
                lambda: service.reader().rows(
                    "SELECT source_row, reason FROM quarantine WHERE source = ? ORDER BY source_row",
                    [summary.source],
                )
            )
            quarantine = [QuarantinedEvent(index=int(row) - 1, reason=reason) for row, reason in rows]
        service.metrics.count_events(
            stored=summary.stored, quarantined=summary.quarantined, duplicates=summary.duplicates
        )
        return IngestResult(
            received=len(records),
            stored=summary.stored,
            duplicates=summary.duplicates,
            quarantined=summary.quarantined,
            quarantine=quarantine,
        )

    if service.model is not None:

        @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, tags=["users"])
        def recommendations(
            user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
            _: Annotated[ApiKey, Depends(authorize("read"))],
            k: Annotated[int, Query(ge=1, le=config.max_k)] = 10,
        ) -> Recommendations:
            """Top-``k`` next items from the user's latest events (a posted event counts at once)."""
            model = service.model
            n_read, request = service.request_history(user_id, model)
            recs = model.recommend(np.array([0]), k=k, history=request.interactions)
            item_ids = model.trained_on.item_ids
            # A k past the unseen items reaches the seen ones, masked with -inf: they are left out.
            ranked = [
                (str(item_ids[i]), float(score))
                for i, score in zip(recs.items[0], recs.scores[0], strict=True)
                if math.isfinite(score)
            ]
            details = service.item_details([item for item, _ in ranked])
            return Recommendations(
                user_id=user_id,
                items=[
                    RecommendedItem(item_id=item, score=score, **details.get(item, {}))
                    for item, score in ranked
                ],
                history_events=request.interactions.n_events,
                skipped_events=n_read - request.interactions.n_events,
                model=model.name,
            )

        @app.get("/v1/users/{user_id}/explanation", response_model=Explanation, tags=["users"])
        def explanation(
            user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
            _: Annotated[ApiKey, Depends(authorize("read"))],
            k: Annotated[int, Query(ge=1, le=20)] = 5,
        ) -> Explanation:
            """Why the top recommendation: the user's events whose removal lowers it most (deletion influence).

            Every event is removed in turn and the model re-scores the catalogue (one batched pass); the
            facts are the model's own counterfactuals, not a narrative (docs/causal.md).
            """
            from behaviorlm.causal.influence import deletion_influence

            model = service.model
            _, request = service.request_history(user_id, model)
            if request.interactions.n_events == 0:
                raise HTTPException(
                    status_code=404, detail=f"user {user_id!r} has no events the model can read"
                )
            influence = deletion_influence(model, request.interactions, 0)
            supporting = influence.top(k)
            target = str(influence.target_item_id)
            details = service.item_details([target] + [str(e["item_id"]) for e in supporting])
            return Explanation(
                user_id=user_id,
                item_id=target,
                **details.get(target, {}),
                log_probability=float(influence.base_log_prob),
                because=[
                    SupportingEvent(
                        **{f: e[f] for f in SupportingEvent.model_fields if f in e},
                        **details.get(str(e["item_id"]), {}),
                    )
                    for e in supporting
                ],
                method="deletion influence (leave one event out)",
            )

        if config.llm is not None:

            @app.get("/v1/users/{user_id}/explanation/words", response_model=IntentInWords, tags=["users"])
            def explanation_in_words(
                user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
                _: Annotated[ApiKey, Depends(authorize("read"))],
            ) -> IntentInWords:
                """The user's intent explained in words by the configured language model, from facts only:
                latest events, activity, top categories, anomaly percentile, next items and the events
                behind the top one (and intent-model probabilities when one is configured). The model
                returns claims about those facts; each is checked against its fact and the words are
                rendered from the checked claims (docs/llm.md). Takes seconds on a CPU with the
                embedded model."""
                from behaviorlm.llm.client import LLMError
                from behaviorlm.llm.facts import user_facts
                from behaviorlm.llm.tasks import explain_intent
                from behaviorlm.llm.weights import ModelWeightsError
                from behaviorlm.profiling.profile import UnknownUser

                stored = service.stored_user_id(user_id)
                try:
                    detector = service.anomalies()[0]
                except _NotEnoughData:
                    detector = None
                try:
                    facts = user_facts(
                        service.reader(),
                        stored,
                        model=service.model,
                        intent_model=service.intent_model,
                        detector=detector,
                        with_anomaly=detector is not None,
                    )
                except UnknownUser:
                    raise HTTPException(status_code=404, detail=f"user {user_id!r} has no events") from None
                except StoreError as exc:
                    raise HTTPException(status_code=503, detail=f"event store unavailable: {exc}") from None
                try:
                    result = explain_intent(service.llm(), facts)
                except (LLMError, ModelWeightsError) as exc:
                    raise HTTPException(
                        status_code=503, detail=f"language model unavailable: {exc}"
                    ) from None
                by_id = facts.by_id()
                return IntentInWords(
                    user_id=user_id,
                    intent=result.answer.intent,
                    confidence=result.answer.confidence,
                    text=result.answer.text,
                    evidence=[
                        CitedFact(id=e, text=by_id[e].text) for e in result.answer.evidence if e in by_id
                    ],
                    claims=[
                        ClaimVerdict(**{k: str(v[k]) for k in ClaimVerdict.model_fields})
                        for v in result.claims
                    ],
                    grounded=result.grounded,
                    first_try_grounded=result.first_try_grounded,
                    source=result.source,
                    latency_s=result.latency_s,
                    llm=result.model,
                )

            @app.post("/v1/users/{user_id}/questions", response_model=AnswerOut, tags=["users"])
            def answer_question(
                user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
                body: QuestionIn,
                _: Annotated[ApiKey, Depends(authorize("read"))],
            ) -> AnswerOut:
                """A question about the user answered from the data: the language model chooses read-only
                tools (counts, first/last events, categories, items in a period, ratings, next items and
                their reasons), the service runs them, and the answer is written from their results.
                Questions about the person (contact, identity, money, health) are refused before any
                model sees them."""
                from behaviorlm.llm.client import LLMError
                from behaviorlm.llm.tools import UserContext
                from behaviorlm.llm.tools import ask as ask_tools
                from behaviorlm.llm.weights import ModelWeightsError

                stored = service.stored_user_id(user_id)
                store = service.reader()
                try:
                    known = store.scalar("SELECT count(*) FROM events WHERE user_id = ?", [stored])
                except StoreError as exc:
                    raise HTTPException(status_code=503, detail=f"event store unavailable: {exc}") from None
                if not known:
                    raise HTTPException(status_code=404, detail=f"user {user_id!r} has no events")
                try:
                    result = ask_tools(
                        service.llm(), UserContext(store, stored, model=service.model), body.question
                    )
                except (LLMError, ModelWeightsError) as exc:
                    raise HTTPException(
                        status_code=503, detail=f"language model unavailable: {exc}"
                    ) from None
                return AnswerOut(
                    user_id=user_id,
                    question=body.question,
                    answer=result.answer,
                    source=result.source,
                    calls=[
                        ToolCallOut(
                            tool=c["tool"],
                            arguments=c["arguments"],
                            result=c.get("result"),
                            error=c.get("error") or ("; ".join(c["rejected"]) if c.get("rejected") else None),
                        )
                        for c in result.calls
                    ],
                    latency_s=result.latency_s,
                    llm=result.model,
                )

        @app.get("/v1/segments", response_model=Segments, tags=["users"])
        def segments(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Segments:
            """Users grouped by behaviour (k-means over the model's user states, k by silhouette), with
            size, recency, activity, conversion and over-represented item attributes per segment.
            Computed from the whole store and reused for ``segment_refresh_seconds``."""
            return service.segments().answer

        @app.get(
            "/v1/segments/map",
            response_class=Response,
            tags=["users"],
            responses={200: {"content": {"image/svg+xml": {}}, "description": "The map as an SVG document."}},
        )
        def segments_map(
            _: Annotated[ApiKey, Depends(authorize("read"))],
            user_id: Annotated[str | None, Query(min_length=1, max_length=MAX_ID)] = None,
        ) -> Response:
            """The segments of ``/v1/segments`` as a map (SVG): each user a dot on the first two principal
            components of the model's user states, coloured by segment (a sample of 2,000 users when there
            are more). With ``user_id``, that user is ringed if they were segmented. The map is computed
            with the segments; a request only adds the ring."""
            state = service.segments()
            row = state.users.row(service.stored_user_id(user_id)) if user_id is not None else None
            return Response(
                state.drawing.svg(highlight=row),
                media_type="image/svg+xml",
                # Opened on its own, the document may run nothing and load nothing.
                headers={
                    "Content-Security-Policy": "default-src 'none'",
                    "X-Content-Type-Options": "nosniff",
                },
            )

        @app.post("/v1/model/reload", tags=["service"])
        def reload_model(_: Annotated[ApiKey, Depends(authorize("admin"))]) -> dict[str, str]:
            """Load the model again from its path (e.g. after a new checkpoint was saved there).

            Requests in flight finish on the old model; the swap is a single reference assignment.
            """
            try:
                fresh = service.load_model()
            except (OSError, ValueError) as exc:
                raise HTTPException(status_code=409, detail=f"could not load {config.model}: {exc}") from None
            if read_window(fresh) != service.history.window:
                service.history = HistoryCache(
                    window=read_window(fresh), max_users=config.history_cache_users
                )
            service.model = fresh
            return {"status": "reloaded", "model": fresh.name}

    # Population reports: each endpoint exists only when its file is configured (docs/serving.md).
    if "effects" in service.reports:

        @app.get("/v1/reports/effects", response_model=EffectsReportOut, tags=["reports"])
        def effects_report(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Any:
            """The configured causal-effects report (``behaviorlm effects --json``): the average effect of
            one behaviour on a later one by each method with 95% intervals and refutations, and the effect
            per activity segment (docs/causal-effects.md). Served as written; 503 if the file is unusable."""
            return service.reports["effects"].load()

    if "audit" in service.reports:

        @app.get("/v1/reports/audit", response_model=AuditReportOut, tags=["reports"])
        def audit_report(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Any:
            """The configured bias audit (``behaviorlm audit --json``): recommendation quality per user group
            with bootstrap intervals, the gap between best and worst group, and popularity bias
            (docs/audit.md). Served as written; 503 if the file is unusable."""
            return service.reports["audit"].load()

    if "targeting" in service.reports:

        @app.get("/v1/reports/targeting", response_model=TargetingReportOut, tags=["reports"])
        def targeting_report(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Any:
            """The configured targeting comparison (``TargetingComparison.to_dict``): uplift, propensity and
            random targeting on held-out users of a campaign, with AUUC, Qini coefficient, incremental
            conversions per budget and the Qini and uplift curves (docs/marketing.md). Served as written;
            503 if the file is unusable."""
            return service.reports["targeting"].load()

    @app.exception_handler(ReportUnavailable)
    async def report_unavailable(request: Request, exc: ReportUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"report unavailable: {exc}"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and Starlette's JSON encoder refuses NaN (which
        # Python's JSON reader accepts) and unpaired surrogates: the 422 itself became a 500.
        return JSONResponse(status_code=422, content={"detail": _json_safe(exc.errors())})

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"event store unavailable: {exc}"})

    @app.exception_handler(_NotEnoughData)
    async def not_enough_data(request: Request, exc: _NotEnoughData) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    mount_dashboard(app)
    return app


class _BodyLimit:
    """Reject request bodies over ``max_bytes`` with 413, by header or while streaming (chunked bodies).

    A body without ``Content-Length`` is read here, up to the limit, before the app sees it: an error
    raised while the app reads it would be caught by FastAPI's body parser and answered 400.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(send)
                return
            await self.app(scope, receive, send)  # the server delivers no more than declared
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        body = f'{{"detail":"request body over the limit of {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
