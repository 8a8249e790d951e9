"""Request messages built from a client method's arguments, shared by the sync and async clients so both validate
alike. Argument mistakes the server would reject anyway (both messages and token ids, an unknown mode) raise
ValueError here, before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from foundation.clients.worker import convert
from foundation.clients.worker.types import Message, Mode, Priority, Sampling, Tool
from protos.dsv4.worker.v1 import worker_pb2 as pb

# tool_choice strings with a meaning of their own; any other string names a tool.
_TOOL_CHOICE_FLAGS = ("auto", "none", "required")


def _set_input(
    request: Any, messages: Sequence[Message] | None, token_ids: Sequence[int] | None, *, required: bool
) -> None:
    if messages is not None and token_ids is not None:
        raise ValueError("pass messages or token_ids, not both")
    if isinstance(messages, Message):
        raise TypeError("messages is a sequence of Message; wrap a single one in a list")
    if messages is not None:
        request.messages.SetInParent()
        request.messages.messages.extend(convert.message_to_proto(m) for m in messages)
    elif token_ids is not None:
        request.token_ids.SetInParent()
        request.token_ids.ids.extend(token_ids)
    elif required:
        raise ValueError("pass messages or token_ids")


def tools_to_proto(tools: Sequence[Tool] | None) -> list[pb.Tool]:
    return [convert.tool_to_proto(t) for t in tools or ()]


def schema_text(schema: dict[str, Any] | str | None) -> str:
    if schema is None:
        return ""
    return schema if isinstance(schema, str) else convert.dump_json(schema)


def tool_choice_to_proto(choice: str | None) -> pb.ToolChoice | None:
    if choice is None:
        return None
    if not choice:
        raise ValueError("tool_choice is 'auto', 'none', 'required' or a tool's name, not empty")
    if choice in _TOOL_CHOICE_FLAGS:
        return pb.ToolChoice(**{choice: True})
    return pb.ToolChoice(function=choice)


def generate(
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
) -> pb.GenerateRequest:
    request = pb.GenerateRequest(
        request_id=request_id or "",
        session_id=session_id or "",
        tools=tools_to_proto(tools),
        mode=convert.enum_value(convert.MODES, mode, "mode"),
        priority=convert.enum_value(convert.PRIORITIES, priority, "priority"),
    )
    # A session may be continued without new input; a stateless request has nothing to generate from.
    _set_input(request, messages, token_ids, required=not session_id)
    if sampling is not None:
        request.sampling.CopyFrom(convert.sampling_to_proto(sampling))
    choice = tool_choice_to_proto(tool_choice)
    if choice is not None:
        request.tool_choice.CopyFrom(choice)
    if not parallel_tool_calls:
        request.tool_choice.one_call = True
    if response_format is not None:
        request.response_format.json_schema = schema_text(response_format)
    if commit_every is not None:
        request.commit_every = commit_every
    if expected_commit is not None:
        request.expected_commit = expected_commit
    return request


def create_session(
    *,
    system_prompt: str = "",
    tools: Sequence[Tool] | None = None,
    think_max: bool = False,
    session_id: str | None = None,
    response_format: dict[str, Any] | str | None = None,
    from_session: str | None = None,
) -> pb.CreateSessionRequest:
    return pb.CreateSessionRequest(
        session_id=session_id or "",
        system_prompt=system_prompt,
        tools=tools_to_proto(tools),
        think_max=think_max,
        response_format_json_schema=schema_text(response_format),
        from_session=from_session or "",
    )


def append(
    session_id: str, messages: Sequence[Message] | None, token_ids: Sequence[int] | None, mode: Mode | None,
    expected_commit: int | None = None,
) -> pb.AppendSessionRequest:
    request = pb.AppendSessionRequest(session_id=session_id, mode=convert.enum_value(convert.MODES, mode, "mode"))
    _set_input(request, messages, token_ids, required=True)
    if expected_commit is not None:
        request.expected_commit = expected_commit
    return request


def fork(session_id: str, commit: int | None, new_session_id: str | None) -> pb.ForkSessionRequest:
    request = pb.ForkSessionRequest(session_id=session_id, new_session_id=new_session_id or "")
    if commit is not None:
        request.commit = commit
    return request


def tokenize(
    text: str | None, messages: Sequence[Message] | None, mode: Mode | None, tools: Sequence[Tool] | None
) -> pb.TokenizeRequest:
    if (text is None) == (messages is None):
        raise ValueError("pass exactly one of text and messages")
    request = pb.TokenizeRequest(mode=convert.enum_value(convert.MODES, mode, "mode"), tools=tools_to_proto(tools))
    if text is not None:
        request.text = text
    else:
        _set_input(request, messages, None, required=True)
    return request
