"""Worker and jobs status codes become OpenAI's HTTP statuses and error bodies (no processes needed)."""

from __future__ import annotations

import grpc
import pytest

from foundation.clients.worker.errors import ResourceExhausted, WorkerError
from services.gateway import errors


@pytest.mark.parametrize(("code", "status"), [
    (grpc.StatusCode.INVALID_ARGUMENT, 400), (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.PERMISSION_DENIED, 403), (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.FAILED_PRECONDITION, 409), (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.UNAVAILABLE, 503), (grpc.StatusCode.INTERNAL, 502)])
def test_status_codes(code, status):
    assert errors.from_worker(WorkerError("details", code=code)).status == status


def test_rate_limits_carry_retry_after_and_an_openai_body():
    failure = errors.from_worker(ResourceExhausted("over the tenant's rate", metadata={"retry-after": "2.4"}))
    reply = errors.response(failure)
    assert reply.status_code == 429 and reply.headers["retry-after"] == "3"  # rounded up: not refused again
    assert reply.body.startswith(b'{"error":{"message":"over the tenant\'s rate","type":"rate_limit_error"')


def test_a_full_disk_is_507_and_any_other_os_error_stays_a_bug():
    import asyncio
    import errno

    from fastapi import FastAPI

    app = FastAPI()
    errors.install(app)
    handler = app.exception_handlers[OSError]
    for number in (errno.ENOSPC, errno.EDQUOT):
        reply = asyncio.run(handler(None, OSError(number, "No space left on device")))
        assert reply.status_code == 507 and b'"code":"storage_full"' in reply.body
    with pytest.raises(PermissionError):  # not the client's doing nor a full disk: a 500, logged
        asyncio.run(handler(None, PermissionError(errno.EACCES, "denied")))
