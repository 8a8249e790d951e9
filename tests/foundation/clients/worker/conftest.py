"""A real grpc server on a port the OS picks, serving a scripted fake worker that records what the client sent: the
client's tests exercise the real wire, channel, metadata, deadlines and status codes, without the model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from protos.dsv4.worker.v1 import worker_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2_grpc

Failure = tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]


def script() -> list[pb.GenerateResponse]:
    """A generation: reasoning, two answer deltas, a tool call and the final event."""
    call = pb.ToolCall(id="call_1", name="search", arguments_json='{"query": "kv cache", "top_k": 3}')
    return [
        pb.GenerateResponse(request_id="r1", delta=pb.Delta(text="thinking", reasoning=True, token_ids=[7])),
        pb.GenerateResponse(
            request_id="r1",
            delta=pb.Delta(
                text="Hello",
                token_ids=[8],
                logprobs=[pb.TokenLogprob(token_id=8, logprob=-0.5, top=[pb.TopLogprob(token_id=9, logprob=-1.5)])],
            ),
        ),
        pb.GenerateResponse(request_id="r1", delta=pb.Delta(text=", world", token_ids=[10, 11])),
        pb.GenerateResponse(request_id="r1", tool_call=call),
        pb.GenerateResponse(
            request_id="r1",
            final=pb.Final(
                finish_reason=pb.TOOL_CALLS,
                usage=pb.Usage(prompt_tokens=5, completion_tokens=4, reasoning_tokens=1, session_tokens=9),
                content="Hello, world",
                reasoning_content="thinking",
                tool_calls=[call],
            ),
        ),
    ]


class FakeWorker(worker_pb2_grpc.ModelWorkerServicer):
    """Records (method, request, metadata) and answers from a script; `failures[method]` is a queue of statuses the
    next calls of that method abort with, `hang` the methods that wait until the client gives up."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, dict[str, str]]] = []
        self.failures: dict[str, list[Failure]] = {}
        self.hang: set[str] = set()
        self.events = script()
        self.abort_after: tuple[int, grpc.StatusCode] | None = None  # abort a stream after this many responses
        self.endless = False  # Generate streams deltas until cancelled
        self.cancelled = threading.Event()
        self.sessions = [f"s{i}" for i in range(5)]
        self.chunks = [b"DSV4", b"-session-", b"bytes"]

    def requests(self, method: str) -> list:
        return [request for name, request, _ in self.calls if name == method]

    def metadata(self, method: str) -> list[dict[str, str]]:
        return [md for name, _, md in self.calls if name == method]

    def fail(self, method: str, code: grpc.StatusCode, times: int = 1, details: str = "boom", trailing=()) -> None:
        self.failures.setdefault(method, []).extend([(code, details, tuple(trailing))] * times)

    def _enter(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        self.calls.append((method, request, dict(context.invocation_metadata())))
        if method in self.hang:
            done = threading.Event()
            context.add_callback(done.set)
            done.wait(5)
            return
        queue = self.failures.get(method)
        if queue:
            code, details, trailing = queue.pop(0)
            if trailing:
                context.set_trailing_metadata(trailing)
            context.abort(code, details)

    def _stream(self, responses: list, context: grpc.ServicerContext) -> Iterator:
        for i, response in enumerate(responses):
            if self.abort_after is not None and i == self.abort_after[0]:
                context.abort(self.abort_after[1], "stream broke")
            yield response

    def Generate(self, request, context):
        self._enter("Generate", request, context)
        if self.endless:
            context.add_callback(self.cancelled.set)
            while context.is_active():
                yield pb.GenerateResponse(delta=pb.Delta(text="x"))
                self.cancelled.wait(0.01)
            return
        yield from self._stream(self.events, context)

    def CreateSession(self, request, context):
        self._enter("CreateSession", request, context)
        return pb.Session(session_id=request.session_id or "new", think_max=request.think_max, tokens=3)

    def AppendSession(self, request, context):
        self._enter("AppendSession", request, context)
        return pb.Session(session_id=request.session_id, tokens=10, commit=2)

    def ForkSession(self, request, context):
        self._enter("ForkSession", request, context)
        commit = request.commit if request.HasField("commit") else 7
        return pb.Session(session_id=request.new_session_id or "forked", parent=request.session_id, commit=commit)

    def RewindSession(self, request, context):
        self._enter("RewindSession", request, context)
        return pb.Session(session_id=request.session_id, commit=request.commit)

    def GetSession(self, request, context):
        self._enter("GetSession", request, context)
        return pb.Session(
            session_id=request.session_id,
            tokens=42,
            commit=3,
            commits_retained=[1, 2, 3],
            think_max=True,
            reused_prefix_tokens=16,
            bytes_by_tier={"hbm": 1024, "disk": 4096},
            parent="p",
        )

    def ListSessions(self, request, context):
        self._enter("ListSessions", request, context)
        start = int(request.page_token or 0)
        end = start + (request.page_size or 100)
        token = str(end) if end < len(self.sessions) else ""
        return pb.ListSessionsResponse(session_ids=self.sessions[start:end], next_page_token=token)

    def DeleteSession(self, request, context):
        self._enter("DeleteSession", request, context)
        return pb.DeleteSessionResponse()

    def ExportSession(self, request, context):
        self._enter("ExportSession", request, context)
        yield from self._stream([pb.ExportChunk(data=c) for c in self.chunks], context)

    def Abort(self, request, context):
        self._enter("Abort", request, context)
        return pb.AbortResponse(aborted=request.request_id == "r1")

    def Tokenize(self, request, context):
        self._enter("Tokenize", request, context)
        return pb.TokenizeResponse(ids=[1, 2, 3])

    def Detokenize(self, request, context):
        self._enter("Detokenize", request, context)
        return pb.DetokenizeResponse(text=" ".join(map(str, request.ids)))

    def GetModelInfo(self, request, context):
        self._enter("GetModelInfo", request, context)
        return pb.ModelInfo(
            model="small", fingerprint="f00d", numerics="reference", vocab_size=129280, max_context=1 << 20,
            reasoning_modes=["non-think", "think-high", "think-max"],
        )  # fmt: skip

    def GetLoad(self, request, context):
        self._enter("GetLoad", request, context)
        return pb.Load(waiting_requests=2, running_requests=5, kv_bytes_by_tier={"hbm": 7}, tokens_per_second=123.5)


@pytest.fixture
def worker() -> Iterator[tuple[FakeWorker, str]]:
    """The fake and the target ("127.0.0.1:PORT") of the server serving it."""
    fake = FakeWorker()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    worker_pb2_grpc.add_ModelWorkerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
