"""A typed client of the agent service (protos/dsv4/agent/v1/agent.proto) for agent frameworks and scripts; its
asyncio twin is `AsyncAgentClient`. It takes and returns the dataclasses of types.py and events.py, never protobuf.
Channel, deadlines and retries are the platform's (foundation.clients.worker.base). A turn started here has its ID
chosen here, so a stream cut by the network is picked up again by attaching after the last event seen."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from foundation.clients.agent import convert
from foundation.clients.agent.events import TurnEvent
from foundation.clients.agent.types import AgentSession, SessionPage, Transcript, Turn
from foundation.clients.worker import Sampling
from foundation.clients.worker.base import SyncRpcClient
from foundation.clients.worker.convert import sampling_to_proto
from foundation.clients.worker.errors import Unavailable
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.agent.v1 import agent_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2


class TurnStream:
    """A turn's events as they come (iterate it once). `turn_id` and `last_seq` say where it stands: another process
    can go on with `attach(turn_id, after_seq=last_seq)`."""

    def __init__(self, turn_id: str, after_seq: int) -> None:
        self.turn_id, self.last_seq = turn_id, after_seq

    def _seen(self, message: pb.TurnEvent) -> TurnEvent:
        self.last_seq = message.seq
        return convert.event_from_proto(message)


class TurnEvents(TurnStream):
    def __init__(self, client: AgentClient, turn_id: str, first: Iterator[pb.TurnEvent], after_seq: int,
                 reattach: int) -> None:
        super().__init__(turn_id, after_seq)
        self._events = self._follow(client, first, reattach)

    def __iter__(self) -> Iterator[TurnEvent]:
        return self._events

    def __next__(self) -> TurnEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop reading (the turn goes on in the service; CancelTurn stops it)."""
        self._events.close()

    def _follow(self, client: AgentClient, stream: Iterator[pb.TurnEvent], reattach: int) -> Iterator[TurnEvent]:
        for attempt in range(reattach + 1):
            try:
                for message in stream:
                    yield self._seen(message)
                return
            except Unavailable:
                if attempt == reattach:
                    raise
                time.sleep(min(0.2 * 2 ** attempt, 5.0))
                stream = client._attach_stream(self.turn_id, self.last_seq)


def run_turn_request(session_id: str, content: str | None, mode: str | None, difficulty: str, max_steps: int,
                     max_completion_tokens: int, max_seconds: float, sampling: Sampling | None,
                     first_tool_choice: str, turn_id: str, webhook_url: str) -> pb.RunTurnRequest:
    if mode not in convert.MODES:
        raise ValueError(f"mode: one of {', '.join(m for m in convert.MODES if m)}, not {mode!r}")
    return pb.RunTurnRequest(
        session_id=session_id, messages=[worker_pb2.ChatMessage(role="user", content=content)] if content else [],
        mode=convert.MODES[mode], difficulty=difficulty, first_tool_choice=first_tool_choice, turn_id=turn_id,
        limits=pb.TurnLimits(max_steps=max_steps, max_completion_tokens=max_completion_tokens,
                             max_seconds=max_seconds),
        sampling=sampling_to_proto(sampling) if sampling else None, webhook_url=webhook_url)


class AgentClient(SyncRpcClient):
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, **options: Any) -> None:
        super().__init__(target, agent_pb2_grpc.AgentServiceStub, api_key=api_key, timeout=timeout,
                         credentials=credentials, **options)

    # -- sessions ------------------------------------------------------------------------------------------------

    def create_session(self, session_id: str = "", *, system_prompt: str = "", tools: Sequence[str] = (),
                       think_max: bool = False, mcp_servers: Sequence[str] = ()) -> AgentSession:
        """`tools` among the service's (none: all of its own); `mcp_servers` among those its operator configured
        for this tenant (all their tools join, named `{server}__{tool}`)."""
        request = pb.CreateSessionRequest(session_id=session_id, system_prompt=system_prompt, tools=list(tools),
                                          think_max=think_max, mcp_servers=list(mcp_servers))
        # A named session is not made twice, so its creation can be retried.
        return convert.session_from_proto(self._unary("CreateSession", request, None, retry=bool(session_id)))

    def get_session(self, session_id: str) -> AgentSession:
        return convert.session_from_proto(self._unary("GetSession", pb.GetSessionRequest(session_id=session_id),
                                                      None))

    def list_sessions(self, limit: int = 20, after: str = "") -> SessionPage:
        request = pb.ListSessionsRequest(limit=limit, after=after)
        return convert.session_page_from_proto(self._unary("ListSessions", request, None))

    def delete_session(self, session_id: str) -> None:
        self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), None)

    def fork(self, session_id: str, step: int = 0, new_session_id: str = "") -> AgentSession:
        request = pb.ForkSessionRequest(session_id=session_id, step=step, new_session_id=new_session_id)
        return convert.session_from_proto(self._unary("ForkSession", request, None, retry=bool(new_session_id)))

    def transcript(self, session_id: str, *, before: int = 0, limit: int = 100) -> Transcript:
        request = pb.GetTranscriptRequest(session_id=session_id, before=before, limit=limit)
        return convert.transcript_from_proto(self._unary("GetTranscript", request, None))

    # -- turns ---------------------------------------------------------------------------------------------------

    def run_turn(self, session_id: str, content: str | None = None, *, mode: str | None = None,
                 difficulty: str = "", max_steps: int = 0, max_completion_tokens: int = 0, max_seconds: float = 0,
                 sampling: Sampling | None = None, first_tool_choice: str = "", turn_id: str = "",
                 webhook_url: str = "", reattach: int = 5) -> TurnEvents:
        """Start a turn with a user message (none: continue the last step) and stream its events until it ends.
        A stream the network cuts is resumed after the last event seen, up to `reattach` times. `webhook_url` is
        POSTed when the turn ends, fails or waits for approval, so a caller may leave and come back."""
        turn_id = turn_id or f"turn-{uuid.uuid4().hex}"
        request = run_turn_request(session_id, content, mode, difficulty, max_steps, max_completion_tokens,
                                   max_seconds, sampling, first_tool_choice, turn_id, webhook_url)
        return TurnEvents(self, turn_id, self._stream("RunTurn", request, None), -1, reattach)

    def attach(self, turn_id: str, after_seq: int = -1, reattach: int = 5) -> TurnEvents:
        """A turn's events after `after_seq` (-1: from the start), then new ones until it ends."""
        return TurnEvents(self, turn_id, self._attach_stream(turn_id, after_seq), after_seq, reattach)

    def _attach_stream(self, turn_id: str, after_seq: int) -> Iterator[pb.TurnEvent]:
        return self._stream("Attach", pb.AttachRequest(turn_id=turn_id, after_seq=after_seq), None)

    def get_turn(self, turn_id: str) -> Turn:
        return convert.turn_from_proto(self._unary("GetTurn", pb.GetTurnRequest(turn_id=turn_id), None))

    def list_turns(self, session_id: str, limit: int = 20) -> list[Turn]:
        response = self._unary("ListTurns", pb.ListTurnsRequest(session_id=session_id, limit=limit), None)
        return [convert.turn_from_proto(t) for t in response.turns]

    def decide(self, session_id: str, tool_call_id: str, approve: bool) -> Turn:
        request = pb.DecideToolCallRequest(session_id=session_id, tool_call_id=tool_call_id, approve=approve)
        return convert.turn_from_proto(self._unary("DecideToolCall", request, None, retry=False))

    def cancel(self, turn_id: str) -> Turn:
        return convert.turn_from_proto(self._unary("CancelTurn", pb.CancelTurnRequest(turn_id=turn_id), None))
