"""A typed client of the agent service (protos/dsv4/agent/v1/agent.proto) for agent frameworks and scripts. Channel,
deadlines and retries are the platform's (foundation.clients.worker.base.SyncRpcClient). A turn started here has its ID
chosen here, so a stream cut by the network is picked up again by attaching after the last event seen."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from foundation.clients.worker import Sampling
from foundation.clients.worker.base import SyncRpcClient
from foundation.clients.worker.convert import sampling_to_proto
from foundation.clients.worker.errors import Unavailable
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.agent.v1 import agent_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2

MODES = {None: worker_pb2.REASONING_MODE_UNSPECIFIED, "non-think": worker_pb2.NON_THINK,
         "think-high": worker_pb2.THINK_HIGH, "think-max": worker_pb2.THINK_MAX}


class AgentClient(SyncRpcClient):
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, **options: Any) -> None:
        super().__init__(target, agent_pb2_grpc.AgentServiceStub, api_key=api_key, timeout=timeout,
                         credentials=credentials, **options)

    # -- sessions ------------------------------------------------------------------------------------------------

    def create_session(self, session_id: str = "", *, system_prompt: str = "", tools: Sequence[str] = (),
                       think_max: bool = False) -> pb.AgentSession:
        request = pb.CreateSessionRequest(session_id=session_id, system_prompt=system_prompt, tools=list(tools),
                                          think_max=think_max)
        return self._unary("CreateSession", request, None, retry=bool(session_id))  # a named one is not made twice

    def get_session(self, session_id: str) -> pb.AgentSession:
        return self._unary("GetSession", pb.GetSessionRequest(session_id=session_id), None)

    def list_sessions(self, limit: int = 20, after: str = "") -> pb.ListSessionsResponse:
        return self._unary("ListSessions", pb.ListSessionsRequest(limit=limit, after=after), None)

    def delete_session(self, session_id: str) -> None:
        self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), None)

    def fork(self, session_id: str, step: int = 0, new_session_id: str = "") -> pb.AgentSession:
        request = pb.ForkSessionRequest(session_id=session_id, step=step, new_session_id=new_session_id)
        return self._unary("ForkSession", request, None, retry=bool(new_session_id))

    def transcript(self, session_id: str, *, before: int = 0, limit: int = 100) -> pb.Transcript:
        return self._unary("GetTranscript", pb.GetTranscriptRequest(session_id=session_id, before=before,
                                                                    limit=limit), None)

    # -- turns ---------------------------------------------------------------------------------------------------

    def run_turn(self, session_id: str, content: str | None = None, *, mode: str | None = None,
                 difficulty: str = "", max_steps: int = 0, max_completion_tokens: int = 0, max_seconds: float = 0,
                 sampling: Sampling | None = None, first_tool_choice: str = "", turn_id: str = "",
                 reattach: int = 5) -> Iterator[pb.TurnEvent]:
        """Start a turn with a user message (none: continue the last step) and stream its events until it ends.
        A stream the network cuts is resumed after the last event seen, up to `reattach` times."""
        turn_id = turn_id or f"turn-{uuid.uuid4().hex}"
        request = pb.RunTurnRequest(
            session_id=session_id, messages=[worker_pb2.ChatMessage(role="user", content=content)] if content else [],
            mode=MODES[mode], difficulty=difficulty, first_tool_choice=first_tool_choice, turn_id=turn_id,
            limits=pb.TurnLimits(max_steps=max_steps, max_completion_tokens=max_completion_tokens,
                                 max_seconds=max_seconds),
            sampling=sampling_to_proto(sampling) if sampling else None)
        yield from self._resumable(self._stream("RunTurn", request, None), turn_id, reattach)

    def attach(self, turn_id: str, after_seq: int = -1, reattach: int = 5) -> Iterator[pb.TurnEvent]:
        """A turn's events after `after_seq` (-1: from the start), then new ones until it ends."""
        stream = self._stream("Attach", pb.AttachRequest(turn_id=turn_id, after_seq=after_seq), None)
        yield from self._resumable(stream, turn_id, reattach, after_seq)

    def _resumable(self, stream: Iterator[pb.TurnEvent], turn_id: str, reattach: int, last: int = -1):
        for attempt in range(reattach + 1):
            try:
                for event in stream:
                    last = event.seq
                    yield event
                return
            except Unavailable:
                if attempt == reattach:
                    raise
                time.sleep(min(0.2 * 2 ** attempt, 5.0))
                stream = self._stream("Attach", pb.AttachRequest(turn_id=turn_id, after_seq=last), None)

    def get_turn(self, turn_id: str) -> pb.Turn:
        return self._unary("GetTurn", pb.GetTurnRequest(turn_id=turn_id), None)

    def list_turns(self, session_id: str, limit: int = 20) -> list[pb.Turn]:
        return list(self._unary("ListTurns", pb.ListTurnsRequest(session_id=session_id, limit=limit), None).turns)

    def decide(self, session_id: str, tool_call_id: str, approve: bool) -> pb.Turn:
        request = pb.DecideToolCallRequest(session_id=session_id, tool_call_id=tool_call_id, approve=approve)
        return self._unary("DecideToolCall", request, None, retry=False)

    def cancel(self, turn_id: str) -> pb.Turn:
        return self._unary("CancelTurn", pb.CancelTurnRequest(turn_id=turn_id), None)
