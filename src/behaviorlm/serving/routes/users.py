"""Routes for one user: timeline, activity, intent, profile, recommendations, explanations, questions."""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and those refer to the local ``authorize`` dependency.
import math
from contextlib import suppress
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from behaviorlm.config import ServiceConfig
from behaviorlm.data.pseudonyms import pseudonymize_user_id
from behaviorlm.data.store import StoreError
from behaviorlm.serving.schemas import (
    MAX_ID,
    ActivityDay,
    AnswerOut,
    CitedFact,
    ClaimVerdict,
    Explanation,
    Intent,
    IntentInWords,
    IntentReason,
    Profile,
    QuestionIn,
    Recommendations,
    RecommendedItem,
    StoredEvent,
    SupportingEvent,
    ToolCallOut,
    UserActivity,
    UserEvents,
)
from behaviorlm.serving.security import ApiKey
from behaviorlm.serving.service import Authorize, NotEnoughData, Service


def router(service: Service, config: ServiceConfig, authorize: Authorize) -> APIRouter:
    """The routes for one user: timeline, activity, intent, profile, recommendations, explanations, questions."""
    router = APIRouter()

    @router.get("/v1/users/{user_id}/events", response_model=UserEvents, tags=["users"])
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

    @router.get("/v1/users/{user_id}/activity", response_model=UserActivity, tags=["users"])
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

        @router.get("/v1/users/{user_id}/intent", response_model=Intent, tags=["users"])
        def intent(
            user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
            _: Annotated[ApiKey, Depends(authorize("read"))],
        ) -> Intent:
            """The user's intent from their latest events: the intent model's class probabilities; a
            purchase-propensity model also gives the features that move its answer most (``reasons``)."""
            from behaviorlm.models.heads import read_intent

            head = service.intent_model
            _, request = service.request_history(user_id, head)
            if request.interactions.n_events == 0:
                raise HTTPException(
                    status_code=404, detail=f"user {user_id!r} has no events the intent model can read"
                )
            reading = read_intent(head, request.interactions, now=service.store_now)
            return Intent(
                user_id=user_id,
                model=head.name,
                probabilities=dict(reading.ranked()),
                history_events=request.interactions.n_events,
                reasons=[IntentReason(**r.to_dict()) for r in reading.reasons],
            )

    @router.get("/v1/users/{user_id}/profile", response_model=Profile, tags=["users"])
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
        with suppress(NotEnoughData):  # an empty store: the user has no events either (404 below)
            detector = service.anomalies()[0]
        if service.model is not None:
            with suppress(NotEnoughData):  # too few or too uniform users to segment: no segment
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

    if service.model is not None:

        @router.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, tags=["users"])
        def recommendations(
            user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
            _: Annotated[ApiKey, Depends(authorize("read"))],
            k: Annotated[int, Query(ge=1, le=config.max_k)] = 10,
        ) -> Recommendations:
            """Top-``k`` next items from the user's latest events (a posted event counts at once)."""
            model = service.model
            n_read, request = service.request_history(user_id, model)
            recs = model.recommend_one(request.interactions, k=k)
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

        @router.get("/v1/users/{user_id}/explanation", response_model=Explanation, tags=["users"])
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

            @router.get("/v1/users/{user_id}/explanation/words", response_model=IntentInWords, tags=["users"])
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
                except NotEnoughData:
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

            @router.post("/v1/users/{user_id}/questions", response_model=AnswerOut, tags=["users"])
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
                        service.llm(),
                        UserContext(store, stored, model=service.model, intent_model=service.intent_model),
                        body.question,
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

    return router
