"""What a request may cost the gateway before a route sees it: its body's bytes, counted as they arrive (with a
Content-Length or chunked, a multipart upload too), and its JSON's depth and storable text and numbers, checked as the
body is parsed. Past either it is refused in OpenAI's shape (413, 400) without holding more of it than the bound."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foundation.storable import Unstorable, check_text
from services.gateway import errors
from services.gateway.settings import GatewaySettings
from services.openai_shapes import TooDeep, load_json

UPLOAD_PATH = "/v1/files"
UPLOAD_FORM_BYTES = 1 << 20  # an upload's form fields besides the file (the file itself has max_file_bytes)


class BodyTooLarge(errors.ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes, this gateway's limit",
                         code="request_too_large")


class BodyLimit:
    """ASGI middleware bounding every request body: one whose Content-Length is over the limit is refused before a
    byte is read; otherwise the bytes are counted as the app reads them, and reading stops at the chunk that crosses
    the limit (BodyTooLarge, answered 413 by the app's handler, or here when it escapes before a response)."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app, self.settings = app, settings

    def limit(self, scope: Scope) -> int:
        if scope["path"] == UPLOAD_PATH and scope["method"] == "POST":
            return self.settings.max_file_bytes + UPLOAD_FORM_BYTES
        return self.settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await errors.response(BodyTooLarge(limit), scope["path"])(scope, receive, send)
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as error:
            if started:
                raise
            await errors.response(error, scope["path"])(scope, receive, send)


class BoundedRoute(APIRoute):
    """A route whose JSON body is parsed with its nesting bounded (settings.max_json_depth): deeper JSON, up to JSON
    so deep that the parser's own recursion gives out, is a 400 before pydantic or any serializer walks it. So is a
    body or a query no store could keep (foundation/storable.py: a NUL or an unpaired surrogate in a string, NaN or
    Infinity)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            _check_query(request)
            return await handler(_BoundedRequest(request.scope, request.receive))

        return bounded


def _check_query(request: Request) -> None:
    """Query parameters are held to what a store keeps as a body is (a `%00` is a 400, not a failed SQL query)."""
    for name, value in request.query_params.multi_items():
        try:
            check_text(value, f"query parameter {check_text(name, 'a query parameter name')}")
        except Unstorable as error:
            raise errors.ApiError(400, str(error), code="invalid_value") from None


class _BoundedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            depth = self.app.state.gateway.settings.max_json_depth
            try:
                self._json = load_json(await self.body(), "body", depth)
            except TooDeep as error:
                raise errors.ApiError(400, str(error), code="json_too_deep") from None
            except Unstorable as error:
                raise errors.ApiError(400, str(error), code="invalid_value") from None
        return self._json
