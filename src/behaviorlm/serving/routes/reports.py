"""Routes for the configured population reports."""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and those refer to the local ``authorize`` dependency.
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from behaviorlm.config import ServiceConfig
from behaviorlm.serving.reports import (
    AuditReportOut,
    EffectsReportOut,
    TargetingReportOut,
)
from behaviorlm.serving.security import ApiKey
from behaviorlm.serving.service import Authorize, Service


def router(service: Service, config: ServiceConfig, authorize: Authorize) -> APIRouter:
    """The routes for the configured population reports."""
    router = APIRouter()

    # Population reports: each endpoint exists only when its file is configured (docs/serving.md).
    if "effects" in service.reports:

        @router.get("/v1/reports/effects", response_model=EffectsReportOut, tags=["reports"])
        def effects_report(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Any:
            """The configured causal-effects report (``behaviorlm effects --json``): the average effect of
            one behaviour on a later one by each method with 95% intervals and refutations, and the effect
            per activity segment (docs/causal-effects.md). Served as written; 503 if the file is unusable."""
            return service.reports["effects"].load()

    if "audit" in service.reports:

        @router.get("/v1/reports/audit", response_model=AuditReportOut, tags=["reports"])
        def audit_report(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Any:
            """The configured bias audit (``behaviorlm audit --json``): recommendation quality per user group
            with bootstrap intervals, the gap between best and worst group, and popularity bias
            (docs/audit.md). Served as written; 503 if the file is unusable."""
            return service.reports["audit"].load()

    if "targeting" in service.reports:

        @router.get("/v1/reports/targeting", response_model=TargetingReportOut, tags=["reports"])
        def targeting_report(_: Annotated[ApiKey, Depends(authorize("read"))]) -> Any:
            """The configured targeting comparison (``TargetingComparison.to_dict``): uplift, propensity and
            random targeting on held-out users of a campaign, with AUUC, Qini coefficient, incremental
            conversions per budget and the Qini and uplift curves (docs/marketing.md). Served as written;
            503 if the file is unusable."""
            return service.reports["targeting"].load()

    return router
