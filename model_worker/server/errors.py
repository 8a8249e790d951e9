"""Typed errors to gRPC status codes, in one place: bad input gets a clear INVALID_ARGUMENT and the server keeps
serving; nothing escapes as UNKNOWN except a real bug (INTERNAL, logged)."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Sequence

import grpc

from model_worker.chat import ChatFormatError
from model_worker.client.errors import WorkerError
from model_worker.engine import EngineUnavailable, Overloaded
from model_worker.sampling.params import InvalidSamplingParams
from model_worker.server.auth import Unauthenticated
from model_worker.server.limits import RateLimited
from model_worker.server.runtime import CommitMismatch, SessionBusy, TenantLimit
from model_worker.sessions import (
    CorruptSession,
    IncompatibleSession,
    QuotaExceeded,
    SessionExists,
    SessionNotFound,
)

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (SessionExists, grpc.StatusCode.ALREADY_EXISTS),
    (SessionBusy, grpc.StatusCode.FAILED_PRECONDITION),
    (CommitMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (IncompatibleSession, grpc.StatusCode.FAILED_PRECONDITION),
    (CorruptSession, grpc.StatusCode.DATA_LOSS),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineUnavailable, grpc.StatusCode.UNAVAILABLE),
    (TenantLimit, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OverflowError, grpc.StatusCode.OUT_OF_RANGE),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
    (InvalidSamplingParams, grpc.StatusCode.INVALID_ARGUMENT),
    (ChatFormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
]
RETRY_AFTER_SECONDS = "1"


def status_of(error: BaseException, extra: Sequence[tuple[type[BaseException], grpc.StatusCode]] = ()
              ) -> grpc.StatusCode:
    if isinstance(error, WorkerError):  # a service calling a worker passes the worker's status on
        return error.code
    return next((code for kind, code in (*extra, *_CODES) if isinstance(error, kind)), grpc.StatusCode.INTERNAL)


def _abort(context: grpc.ServicerContext, error: BaseException,
           extra: Sequence[tuple[type[BaseException], grpc.StatusCode]] = ()) -> None:
    code = status_of(error, extra)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error", exc_info=error)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        wait = getattr(error, "retry_after", None)
        context.set_trailing_metadata((("retry-after", f"{wait:.1f}" if wait is not None else RETRY_AFTER_SECONDS),))
    context.abort(code, f"{type(error).__name__}: {error}")


def error_codes(extra: Sequence[tuple[type[BaseException], grpc.StatusCode]] = ()):
    """A decorator for servicer methods (unary or server-streaming): typed errors become their status codes, a
    service's own (`extra`) before the common ones."""

    def decorate(method):
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def streaming(self, request, context):
                try:
                    yield from method(self, request, context)
                except Exception as error:  # noqa: BLE001 - mapped to a status; context.abort raises
                    _abort(context, error, extra)
            return streaming

        @functools.wraps(method)
        def unary(self, request, context):
            try:
                return method(self, request, context)
            except Exception as error:  # noqa: BLE001 - mapped to a status; context.abort raises
                _abort(context, error, extra)
        return unary

    return decorate


rpc_errors = error_codes()
