"""The ModelWorker gRPC service: each RPC goes through one boundary (boundary.py: typed errors to status codes, every
client-chosen ID checked, a tenant slot for those that compute) and delegates to the runtime, the scheduler
(generation and appends run on the engine thread, at the tenant's token rate), a session's turns (turn.py) and the
session store."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator

import grpc

from foundation import wire
from foundation.chat import SessionHead
from foundation.chat.encoding import encode_prompt
from foundation.ids import check_id
from model_worker.server.boundary import rpc
from model_worker.server.generate import generate
from model_worker.server.imports import import_session
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.turn import SessionTurn, chat_renderer, check_expected_commit
from model_worker.sessions import ChatState, OpenSession, admin
from model_worker.sessions.manifest import check_session_id, tenant_key
from model_worker.structured import ReplySpec
from protos.dsv4.worker.v1 import worker_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2_grpc

_EXPORT_CHUNK = 1 << 20
_MAX_HOLD_SECONDS = 7 * 24 * 3600.0  # a paused turn is renewed well before this; a forgotten hold still ends


class WorkerService(worker_pb2_grpc.ModelWorkerServicer):
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def _tenant(self, context: grpc.ServicerContext) -> str:
        return self.runtime.tenant(dict(context.invocation_metadata()))

    @rpc(compute=True)
    def Generate(self, request, context) -> Iterator[pb.GenerateResponse]:
        yield from generate(self.runtime, request, context, self._tenant(context))

    @rpc(compute=True)
    def CreateSession(self, request, context) -> pb.Session:
        if request.from_session:
            return self._copy_session(request, context)
        runtime, tenant = self.runtime, self._tenant(context)
        inputs = wire.chat_input(request, runtime.limits)
        head = SessionHead(think_max=request.think_max, system_prompt=request.system_prompt or None,
                           tools=inputs.tools or (), response_format=inputs.response_format)
        # Every turn's grammar builds on these: refuse what cannot be enforced now, not on the first turn.
        runtime.grammars.constraint(ReplySpec(tools=[t["function"] for t in head.tools],
                                              response_format=head.response_format))
        chat = chat_renderer(runtime.tokenizer, head, None, [])
        runtime.check_length(len(chat.token_ids))
        session = runtime.store.create(tenant, head, request.session_id or None, prefix=chat.token_ids)
        runtime.prefixes.advance_session(session, chat.token_ids, leave=0)  # beyond what the store matched
        with self._filling(session):  # what nobody of the tenant stored or computed yet of this head is prefilled
            SessionTurn(runtime, session, chat).prefill(chat.token_ids[session.reused_prefix_tokens :])
        runtime.hot.add(session)
        return self._session(tenant, session.session_id, session.reused_prefix_tokens)

    def _copy_session(self, request, context) -> pb.Session:
        """A new session over another's transcript: the source's head settings under this request's think_max, then
        every token after the source's head, prefilled; the renderer's state and the owed tokens carry over."""
        runtime, tenant = self.runtime, self._tenant(context)
        if request.system_prompt or request.tools or request.response_format_json_schema:
            raise ValueError("from_session: the copy takes the source's system prompt, tools and response format")
        with runtime.exclusive(tenant, request.from_session) as source:
            source_head, tokens, state = source.head, list(source.token_ids), source.chat or ChatState()
        head_tokens = chat_renderer(runtime.tokenizer, source_head, None, []).token_ids
        if tokens[: len(head_tokens)] != head_tokens:
            raise ValueError(f"from_session: session {request.from_session} does not start with its rendered head")
        head = dataclasses.replace(source_head, think_max=request.think_max)
        new_head_tokens = chat_renderer(runtime.tokenizer, head, None, []).token_ids
        transcript = new_head_tokens + tokens[len(head_tokens) :]
        runtime.check_length(len(transcript) + len(state.pending))
        chat = None if state.renderer is None else chat_renderer(runtime.tokenizer, head, state.renderer, transcript)
        session = runtime.store.create(tenant, head, request.session_id or None, prefix=new_head_tokens)
        runtime.prefixes.advance_session(session, transcript, leave=0)
        with self._filling(session):
            SessionTurn(runtime, session, chat).prefill(transcript[session.reused_prefix_tokens :], state.pending)
        runtime.hot.add(session)
        return self._session(tenant, session.session_id, session.reused_prefix_tokens)

    @contextlib.contextmanager
    def _filling(self, session: OpenSession) -> Iterator[None]:
        """A session just created, being filled: if that fails, its ID is released (nothing of it stays, and a retry
        may claim the ID again)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the filling's own error is the one to report
                admin.delete(self.runtime.store, session.tenant, session.session_id)
            raise

    @rpc(compute=True)
    def AppendSession(self, request, context) -> pb.Session:
        runtime, tenant = self.runtime, self._tenant(context)
        with runtime.exclusive(tenant, request.session_id) as session:
            check_expected_commit(session, request)
            turn = SessionTurn.with_input(runtime, session, request, wire.mode(request.mode),
                                          wire.chat_input(request, runtime.limits))
            if not turn.feed:
                raise ValueError("input: nothing to append")
            # The last token stays owed: a Generate without input then feeds it and samples the reply from it.
            turn.prefill(turn.feed[:-1], owed=turn.feed[-1:])
        return self._session(tenant, request.session_id)

    @rpc()
    def ForkSession(self, request, context) -> pb.Session:
        tenant = self._tenant(context)
        new_id = admin.fork(self.runtime.store, tenant, request.session_id,
                            request.commit if request.HasField("commit") else None, request.new_session_id or None)
        return self._session(tenant, new_id)

    @rpc()
    def RewindSession(self, request, context) -> pb.Session:
        tenant = self._tenant(context)
        with self.runtime.exclusive(tenant, request.session_id):
            admin.rewind(self.runtime.store, tenant, request.session_id, request.commit)
            self.runtime.hot.discard(tenant, request.session_id)
        return self._session(tenant, request.session_id)

    @rpc()
    def GetSession(self, request, context) -> pb.Session:
        return self._session(self._tenant(context), request.session_id, include_bytes=request.include_bytes)

    @rpc()
    def ListSessions(self, request, context) -> pb.ListSessionsResponse:
        size, most = request.page_size or 100, self.runtime.max_page_size
        if not 0 < size <= most:
            raise ValueError(f"page_size: between 1 and {most} (list_max_page_size)")
        ids = admin.list_sessions(self.runtime.store, self._tenant(context), limit=size + 1, after=request.page_token)
        return pb.ListSessionsResponse(session_ids=ids[:size], next_page_token=ids[size - 1] if len(ids) > size else "")

    @rpc()
    def DeleteSession(self, request, context) -> pb.DeleteSessionResponse:
        tenant = self._tenant(context)
        with self.runtime.exclusive(tenant, request.session_id):
            self.runtime.hot.discard(tenant, request.session_id)
            admin.delete(self.runtime.store, tenant, request.session_id)
        return pb.DeleteSessionResponse()

    @rpc()
    def HoldSession(self, request, context) -> pb.HoldSessionResponse:
        tenant = self._tenant(context)
        if not 0 <= request.seconds <= _MAX_HOLD_SECONDS:
            raise ValueError(f"seconds: between 0 (release) and {_MAX_HOLD_SECONDS:.0f}")
        if request.seconds:
            admin.hold(self.runtime.store, tenant, request.session_id, request.holder, request.seconds)
        else:
            admin.release(self.runtime.store, tenant, request.session_id, request.holder)
        return pb.HoldSessionResponse()

    @rpc()
    def ExportSession(self, request, context) -> Iterator[pb.ExportChunk]:
        tenant = self._tenant(context)
        with tempfile.TemporaryDirectory() as root:
            path = os.path.join(root, "session.tar")
            admin.export_session(self.runtime.store, tenant, request.session_id, path)
            with open(path, "rb") as f:
                while chunk := f.read(_EXPORT_CHUNK):
                    yield pb.ExportChunk(data=chunk)

    @rpc(compute=True)
    def ImportSession(self, request_iterator, context) -> pb.Session:
        tenant = self._tenant(context)
        return self._session(tenant, import_session(self.runtime, tenant, request_iterator))

    @rpc()
    def Abort(self, request, context) -> pb.AbortResponse:
        """Stops the caller's own request of that ID; another tenant's is never found."""
        tenant = self._tenant(context)
        return pb.AbortResponse(aborted=self.runtime.scheduler.abort(check_id(request.request_id, "request_id"),
                                                                     tenant))

    @rpc()
    def Tokenize(self, request, context) -> pb.TokenizeResponse:
        self._tenant(context)
        inputs = wire.chat_input(request, self.runtime.limits)
        if request.WhichOneof("input") == "text":
            return pb.TokenizeResponse(ids=self.runtime.tokenizer.encode(request.text))
        messages = inputs.messages or []
        if inputs.tools:
            messages.insert(0, {"role": "system", "content": "", "tools": inputs.tools})
        return pb.TokenizeResponse(ids=encode_prompt(messages, wire.mode(request.mode),
                                                     tokenizer=self.runtime.tokenizer))

    @rpc()
    def Detokenize(self, request, context) -> pb.DetokenizeResponse:
        self._tenant(context)
        vocab = self.runtime.model.config.vocab_size
        if any(not 0 <= i < vocab for i in request.ids):
            raise ValueError(f"ids: must lie in [0, {vocab})")
        return pb.DetokenizeResponse(text=self.runtime.tokenizer.decode(list(request.ids)))

    @rpc()
    def GetModelInfo(self, request, context) -> pb.ModelInfo:
        self._tenant(context)
        model = self.runtime.model
        return pb.ModelInfo(model=self.runtime.model_name, fingerprint=model.fingerprint or "",
                            numerics=model.numerics.name, vocab_size=model.config.vocab_size,
                            max_context=model.config.max_seq_len,
                            reasoning_modes=["non-think", "think-high", "think-max"])

    @rpc()
    def GetLoad(self, request, context) -> pb.Load:
        self._tenant(context)
        load = self.runtime.scheduler.load
        return pb.Load(waiting_requests=load["waiting"], running_requests=load["running"],
                       kv_bytes_by_tier={"hot": self.runtime.hot.nbytes})

    def _session(self, tenant: str, session_id: str, reused: int = 0, include_bytes: bool = False) -> pb.Session:
        """From the newest commit record (constant work, whatever the session's length); sizing every stored value
        is asked for explicitly."""
        store, tk = self.runtime.store, tenant_key(tenant)
        commit = store.read_commit(tk, check_session_id(session_id), None)
        sizes = admin.stats(store, tenant, session_id)["bytes_by_tier"] if include_bytes else {}
        return pb.Session(session_id=session_id, tokens=commit.num_tokens, commit=commit.seq,
                          commits_retained=store.commit_seqs(tk, session_id), think_max=commit.head.think_max,
                          reused_prefix_tokens=reused, bytes_by_tier=sizes, parent=commit.parent or "")

