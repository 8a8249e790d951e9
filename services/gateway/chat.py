"""`POST /v1/chat/completions`: stateless generation on a model worker, whole or streamed as server-sent events
(chat.completion.chunk objects, DeepSeek's `reasoning_content` in deltas, tool calls as each completes, usage last
with `stream_options.include_usage`). With `logprobs`, each content token's log probability and `top_logprobs`
alternatives, whole or with the chunk that carries the token (reasoning tokens have none, as on DeepSeek's API).
With `n`, the choices run at once on one worker: the first computes the prompt and the others take it from the
worker's prefix cache (up to its last checkpoint, one every `prefix_checkpoint_every` tokens; the tail past it is
computed for each); a `seed` gives choice i the seed + i."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from foundation.clients.worker import Delta, Final, TokenLogprob, ToolCall
from foundation.clients.worker.errors import WorkerError
from services.gateway import errors
from services.gateway.bounds import BoundedRoute
from services.gateway.choices import Stream, choices_usage, merged, start_choices
from services.gateway.deps import GatewayDep, TenantDep
from services.gateway.openai_types import ChatCompletionRequest
from services.gateway.state import Gateway
from services.openai_shapes import chat_choice, chat_completion, logprobs_object, tool_call_objects, usage_object

router = APIRouter(route_class=BoundedRoute)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, gw: GatewayDep, tenant: TenantDep):
    gw.check_model(body.model)
    body.check(gw.settings.input_limits())
    if body.n > gw.settings.max_choices:
        raise errors.ApiError(400, f"n: at most {gw.settings.max_choices} choices", param="n")
    body.choose_mode(gw.mode_policy)
    arguments = dict(messages=body.worker_messages(gw.settings.max_json_depth), tools=body.worker_tools(),
                     mode=body.mode(), tool_choice=body.worker_tool_choice(), response_format=body.schema(),
                     parallel_tool_calls=body.parallel_tool_calls is not False)
    sampling = body.sampling(body.max_completion_tokens or body.max_tokens)
    if gw.rates is not None:
        gw.rates.admit(tenant, sum(len(m.content) for m in arguments["messages"]) // 4 + 1)
    call_id = f"chatcmpl-{uuid.uuid4().hex}"
    gw.acquire(tenant, body.n)  # here, so that a refusal is an HTTP status rather than a broken stream
    try:
        streams = await start_choices(gw, body.affinity(tenant), body.n, sampling, arguments)
    except BaseException:
        gw.release(tenant, body.n)
        raise
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(gw, tenant, call_id, streams, include_usage, bool(body.logprobs)),
                                 media_type="text/event-stream")
    try:
        ended = await asyncio.gather(*(_to_the_end(*stream) for stream in streams))
    finally:
        gw.release(tenant, body.n)
    usage = choices_usage([final for final, _ in ended])
    gw.count_usage(tenant, usage)
    choices = [chat_choice(i, final, logprobs_object(tokens, gw.tokenizer.token_bytes) if body.logprobs else None)
               for i, (final, tokens) in enumerate(ended)]
    return JSONResponse(chat_completion(call_id, gw.model_name, choices, usage_object(usage)))


async def _to_the_end(events: AsyncIterator, event: Any) -> tuple[Final, list[TokenLogprob]]:
    """A generation's final event and the log probabilities of its content tokens."""
    tokens: list[TokenLogprob] = []
    while not isinstance(event, Final):
        if isinstance(event, Delta) and not event.reasoning:
            tokens += event.logprobs
        event = await anext(events)
    return event, tokens


async def _sse(gw: Gateway, tenant: str, call_id: str, streams: list[Stream], include_usage: bool,
               logprobs: bool) -> AsyncIterator[str]:
    created, model = int(time.time()), gw.model_name

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, usage: dict | None = None,
              tokens: list[TokenLogprob] | None = None) -> str:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs:
            choice["logprobs"] = logprobs_object(tokens, gw.tokenizer.token_bytes) if tokens else None
        body = {"id": call_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [] if usage is not None else [choice]}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    finals: dict[int, Final] = {}
    calls = [0] * len(streams)
    try:
        for index in range(len(streams)):
            yield chunk(index, {"role": "assistant", "content": ""})
        async for index, event in merged(streams):
            if isinstance(event, WorkerError):  # mid-stream: the status is sent already; the error goes in it
                failure = errors.from_worker(event)
                yield f"data: {json.dumps(errors.body(failure.status, failure.message, code=failure.code))}\n\n"
                break
            if isinstance(event, Delta) and event.reasoning and event.text:
                yield chunk(index, {"reasoning_content": event.text})
            elif isinstance(event, Delta) and (event.text or event.logprobs):
                yield chunk(index, {"content": event.text}, tokens=event.logprobs)
            elif isinstance(event, ToolCall):
                yield chunk(index, {"tool_calls": [{"index": calls[index], **tool_call_objects([event])[0]}]})
                calls[index] += 1
            elif isinstance(event, Final):
                finals[index] = event
                yield chunk(index, {}, event.finish_reason or "stop")
        if len(finals) == len(streams):
            usage = choices_usage([finals[i] for i in range(len(streams))])
            gw.count_usage(tenant, usage)
            if include_usage:
                yield chunk(0, {}, usage=usage_object(usage))
    finally:
        gw.release(tenant, len(streams))
    yield "data: [DONE]\n\n"
