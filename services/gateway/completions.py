"""`POST /v1/completions`: OpenAI's legacy completions of a raw prompt, a stateless generation from token ids on a
model worker (no chat template: BOS and the text; with `suffix`, DeepSeek's fill-in-the-middle prompt,
completions_types.py), whole or streamed as server-sent events (text_completion objects, usage last with
`stream_options.include_usage`). `logprobs: N` gives each generated token's text, log probability, its N best
alternatives and its offset in the choice's text. `n` choices run as chat's do (chat.py: one worker, the prompt
computed once up to its last prefix checkpoint, a `seed` giving choice i the seed + i)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from foundation.clients.worker import Delta, Final, TokenLogprob
from foundation.clients.worker.errors import WorkerError
from services.gateway import errors
from services.gateway.bounds import BoundedRoute
from services.gateway.choices import Stream, choices_usage, merged, start_choices
from services.gateway.completions_types import CompletionRequest
from services.gateway.deps import GatewayDep, TenantDep
from services.gateway.state import Gateway
from services.openai_shapes import cache_affinity, usage_object

router = APIRouter(route_class=BoundedRoute)


@router.post("/completions")
async def completions(body: CompletionRequest, gw: GatewayDep, tenant: TenantDep):
    gw.check_model(body.model)
    if body.n > gw.settings.max_choices:
        raise errors.ApiError(400, f"n: at most {gw.settings.max_choices} choices", param="n")
    token_ids = body.token_ids(gw.tokenizer)
    sampling = body.sampling()
    if gw.rates is not None:
        gw.rates.admit(tenant, body.text_length() // 4 + 1)
    call_id = f"cmpl-{uuid.uuid4().hex}"
    affinity = cache_affinity(tenant, None, [token_ids[:1024]])
    arguments = dict(token_ids=token_ids, mode="non-think")  # the mode only sets how the worker reads the reply
    gw.acquire(tenant, body.n)  # here, so that a refusal is an HTTP status rather than a broken stream
    try:
        streams = await start_choices(gw, affinity, body.n, sampling, arguments)
    except BaseException:
        gw.release(tenant, body.n)
        raise
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(gw, tenant, call_id, streams, include_usage, body.logprobs is not None),
                                 media_type="text/event-stream")
    try:
        ended = await asyncio.gather(*(_to_the_end(*stream) for stream in streams))
    finally:
        gw.release(tenant, body.n)
    usage = choices_usage([final for final, _, _ in ended])
    gw.count_usage(tenant, usage)
    choices = [_choice(i, text, final.finish_reason,
                       completion_logprobs(tokens, gw.tokenizer.token_bytes)[0] if body.logprobs is not None else None)
               for i, (final, text, tokens) in enumerate(ended)]
    return JSONResponse({"id": call_id, "object": "text_completion", "created": int(time.time()),
                         "model": gw.model_name, "choices": choices, "usage": usage_object(usage)})


def completion_logprobs(tokens: Iterable[TokenLogprob], token_bytes: Callable[[int], bytes],
                        before: bytes = b"") -> tuple[dict[str, Any], bytes]:
    """Completions' `logprobs` of generated tokens: their text, log probabilities, best alternatives (text to log
    probability) and character offsets in the choice's text, after the `before` bytes of it; and the bytes after."""
    def text(token_id: int) -> str:
        return token_bytes(token_id).decode("utf-8", errors="replace")

    shaped: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token in tokens:
        shaped["text_offset"].append(len(before.decode("utf-8", errors="ignore")))
        shaped["tokens"].append(text(token.token_id))
        shaped["token_logprobs"].append(token.logprob)
        shaped["top_logprobs"].append({text(i): logprob for i, logprob in token.top})
        before += token_bytes(token.token_id)
    return shaped, before


def _choice(index: int, text: str, finish: str | None, logprobs: dict | None) -> dict[str, Any]:
    reason = None if finish is None else "length" if finish == "length" else "stop"
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": reason}


async def _to_the_end(events: AsyncIterator, event: Any) -> tuple[Final, str, list[TokenLogprob]]:
    """A generation's final event, its text and the log probabilities of its tokens."""
    parts: list[str] = []
    tokens: list[TokenLogprob] = []
    while not isinstance(event, Final):
        if isinstance(event, Delta):
            parts.append(event.text)
            tokens += event.logprobs
        event = await anext(events)
    return event, "".join(parts), tokens


async def _sse(gw: Gateway, tenant: str, call_id: str, streams: list[Stream], include_usage: bool,
               logprobs: bool) -> AsyncIterator[str]:
    created, model = int(time.time()), gw.model_name
    written = [b""] * len(streams)  # each choice's text so far, for its tokens' offsets

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {"id": call_id, "object": "text_completion", "created": created, "model": model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    finals: dict[int, Final] = {}
    try:
        async for index, event in merged(streams):
            if isinstance(event, WorkerError):  # mid-stream: the status is sent already; the error goes in it
                failure = errors.from_worker(event)
                yield f"data: {json.dumps(errors.body(failure.status, failure.message, code=failure.code))}\n\n"
                break
            if isinstance(event, Delta) and (event.text or event.logprobs):
                shaped = None
                if logprobs:
                    shaped, written[index] = completion_logprobs(event.logprobs, gw.tokenizer.token_bytes,
                                                                 written[index])
                yield chunk([_choice(index, event.text, None, shaped)])
            elif isinstance(event, Final):
                finals[index] = event
                yield chunk([_choice(index, "", event.finish_reason or "stop", None)])
        if len(finals) == len(streams):
            usage = choices_usage([finals[i] for i in range(len(streams))])
            gw.count_usage(tenant, usage)
            if include_usage:
                yield chunk([], usage_object(usage))
    finally:
        gw.release(tenant, len(streams))
    yield "data: [DONE]\n\n"
