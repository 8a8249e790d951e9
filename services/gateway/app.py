"""The gateway's ASGI app: OpenAI's HTTP API over the platform. One `Gateway` (state.py) holds the clients every
route shares (the async model worker client, the jobs client, the gateway's tables); routes get it and the caller's
tenant through FastAPI dependencies (deps.py). This module includes the routers; none of them imports it.

It serves from the start whatever is up: ready once its database answers (migrated then) and a model worker does
(which names the model), checked again now and then (foundation/readiness.py). `/livez` answers 200 while
the process runs; `/readyz` (and `/healthz`) 200 when ready, else 503 naming what it waits for; until ready, /v1
requests are refused 503 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import math
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import generate_latest

from foundation.auth import load_api_keys
from foundation.clients.jobs import JobsClient
from foundation.limits import TokenRates
from foundation.mode_policy import load_policy
from foundation.readiness import Readiness
from foundation.sql import make_engine, sessions
from services.gateway import batches, chat, completions, errors, messages, model_list, responses
from services.gateway.bounds import BodyLimit
from services.gateway.settings import GatewaySettings
from services.gateway.state import Gateway

UNPROBED = ("/livez", "/readyz", "/healthz", "/metrics")  # no trace spans for probes and scrapes


def create_app(gw: Gateway) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        gw.connect()  # grpc.aio channels belong to the loop that serves
        s = gw.settings
        gw.readiness = Readiness("gateway", gw.dependencies(asyncio.get_running_loop()),
                                 retry_max_s=s.dependency_retry_max_seconds, check_every_s=s.dependency_check_seconds)
        # Its first round before the app takes connections: with everything up, the gateway starts ready.
        await asyncio.to_thread(gw.readiness.start)
        yield
        gw.readiness.stop()
        for client in gw.workers.clients.values():
            await client.close()
        gw.workers.registry.close()

    app = FastAPI(title="DeepSeek-V4 platform gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gateway = gw
    errors.install(app)
    # A server span per request (continuing a `traceparent` header), current while its route runs: the worker and
    # jobs calls it makes are its children. Probes and scrapes get none; ASGI send/receive spans are noise.
    FastAPIInstrumentor.instrument_app(app, excluded_urls=",".join(UNPROBED), exclude_spans=["receive", "send"])

    # Added before (so inside) the metrics middleware: a BaseHTTPMiddleware reads the body in a task group, which
    # would turn the limit's refusal into an ExceptionGroup that FastAPI answers as a generic 400.
    app.add_middleware(BodyLimit, settings=gw.settings)

    @app.middleware("http")
    async def refuse_until_ready(request: Request, call_next):
        if request.url.path.startswith("/v1/") and gw.readiness.refusing:
            return errors.response(gw.not_ready(), request.url.path)
        return await call_next(request)

    @app.middleware("http")
    async def count(request: Request, call_next):
        route = request.url.path.split("/")[2] if request.url.path.startswith("/v1/") else request.url.path
        with gw.metrics.seconds.labels(route).time():
            result = await call_next(request)
        gw.metrics.requests.labels(route, str(result.status_code)).inc()
        return result

    # The probes' routes; the newer two stay out of the API's OpenAPI document (which /healthz already speaks for).
    @app.get("/livez", include_in_schema=False)
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz", include_in_schema=False)
    @app.get("/healthz")
    async def readyz() -> JSONResponse:
        if gw.readiness.ready:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "waiting_for": gw.readiness.missing()}, 503,
                            headers={"Retry-After": str(math.ceil(gw.readiness.retry_after_s()))})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type="text/plain; version=0.0.4")

    for module in (model_list, chat, completions, messages, responses, batches):
        app.include_router(module.router, prefix="/v1")
    return app


def build(settings: GatewaySettings) -> Gateway:
    """The gateway's parts from its settings; nothing here reaches the database or a worker (readiness does)."""
    jobs = None
    if settings.jobs_target:
        jobs = JobsClient(settings.jobs_target, api_key=settings.jobs_api_key, tls_ca=settings.jobs_tls_ca,
                          tls_cert=settings.jobs_tls_cert, tls_key=settings.jobs_tls_key)
    keys = load_api_keys(settings.api_keys_file)
    rates = TokenRates(settings.tokens_per_second_per_tenant) if settings.tokens_per_second_per_tenant else None
    Path(settings.files_dir).mkdir(parents=True, exist_ok=True)
    policy = load_policy(settings.mode_policy) if settings.mode_policy else None
    return Gateway(settings, jobs, sessions(make_engine(settings.database_url)), keys, settings.model_name or "", rates,
                   mode_policy=policy)
