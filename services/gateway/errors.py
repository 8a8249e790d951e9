"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status OpenAI uses (under
/v1/messages Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, with the same statuses); worker
and jobs errors keep their meaning (NOT_FOUND is 404, RESOURCE_EXHAUSTED 429 with Retry-After, UNAVAILABLE 503); a
rate limit is 429 with Retry-After whether the gateway's own bucket or a worker's refused; a client's mistake is never
500."""

from __future__ import annotations

import logging
import math

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from foundation.auth import Forbidden, Unauthenticated
from foundation.clients.worker.errors import WorkerError
from foundation.errors import out_of_space
from foundation.limits import RateLimited
from foundation.sql import UNREACHABLE

log = logging.getLogger(__name__)

_HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
         grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409,
         grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
         grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
         grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNIMPLEMENTED: 501}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 501: "not_implemented_error"}

ANTHROPIC_PATH = "/v1/messages"
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 409: "invalid_request_error",
                    413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error"}


class ApiError(HTTPException):
    """An error answered in OpenAI's shape. An HTTPException, so that one raised while FastAPI reads a request's body
    (past its size or depth bound) keeps its status rather than becoming FastAPI's generic 400."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(status, message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after


def body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def anthropic_body(status: int, message: str) -> dict:
    """Anthropic's error shape, for the requests under /v1/messages."""
    kind = _ANTHROPIC_TYPES.get(status, "overloaded_error" if status in (503, 529) else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def response(error: ApiError, path: str = "") -> JSONResponse:
    """The error's response, in Anthropic's shape for a request under ANTHROPIC_PATH, else OpenAI's."""
    # Whole seconds, rounded up: a client that waits as told is not refused again for being early.
    headers = {"Retry-After": f"{max(1, math.ceil(error.retry_after))}"} if error.retry_after is not None else None
    shaped = anthropic_body(error.status, error.message) if f"{path}/".startswith(f"{ANTHROPIC_PATH}/") \
        else body(error.status, error.message, error.param, error.code)
    return JSONResponse(shaped, error.status, headers=headers)


def from_worker(error: WorkerError) -> ApiError:
    """The worker's or the jobs service's status as the client's HTTP error. A status of the client's own request
    keeps its details; a fault upstream (INTERNAL, UNKNOWN, DATA_LOSS...: a 502) is only named to the client, its
    details (a stack's message, SQL) logged here, never passed on."""
    status = _HTTP.get(error.code, 502)
    retry = getattr(error, "retry_after", None)  # a ResourceExhausted's, from the worker's `retry-after` metadata
    if retry is None and status in (429, 503):
        retry = _seconds(error.metadata.get("retry-after")) or 1.0
    code = error.code.name.lower()
    if status == 502:
        log.error("upstream %s: %s", error.code.name, error.details)
        return ApiError(502, f"an upstream service failed ({error.code.name}); the gateway's log has the details",
                        code=code)
    return ApiError(status, error.details or error.code.name, code=code, retry_after=retry)


def _seconds(value: object) -> float | None:
    try:
        return float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        return None


def _shaped(request: Request | None, error: ApiError) -> JSONResponse:
    return response(error, request.url.path if request is not None else "")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _shaped(request, error)

    @app.exception_handler(WorkerError)
    async def worker_error(request: Request, error: WorkerError) -> JSONResponse:
        return _shaped(request, from_worker(error))

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, error: Unauthenticated) -> JSONResponse:
        return _shaped(request, ApiError(401, str(error), code="invalid_api_key"))

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> JSONResponse:
        return _shaped(request, ApiError(403, str(error), code="permission_denied"))

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, error: RateLimited) -> JSONResponse:
        return _shaped(request, ApiError(429, str(error), code="rate_limit_exceeded", retry_after=error.retry_after))

    async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
        log.warning("the database does not answer: %s", error)  # names hosts: the log only
        return _shaped(request, ApiError(503, "the gateway's database does not answer; try again",
                                 code="service_unavailable", retry_after=5.0))

    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, database_unavailable)

    @app.exception_handler(OSError)
    async def os_error(request: Request, error: OSError) -> JSONResponse:
        if not out_of_space(error):
            raise error  # a bug: 500, logged
        log.error("out of space: %s", error)
        return _shaped(request, ApiError(507, "the gateway's storage is full; nothing was stored",
                                         code="storage_full"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        """Starlette's own (no such route, method not allowed, a form it cannot parse) in OpenAI's shape."""
        reply = _shaped(request, ApiError(error.status_code, str(error.detail)))
        reply.headers.update(error.headers or {})
        return reply

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "JSON decode error")
            return _shaped(request, ApiError(400, f"body: not JSON ({reason}) at byte {first['loc'][-1]}"))
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = first.get("msg", "invalid request").removeprefix("Value error, ")  # a validator's own ValueError
        return _shaped(request, ApiError(400, f"{where or 'body'}: {message}", param=where))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, error: ValueError) -> JSONResponse:
        return _shaped(request, ApiError(400, str(error)))
