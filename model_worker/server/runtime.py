"""What one worker process serves: the model on its engine thread (the continuous-batching scheduler), the session
tiers (hot in process, then the store, commits written by the commit writer's thread), tenants by API key, and the
one-request-per-session rule. A turn on a session (what it feeds, owes, commits and settles) is turn.py's."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

from foundation.auth import tenant_for
from foundation.chat import Tokenizer
from foundation.limits import TenantLimit, TokenRates
from foundation.registry.records import WorkerRecord
from foundation.wire import DEFAULT_LIMITS, InputLimits
from model_worker.engine import MtpDrafter, Request, Scheduler
from model_worker.model import DeepseekV4
from model_worker.server.telemetry import Metrics
from model_worker.sessions import OpenSession, SessionStore
from model_worker.sessions.archive import ImportLimits
from model_worker.sessions.commits import CommitWriter
from model_worker.sessions.hot import HotSessions
from model_worker.sessions.prefix_cache import CHECKPOINT_EVERY, PrefixCache
from model_worker.state.pages import pools_for
from model_worker.structured import GrammarCompiler


class SessionBusy(RuntimeError):
    """A second concurrent request on one session (FAILED_PRECONDITION)."""


class CommitMismatch(RuntimeError):
    """The session is not at the commit the request expected (FAILED_PRECONDITION): a retried turn already ran."""


class WorkerRuntime:
    def __init__(self, model: DeepseekV4, tokenizer: Tokenizer, store: SessionStore, *, model_name: str = "tiny",
                 api_keys: Mapping[str, str] | None = None, default_tenant: str = "default",
                 hot_budget_bytes: int = 4 << 30, token_budget: int = 512, max_running: int = 64,
                 max_waiting: int = 1024, kv_budget_bytes: int | None = None,
                 max_requests_per_tenant: int | None = None, tokens_per_second_per_tenant: float | None = None,
                 speculative: bool = False, constrained_decoding: bool = True,
                 input_limits: InputLimits = DEFAULT_LIMITS,
                 import_limits: ImportLimits = ImportLimits(), max_page_size: int = 1000,
                 commit_queue_bytes: int = 1 << 30, prefix_cache_bytes: int = 1 << 30,
                 prefix_checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self.model, self.tokenizer, self.store, self.model_name = model, tokenizer, store, model_name
        self.limits = input_limits  # what one request may carry (convert.chat_input, convert.sampling)
        self.import_limits, self.max_page_size = import_limits, max_page_size
        self.api_keys, self.default_tenant = dict(api_keys or {}), default_tenant
        self.scheduler = Scheduler(model, tokenizer, token_budget, max_running, max_waiting, kv_budget_bytes,
                                   drafter=MtpDrafter(model) if speculative else None)
        self.grammars = GrammarCompiler(tokenizer, model.config.vocab_size, model.config.eos_token_id)
        self.constrained_decoding = constrained_decoding
        self.max_requests_per_tenant = max_requests_per_tenant
        self.token_rates = TokenRates(tokens_per_second_per_tenant) if tokens_per_second_per_tenant else None
        self._in_flight: dict[str, int] = {}
        self.metrics = Metrics()
        self.metrics.running.set_function(lambda: self.scheduler.load["running"])
        self.metrics.waiting.set_function(lambda: self.scheduler.load["waiting"])
        self.metrics.kv_bytes.labels("hot").set_function(lambda: self.hot.nbytes)
        self.hot = HotSessions(store, hot_budget_bytes)
        self.writer = CommitWriter(store, commit_queue_bytes)
        self.prefixes = PrefixCache(store, prefix_cache_bytes, prefix_checkpoint_every, self.metrics, self.writer)
        self.metrics.kv_bytes.labels("prefix").set_function(lambda: self.prefixes.nbytes)
        pages = pools_for(store.layout, store.device)  # every page once, however many states and checkpoints hold it
        self.metrics.kv_bytes.labels("pages").set_function(pages.nbytes_in_use)
        self.serving = False
        self._busy: set[tuple[str, str]] = set()
        self._busy_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.scheduler.run, args=(self._stop,), name="engine", daemon=True)

    def registry_record(self, address: str) -> tuple[WorkerRecord, list[str]]:
        """This worker as the registry lists it, and the sessions it holds hot."""
        load, hot = self.scheduler.load, self.hot.session_ids()
        return WorkerRecord(address, self.model_name, self.model.fingerprint, load["running"], load["waiting"],
                            self.scheduler.max_running, len(hot), self.hot.nbytes), hot

    def start(self) -> None:
        self._thread.start()
        self.serving = True

    def stop(self) -> None:
        self.serving = False
        self._stop.set()
        self._thread.join(timeout=30)
        self.writer.close()

    def tenant(self, metadata: Mapping[str, str]) -> str:
        """The caller's tenant: from `authorization: Bearer KEY` when keys are configured, else the default."""
        return tenant_for(metadata, self.api_keys, self.default_tenant)

    def submit(self, request: Request) -> None:
        """Hand a request to the engine, its input charged at its tenant's token rate (refunded if the engine
        refuses it)."""
        self.admit_tokens(request.tenant, len(request.prompt_token_ids))
        try:
            self.scheduler.submit(request)
        except BaseException:
            if self.token_rates:
                self.token_rates.charge(request.tenant, -len(request.prompt_token_ids))
            raise

    def admit_tokens(self, tenant: str, tokens: int) -> None:
        """Charge `tokens` of work at the tenant's token rate, or refuse it (RateLimited) while the tenant is short."""
        if self.token_rates:
            self.token_rates.admit(tenant, tokens)

    @contextlib.contextmanager
    def tenant_slot(self, tenant: str) -> Iterator[None]:
        """One of the tenant's concurrent requests, for the duration of any RPC that computes (service.py marks
        them)."""
        with self._busy_lock:
            running = self._in_flight.get(tenant, 0)
            if self.max_requests_per_tenant is not None and running >= self.max_requests_per_tenant:
                raise TenantLimit(f"the tenant already runs {running} requests (its limit)")
            self._in_flight[tenant] = running + 1
        try:
            yield
        finally:
            with self._busy_lock:
                self._in_flight[tenant] -= 1

    @contextlib.contextmanager
    def exclusive(self, tenant: str, session_id: str) -> Iterator[OpenSession]:
        """The session, pinned hot, for one request at a time."""
        key = (tenant, session_id)
        with self._busy_lock:
            if key in self._busy:
                raise SessionBusy(f"session {session_id} is serving another request")
            self._busy.add(key)
        try:
            with self.hot.acquire(tenant, session_id) as session:
                yield session
        finally:
            with self._busy_lock:
                self._busy.discard(key)

    def check_length(self, tokens: int, max_tokens: int | None = None) -> None:
        """A sequence of `tokens` leaves room in the model's context for at least one generated token, and for
        `max_tokens` when given (the scheduler ends any output at the context)."""
        limit = self.model.config.max_seq_len
        if tokens >= limit:
            raise OverflowError(f"{tokens} tokens reach the model's context of {limit}")
        if max_tokens is not None and tokens + max_tokens > limit:
            raise OverflowError(f"max_tokens {max_tokens} is more than the {limit - tokens} tokens the model's "
                                f"context of {limit} leaves after {tokens} tokens")
