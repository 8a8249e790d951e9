"""The blocking client of the model worker: typed methods over every RPC (the channel, deadlines and retries are
SyncRpcClient's). Thread-safe, so one client serves a whole process."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Unpack

import grpc

from foundation.clients.worker import convert, errors, requests
from foundation.clients.worker.base import SyncRpcClient
from foundation.clients.worker.types import (
    Delta,
    Event,
    Final,
    GenerateArgs,
    Load,
    Message,
    Mode,
    ModelInfo,
    Priority,
    Sampling,
    SessionInfo,
    Tool,
)
from protos.dsv4.worker.v1 import worker_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2_grpc


class WorkerClient(SyncRpcClient):
    """`timeout` is the default deadline of every call in seconds (None: none); each method takes its own. Failed
    calls raise `errors.WorkerError` subclasses; bad arguments raise ValueError/TypeError before sending."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        super().__init__(target, worker_pb2_grpc.ModelWorkerStub, api_key=api_key, timeout=timeout, retries=retries,
                         backoff=backoff, channel_options=channel_options, credentials=credentials)

    def __enter__(self) -> WorkerClient:
        return self

    # -- generation ----------------------------------------------------------------------------------------------

    def generate(
        self,
        *,
        session_id: str | None = None,
        messages: Sequence[Message] | None = None,
        token_ids: Sequence[int] | None = None,
        tools: Sequence[Tool] | None = None,
        mode: Mode | None = None,
        sampling: Sampling | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool = True,
        response_format: dict[str, Any] | str | None = None,
        priority: Priority | None = None,
        request_id: str | None = None,
        commit_every: int | None = None,
        expected_commit: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Stream Delta / ToolCall events and one Final last. `tool_choice` is "auto", "none", "required" or a tool
        name (`parallel_tool_calls=False`: at most one call); `response_format` a JSON schema. Arguments are checked
        now; the call starts on the first `next`.
        Stopping early (closing the iterator) cancels the generation."""
        request = requests.generate(
            session_id=session_id,
            messages=messages,
            token_ids=token_ids,
            tools=tools,
            mode=mode,
            sampling=sampling,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            response_format=response_format,
            priority=priority,
            request_id=request_id,
            commit_every=commit_every,
            expected_commit=expected_commit,
        )
        return self._events(request, timeout)

    def _events(self, request: pb.GenerateRequest, timeout: float | None) -> Iterator[Event]:
        finished = False
        with contextlib.closing(self._stream("Generate", request, timeout)) as responses:
            for response in responses:
                event = convert.event_from_proto(response)
                if event is not None:
                    finished = isinstance(event, Final)
                    yield event
        if not finished:
            raise errors.ProtocolError("the Generate stream ended without a final event")

    def generate_text(self, **kwargs: Unpack[GenerateArgs]) -> tuple[Final, str]:
        """Run `generate` to the end: its Final and the answer's text (the non-reasoning deltas, joined)."""
        parts: list[str] = []
        final: Final | None = None
        # Read to the end, so the call finishes rather than being cancelled.
        for event in self.generate(**kwargs):
            if isinstance(event, Delta) and not event.reasoning:
                parts.append(event.text)
            elif isinstance(event, Final):
                final = event
        assert final is not None  # _events raises when the stream has none
        return final, "".join(parts)

    def abort(self, request_id: str, *, timeout: float | None = None) -> bool:
        """Whether a running request was aborted (False: unknown or already finished)."""
        return self._unary("Abort", pb.AbortRequest(request_id=request_id), timeout).aborted

    # -- sessions ------------------------------------------------------------------------------------------------

    def create_session(
        self,
        *,
        system_prompt: str = "",
        tools: Sequence[Tool] | None = None,
        think_max: bool = False,
        session_id: str | None = None,
        response_format: dict[str, Any] | str | None = None,
        from_session: str | None = None,
        timeout: float | None = None,
    ) -> SessionInfo:
        """A new session; with `from_session`, a copy of that session's transcript (e.g. `think_max=True` for a
        Think Max copy), prefilled."""
        request = requests.create_session(
            system_prompt=system_prompt,
            tools=tools,
            think_max=think_max,
            session_id=session_id,
            response_format=response_format,
            from_session=from_session,
        )
        return convert.session_from_proto(self._unary("CreateSession", request, timeout))

    def append(
        self,
        session_id: str,
        messages: Sequence[Message] | None = None,
        *,
        token_ids: Sequence[int] | None = None,
        mode: Mode | None = None,
        expected_commit: int | None = None,
        timeout: float | None = None,
    ) -> SessionInfo:
        """Prefill and commit without generating. Retried on UNAVAILABLE only with `expected_commit` (the session's
        commit the append builds on): without it, an append that reached the server before the connection failed
        would be applied twice; with it, the server refuses the repeat (FailedPrecondition)."""
        request = requests.append(session_id, messages, token_ids, mode, expected_commit)
        response = self._unary("AppendSession", request, timeout, retry=expected_commit is not None)
        return convert.session_from_proto(response)

    def fork(
        self,
        session_id: str,
        commit: int | None = None,
        new_session_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> SessionInfo:
        request = requests.fork(session_id, commit, new_session_id)
        return convert.session_from_proto(self._unary("ForkSession", request, timeout))

    def rewind(self, session_id: str, commit: int, *, timeout: float | None = None) -> SessionInfo:
        request = pb.RewindSessionRequest(session_id=session_id, commit=commit)
        return convert.session_from_proto(self._unary("RewindSession", request, timeout))

    def get_session(self, session_id: str, *, include_bytes: bool = False,
                    timeout: float | None = None) -> SessionInfo:
        """The session's length, commits and head; `include_bytes` also sizes its stored values per tier (work
        proportional to its length)."""
        request = pb.GetSessionRequest(session_id=session_id, include_bytes=include_bytes)
        return convert.session_from_proto(self._unary("GetSession", request, timeout))

    def list_sessions(self, *, page_size: int | None = None, timeout: float | None = None) -> list[str]:
        """Every session ID, fetching page after page (`timeout` applies to each page)."""
        ids: list[str] = []
        token = ""
        while True:
            request = pb.ListSessionsRequest(page_size=page_size or 0, page_token=token)
            page = self._unary("ListSessions", request, timeout)
            ids.extend(page.session_ids)
            if not page.next_page_token:
                return ids
            if page.next_page_token == token:
                raise errors.ProtocolError(f"ListSessions returned its page token {token!r} again")
            token = page.next_page_token

    def delete_session(self, session_id: str, *, timeout: float | None = None) -> None:
        self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), timeout)

    def hold_session(self, session_id: str, holder: str, seconds: float, *, timeout: float | None = None) -> None:
        """Keep the session from expiring for `seconds` while `holder` needs it (renew by calling again); 0 releases."""
        request = pb.HoldSessionRequest(session_id=session_id, holder=holder, seconds=seconds)
        self._unary("HoldSession", request, timeout)

    def export_session(self, session_id: str, path: str | os.PathLike[str], *, timeout: float | None = None) -> int:
        """Write the session's export file to `path`; returns its size. The file appears whole or not at all (the
        chunks go to a temporary file beside it, renamed at the end)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        size = 0
        try:
            request = pb.ExportSessionRequest(session_id=session_id)
            chunks = contextlib.closing(self._stream("ExportSession", request, timeout))
            with os.fdopen(fd, "wb") as file, chunks as responses:
                for chunk in responses:
                    file.write(chunk.data)
                    size += len(chunk.data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    # -- tokens and the worker -----------------------------------------------------------------------------------

    def tokenize(
        self,
        text: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        mode: Mode | None = None,
        tools: Sequence[Tool] | None = None,
        timeout: float | None = None,
    ) -> list[int]:
        request = requests.tokenize(text, messages, mode, tools)
        return list(self._unary("Tokenize", request, timeout).ids)

    def detokenize(self, ids: Sequence[int], *, timeout: float | None = None) -> str:
        return self._unary("Detokenize", pb.DetokenizeRequest(ids=ids), timeout).text

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        return convert.model_info_from_proto(self._unary("GetModelInfo", pb.GetModelInfoRequest(), timeout))

    def load(self, *, timeout: float | None = None) -> Load:
        return convert.load_from_proto(self._unary("GetLoad", pb.GetLoadRequest(), timeout))
