"""Typed errors for the worker's status codes, so callers catch `NotFound` rather than compare grpc codes. Every
non-OK code has its class; `from_rpc_error` builds one from a failed call (sync or grpc.aio)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc


class WorkerError(Exception):
    """Base of every error the client raises for a failed call: the status `code`, the server's `details` and the
    trailing metadata it sent."""

    CODE = grpc.StatusCode.UNKNOWN

    def __init__(
        self, details: str = "", *, code: grpc.StatusCode | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self.code = code if code is not None else self.CODE
        self.details = details
        self.metadata = dict(metadata or {})
        super().__init__(f"{self.code.name}: {details}" if details else self.code.name)


class Cancelled(WorkerError):
    CODE = grpc.StatusCode.CANCELLED


class Unknown(WorkerError):
    CODE = grpc.StatusCode.UNKNOWN


class InvalidArgument(WorkerError):
    CODE = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(WorkerError):
    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(WorkerError):
    CODE = grpc.StatusCode.NOT_FOUND


class AlreadyExists(WorkerError):
    CODE = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(WorkerError):
    CODE = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(WorkerError):
    """Overloaded or over quota. `retry_after` is the server's hint in seconds (its `retry-after` trailing metadata),
    None when it sent none."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        details: str = "",
        *,
        code: grpc.StatusCode | None = None,
        metadata: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details, code=code, metadata=metadata)
        self.retry_after = retry_after


class FailedPrecondition(WorkerError):
    CODE = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(WorkerError):
    CODE = grpc.StatusCode.ABORTED


class OutOfRange(WorkerError):
    CODE = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(WorkerError):
    CODE = grpc.StatusCode.UNIMPLEMENTED


class Internal(WorkerError):
    CODE = grpc.StatusCode.INTERNAL


class ProtocolError(Internal):
    """The server broke the API's contract (a stream without its final event, arguments that are not a JSON object):
    raised by the client itself, not sent by the server."""


class Unavailable(WorkerError):
    CODE = grpc.StatusCode.UNAVAILABLE


class DataLoss(WorkerError):
    CODE = grpc.StatusCode.DATA_LOSS


class Unauthenticated(WorkerError):
    CODE = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[WorkerError]] = {
    cls.CODE: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def _metadata(pairs: Iterable[tuple[str, Any]] | None) -> dict[str, Any]:
    return {key: value for key, value in pairs or ()}


def _seconds(value: Any) -> float | None:
    """A `retry-after` value in seconds; None for anything else (an HTTP date is not worth guessing at)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def from_rpc_error(error: grpc.RpcError) -> WorkerError:
    """The typed error for a failed call (grpc.RpcError or grpc.aio.AioRpcError)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (error.details() if callable(getattr(error, "details", None)) else None) or ""
    trailing = error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else None
    metadata = _metadata(trailing)
    cls = _BY_CODE.get(code, WorkerError)
    if cls is ResourceExhausted:
        return ResourceExhausted(details, metadata=metadata, retry_after=_seconds(metadata.get("retry-after")))
    return cls(details, code=code, metadata=metadata)
