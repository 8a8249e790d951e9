"""`AgentClient`'s asyncio twin (grpc.aio): the same methods, awaited; a turn's events with `async for`. Create it
inside the event loop that uses it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from foundation.clients.agent import convert
from foundation.clients.agent.events import TurnEvent
from foundation.clients.agent.sync_client import TurnStream, run_turn_request
from foundation.clients.agent.types import AgentSession, SessionPage, Transcript, Turn
from foundation.clients.worker import Sampling
from foundation.clients.worker.base import AsyncRpcClient
from foundation.clients.worker.errors import Unavailable
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.agent.v1 import agent_pb2_grpc


class AsyncTurnEvents(TurnStream):
    def __init__(self, client: AsyncAgentClient, turn_id: str, first: AsyncIterator[pb.TurnEvent], after_seq: int,
                 reattach: int) -> None:
        super().__init__(turn_id, after_seq)
        self._events = self._follow(client, first, reattach)

    def __aiter__(self) -> AsyncIterator[TurnEvent]:
        return self._events

    async def __anext__(self) -> TurnEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        """Stop reading (the turn goes on in the service; CancelTurn stops it)."""
        await self._events.aclose()

    async def _follow(self, client: AsyncAgentClient, stream: AsyncIterator[pb.TurnEvent], reattach: int):
        for attempt in range(reattach + 1):
            try:
                async for message in stream:
                    yield self._seen(message)
                return
            except Unavailable:
                if attempt == reattach:
                    raise
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))
                stream = client._attach_stream(self.turn_id, self.last_seq)


class AsyncAgentClient(AsyncRpcClient):
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, **options: Any) -> None:
        super().__init__(target, agent_pb2_grpc.AgentServiceStub, api_key=api_key, timeout=timeout,
                         credentials=credentials, **options)

    # -- sessions ------------------------------------------------------------------------------------------------

    async def create_session(self, session_id: str = "", *, system_prompt: str = "", tools: Sequence[str] = (),
                             think_max: bool = False, mcp_servers: Sequence[str] = ()) -> AgentSession:
        request = pb.CreateSessionRequest(session_id=session_id, system_prompt=system_prompt, tools=list(tools),
                                          think_max=think_max, mcp_servers=list(mcp_servers))
        return convert.session_from_proto(await self._unary("CreateSession", request, None, retry=bool(session_id)))

    async def get_session(self, session_id: str) -> AgentSession:
        request = pb.GetSessionRequest(session_id=session_id)
        return convert.session_from_proto(await self._unary("GetSession", request, None))

    async def list_sessions(self, limit: int = 20, after: str = "") -> SessionPage:
        request = pb.ListSessionsRequest(limit=limit, after=after)
        return convert.session_page_from_proto(await self._unary("ListSessions", request, None))

    async def delete_session(self, session_id: str) -> None:
        await self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), None)

    async def fork(self, session_id: str, step: int = 0, new_session_id: str = "") -> AgentSession:
        request = pb.ForkSessionRequest(session_id=session_id, step=step, new_session_id=new_session_id)
        return convert.session_from_proto(await self._unary("ForkSession", request, None,
                                                            retry=bool(new_session_id)))

    async def transcript(self, session_id: str, *, before: int = 0, limit: int = 100) -> Transcript:
        request = pb.GetTranscriptRequest(session_id=session_id, before=before, limit=limit)
        return convert.transcript_from_proto(await self._unary("GetTranscript", request, None))

    # -- turns ---------------------------------------------------------------------------------------------------

    def run_turn(self, session_id: str, content: str | None = None, *, mode: str | None = None,
                 difficulty: str = "", max_steps: int = 0, max_completion_tokens: int = 0, max_seconds: float = 0,
                 sampling: Sampling | None = None, first_tool_choice: str = "", turn_id: str = "",
                 webhook_url: str = "", reattach: int = 5) -> AsyncTurnEvents:
        """As `AgentClient.run_turn`; the turn starts on the first `anext`."""
        turn_id = turn_id or f"turn-{uuid.uuid4().hex}"
        request = run_turn_request(session_id, content, mode, difficulty, max_steps, max_completion_tokens,
                                   max_seconds, sampling, first_tool_choice, turn_id, webhook_url)
        return AsyncTurnEvents(self, turn_id, self._stream("RunTurn", request, None), -1, reattach)

    def attach(self, turn_id: str, after_seq: int = -1, reattach: int = 5) -> AsyncTurnEvents:
        return AsyncTurnEvents(self, turn_id, self._attach_stream(turn_id, after_seq), after_seq, reattach)

    def _attach_stream(self, turn_id: str, after_seq: int) -> AsyncIterator[pb.TurnEvent]:
        return self._stream("Attach", pb.AttachRequest(turn_id=turn_id, after_seq=after_seq), None)

    async def get_turn(self, turn_id: str) -> Turn:
        return convert.turn_from_proto(await self._unary("GetTurn", pb.GetTurnRequest(turn_id=turn_id), None))

    async def list_turns(self, session_id: str, limit: int = 20) -> list[Turn]:
        response = await self._unary("ListTurns", pb.ListTurnsRequest(session_id=session_id, limit=limit), None)
        return [convert.turn_from_proto(t) for t in response.turns]

    async def decide(self, session_id: str, tool_call_id: str, approve: bool) -> Turn:
        request = pb.DecideToolCallRequest(session_id=session_id, tool_call_id=tool_call_id, approve=approve)
        return convert.turn_from_proto(await self._unary("DecideToolCall", request, None, retry=False))

    async def cancel(self, turn_id: str) -> Turn:
        return convert.turn_from_proto(await self._unary("CancelTurn", pb.CancelTurnRequest(turn_id=turn_id), None))
