"""The REST service: post events, get real-time recommendations — authenticated, rate-limited, bounded.

Thin by design (docs/architecture.md): this module builds the app (middleware, authorization, error
handlers) around :class:`~.service.Service` (the state) and includes one router per resource from
:mod:`behaviorlm.serving.routes`, whose request and response bodies are in :mod:`.schemas`. Each endpoint
parses, authorizes and calls the library —
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
import hashlib
import hmac
import logging
import math
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from behaviorlm import __version__
from behaviorlm.config import ServiceConfig
from behaviorlm.data.store import StoreError
from behaviorlm.serving.dashboard import mount_dashboard
from behaviorlm.serving.reports import ReportUnavailable
from behaviorlm.serving.routes import events, population, reports, system, users
from behaviorlm.serving.security import ApiKey
from behaviorlm.serving.service import NotEnoughData, Service

log = logging.getLogger("behaviorlm.serving")


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
    service = Service(config)

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

    @app.exception_handler(NotEnoughData)
    async def not_enough_data(request: Request, exc: NotEnoughData) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    for build in (system.router, events.router, users.router, population.router, reports.router):
        app.include_router(build(service, config, authorize))
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
