"""Routes for stats and posted events."""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and those refer to the local ``authorize`` dependency.
import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from behaviorlm.config import ServiceConfig
from behaviorlm.data.ingest import IngestError
from behaviorlm.data.pseudonyms import pseudonymize_user_id
from behaviorlm.data.store import StoreError
from behaviorlm.serving.schemas import (
    EventBatch,
    IngestResult,
    QuarantinedEvent,
)
from behaviorlm.serving.security import ApiKey
from behaviorlm.serving.service import Authorize, Service


def router(service: Service, config: ServiceConfig, authorize: Authorize) -> APIRouter:
    """The routes for stats and posted events."""
    router = APIRouter()

    @router.get("/v1/stats", tags=["events"])
    def stats(_: Annotated[ApiKey, Depends(authorize("read"))]) -> dict[str, Any]:
        """Table sizes, event-type counts, time range and quarantine reasons of the event store."""
        return service.reader().stats()

    @router.post("/v1/events", response_model=IngestResult, tags=["events"])
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
            service.forget_store_now()
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

    return router
