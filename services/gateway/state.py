"""What every route of the gateway shares: the `Gateway` (the async model worker clients, the jobs client, the
gateway's tables, its settings, metrics and per-tenant limits), made once by app.py and reached by routes through the
dependencies in deps.py; and `first_event`, a generation's first event awaited before its response starts.

It sits below app.py and the routers: they import it, it imports neither."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from foundation.chat import Tokenizer, load_tokenizer
from foundation.clients.jobs import JobsClient
from foundation.clients.worker import AsyncWorkerClient, Unavailable
from foundation.clients.worker.policy import worker_tls
from foundation.limits import TokenRates
from foundation.mode_policy import ModePolicy
from foundation.readiness import Dependency, Readiness
from foundation.registry import NoWorker, WorkerPool
from services.gateway import errors
from services.gateway.settings import GatewaySettings
from services.gateway.store import upgrade

PROBE_TIMEOUT_S = 5.0


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
    mode_policy: ModePolicy | None = None  # picks the mode of requests that name no reasoning effort

    def connect(self) -> None:
        tls = worker_tls(self.settings)
        self.workers = WorkerPool.open(self.settings.worker_registry, self.settings.workers,
                                       lambda a: AsyncWorkerClient(a, api_key=self.settings.worker_api_key, **tls))

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, loaded at the first request that needs it (logprobs name their tokens)."""
        return load_tokenizer()

    def pick(self, affinity: str | None = None) -> str:
        """The worker a new session or a stateless request goes to: the one its `affinity` prefers while its load
        allows (WorkerPool.route), else the least loaded."""
        return self.workers.route(affinity=affinity)

    def place(self, session_id: str, hint: str) -> str:
        """The worker a stored conversation's session goes to: where it is hot, else another that resumes it."""
        return self.workers.route(session_id, hint=hint)

    def worker(self, address: str | None = None) -> AsyncWorkerClient:
        return self.workers.client(address or self.pick())

    def dependencies(self, loop: asyncio.AbstractEventLoop) -> list[Dependency]:
        """The database (migrated when it first answers) and a model worker, checked from the readiness thread; the
        worker through `loop`, where its client lives."""
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

    async def start_stateless(self, affinity: str | None = None, **arguments) -> tuple[AsyncIterator, object]:
        """A generation that needs no session, on the worker its `affinity` prefers (WorkerPool.route) or the least
        loaded: its stream and its first event."""
        async def start(client: AsyncWorkerClient):
            events = client.generate(**arguments)
            return events, await first_event(events)

        return await self._on_any_worker(start, affinity)

    async def _on_any_worker(self, call: Callable[[AsyncWorkerClient], Awaitable], affinity: str | None = None):
        """`call` on the worker `affinity` prefers, or the least loaded live worker; one that is unreachable
        (before anything ran there) is skipped for the next."""
        tried: set[str] = set()
        while True:
            address = self.workers.route(affinity=affinity, exclude=tried)
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
                             ("prefilled", usage.prefilled_tokens), ("completion", usage.completion_tokens)):
            self.metrics.tokens.labels(kind).inc(tokens)
        if self.rates is not None:
            self.rates.charge(tenant, usage.completion_tokens)

    def acquire(self, tenant: str, count: int = 1) -> None:
        """`count` of the tenant's generations running at once, within its limit (release them when they end)."""
        limit = self.settings.max_requests_per_tenant
        if limit is not None and self.in_flight.get(tenant, 0) + count > limit:
            raise errors.ApiError(429, f"tenant {tenant} runs {limit} requests at once, its limit",
                                  code="too_many_requests", retry_after=1)
        self.in_flight[tenant] = self.in_flight.get(tenant, 0) + count

    def release(self, tenant: str, count: int = 1) -> None:
        self.in_flight[tenant] -= count

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
