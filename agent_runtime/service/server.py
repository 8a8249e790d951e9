"""The agent runtime over gRPC (protos/dsv4/agent/v1/agent.proto): tenants by API key, typed errors to status codes
and per-tenant limits as on the model worker; turns run detached (runs.py) and are followed by cursor. Every ID and
size a client sends is checked on the way in (requests.py), and every string and float is one the store keeps
(foundation/storable.py, checked by `rpc` first); session and turn IDs are the tenant's own, so another tenant's is
NOT_FOUND exactly as a missing one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc

from agent_runtime.loop import AgentLoop, worker_session_name
from agent_runtime.service import convert
from agent_runtime.service.requests import RequestBounds, new_session, turn_request
from agent_runtime.service.runs import TurnRunner
from agent_runtime.store.tables import TURN_ACTIVE
from agent_runtime.store.transcript import AgentSessionExists, AgentSessionNotFound, NotDecidable, ToolCallNotFound
from agent_runtime.store.turns import TurnActive, TurnExists, TurnNotFound
from agent_runtime.think_max import ThinkMaxJobFailed
from foundation.auth import tenant_for
from foundation.clients.agent.convert import event_to_proto
from foundation.clients.worker.errors import WorkerError
from foundation.errors import error_codes
from foundation.ids import check_id, check_optional_id
from foundation.limits import TokenRates
from foundation.sql import UNREACHABLE
from foundation.storable import check_message
from foundation.tenancy import acting_for
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.agent.v1 import agent_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentService"].full_name


# Every request is checked storable first (a NUL, a NaN: INVALID_ARGUMENT): sessions, turns and their requests are
# kept in SQL.
rpc = error_codes([(AgentSessionNotFound, grpc.StatusCode.NOT_FOUND), (TurnNotFound, grpc.StatusCode.NOT_FOUND),
                   (ToolCallNotFound, grpc.StatusCode.NOT_FOUND),
                   (AgentSessionExists, grpc.StatusCode.ALREADY_EXISTS), (TurnExists, grpc.StatusCode.ALREADY_EXISTS),
                   (TurnActive, grpc.StatusCode.FAILED_PRECONDITION),
                   (NotDecidable, grpc.StatusCode.FAILED_PRECONDITION),
                   (ThinkMaxJobFailed, grpc.StatusCode.ABORTED),
                   *((error, grpc.StatusCode.UNAVAILABLE) for error in UNREACHABLE)], check=check_message)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, loop: AgentLoop, runner: TurnRunner, api_keys: dict[str, str] | None = None,
                 rates: TokenRates | None = None, bounds: RequestBounds | None = None) -> None:
        self.loop, self.runner, self.store = loop, runner, loop.store
        self.api_keys, self.rates, self.bounds = dict(api_keys or {}), rates, bounds or RequestBounds()

    def _tenant(self, context) -> str:
        return tenant_for(dict(context.invocation_metadata()), self.api_keys)

    # -- sessions ------------------------------------------------------------------------------------------------

    @rpc
    def CreateSession(self, request, context) -> pb.AgentSession:
        tenant = self._tenant(context)
        new = new_session(request, self.bounds)
        with acting_for(tenant):
            row = self.loop.create_session(tenant, new.session_id, new.system_prompt, request.think_max, new.tools,
                                           new.mcp_servers)
        return convert.session(row)

    @rpc
    def GetSession(self, request, context) -> pb.AgentSession:
        return convert.session(self.store.get(self._tenant(context), check_id(request.session_id, "session_id")))

    @rpc
    def ListSessions(self, request, context) -> pb.ListSessionsResponse:
        limit = request.limit or 20
        if not 0 < limit <= 100:
            raise ValueError("limit: between 1 and 100")
        after = check_optional_id(request.after, "after")
        rows = self.store.list(self._tenant(context), limit + 1, after or None)
        return pb.ListSessionsResponse(sessions=[convert.session(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @rpc
    def DeleteSession(self, request, context) -> pb.DeleteSessionResponse:
        tenant = self._tenant(context)
        row = self.store.get(tenant, check_id(request.session_id, "session_id"))
        if row.active_turn:
            turn = self.runner.turns.get(tenant, row.active_turn)
            if turn.status in TURN_ACTIVE and not self.runner.turns.orphaned(turn):
                raise TurnActive(f"agent session {row.id} runs turn {row.active_turn}; cancel it first")
        self.store.delete(tenant, request.session_id)
        if row.worker_session_id:
            try:
                _, client = self.loop.workers.connect(row.worker_session_id, hint=row.worker_address)
                with acting_for(tenant):
                    client.delete_session(row.worker_session_id)
            except WorkerError:
                pass  # already gone (or its worker is): the agent session is deleted either way
        return pb.DeleteSessionResponse()

    @rpc
    def ForkSession(self, request, context) -> pb.AgentSession:
        tenant = self._tenant(context)
        new_id = check_optional_id(request.new_session_id, "new_session_id") or uuid.uuid4().hex
        parent = self.store.get(tenant, check_id(request.session_id, "session_id"))
        step = request.step or parent.steps
        if not 1 <= step <= parent.steps:
            raise ValueError(f"step: between 1 and {parent.steps} (the session's committed steps)")
        if self.store.exists(tenant, new_id):  # before the worker forks a session for it
            raise AgentSessionExists(f"agent session {new_id} exists")
        record = self.store.step_record(tenant, parent.id, step)
        address, client = self.loop.workers.connect(record.worker_session_id, hint=parent.worker_address)
        with acting_for(tenant):
            info = client.fork(record.worker_session_id, record.worker_commit, worker_session_name())
        self.loop.workers.placed(info.session_id, address)
        try:
            row = self.store.fork(tenant, parent.id, step, new_id, info.session_id, info.commit)
        except AgentSessionExists:  # a concurrent fork to the same ID won: its worker session is the one kept
            with acting_for(tenant):
                client.delete_session(info.session_id)
            raise
        self.store.set_worker(tenant, new_id, info.session_id, info.commit, address)
        return convert.session(self.store.get(tenant, row.id))

    @rpc
    def GetTranscript(self, request, context) -> pb.Transcript:
        tenant, limit = self._tenant(context), request.limit or 100
        if not 0 < limit <= 1000:
            raise ValueError("limit: between 1 and 1000")
        session = self.store.get(tenant, check_id(request.session_id, "session_id"))
        rows = self.store.page(tenant, session.id, request.before or None, limit)
        more = bool(rows) and rows[0].seq > 0
        return pb.Transcript(entries=[convert.entry(r) for r in rows], next_before=rows[0].seq if more else 0)

    # -- turns ---------------------------------------------------------------------------------------------------

    @rpc
    def RunTurn(self, request, context) -> Iterator[pb.TurnEvent]:
        tenant = self._tenant(context)
        checked = turn_request(request, self.bounds)
        if self.rates is not None:
            self.rates.admit(tenant, sum(len(m.get("content") or "") for m in checked.messages) // 4 + 1)
        turn_id = self.runner.start(tenant, request.session_id, checked, request.turn_id or None)
        for seq, event in self.runner.follow(tenant, turn_id, -1, context.is_active):
            yield event_to_proto(turn_id, seq, event)

    @rpc
    def Attach(self, request, context) -> Iterator[pb.TurnEvent]:
        tenant = self._tenant(context)
        self.runner.turns.get(tenant, check_id(request.turn_id, "turn_id"))
        for seq, event in self.runner.follow(tenant, request.turn_id, request.after_seq, context.is_active):
            yield event_to_proto(request.turn_id, seq, event)

    @rpc
    def GetTurn(self, request, context) -> pb.Turn:
        return convert.turn(self.runner.turns.get(self._tenant(context), check_id(request.turn_id, "turn_id")))

    @rpc
    def ListTurns(self, request, context) -> pb.ListTurnsResponse:
        tenant, limit = self._tenant(context), request.limit or 20
        if not 0 < limit <= 100:
            raise ValueError("limit: between 1 and 100")
        self.store.get(tenant, check_id(request.session_id, "session_id"))
        return pb.ListTurnsResponse(turns=[convert.turn(t) for t in self.runner.turns.list(
            tenant, request.session_id, limit)])

    @rpc
    def DecideToolCall(self, request, context) -> pb.Turn:
        tenant = self._tenant(context)
        check_id(request.session_id, "session_id")
        step = self.store.decide(tenant, request.session_id, check_id(request.tool_call_id, "tool_call_id"),
                                 request.approve)
        turn_id = self.store.step_record(tenant, request.session_id, step).turn_id
        self.runner.decided(tenant, turn_id)
        if turn_id is None:
            raise NotDecidable("the call's step belongs to no turn; the next turn settles it")
        return convert.turn(self.runner.turns.get(tenant, turn_id))

    @rpc
    def CancelTurn(self, request, context) -> pb.Turn:
        return convert.turn(self.runner.cancel(self._tenant(context), check_id(request.turn_id, "turn_id")))
