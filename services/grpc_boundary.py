"""What every RPC of a service that stores what it is sent (the jobs service, the agent service) does around its own
work: the request is checked storable (services/storable.py) before the method sees it, and typed errors become
status codes as on the model worker (model_worker/server/errors.py)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import grpc

from model_worker.server.errors import error_codes
from services.storable import check_message


def storing_rpc(extra: Sequence[tuple[type[BaseException], grpc.StatusCode]] = ()):
    """A servicer-method decorator (unary or server-streaming): `check_message` on the request first (Unstorable is
    INVALID_ARGUMENT), then the method, its errors mapped by `error_codes(extra)`."""
    codes = error_codes(extra)

    def decorate(method):
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def streaming(self, request, context):
                yield from method(self, check_message(request), context)
            return codes(streaming)

        @functools.wraps(method)
        def unary(self, request, context):
            return method(self, check_message(request), context)
        return codes(unary)

    return decorate
