"""The gateway's ASGI app: OpenAI's HTTP API over the platform. One `Gateway` holds the clients every route shares
(the async model worker client, the jobs client, the gateway's tables); routes get it and the caller's tenant through
FastAPI dependencies.

It serves from the start whatever is up: ready once its database answers (migrated then) and a model worker does
(which names the model), checked again now and then (model_worker/server/readiness.py). `/livez` answers 200 while
the process runs; `/readyz` (and `/healthz`) 200 when ready, else 503 naming what it waits for; until ready, /v1
requests are refused 503 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from model_worker import tenancy
from model_worker.client import AsyncWorkerClient, Unavailable
from model_worker.client.policy import worker_tls
from model_worker.registry import NoWorker, WorkerPool
from model_worker.server.auth import load_api_keys, tenant_for
from model_worker.server.limits import TokenRates
from model_worker.server.readiness import Dependency, Readiness
from services.gateway import errors
from services.gateway.settings import GatewaySettings
from services.jobs.client import JobsClient

PROBE_TIMEOUT_S = 5.0
UNPROBED = ("/livez", "/readyz", "/healthz", "/metrics")  # no trace spans for probes and scrapes


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.seconds = Histogram("gateway_request_seconds", "time to the response's first byte", ["route"],
                                 registry=self.registry)
        self.tokens = Counter("gateway_tokens", "tokens by kind (prompt, cached, completion)", ["kind"],
                              registry=self.registry)


@dataclass
class Gateway:
    settings: GatewaySettings
    jobs: JobsClient | None
    db: sessionmaker
    api_keys: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    rates: TokenRates | None = None
    metrics: Metrics = field(default_factory=Metrics)
    in_flight: dict[str, int] = field(default_factory=dict)
    workers: WorkerPool[AsyncWorkerClient] | None = None  # connected on the app's event loop
    readiness: Readiness | None = None  # made on the app's event loop too: a worker's answer is awaited there

    def connect(self) -> None:
        tls = worker_tls(self.settings)
        self.workers = WorkerPool.open(self.settings.worker_registry, self.settings.workers,
                                       lambda a: AsyncWorkerClient(a, api_key=self.settings.worker_api_key, **tls))

    def pick(self) -> str:
        """The worker a new session or a stateless request goes to: the least loaded."""
        return self.workers.route()

    def place(self, session_id: str, hint: str) -> str:
        """The worker a stored conversation's session goes to: where it is hot, else another that resumes it."""
        return self.workers.route(session_id, hint=hint)

    def worker(self, address: str | None = None) -> AsyncWorkerClient:
        return self.workers.client(address or self.pick())

    def dependencies(self, loop: asyncio.AbstractEventLoop) -> list[Dependency]:
        """The database (migrated when it first answers) and a model worker, checked from the readiness thread; the
        worker through `loop`, where its client lives."""
        from services.gateway.store import upgrade

        def database() -> None:
            with self.db() as session:
                session.execute(text("SELECT 1"))

        def model_worker() -> None:
            asyncio.run_coroutine_threadsafe(self.learn_model(), loop).result(timeout=PROBE_TIMEOUT_S * 2)

        return [Dependency("database", database, prepare=lambda: upgrade(self.settings.database_url)),
                Dependency("model worker", model_worker)]

    async def learn_model(self) -> None:
        """Ask every listed worker in turn, down to the first that answers (those this process last found down
        too: a worker coming back is seen before its cooldown ends); the model's name comes from its answer,
        unless configured."""
        failure: Unavailable = NoWorker("no model worker is listed")
        for record in self.workers.registry.workers():
            try:
                info = await self.workers.client(record.address).model_info(timeout=PROBE_TIMEOUT_S)
            except Unavailable as error:
                failure = error
                continue
            self.model_name = self.model_name or info.model
            return
        raise failure

    def not_ready(self) -> errors.ApiError:
        return errors.ApiError(503, self.readiness.refusal(), code="not_ready",
                               retry_after=self.readiness.retry_after_s())

    async def start_stateless(self, **arguments) -> tuple[AsyncIterator, object]:
        """A generation that needs no session, on the least loaded worker: its stream and its first event."""
        async def start(client: AsyncWorkerClient):
            events = client.generate(**arguments)
            return events, await first_event(events)

        return await self._on_any_worker(start)

    async def _on_any_worker(self, call: Callable[[AsyncWorkerClient], Awaitable]):
        """`call` on the least loaded live worker; one that is unreachable (before anything ran there) is skipped
        for the next."""
        tried: set[str] = set()
        while True:
            address = self.workers.route(exclude=tried)
            try:
                return await call(self.workers.client(address))
            except Unavailable:
                self.workers.lost(address)
                tried.add(address)

    def check_model(self, model: str, param: str = "model") -> None:
        if model != self.model_name:
            raise errors.ApiError(404, f"the model {model!r} does not exist; this gateway serves {self.model_name!r}",
                                  param=param, code="model_not_found")

    def need_jobs(self) -> JobsClient:
        if self.jobs is None:
            raise errors.ApiError(503, "this gateway has no jobs service (DSV4_GATEWAY_JOBS_TARGET)",
                                  code="jobs_unavailable", retry_after=30)
        return self.jobs

    def count_usage(self, tenant: str, usage) -> None:
        """A finished generation's tokens: in the metrics, and charged to the tenant's rate."""
        for kind, tokens in (("prompt", usage.prompt_tokens), ("cached", usage.reused_tokens),
                             ("completion", usage.completion_tokens)):
            self.metrics.tokens.labels(kind).inc(tokens)
        if self.rates is not None:
            self.rates.charge(tenant, usage.completion_tokens)

    def acquire(self, tenant: str) -> None:
        """One of the tenant's generations running at once, within its limit (release it when it ends)."""
        limit = self.settings.max_requests_per_tenant
        if limit is not None and self.in_flight.get(tenant, 0) >= limit:
            raise errors.ApiError(429, f"tenant {tenant} runs {limit} requests at once, its limit",
                                  code="too_many_requests", retry_after=1)
        self.in_flight[tenant] = self.in_flight.get(tenant, 0) + 1

    def release(self, tenant: str) -> None:
        self.in_flight[tenant] -= 1

    @contextlib.contextmanager
    def slot(self, tenant: str):
        self.acquire(tenant)
        try:
            yield
        finally:
            self.release(tenant)


async def first_event(events):
    """A generation's first event, awaited before a streamed response starts: errors up to there (bad input,
    overload) answer with an HTTP status instead of breaking a stream already sent as 200."""
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        raise errors.ApiError(502, "the model worker ended the stream without a reply") from None


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def tenant(request: Request, gw: Annotated[Gateway, Depends(gateway)]) -> str:
    """The caller's tenant; every call the request makes to the workers and the jobs service acts for it. (An async
    dependency runs in the request's own task, so the tenant set here holds for the endpoint, its stream and the
    threads it hands work to, and goes with the task.)"""
    caller = tenant_for(request.headers, gw.api_keys)
    tenancy.act_for(caller)
    return caller


GatewayDep = Annotated[Gateway, Depends(gateway)]
TenantDep = Annotated[str, Depends(tenant)]


def create_app(gw: Gateway) -> FastAPI:
    from services.gateway import batches, chat, models, responses
    from services.gateway.bounds import BodyLimit

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
            return errors.response(gw.not_ready())
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

    for module in (models, chat, responses, batches):
        app.include_router(module.router, prefix="/v1")
    return app


def build(settings: GatewaySettings) -> Gateway:
    """The gateway's parts from its settings; nothing here reaches the database or a worker (readiness does)."""
    from services.sql import make_engine, sessions

    jobs = None
    if settings.jobs_target:
        jobs = JobsClient(settings.jobs_target, api_key=settings.jobs_api_key, tls_ca=settings.jobs_tls_ca,
                          tls_cert=settings.jobs_tls_cert, tls_key=settings.jobs_tls_key)
    keys = load_api_keys(settings.api_keys_file)
    rates = TokenRates(settings.tokens_per_second_per_tenant) if settings.tokens_per_second_per_tenant else None
    Path(settings.files_dir).mkdir(parents=True, exist_ok=True)
    return Gateway(settings, jobs, sessions(make_engine(settings.database_url)), keys, settings.model_name or "", rates)
