"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status OpenAI uses; worker
and jobs errors keep their meaning (NOT_FOUND is 404, RESOURCE_EXHAUSTED 429 with Retry-After, UNAVAILABLE 503)."""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from model_worker.client.errors import WorkerError
from model_worker.server.auth import Unauthenticated

log = logging.getLogger(__name__)

_HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
         grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409,
         grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
         grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
         grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNIMPLEMENTED: 501}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          409: "conflict_error", 429: "rate_limit_error", 501: "not_implemented_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after


def body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def response(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": f"{max(1, round(error.retry_after))}"} if error.retry_after is not None else None
    return JSONResponse(body(error.status, error.message, error.param, error.code), error.status, headers=headers)


def from_worker(error: WorkerError) -> ApiError:
    status = _HTTP.get(error.code, 502)
    retry = error.metadata.get("retry-after")
    return ApiError(status, error.details or error.code.name, code=error.code.name.lower(),
                    retry_after=float(retry) if retry else (1.0 if status in (429, 503) else None))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return response(error)

    @app.exception_handler(WorkerError)
    async def worker_error(_: Request, error: WorkerError) -> JSONResponse:
        return response(from_worker(error))

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_: Request, error: Unauthenticated) -> JSONResponse:
        return response(ApiError(401, str(error), code="invalid_api_key"))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return response(ApiError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, error: ValueError) -> JSONResponse:
        return response(ApiError(400, str(error)))
