"""The Generate call: resolve the input to tokens (a session's next turn, or a stateless prompt), run it through the
scheduler, and turn engine events into the stream: text deltas split into reasoning and content, tool calls as they
complete, and a final message with usage. A session's commits carry the chat renderer's state and the tokens the
model still owes (the last sampled token and the turn's closing EOS, fed first next turn)."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc

from model_worker.chat import ChatMode, ChatSession, ContentDelta, ReasoningDelta, StreamingParser, ToolCallEvent
from model_worker.chat.encoding import encode_prompt
from model_worker.chat.errors import DSMLParseError
from model_worker.chat.messages import attach_tools
from model_worker.chat.protocol import THINK_START_ID
from model_worker.engine import Finished, Request, TextDelta
from model_worker.server import convert
from model_worker.server.runtime import CommitMismatch, WorkerRuntime
from model_worker.server.telemetry import RequestClock, generate_span, record_usage
from model_worker.sessions import OpenSession
from model_worker.structured import OutputConstraint, ReplySpec
from protos.dsv4.worker.v1 import worker_pb2 as pb


@dataclass
class Turn:
    prompt: list[int]  # tokens to feed: a lost state's replay, owed tokens, then the new input
    new_tokens: int
    session: OpenSession | None = None
    chat: ChatSession | None = None
    reused: int = 0
    tenant: str = ""
    constraint: OutputConstraint | None = None
    commits: list[Future] = field(default_factory=list)  # being written; the Final waits for them


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
    params = convert.sampling(request.sampling, config.vocab_size, runtime.limits)
    mode = convert.mode(request.mode)
    inputs = convert.chat_input(request, runtime.limits)
    if request.HasField("commit_every") and request.commit_every and not \
            runtime.limits.min_commit_every <= request.commit_every:
        raise ValueError(f"commit_every: 0 (commit at the end only) or at least {runtime.limits.min_commit_every} "
                         "generated tokens")
    if not request.session_id:
        turn = _stateless_turn(runtime, request, mode, inputs)
        turn.tenant = tenant
        turn.constraint = _constraint(runtime, request, turn, inputs.tools, inputs.response_format, params)
        check_length(runtime, len(turn.prompt), params.max_tokens)
        yield from _run(runtime, turn, runtime.model.new_state(), request, request_id, params, mode, context, span)
        return
    if request.tools:
        raise ValueError("tools: a session's tools are fixed when it is created")
    with runtime.exclusive(tenant, request.session_id) as session:
        check_expected_commit(session, request)
        turn = _session_turn(runtime, session, request, mode, inputs)
        turn.tenant = tenant
        turn.constraint = _constraint(runtime, request, turn, session.head.tools or [],
                                      inputs.response_format or session.head.response_format, params)
        check_length(runtime, turn.reused + len(turn.prompt), params.max_tokens)
        yield from _run(runtime, turn, session.state, request, request_id, params, mode, context, span)


def _constraint(runtime: WorkerRuntime, request: pb.GenerateRequest, turn: Turn, tools: list[dict],
                response_format: dict | None, params) -> OutputConstraint | None:
    """The grammar of this turn's reply: it opens inside reasoning when the prompt ends with <think>."""
    spec = ReplySpec(thinking=turn.prompt[-1:] == [THINK_START_ID], tools=[t["function"] for t in tools],
                     tool_choice=convert.tool_choice(request.tool_choice), response_format=response_format)
    constraint = runtime.grammars.constraint(spec)
    if constraint is not None and params.ignore_eos:
        raise ValueError("ignore_eos cannot be combined with tool_choice or response_format: the grammar ends at EOS")
    return constraint


def check_expected_commit(session: OpenSession, request) -> None:
    if request.HasField("expected_commit") and request.expected_commit != session.seq:
        raise CommitMismatch(f"session {session.session_id} is at commit {session.seq}, not {request.expected_commit}")


def _stateless_turn(runtime: WorkerRuntime, request: pb.GenerateRequest, mode: ChatMode,
                    inputs: convert.ChatInput) -> Turn:
    if request.WhichOneof("input") is None or (request.WhichOneof("input") == "messages" and not inputs.messages):
        raise ValueError("input: give messages or token_ids")
    if request.WhichOneof("input") == "token_ids":
        tokens = _token_ids(runtime, request, 0)
    else:
        messages = attach_tools(inputs.messages, inputs.tools, inputs.response_format)
        tokens = encode_prompt(messages, mode, tokenizer=runtime.tokenizer)
    return Turn(tokens, len(tokens))


def _session_turn(runtime: WorkerRuntime, session: OpenSession, request: pb.GenerateRequest, mode: ChatMode,
                  inputs: convert.ChatInput) -> Turn:
    if request.WhichOneof("input") is None:  # the reply to what AppendSession put in (it holds back its last token)
        chat = runtime.chat(session)
        if not chat.awaiting_reply:
            raise ValueError("input: the session awaits no reply; give messages or token_ids")
        new, prompt = [], runtime.owed(session)
    else:
        chat, new, prompt = session_input(runtime, session, request, mode, inputs)
    return Turn(prompt, len(new), session, chat, reused=len(session.token_ids))


def session_input(runtime: WorkerRuntime, session: OpenSession, request, mode: ChatMode, inputs: convert.ChatInput
                  ) -> tuple[ChatSession | None, list[int], list[int]]:
    """(renderer or None for raw ids, the new input's tokens, everything to feed) for a Generate or Append; what
    the session would then hold must leave room in the model's context."""
    chat = None
    history = len(session.token_ids)
    if request.WhichOneof("input") == "token_ids":
        new = _token_ids(runtime, request, history)
    else:
        chat = runtime.chat(session)
    prompt = runtime.next_turn(session, chat)
    if chat is not None:
        new = chat.render_turn(inputs.messages or [], mode).token_ids
    check_length(runtime, history + len(prompt) + len(new))
    return chat, new, prompt + new


def _token_ids(runtime: WorkerRuntime, request, history: int) -> list[int]:
    ids = request.token_ids.ids
    check_length(runtime, history + len(ids))  # before copying them: the count alone may be far too many
    return list(ids)


def check_length(runtime: WorkerRuntime, tokens: int, max_tokens: int | None = None) -> None:
    """A sequence of `tokens` leaves room in the model's context for at least one generated token, and for
    `max_tokens` when given (the scheduler ends any output at the context)."""
    limit = runtime.model.config.max_seq_len
    if tokens >= limit:
        raise OverflowError(f"{tokens} tokens reach the model's context of {limit}")
    if max_tokens is not None and tokens + max_tokens > limit:
        raise OverflowError(f"max_tokens {max_tokens} is more than the {limit - tokens} tokens the model's context "
                            f"of {limit} leaves after {tokens} tokens")


def _run(runtime: WorkerRuntime, turn: Turn, state, request: pb.GenerateRequest, request_id: str, params, mode,
         context: grpc.ServicerContext, span) -> Iterator[pb.GenerateResponse]:
    events: queue.Queue = queue.Queue()
    job = Request(request_id, state, turn.prompt, params, events.put, priority=convert.priority(request.priority),
                  commit_every=request.commit_every if request.HasField("commit_every") else 0,
                  constraint=turn.constraint, tenant=turn.tenant)
    if turn.session is not None:
        job.on_commit = lambda tokens: _commit(runtime, turn, job, tokens)
    runtime.submit(job)  # at the tenant's token rate
    # Client gone, deadline: stop this request (not whatever holds its ID) at the next step; only once it was taken.
    context.add_callback(lambda: runtime.scheduler.cancel(job))
    try:
        logprobs = request.sampling.logprobs or params.top_logprobs > 0
        yield from _stream(runtime, turn, job, events, request_id, mode, context, span, logprobs)
    finally:  # the caller went away mid-stream: stop at the next step (a no-op once finished)
        runtime.scheduler.cancel(job)


def _stream(runtime: WorkerRuntime, turn: Turn, job: Request, events: queue.Queue, request_id: str, mode,
            context: grpc.ServicerContext, span, logprobs: bool) -> Iterator[pb.GenerateResponse]:
    parser, reasoning_tokens, tool_calls = TolerantParser(mode), 0, []
    clock = RequestClock(runtime.metrics, time.perf_counter())
    yield pb.GenerateResponse(request_id=request_id)  # at once, so a caller can Abort by an ID the server chose
    while True:
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            if not context.is_active():
                runtime.scheduler.cancel(job)
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
        if turn.session is not None:
            runtime.settle(turn.session, turn.commits)  # the reply is final only once its commit is written
            if final.discard_state:
                runtime.hot.discard(turn.session.tenant, turn.session.session_id)
        usage = pb.Usage(prompt_tokens=turn.new_tokens, reused_tokens=turn.reused, prefilled_tokens=len(turn.prompt),
                         completion_tokens=final.completion_tokens, reasoning_tokens=reasoning_tokens,
                         session_tokens=final.sequence_tokens if turn.session else 0,
                         session_rebuilt=bool(turn.session and turn.session.rebuilt),
                         draft_tokens=final.draft_tokens, accepted_draft_tokens=final.accepted_draft_tokens)
        if runtime.token_rates:
            runtime.token_rates.charge(turn.tenant, final.completion_tokens)
        finish_reason = convert.finish_reason(final.finish_reason.value, bool(tool_calls))
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
            call = convert.tool_call(item.index, item.name, item.arguments, request_id)
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


def _commit(runtime: WorkerRuntime, turn: Turn, job: Request, tokens: list[int]) -> None:
    """Each commit point of the turn (end of input, mid-output, end of output), on the engine thread."""
    session, output = turn.session, job.output
    owed: list[int] = []
    if output is not None and output.finished:
        # The reply is the kept tokens; the model still owes those never fed (the last one) and the closing EOS.
        closing = turn.chat.append_completion(output.token_ids).token_ids if turn.chat else []
        owed = output.token_ids[session.state.num_tokens - output.start :] + closing
    turn.commits.append(runtime.commit(session, turn.chat, owed, tokens))
