"""The agent runtime over gRPC (protos/dsv4/agent/v1/agent.proto): tenants by API key, typed errors to status codes
and per-tenant limits as on the model worker; turns run detached (runs.py) and are followed by cursor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc

from agent_runtime.loop import AgentLoop, Limits, worker_session_name
from agent_runtime.policy import MODES
from agent_runtime.service import convert
from agent_runtime.service.runs import TurnRequest, TurnRunner
from agent_runtime.store.models import TURN_ACTIVE
from agent_runtime.store.transcript import AgentSessionExists, AgentSessionNotFound, NotDecidable
from agent_runtime.store.turns import TurnActive, TurnNotFound
from agent_runtime.think_max import ThinkMaxJobFailed
from model_worker.client import convert as wconvert
from model_worker.client.errors import WorkerError
from model_worker.server import convert as server_convert
from model_worker.server.auth import tenant_for
from model_worker.server.errors import error_codes
from model_worker.server.limits import TokenRates
from model_worker.sessions.manifest import check_session_id
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.agent.v1 import agent_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
_MODES = {worker_pb2.REASONING_MODE_UNSPECIFIED: None, worker_pb2.NON_THINK: MODES[0],
          worker_pb2.THINK_HIGH: MODES[1], worker_pb2.THINK_MAX: MODES[2]}
_DIFFICULTIES = ("", "easy", "normal", "hard")
MAX_MESSAGES_BYTES = 8 << 20


rpc = error_codes([(AgentSessionNotFound, grpc.StatusCode.NOT_FOUND), (TurnNotFound, grpc.StatusCode.NOT_FOUND),
                   (AgentSessionExists, grpc.StatusCode.ALREADY_EXISTS),
                   (TurnActive, grpc.StatusCode.FAILED_PRECONDITION),
                   (NotDecidable, grpc.StatusCode.FAILED_PRECONDITION),
                   (ThinkMaxJobFailed, grpc.StatusCode.ABORTED)])


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, loop: AgentLoop, runner: TurnRunner, api_keys: dict[str, str] | None = None,
                 rates: TokenRates | None = None) -> None:
        self.loop, self.runner, self.store = loop, runner, loop.store
        self.api_keys, self.rates = dict(api_keys or {}), rates

    def _tenant(self, context) -> str:
        return tenant_for(dict(context.invocation_metadata()), self.api_keys)

    # -- sessions ------------------------------------------------------------------------------------------------

    @rpc
    def CreateSession(self, request, context) -> pb.AgentSession:
        tenant = self._tenant(context)
        session_id = check_session_id(request.session_id or uuid.uuid4().hex)
        row = self.loop.create_session(tenant, session_id, request.system_prompt, request.think_max,
                                       list(request.tools) or None)
        return convert.session(row)

    @rpc
    def GetSession(self, request, context) -> pb.AgentSession:
        return convert.session(self.store.get(self._tenant(context), request.session_id))

    @rpc
    def ListSessions(self, request, context) -> pb.ListSessionsResponse:
        limit = request.limit or 20
        if not 0 < limit <= 100:
            raise ValueError("limit: between 1 and 100")
        rows = self.store.list(self._tenant(context), limit + 1, request.after or None)
        return pb.ListSessionsResponse(sessions=[convert.session(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @rpc
    def DeleteSession(self, request, context) -> pb.DeleteSessionResponse:
        tenant = self._tenant(context)
        row = self.store.get(tenant, request.session_id)
        if row.active_turn:
            turn = self.runner.turns.get(tenant, row.active_turn)
            if turn.status in TURN_ACTIVE and not self.runner.turns.orphaned(turn):
                raise TurnActive(f"agent session {row.id} runs turn {row.active_turn}; cancel it first")
        self.store.delete(tenant, request.session_id)
        if row.worker_session_id:
            try:
                _, client = self.loop.workers.connect(row.worker_session_id, hint=row.worker_address)
                client.delete_session(row.worker_session_id)
            except WorkerError:
                pass  # already gone (or its worker is): the agent session is deleted either way
        return pb.DeleteSessionResponse()

    @rpc
    def ForkSession(self, request, context) -> pb.AgentSession:
        tenant = self._tenant(context)
        parent = self.store.get(tenant, request.session_id)
        step = request.step or parent.steps
        if not 1 <= step <= parent.steps:
            raise ValueError(f"step: between 1 and {parent.steps} (the session's committed steps)")
        new_id = check_session_id(request.new_session_id or uuid.uuid4().hex)
        record = self.store.step_record(tenant, parent.id, step)
        address, client = self.loop.workers.connect(record.worker_session_id, hint=parent.worker_address)
        info = client.fork(record.worker_session_id, record.worker_commit, worker_session_name())
        self.loop.workers.placed(info.session_id, address)
        row = self.store.fork(tenant, parent.id, step, new_id, info.session_id, info.commit)
        self.store.set_worker(tenant, new_id, info.session_id, info.commit, address)
        return convert.session(self.store.get(tenant, row.id))

    @rpc
    def GetTranscript(self, request, context) -> pb.Transcript:
        tenant, limit = self._tenant(context), request.limit or 100
        if not 0 < limit <= 1000:
            raise ValueError("limit: between 1 and 1000")
        session = self.store.get(tenant, request.session_id)
        rows = self.store.page(session.id, request.before or None, limit)
        more = bool(rows) and rows[0].seq > 0
        return pb.Transcript(entries=[convert.entry(r) for r in rows], next_before=rows[0].seq if more else 0)

    # -- turns ---------------------------------------------------------------------------------------------------

    @rpc
    def RunTurn(self, request, context) -> Iterator[pb.TurnEvent]:
        tenant = self._tenant(context)
        turn_request = self._turn_request(request)
        if self.rates is not None:
            self.rates.admit(tenant, sum(len(m.get("content") or "") for m in turn_request.messages) // 4 + 1)
        turn_id = self.runner.start(tenant, request.session_id, turn_request, request.turn_id or None)
        for seq, event in self.runner.follow(tenant, turn_id, -1, context.is_active):
            yield convert.event(turn_id, seq, event)

    @rpc
    def Attach(self, request, context) -> Iterator[pb.TurnEvent]:
        tenant = self._tenant(context)
        self.runner.turns.get(tenant, request.turn_id)
        for seq, event in self.runner.follow(tenant, request.turn_id, request.after_seq, context.is_active):
            yield convert.event(request.turn_id, seq, event)

    @rpc
    def GetTurn(self, request, context) -> pb.Turn:
        return convert.turn(self.runner.turns.get(self._tenant(context), request.turn_id))

    @rpc
    def ListTurns(self, request, context) -> pb.ListTurnsResponse:
        tenant, limit = self._tenant(context), request.limit or 20
        if not 0 < limit <= 100:
            raise ValueError("limit: between 1 and 100")
        self.store.get(tenant, request.session_id)
        return pb.ListTurnsResponse(turns=[convert.turn(t) for t in self.runner.turns.list(
            tenant, request.session_id, limit)])

    @rpc
    def DecideToolCall(self, request, context) -> pb.Turn:
        tenant = self._tenant(context)
        step = self.store.decide(tenant, request.session_id, request.tool_call_id, request.approve)
        turn_id = self.store.step_record(tenant, request.session_id, step).turn_id
        self.runner.decided(tenant, turn_id)
        if turn_id is None:
            raise NotDecidable("the call's step belongs to no turn; the next turn settles it")
        return convert.turn(self.runner.turns.get(tenant, turn_id))

    @rpc
    def CancelTurn(self, request, context) -> pb.Turn:
        return convert.turn(self.runner.cancel(self._tenant(context), request.turn_id))

    @staticmethod
    def _turn_request(request) -> TurnRequest:
        if request.mode not in _MODES:
            raise ValueError(f"mode: unknown reasoning mode {request.mode}")
        if request.difficulty not in _DIFFICULTIES:
            raise ValueError("difficulty: easy, normal or hard")
        if request.ByteSize() > MAX_MESSAGES_BYTES:
            raise ValueError(f"the request is over {MAX_MESSAGES_BYTES >> 20} MiB")
        messages = server_convert.messages(request.messages)
        if any(m["role"] != "user" for m in messages):
            raise ValueError("messages: user messages only; the runtime writes the rest (replies, calls, results)")
        limits = request.limits
        if limits.max_steps < 0 or limits.max_completion_tokens < 0 or limits.max_seconds < 0:
            raise ValueError("limits: not negative")
        return TurnRequest(
            messages=messages, mode=_MODES[request.mode], difficulty=request.difficulty or None,
            limits=Limits(max_steps=limits.max_steps or 16, max_completion_tokens=limits.max_completion_tokens or None,
                          max_seconds=limits.max_seconds or None),
            sampling=wconvert.sampling_from_proto(request.sampling) if request.HasField("sampling") else None,
            first_tool_choice=request.first_tool_choice or None)
