"""`POST /v1/chat/completions`: one stateless generation on a model worker, whole or streamed as server-sent events
(chat.completion.chunk objects, DeepSeek's `reasoning_content` in deltas, tool calls as each completes, usage last
with `stream_options.include_usage`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from foundation.clients.worker import Delta, Final, ToolCall
from foundation.clients.worker.errors import WorkerError
from services.gateway import errors
from services.gateway.bounds import BoundedRoute
from services.gateway.deps import GatewayDep, TenantDep
from services.gateway.openai_types import ChatCompletionRequest
from services.gateway.state import Gateway
from services.openai_shapes import chat_completion, tool_call_objects, usage_object

router = APIRouter(route_class=BoundedRoute)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, gw: GatewayDep, tenant: TenantDep):
    gw.check_model(body.model)
    body.check(gw.settings.input_limits())
    body.choose_mode(gw.mode_policy)
    arguments = dict(messages=body.worker_messages(gw.settings.max_json_depth), tools=body.worker_tools(),
                     mode=body.mode(), tool_choice=body.worker_tool_choice(), response_format=body.schema(),
                     sampling=body.sampling(body.max_completion_tokens or body.max_tokens))
    if gw.rates is not None:
        gw.rates.admit(tenant, sum(len(m.content) for m in arguments["messages"]) // 4 + 1)
    call_id = f"chatcmpl-{uuid.uuid4().hex}"
    if not body.stream:
        with gw.slot(tenant):
            events, event = await gw.start_stateless(body.affinity(tenant), **arguments)
            final = event if isinstance(event, Final) else None
            async for event in events:
                if isinstance(event, Final):
                    final = event
        gw.count_usage(tenant, final.usage)
        return JSONResponse(chat_completion(call_id, gw.model_name, final, usage_object(final.usage)))
    gw.acquire(tenant)  # here, so that a refusal is an HTTP status rather than a broken stream; _sse releases
    try:
        events, first = await gw.start_stateless(body.affinity(tenant), **arguments)
    except BaseException:
        gw.release(tenant)
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_sse(gw, tenant, call_id, first, events, include_usage), media_type="text/event-stream")


async def _sse(gw: Gateway, tenant: str, call_id: str, first, events, include_usage: bool) -> AsyncIterator[str]:
    created, model = int(time.time()), gw.model_name

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> str:
        body = {"id": call_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    try:
        event = first
        while True:
            if isinstance(event, Delta) and event.text:
                yield chunk({"reasoning_content": event.text} if event.reasoning else {"content": event.text})
            elif isinstance(event, ToolCall):
                yield chunk({"tool_calls": [{"index": calls, **tool_call_objects([event])[0]}]})
                calls += 1
            elif isinstance(event, Final):
                gw.count_usage(tenant, event.usage)
                yield chunk({}, event.finish_reason or "stop")
                if include_usage:
                    yield chunk({}, usage=usage_object(event.usage))
                break
            event = await events.__anext__()
    except WorkerError as error:  # mid-stream: the status is sent already; the error goes in the stream
        failure = errors.from_worker(error)
        yield f"data: {json.dumps(errors.body(failure.status, failure.message, code=failure.code))}\n\n"
    finally:
        gw.release(tenant)
    yield "data: [DONE]\n\n"
