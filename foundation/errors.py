"""Typed errors to gRPC status codes, in one place: bad input gets a clear INVALID_ARGUMENT and the server keeps
serving; nothing escapes as UNKNOWN except a real bug (INTERNAL, logged). The table here holds the errors every
service shares; a service adds its own (the worker's sessions and engine: `model_worker.server.errors`) as `extra`,
ahead of these."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import grpc

from foundation.auth import Forbidden, Unauthenticated
from foundation.chat import ChatFormatError
from foundation.clients.worker.errors import WorkerError
from foundation.limits import RateLimited, TenantLimit
from foundation.sampling import InvalidSamplingParams

log = logging.getLogger(__name__)

ErrorTable = Sequence[tuple[type[BaseException], grpc.StatusCode]]

# Most specific first: the first matching class decides.
_CODES: ErrorTable = [
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (ConnectionError, grpc.StatusCode.UNAVAILABLE),  # a store or database that does not answer: try again
    (TenantLimit, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OverflowError, grpc.StatusCode.OUT_OF_RANGE),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
    (InvalidSamplingParams, grpc.StatusCode.INVALID_ARGUMENT),
    (ChatFormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
]
# A write refused for want of space (a full disk, a filesystem quota; the stores report a full Redis the same way).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def status_of(error: BaseException, extra: ErrorTable = ()) -> grpc.StatusCode:
    if isinstance(error, WorkerError):  # a service calling a worker passes the worker's status on
        return error.code
    if out_of_space(error):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return next((code for kind, code in (*extra, *_CODES) if isinstance(error, kind)), grpc.StatusCode.INTERNAL)


def out_of_space(error: BaseException | None) -> bool:
    """Whether the error, or one it was raised from or while handling, is a store out of space."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _abort(context: grpc.ServicerContext, error: BaseException, extra: ErrorTable = ()) -> None:
    code = status_of(error, extra)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error", exc_info=error)
    # Refusals that pass (a full engine queue, a tenant at its concurrency) carry `retry_after` as a class default.
    wait = getattr(error, "retry_after", None)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and wait is not None:  # a full quota or disk: retrying won't help
        context.set_trailing_metadata((("retry-after", f"{float(wait):.1f}"),))
    if code is grpc.StatusCode.UNAVAILABLE and not (isinstance(error, WorkerError)
                                                    or getattr(error, "message_is_public", False)):
        # A store or database that does not answer: its message names internal hosts, so it goes to the log only.
        log.warning("a dependency does not answer: %s", error)
        context.abort(code, f"{type(error).__name__}: a dependency of this service does not answer; try again")
    context.abort(code, f"{type(error).__name__}: {error}")


def error_codes(extra: ErrorTable = (), *, check: Callable[[Any], Any] | None = None,
                scope: Callable[[Any, grpc.ServicerContext], AbstractContextManager] | None = None):
    """A decorator for servicer methods (unary or server-streaming, over a request or a request stream): typed errors
    become their status codes, a service's own (`extra`) before the common ones. `check(request)` runs first and
    gives the request the method sees; `scope(service, context)` is held around the method (e.g. a tenant's slot).
    Their errors are mapped too."""

    def enter(service, request, context):
        return (check(request) if check else request,
                scope(service, context) if scope else contextlib.nullcontext())

    def decorate(method):
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def streaming(self, request, context):
                try:
                    request, held = enter(self, request, context)
                    with held:
                        yield from method(self, request, context)
                except Exception as error:  # noqa: BLE001 - mapped to a status; context.abort raises
                    _abort(context, error, extra)
            return streaming

        @functools.wraps(method)
        def unary(self, request, context):
            try:
                request, held = enter(self, request, context)
                with held:
                    return method(self, request, context)
            except Exception as error:  # noqa: BLE001 - mapped to a status; context.abort raises
                _abort(context, error, extra)
        return unary

    return decorate
