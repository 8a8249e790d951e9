"""The gateway's ASGI app: OpenAI's HTTP API over the platform. One `Gateway` holds the clients every route shares
(the async model worker client, the jobs client, the gateway's tables); routes get it and the caller's tenant through
FastAPI dependencies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy.orm import sessionmaker

from model_worker import tenancy
from model_worker.client import AsyncWorkerClient, Unavailable
from model_worker.registry import WorkerPool
from model_worker.server.auth import load_api_keys, tenant_for
from model_worker.server.limits import TokenRates
from services.gateway import errors
from services.gateway.settings import GatewaySettings
from services.jobs.client import JobsClient


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

    def connect(self) -> None:
        self.workers = WorkerPool.open(self.settings.worker_registry, self.settings.workers,
                                       lambda a: AsyncWorkerClient(a, api_key=self.settings.worker_api_key))

    def pick(self) -> str:
        """The worker a new session or a stateless request goes to: the least loaded."""
        return self.workers.route()

    def place(self, session_id: str, hint: str) -> str:
        """The worker a stored conversation's session goes to: where it is hot, else another that resumes it."""
        return self.workers.route(session_id, hint=hint)

    def worker(self, address: str | None = None) -> AsyncWorkerClient:
        return self.workers.client(address or self.pick())

    async def model_info(self, timeout: float = 30):
        """The model's description from any live worker."""
        return await self._on_any_worker(lambda client: client.model_info(timeout=timeout))

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
        if not gw.model_name:
            gw.model_name = (await gw.model_info()).model
        yield
        for client in gw.workers.clients.values():
            await client.close()
        gw.workers.registry.close()

    app = FastAPI(title="DeepSeek-V4 platform gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gateway = gw
    errors.install(app)
    # A server span per request (continuing a `traceparent` header), current while its route runs: the worker and
    # jobs calls it makes are its children. Probes and scrapes get none; ASGI send/receive spans are noise.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/healthz,/metrics", exclude_spans=["receive", "send"])

    # Added before (so inside) the metrics middleware: a BaseHTTPMiddleware reads the body in a task group, which
    # would turn the limit's refusal into an ExceptionGroup that FastAPI answers as a generic 400.
    app.add_middleware(BodyLimit, settings=gw.settings)

    @app.middleware("http")
    async def count(request: Request, call_next):
        route = request.url.path.split("/")[2] if request.url.path.startswith("/v1/") else request.url.path
        with gw.metrics.seconds.labels(route).time():
            result = await call_next(request)
        gw.metrics.requests.labels(route, str(result.status_code)).inc()
        return result

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            await gw.model_info(timeout=5)
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "unavailable", "error": str(error)}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type="text/plain; version=0.0.4")

    for module in (models, chat, responses, batches):
        app.include_router(module.router, prefix="/v1")
    return app


def build(settings: GatewaySettings) -> Gateway:
    """The gateway's parts from its settings (tables migrated, clients connected)."""
    from services.gateway.store import upgrade
    from services.sql import make_engine, sessions

    upgrade(settings.database_url)
    jobs = JobsClient(settings.jobs_target, api_key=settings.jobs_api_key) if settings.jobs_target else None
    keys = load_api_keys(settings.api_keys_file)
    rates = TokenRates(settings.tokens_per_second_per_tenant) if settings.tokens_per_second_per_tenant else None
    Path(settings.files_dir).mkdir(parents=True, exist_ok=True)
    return Gateway(settings, jobs, sessions(make_engine(settings.database_url)), keys, settings.model_name or "", rates)
