"""Routes for health, metrics and model reload."""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and those refer to the local ``authorize`` dependency.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import PlainTextResponse

from behaviorlm import __version__
from behaviorlm.config import ServiceConfig
from behaviorlm.models.window import read_window
from behaviorlm.serving.history import HistoryCache
from behaviorlm.serving.schemas import Health
from behaviorlm.serving.security import ApiKey
from behaviorlm.serving.service import Authorize, Service


def router(service: Service, config: ServiceConfig, authorize: Authorize) -> APIRouter:
    """The routes for health, metrics and model reload."""
    router = APIRouter()

    @router.get("/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        return Health(
            status="ok",
            version=__version__,
            model_loaded=service.model is not None,
            explanations_in_words=service.model is not None and config.llm is not None,
            reports=sorted(service.reports),
            intent_model=service.intent_model.name if service.intent_model is not None else None,
            serving_copy=service.serving_choice.to_dict() if service.serving_choice else None,
        )

    @router.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def metrics() -> str:
        """Prometheus text format."""
        return service.metrics.render()

    if service.model is not None:

        @router.post("/v1/model/reload", tags=["service"])
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

    return router
