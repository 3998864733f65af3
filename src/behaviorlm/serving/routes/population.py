"""Routes for all users: anomalies and behaviour segments."""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and those refer to the local ``authorize`` dependency.
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from behaviorlm.config import ServiceConfig
from behaviorlm.serving.schemas import (
    MAX_ID,
    Anomalies,
    AnomalousUser,
    AnomalyReasonOut,
    Segments,
)
from behaviorlm.serving.security import ApiKey
from behaviorlm.serving.service import Authorize, Service


def router(service: Service, config: ServiceConfig, authorize: Authorize) -> APIRouter:
    """The routes for all users: anomalies and behaviour segments."""
    router = APIRouter()

    @router.get("/v1/anomalies", response_model=Anomalies, tags=["users"])
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

    if service.model is not None:

        @router.get("/v1/segments", response_model=Segments, tags=["users"])
        def segments(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Segments:
            """Users grouped by behaviour (k-means over the model's user states, k by silhouette), with
            size, recency, activity, conversion and over-represented item attributes per segment.
            Computed from the whole store and reused for ``segment_refresh_seconds``."""
            return service.segments().answer

        @router.get(
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

    return router
