"""The worker's own rows of the error table (`foundation.errors` holds the rows every service shares): sessions and
the engine, most specific first, ahead of the shared rows."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from foundation.errors import ErrorTable, error_codes
from foundation.errors import status_of as shared_status_of
from model_worker.engine import EngineUnavailable, Overloaded
from model_worker.server.runtime import CommitMismatch, SessionBusy
from model_worker.sessions import (
    CorruptSession,
    IncompatibleSession,
    QuotaExceeded,
    SessionExists,
    SessionNotFound,
)
from model_worker.sessions.errors import StoreBehind, TooLarge

WORKER_ERRORS: ErrorTable = [
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (SessionExists, grpc.StatusCode.ALREADY_EXISTS),
    (SessionBusy, grpc.StatusCode.FAILED_PRECONDITION),
    (CommitMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (IncompatibleSession, grpc.StatusCode.FAILED_PRECONDITION),
    (CorruptSession, grpc.StatusCode.DATA_LOSS),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreBehind, grpc.StatusCode.UNAVAILABLE),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
]


def status_of(error: BaseException, extra: ErrorTable = ()) -> grpc.StatusCode:
    return shared_status_of(error, (*extra, *WORKER_ERRORS))


def worker_error_codes(extra: Sequence[tuple[type[BaseException], grpc.StatusCode]] = (), **options):
    """`foundation.errors.error_codes` with the worker's rows."""
    return error_codes((*extra, *WORKER_ERRORS), **options)


rpc_errors = worker_error_codes()
