"""Append-only prompt rendering for persistent sessions (the KV cache keeps every earlier token).

Fixed at creation (`SessionHead`): Think Max (its instruction sits right after BOS), system prompt,
tools, response_format. Chosen per turn: non-think vs think-high (`render_turn(..., mode)`).
Reasoning is always kept (keep_thinking): dropping it would rewrite cached tokens. Invariant:
head + pieces == `render_session(...)` (== `render_prompt(..., keep_thinking=True)` for one mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foundation.chat.encoding import render_body, render_messages, render_transition
from foundation.chat.errors import MessageFormatError, SessionStateError
from foundation.chat.messages import (
    Message,
    merge_tool_messages,
    parse_message,
    sort_tool_results,
)
from foundation.chat.protocol import (
    BOS,
    EOS,
    EOS_ID,
    THINK_MAX_INSTRUCTION,
    TOOL_CALLS_START,
    ChatMode,
)
from foundation.chat.tokenizer import Tokenizer, load_tokenizer

_TURN_ROLES = ("user", "tool", "developer", "assistant", "latest_reminder")
_TURN_ENDS = ("user", "tool", "developer")


@dataclass(frozen=True)
class SessionHead:
    """What a session fixes at creation; `tools` are OpenAI tool dicts (any sequence, or None, is kept as a tuple).

    The one head type: the renderer reads it, and the worker's session store keeps it in every commit record
    (`model_worker.sessions.Head` is this class)."""

    think_max: bool = False
    system_prompt: str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    response_format: Mapping[str, Any] | None = None  # a JSON schema every reply's content must match
    head_tokens: int = 0  # stored with a session: tokens of its rendered head (the shared-prefix candidate)

    def __post_init__(self) -> None:
        if not isinstance(self.tools, tuple):
            object.__setattr__(self, "tools", tuple(self.tools or ()))

    def system_message(self) -> Message | None:
        if self.system_prompt is None and not self.tools and not self.response_format:
            return None
        raw = {
            "role": "system",
            "content": self.system_prompt or "",
            "tools": list(self.tools),
            "response_format": self.response_format,
        }
        return parse_message(raw, 0)

    def render(self) -> str:
        system = self.system_message()
        text = BOS + (THINK_MAX_INSTRUCTION if self.think_max else "")
        return text + (render_body(system, show_reasoning=False) if system else "")


@dataclass
class RenderedPiece:
    """Text to append to the session and its token ids (generated ids are never re-encoded)."""

    text: str
    token_ids: list[int] = field(default_factory=list)


def _turn_mode(head: SessionHead, mode: ChatMode | str) -> ChatMode:
    mode = ChatMode.parse(mode)
    if mode is ChatMode.THINK_MAX and not head.think_max:
        raise SessionStateError(
            "think-max needs a session created with think_max=True (its instruction "
            "sits right after BOS)"
        )
    return mode


def _turn_messages(
    raw: Sequence[Mapping[str, Any]], thinking: bool, *, first_index: int
) -> list[Message]:
    msgs = [parse_message(m, first_index + i) for i, m in enumerate(raw)]
    for i, msg in enumerate(msgs):
        if msg.role not in _TURN_ROLES:
            raise MessageFormatError(
                f"messages[{first_index + i}]: role {msg.role!r} is fixed by the session head"
            )
        msg.thinking = thinking
    return msgs


def render_session(
    head: SessionHead, turns: Sequence[tuple[Sequence[Mapping[str, Any]], ChatMode | str]]
) -> str:
    """Full (non-incremental) render of a session: each turn is (messages, mode) and may end with
    the assistant reply. Use it to rebuild a session's text from scratch."""
    msgs: list[Message] = []
    system = head.system_message()
    if system is not None:
        msgs.append(system)
    for raw, mode in turns:
        msgs.extend(_turn_messages(raw, _turn_mode(head, mode).thinking, first_index=len(msgs)))
    msgs = merge_tool_messages(msgs)
    sort_tool_results(msgs)
    return render_messages(msgs, think_max=head.think_max, drop=False)


class ChatSession:
    """Renders what to append after each event of a persistent session.

    Order of calls: `render_turn` (new user/tool messages, ends with the generation prefix), then
    `append_completion` (generated ids) or `append_assistant` (a reply produced elsewhere), repeat.
    """

    def __init__(self, head: SessionHead, tokenizer: Tokenizer | None = None) -> None:
        self.head = head
        self._tokenizer = tokenizer or load_tokenizer()
        system = head.system_message()
        self._prev: Message | None = system
        self._num_messages = 1 if system else 0
        self._call_order: dict[str, int] = {}
        self._open_turn: ChatMode | None = None  # mode of the turn awaiting its reply
        self.head_piece = self._piece(head.render())
        self.token_ids: list[int] = list(self.head_piece.token_ids)

    @property
    def awaiting_reply(self) -> bool:
        return self._open_turn is not None

    def state(self) -> dict[str, Any]:
        """What rendering the next turn depends on besides the head (JSON; stored with a persistent session)."""
        return {"num_messages": self._num_messages, "call_order": dict(self._call_order),
                "open_turn": None if self._open_turn is None else self._open_turn.value,
                "prev_role": None if self._prev is None else self._prev.role,
                "prev_task": None if self._prev is None else self._prev.task}

    @classmethod
    def resume(cls, head: SessionHead, state: Mapping[str, Any], token_ids: Sequence[int],
               tokenizer: Tokenizer | None = None) -> ChatSession:
        """The session as `state()` left it, its token log being `token_ids`."""
        session = cls(head, tokenizer)
        session._num_messages = int(state["num_messages"])
        session._call_order = {str(k): int(v) for k, v in state["call_order"].items()}
        session._open_turn = None if state["open_turn"] is None else ChatMode.parse(state["open_turn"])
        session._prev = None if state["prev_role"] is None else Message(role=state["prev_role"],
                                                                         task=state["prev_task"])
        session.token_ids = list(token_ids)
        return session

    def _piece(self, text: str) -> RenderedPiece:
        return RenderedPiece(text, self._tokenizer.encode(text) if text else [])

    def _append(self, piece: RenderedPiece) -> RenderedPiece:
        self.token_ids.extend(piece.token_ids)
        return piece

    def render_turn(
        self, new_messages: Sequence[Mapping[str, Any]], mode: ChatMode | str
    ) -> RenderedPiece:
        """Text to append for new messages (user / tool / developer / latest_reminder, or assistant
        history); the last one must be user, tool or developer so the generation prefix follows."""
        if self._open_turn is not None:
            raise SessionStateError(
                "the previous turn has no reply yet: call append_completion first"
            )
        turn_mode = _turn_mode(self.head, mode)
        if not new_messages:
            raise MessageFormatError("render_turn needs at least one message")
        msgs = _turn_messages(new_messages, turn_mode.thinking, first_index=self._num_messages)
        if msgs[-1].role not in _TURN_ENDS:
            raise MessageFormatError(
                f"a turn must end with a user, tool or developer message, not {msgs[-1].role}"
            )
        self._num_messages += len(msgs)
        # The previous message is an assistant reply or the system head, so nothing merges across.
        msgs = merge_tool_messages(msgs)
        self._call_order = sort_tool_results(msgs, self._call_order)
        parts: list[str] = []
        prev = self._prev
        for i, msg in enumerate(msgs):
            after_task = prev is not None and prev.task is not None
            parts.append(render_body(msg, show_reasoning=msg.thinking and not after_task))
            next_role = msgs[i + 1].role if i + 1 < len(msgs) else None
            parts.append(render_transition(msg, next_role, open_thinking=True))
            prev = msg
        self._prev, self._open_turn = prev, turn_mode
        return self._append(self._piece("".join(parts)))

    def append_completion(
        self, completion_ids: Sequence[int], *, tool_call_ids: Sequence[str] = ()
    ) -> RenderedPiece:
        """Record the generated ids as the reply (appended as-is) and return the closing piece:
        EOS, or nothing when the completion already ends with EOS.

        `tool_call_ids`: ids given to the reply's tool calls, in call order; later tool results are
        sorted by them.
        """
        if self._open_turn is None:
            raise SessionStateError("no turn is awaiting a reply: call render_turn first")
        text = self._tokenizer.decode(completion_ids)
        if tool_call_ids and TOOL_CALLS_START not in text:
            raise SessionStateError("tool_call_ids given but the completion has no tool-call block")
        if TOOL_CALLS_START in text:
            self._call_order = {call_id: i for i, call_id in enumerate(tool_call_ids) if call_id}
        self.token_ids.extend(completion_ids)
        self._prev, self._open_turn = Message(role="assistant"), None
        self._num_messages += 1
        ends_with_eos = bool(completion_ids) and completion_ids[-1] == EOS_ID
        return self._append(
            RenderedPiece("", []) if ends_with_eos else RenderedPiece(EOS, [EOS_ID])
        )

    def append_assistant(self, message: Mapping[str, Any]) -> RenderedPiece:
        """Render a reply that was not generated by this session (OpenAI assistant message)."""
        if self._open_turn is None:
            raise SessionStateError("no turn is awaiting a reply: call render_turn first")
        msg = parse_message(message, self._num_messages)
        if msg.role != "assistant":
            raise MessageFormatError(f"append_assistant needs an assistant message, got {msg.role}")
        after_task = self._prev is not None and self._prev.task is not None
        text = render_body(msg, show_reasoning=self._open_turn.thinking and not after_task)
        self._call_order = sort_tool_results([msg], self._call_order)
        self._prev, self._open_turn = msg, None
        self._num_messages += 1
        return self._append(self._piece(text))
