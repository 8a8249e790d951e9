"""Start-up in any order. A service serves from its first second whatever is up around it, and says whether the
dependencies it cannot work without (its database, its broker, a model worker) answer. Until they all do it is not
ready: its health says so (NOT_SERVING, or 503), its calls are refused UNAVAILABLE with a retry-after, and a thread
keeps trying them with a backoff (doubling from FIRST_RETRY_S, capped), logging each failure. Once ready it checks
them again now and then, so a lost one makes it not ready until it answers again. Nothing here ends the process: a
database that is late is an operator's wait, not a crash loop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings

log = logging.getLogger(__name__)


class ReadinessSettings(BaseSettings):
    """How a service waits for its dependencies (under its own prefix: `DSV4_GATEWAY_DEPENDENCY_CHECK_SECONDS`, ...)."""

    dependency_retry_max_seconds: float = Field(15.0, gt=0, description="longest wait between attempts to reach "
                                                "this service's dependencies (its database; the broker, a model "
                                                "worker or the registry where it needs them) while they do not "
                                                "answer; the wait doubles from 0.25 s up to this. Until they "
                                                "answer, health says not ready and calls are refused UNAVAILABLE "
                                                "(503 at the gateway)")
    dependency_check_seconds: float = Field(10.0, gt=0, description="how often the dependencies are checked once "
                                            "they answer; one lost makes the service not ready again")

FIRST_RETRY_S = 0.25
_MAX_DOUBLINGS = 16  # the cap is reached long before; this keeps the product a finite float however long it lasts
_ERROR_CHARS = 300


@dataclass(frozen=True)
class Dependency:
    """Something a service cannot work without. `check` raises while it does not answer; `prepare` (the database's
    migrations) runs instead of `check` until it has succeeded once, so it runs as soon as the dependency answers."""

    name: str
    check: Callable[[], object]
    prepare: Callable[[], object] | None = None


class Readiness:
    """Whether `what` (a service, as its log lines name it) is ready: every dependency answered at the last round."""

    def __init__(self, what: str, dependencies: Sequence[Dependency], *, retry_max_s: float = 15.0,
                 check_every_s: float = 10.0) -> None:
        if retry_max_s <= 0 or check_every_s <= 0:
            raise ValueError("retry_max_s and check_every_s must be positive")
        self.what, self.dependencies = what, list(dependencies)
        self.retry_max_s, self.check_every_s = retry_max_s, check_every_s
        self._watchers: list[Callable[[bool], None]] = []
        self._prepared: set[str] = set()
        self._missing = [dependency.name for dependency in self.dependencies]  # nothing checked yet
        self._ready, self._failed_rounds = False, 0
        self._next_round_at = time.monotonic()
        self._lock = threading.Lock()
        self._stopping, self._first_round = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def refusing(self) -> bool:
        """Whether calls are refused: not ready, other than by leaving (a draining service still answers what its
        callers need to finish: an attach, a decision, a cancel)."""
        return not self._ready and not self._stopping.is_set()

    def watch(self, on_change: Callable[[bool], None]) -> None:
        """Call `on_change(ready)` at every change (health follows it so)."""
        self._watchers.append(on_change)

    def missing(self) -> list[str]:
        """The dependencies that did not answer at the last round (all of them before the first)."""
        with self._lock:
            return list(self._missing)

    def retry_after_s(self) -> float:
        """What a refused caller is told to wait: until the next round, at least a second."""
        return max(1.0, self._next_round_at - time.monotonic())

    def refusal(self) -> str:
        """Why a call is refused: the dependencies by name only (their errors, which may name hosts, are logged)."""
        return f"the {self.what} is not ready: waiting for {', '.join(self.missing()) or 'its first check'}"

    def probe(self) -> float:
        """One round over every dependency; returns the seconds until the next."""
        errors: dict[str, BaseException] = {}
        for dependency in self.dependencies:
            try:
                if dependency.prepare is not None and dependency.name not in self._prepared:
                    dependency.prepare()
                    self._prepared.add(dependency.name)
                else:
                    dependency.check()
            except Exception as error:  # noqa: BLE001 - however it fails, it does not answer yet
                errors[dependency.name] = error
        ready = not errors
        self._failed_rounds = 0 if ready else self._failed_rounds + 1
        delay = self.check_every_s if ready else min(
            self.retry_max_s, FIRST_RETRY_S * 2 ** min(self._failed_rounds - 1, _MAX_DOUBLINGS))
        with self._lock:
            if self._stopping.is_set():
                return delay
            changed = ready != self._ready
            self._ready, self._missing = ready, list(errors)
            self._next_round_at = time.monotonic() + delay
        for name, error in errors.items():
            log.warning("%s: %s does not answer (%s); trying again in %.3g s", self.what, name, _one_line(error),
                        delay)
        if changed:
            print(f"{self.what} ready" if ready else f"{self.what} not ready: waiting for {', '.join(errors)}",
                  flush=True)
            self._notify(ready)
        return delay

    def start(self, wait_s: float = 10.0) -> Readiness:
        """Rounds on a thread, the first at once. Returns when that one has ended, so a service whose dependencies
        are up starts ready, or after `wait_s`, so one that hangs (a database behind a dropped route) does not hold
        the service's start up."""
        self._thread = threading.Thread(target=self._keep_probing, name="readiness", daemon=True)
        self._thread.start()
        self._first_round.wait(wait_s)
        return self

    def stop(self) -> None:
        """The service is leaving (draining): not ready from now on (health NOT_SERVING), whatever its dependencies
        say; its calls are still answered. Returns at once (a signal handler calls it); a round under way when it is
        called changes nothing."""
        with self._lock:
            self._stopping.set()
            changed, self._ready = self._ready, False
        if changed:
            self._notify(False)

    def until_signalled(self) -> None:
        """Block until SIGTERM or SIGINT, which make the service leave (`stop`): probes and balancers stop sending
        calls while the caller drains what runs."""
        signalled = threading.Event()

        def leave(*_: object) -> None:
            self.stop()
            signalled.set()

        signal.signal(signal.SIGTERM, leave)
        signal.signal(signal.SIGINT, leave)
        signalled.wait()

    def _notify(self, ready: bool) -> None:
        for on_change in self._watchers:
            on_change(ready)

    def _keep_probing(self) -> None:
        delay = 0.0
        while not self._stopping.wait(delay):
            try:
                delay = self.probe()
            except Exception:  # noqa: BLE001 - a watcher that failed; the next round tries again
                log.exception("%s: readiness round failed", self.what)
                delay = self.retry_max_s
            finally:
                self._first_round.set()


def _one_line(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "..."


class RefuseUntilReady(grpc.ServerInterceptor):
    """A server's calls while it is not ready: UNAVAILABLE, saying what it waits for, with a `retry-after` (seconds,
    the platform's trailing metadata for it). Health and reflection are always answered."""

    ALWAYS_ANSWERED = ("/grpc.health.", "/grpc.reflection.")

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not self.readiness.refusing or handler_call_details.method.startswith(
                self.ALWAYS_ANSWERED):
            return handler
        return _refusing(handler, self.readiness)


def _refusing(handler: grpc.RpcMethodHandler, readiness: Readiness) -> grpc.RpcMethodHandler:
    def refuse(_request, context: grpc.ServicerContext):
        context.set_trailing_metadata((("retry-after", f"{readiness.retry_after_s():.1f}"),))
        context.abort(grpc.StatusCode.UNAVAILABLE, readiness.refusal())

    kind = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    return kind[handler.request_streaming, handler.response_streaming](
        refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
