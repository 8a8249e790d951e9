"""Anthropic's Messages API: `POST /v1/messages` (one stateless generation on a model worker, whole or streamed as
Anthropic's server-sent events) and `POST /v1/messages/count_tokens` (the worker's Tokenize of the same prompt).
The key comes as `x-api-key` (Anthropic's SDKs) or Bearer; errors come in Anthropic's shape (errors.py). The request
mapping is anthropic_types.py's, the response shapes anthropic_shapes.py's."""

from __future__ import annotations

import functools
import secrets
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from foundation.clients.worker import Final
from foundation.clients.worker.errors import WorkerError
from services.gateway import anthropic_shapes as shapes
from services.gateway import errors
from services.gateway.anthropic_types import CountTokensRequest, MessagesRequest, sign_thinking
from services.gateway.bounds import BoundedRoute
from services.gateway.deps import AnthropicTenantDep, GatewayDep
from services.gateway.state import Gateway

router = APIRouter(route_class=BoundedRoute)
_PROCESS_KEY = secrets.token_bytes(32)  # without the setting: this process's own, made at start


def _key(gw: Gateway) -> bytes:
    return gw.settings.thinking_signing_key.encode() if gw.settings.thinking_signing_key else _PROCESS_KEY


@router.post("/messages")
async def create_message(body: MessagesRequest, gw: GatewayDep, tenant: AnthropicTenantDep):
    gw.check_model(body.model)
    body.check(gw.settings.input_limits())
    key = _key(gw)
    arguments = dict(messages=body.worker_messages(key, gw.settings.max_json_depth), tools=body.worker_tools(),
                     mode=body.mode(), tool_choice=body.worker_tool_choice(), sampling=body.sampling(),
                     parallel_tool_calls=body.parallel_tool_calls())
    if gw.rates is not None:
        gw.rates.admit(tenant, sum(len(m.content) for m in arguments["messages"]) // 4 + 1)
    message_id, sign = f"msg_{uuid.uuid4().hex}", functools.partial(sign_thinking, key)
    if not body.stream:
        with gw.slot(tenant):
            events, event = await gw.start_stateless(body.affinity(tenant), **arguments)
            final = event if isinstance(event, Final) else None
            async for event in events:
                if isinstance(event, Final):
                    final = event
        gw.count_usage(tenant, final.usage)
        return JSONResponse(shapes.message(message_id, gw.model_name, final, sign))
    gw.acquire(tenant)  # here, so that a refusal is an HTTP status rather than a broken stream; _sse releases
    try:
        events, first = await gw.start_stateless(body.affinity(tenant), **arguments)
    except BaseException:
        gw.release(tenant)
        raise
    shaper = shapes.StreamShaper(message_id, gw.model_name, sign)
    return StreamingResponse(_sse(gw, tenant, shaper, first, events), media_type="text/event-stream")


@router.post("/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, gw: GatewayDep, tenant: AnthropicTenantDep):
    gw.check_model(body.model)
    body.check(gw.settings.input_limits())
    messages = body.worker_messages(_key(gw), gw.settings.max_json_depth)
    tools, mode = body.worker_tools(), body.mode()
    body.worker_tool_choice()  # refused here as /v1/messages would refuse it
    ids = await gw.worker(gw.pick(body.affinity(tenant))).tokenize(messages=messages, mode=mode, tools=tools)
    return JSONResponse({"input_tokens": len(ids)})


async def _sse(gw: Gateway, tenant: str, shaper: shapes.StreamShaper, first, events) -> AsyncIterator[str]:
    yield shaper.start()
    try:
        event = first
        while True:
            for text in shaper.feed(event):
                yield text
            if isinstance(event, Final):
                gw.count_usage(tenant, event.usage)
                break
            event = await events.__anext__()
    except WorkerError as error:  # mid-stream: the status is sent already; the error goes in the stream
        failure = errors.from_worker(error)
        yield shapes.event("error", error=errors.anthropic_body(failure.status, failure.message)["error"])
    finally:
        gw.release(tenant)
