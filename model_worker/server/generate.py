"""The Generate call: resolve the input to tokens (a session's next turn, turn.py, or a stateless prompt), run it
through the scheduler as one engine request, and turn engine events into the stream: text deltas split into reasoning
and content, tool calls as they complete, and a final message with usage, sent once a session's turn has settled
(its commits written)."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from foundation import wire
from foundation.chat import ChatMode, ContentDelta, ReasoningDelta, StreamingParser, ToolCallEvent
from foundation.chat.encoding import encode_prompt
from foundation.chat.errors import DSMLParseError
from foundation.chat.messages import attach_tools
from foundation.chat.protocol import THINK_START_ID
from model_worker.engine import Finished, Request, TextDelta
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.telemetry import RequestClock, generate_span, record_usage
from model_worker.server.turn import SessionTurn, check_expected_commit, request_token_ids
from model_worker.sessions.prefix_cache import Computing
from model_worker.structured import OutputConstraint, ReplySpec
from protos.dsv4.worker.v1 import worker_pb2 as pb


@dataclass
class Generation:
    """What one Generate call runs: the tokens to feed, and on a session the turn they belong to."""

    prompt: list[int]  # tokens to feed: a lost state's replay, owed tokens, then the new input
    new_tokens: int
    turn: SessionTurn | None = None
    reused: int = 0
    tenant: str = ""
    constraint: OutputConstraint | None = None
    cached: list[int] = field(default_factory=list)  # without a session: the input's prefix found in the cache
    computing: Computing | None = None  # without a session: what others wanting this input's prefix wait for


def generate(runtime: WorkerRuntime, request: pb.GenerateRequest, context: grpc.ServicerContext,
             tenant: str) -> Iterator[pb.GenerateResponse]:
    request_id = request.request_id or uuid.uuid4().hex
    sampling = request.sampling
    with generate_span(dict(context.invocation_metadata()), runtime.model_name, request.session_id, request_id,
                       sampling.temperature if sampling.HasField("temperature") else None,
                       sampling.max_tokens if sampling.HasField("max_tokens") else None) as span:
        yield from _generate(runtime, request, context, tenant, request_id, span)


def _generate(runtime: WorkerRuntime, request: pb.GenerateRequest, context: grpc.ServicerContext, tenant: str,
              request_id: str, span) -> Iterator[pb.GenerateResponse]:
    config = runtime.model.config
    params = wire.sampling(request.sampling, config.vocab_size, runtime.limits)
    mode = wire.mode(request.mode)
    inputs = wire.chat_input(request, runtime.limits)
    if request.HasField("commit_every") and request.commit_every and not \
            runtime.limits.min_commit_every <= request.commit_every:
        raise ValueError(f"commit_every: 0 (commit at the end only) or at least {runtime.limits.min_commit_every} "
                         "generated tokens")
    if not request.session_id:
        generation = _stateless(runtime, request, mode, inputs)
        generation.tenant = tenant
        generation.constraint = _constraint(runtime, request, generation, inputs.tools, inputs.response_format,
                                            params)
        runtime.check_length(len(generation.prompt), params.max_tokens)
        hit, generation.computing = runtime.prefixes.acquire(tenant, generation.prompt)
        span.set_attribute("dsv4.prefix_cache.matched_tokens", hit.tokens)
        generation.cached, generation.prompt = generation.prompt[: hit.tokens], generation.prompt[hit.tokens :]
        generation.reused = hit.tokens
        yield from _run(runtime, generation, hit.state or runtime.model.new_state(), request, request_id, params,
                        mode, context, span)
        return
    if request.tools:
        raise ValueError("tools: a session's tools are fixed when it is created")
    with runtime.exclusive(tenant, request.session_id) as session:
        check_expected_commit(session, request)
        if request.WhichOneof("input") is None:  # the reply to what AppendSession put in (it holds back its last token)
            turn = SessionTurn.reply(runtime, session)
        else:
            turn = SessionTurn.with_input(runtime, session, request, mode, inputs)
            turn.reuse_computed_prefix()
        generation = Generation(turn.feed, turn.new_tokens, turn, reused=len(session.token_ids), tenant=tenant)
        generation.constraint = _constraint(runtime, request, generation, session.head.tools,
                                            inputs.response_format or session.head.response_format, params)
        runtime.check_length(generation.reused + len(generation.prompt), params.max_tokens)
        yield from _run(runtime, generation, session.state, request, request_id, params, mode, context, span)


def _constraint(runtime: WorkerRuntime, request: pb.GenerateRequest, generation: Generation, tools,
                response_format: dict | None, params) -> OutputConstraint | None:
    """The grammar of this reply: it opens inside reasoning when the prompt ends with <think>. None on a worker with
    constrained decoding off: the model's own tool calls and JSON, as they come (how they are evaluated)."""
    if not runtime.constrained_decoding:
        return None
    spec = ReplySpec(thinking=generation.prompt[-1:] == [THINK_START_ID], tools=[t["function"] for t in tools],
                     tool_choice=wire.tool_choice(request.tool_choice), response_format=response_format,
                     one_call=request.tool_choice.one_call)
    constraint = runtime.grammars.constraint(spec)
    if constraint is not None and params.ignore_eos:
        raise ValueError("ignore_eos cannot be combined with tool_choice or response_format: the grammar ends at EOS")
    return constraint


def _stateless(runtime: WorkerRuntime, request: pb.GenerateRequest, mode: ChatMode,
               inputs: wire.ChatInput) -> Generation:
    if request.WhichOneof("input") is None or (request.WhichOneof("input") == "messages" and not inputs.messages):
        raise ValueError("input: give messages or token_ids")
    if request.WhichOneof("input") == "token_ids":
        tokens = request_token_ids(runtime, request, 0)
    else:
        messages = attach_tools(inputs.messages, inputs.tools, inputs.response_format)
        tokens = encode_prompt(messages, mode, tokenizer=runtime.tokenizer)
    return Generation(tokens, len(tokens))


def _run(runtime: WorkerRuntime, generation: Generation, state, request: pb.GenerateRequest, request_id: str,
         params, mode, context: grpc.ServicerContext, span) -> Iterator[pb.GenerateResponse]:
    events: queue.Queue = queue.Queue()
    on_session = generation.turn is not None
    # A session commits mid-output every commit_every tokens; a request without one leaves prefix checkpoints every
    # prefix_checkpoint_every tokens of its input (mid-output states are worth little to later requests).
    commit_every = request.commit_every if on_session and request.HasField("commit_every") else 0
    checkpoint_every = runtime.prefixes.every if not on_session and runtime.prefixes.enabled else 0
    engine_request = Request(request_id, state, generation.prompt, params, events.put,
                             priority=wire.priority(request.priority), commit_every=commit_every,
                             checkpoint_every=checkpoint_every, constraint=generation.constraint,
                             tenant=generation.tenant, context_token_ids=generation.cached)
    if on_session:
        generation.turn.hook(engine_request)
    elif runtime.prefixes.enabled:
        _checkpoint_into(runtime, generation, engine_request)
    try:
        runtime.submit(engine_request)  # at the tenant's token rate
        # Client gone, deadline: stop this request (not whatever holds its ID) at the next step; only once taken.
        context.add_callback(lambda: runtime.scheduler.cancel(engine_request))
        logprobs = request.sampling.logprobs or params.top_logprobs > 0
        yield from _stream(runtime, generation, engine_request, events, request_id, mode, context, span, logprobs)
    finally:  # the caller went away mid-stream: stop at the next step (a no-op once finished)
        runtime.scheduler.cancel(engine_request)
        runtime.prefixes.release(generation.computing)


def _checkpoint_into(runtime: WorkerRuntime, generation: Generation, engine_request: Request) -> None:
    """A request without a session leaves prefix checkpoints at its commit points: every `prefix_checkpoint_every`
    tokens of its input, the end of its input and the end of its output."""
    inputs = generation.cached + generation.prompt

    def on_commit(_tokens: list[int]) -> None:
        output = engine_request.output  # none yet inside the input: no copy of a long input per checkpoint
        tokens = inputs if output is None else inputs + output.token_ids
        runtime.prefixes.put(generation.tenant, tokens, engine_request.state, generation.computing)

    engine_request.on_commit = on_commit


def _stream(runtime: WorkerRuntime, generation: Generation, engine_request: Request, events: queue.Queue,
            request_id: str, mode, context: grpc.ServicerContext, span, logprobs: bool
            ) -> Iterator[pb.GenerateResponse]:
    parser, reasoning_tokens, tool_calls = TolerantParser(mode), 0, []
    clock = RequestClock(runtime.metrics, time.perf_counter())
    yield pb.GenerateResponse(request_id=request_id)  # at once, so a caller can Abort by an ID the server chose
    while True:
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            if not context.is_active():
                runtime.scheduler.cancel(engine_request)
            continue
        if isinstance(event, TextDelta):
            if event.token_ids:
                clock.token()
            for response, in_reasoning in _responses(parser.feed(event.text), event, request_id, tool_calls,
                                                     logprobs):
                reasoning_tokens += in_reasoning
                yield response
            continue
        final: Finished = event
        for response, _ in _responses(parser.finish(), TextDelta("", [], []), request_id, tool_calls, False):
            yield response
        turn = generation.turn
        if turn is not None:
            turn.settle(final)  # the reply is final only once its commits are written
        usage = pb.Usage(prompt_tokens=generation.new_tokens, reused_tokens=generation.reused,
                         prefilled_tokens=len(generation.prompt), completion_tokens=final.completion_tokens,
                         reasoning_tokens=reasoning_tokens, session_tokens=final.sequence_tokens if turn else 0,
                         session_rebuilt=bool(turn and turn.session.rebuilt),
                         draft_tokens=final.draft_tokens, accepted_draft_tokens=final.accepted_draft_tokens)
        if runtime.token_rates:
            runtime.token_rates.charge(generation.tenant, final.completion_tokens)
        finish_reason = wire.finish_reason(final.finish_reason.value, bool(tool_calls))
        record_usage(span, runtime.metrics, usage, pb.FinishReason.Name(finish_reason).lower())
        yield pb.GenerateResponse(request_id=request_id, final=pb.Final(
            finish_reason=finish_reason,
            matched_stop=final.stop_reason if isinstance(final.stop_reason, str) else "", usage=usage,
            content=parser.content, reasoning_content=parser.reasoning_content, tool_calls=tool_calls))
        if final.error:
            raise final.failure()
        return


class TolerantParser:
    """The stream's parser. Output that breaks the DSML grammar (cut off by max_tokens inside a tool call, or, without
    a grammar, malformed) is the model's doing, not the caller's: from there on the text is passed on as content, so
    nothing is lost and the request still ends with its finish reason."""

    def __init__(self, mode: ChatMode) -> None:
        self._parser = StreamingParser(mode)
        self._raw: list[str] | None = None

    def feed(self, text: str) -> list:
        return self._parse(text, final=False)

    def finish(self) -> list:
        return self._parse("", final=True)

    def _parse(self, text: str, final: bool) -> list:
        if self._raw is not None:
            self._raw.append(text)
            return [ContentDelta(text)] if text else []
        try:
            return self._parser.finish() if final else self._parser.feed(text)
        except DSMLParseError as exc:
            self._raw = [exc.unparsed_text]
            return [ContentDelta(exc.unparsed_text)] if exc.unparsed_text else []

    @property
    def content(self) -> str:
        return self._parser.result.content + "".join(self._raw or [])

    @property
    def reasoning_content(self) -> str:
        return self._parser.result.reasoning_content or ""


def _responses(parsed, delta: TextDelta, request_id: str, tool_calls: list, logprobs: bool):
    """(response, counts as a reasoning token) per parser event; the step's token ids (and logprobs when asked for)
    ride on the first."""
    token_ids = list(delta.token_ids)
    token_logprobs = _logprobs(delta) if logprobs else []
    for item in parsed:
        if isinstance(item, ToolCallEvent):
            call = wire.tool_call(item.index, item.name, item.arguments, request_id)
            tool_calls.append(call)
            yield pb.GenerateResponse(request_id=request_id, tool_call=call), False
            continue
        reasoning = isinstance(item, ReasoningDelta)
        assert reasoning or isinstance(item, ContentDelta)
        yield pb.GenerateResponse(request_id=request_id, delta=pb.Delta(
            text=item.text, reasoning=reasoning, token_ids=token_ids, logprobs=token_logprobs)), \
            reasoning and bool(token_ids)
        token_ids, token_logprobs = [], []
    if token_ids:  # a token that released no text yet (held back, or a special token)
        yield pb.GenerateResponse(request_id=request_id, delta=pb.Delta(token_ids=token_ids,
                                                                        logprobs=token_logprobs)), False


def _logprobs(delta: TextDelta) -> list[pb.TokenLogprob]:
    tops = delta.top_logprobs or [[] for _ in delta.token_ids]
    return [pb.TokenLogprob(token_id=token, logprob=logprob,
                            top=[pb.TopLogprob(token_id=t, logprob=lp) for t, lp in top])
            for token, logprob, top in zip(delta.token_ids, delta.logprobs, tops)]
