"""Parse a model completion (the text after the generation prefix) into reasoning, content and
tool calls, either in one shot or as a stream of text deltas.

Both paths run the same state machine, so they agree on every input. Text that might be the start
of a marker (`</think>`, EOS, the DSML tool-call block...) is held back until it is decided, so DSML
markup is never emitted as content. Lenient where serving needs it: the completion may end with or
without EOS, and a completion cut off inside reasoning yields that reasoning and empty content.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NoReturn

from foundation.chat.dsml import ParsedToolCall, ToolCallBlockParser
from foundation.chat.errors import DSMLParseError
from foundation.chat.protocol import (
    BOS,
    DSML,
    EOS,
    THINK_END,
    THINK_START,
    TOOL_CALLS_START,
    ChatMode,
)


@dataclass
class ReasoningDelta:
    text: str


@dataclass
class ContentDelta:
    text: str


@dataclass
class ToolCallEvent:
    """A tool call whose `</｜DSML｜invoke>` has been read; `index` counts calls from 0."""

    index: int
    name: str
    arguments: dict[str, Any]


ParseEvent = ReasoningDelta | ContentDelta | ToolCallEvent


@dataclass
class ParsedCompletion:
    """`reasoning_content` is None in non-think mode. `saw_eos`: the completion ended with EOS."""

    reasoning_content: str | None
    content: str
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    saw_eos: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "reasoning_content": self.reasoning_content,
            "content": self.content,
            "tool_calls": [tc.to_dict() for tc in self.tool_calls],
        }


class _State(enum.Enum):
    REASONING = "reasoning"
    CONTENT = "content"
    TOOL_CALLS = "tool_calls"
    AFTER_TOOL_CALLS = "after_tool_calls"
    DONE = "done"


# Per state: markers that end the current text, and markers that can never appear in it.
_ENDS = {_State.REASONING: (THINK_END, EOS), _State.CONTENT: (TOOL_CALLS_START, EOS)}
_FORBIDDEN = {
    _State.REASONING: (THINK_START, BOS, TOOL_CALLS_START, DSML),
    _State.CONTENT: (THINK_START, THINK_END, BOS, DSML),
}
_WHERE = {_State.REASONING: "reasoning", _State.CONTENT: "content"}


def _find_marker(text: str, markers: tuple[str, ...], final: bool) -> tuple[int, str | None]:
    """Earliest position where a marker starts (full match) or may start (a proper prefix of a
    marker reaches the end of `text`; ignored when `final`). Returns (len(text), None) if none."""
    firsts = {m[0] for m in markers}
    longest = max(len(m) for m in markers)
    for i, ch in enumerate(text):
        if ch not in firsts:
            continue
        for marker in markers:
            if text.startswith(marker, i):
                return i, marker
        # Only a tail shorter than the longest marker can be an unfinished marker.
        if not final and len(text) - i < longest and any(m.startswith(text[i:]) for m in markers):
            return i, None
    return len(text), None


class StreamingParser:
    """Feed completion text deltas, get events; `finish()` flushes and checks the end.

    On malformed input a DSMLParseError is raised whose `unparsed_text` is all input not yet
    represented by delivered events or consumed `</think>` / EOS markers (the call that raises
    delivers nothing; for an error inside a tool-call block it starts at the block). The parser
    stays failed and raises again, with the longer unparsed text, on later calls: no text is lost.
    """

    def __init__(self, mode: ChatMode | str) -> None:
        self.mode = ChatMode.parse(mode)
        self._state = _State.REASONING if self.mode.thinking else _State.CONTENT
        self._input = ""
        self._pos = 0  # input before this is emitted or consumed markup
        self._emitted_to = 0  # input before this is represented by emitted text deltas
        self._block: ToolCallBlockParser | None = None
        self._error: str | None = None
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._calls: list[ParsedToolCall] = []

    def feed(self, delta: str) -> list[ParseEvent]:
        self._input += delta
        return self._run(final=False)

    def finish(self) -> list[ParseEvent]:
        return self._run(final=True)

    @property
    def result(self) -> ParsedCompletion:
        """Everything delivered so far (complete after `finish()`)."""
        return ParsedCompletion(
            reasoning_content="".join(self._reasoning) if self.mode.thinking else None,
            content="".join(self._content),
            tool_calls=list(self._calls),
            saw_eos=self._state is _State.DONE,
        )

    def _fail(self, message: str) -> NoReturn:
        self._error = self._error or message
        raise DSMLParseError(self._error, self._input[self._emitted_to :])

    def _emit_text(self, end: int, events: list[ParseEvent]) -> None:
        text = self._input[self._pos : end]
        self._pos = self._emitted_to = end
        if text:
            events.append(
                ReasoningDelta(text) if self._state is _State.REASONING else ContentDelta(text)
            )

    def _run(self, final: bool) -> list[ParseEvent]:
        if self._error is not None:
            self._fail(self._error)
        # Transactional: if this call fails, none of its events are delivered, so their text is
        # part of the error's unparsed_text instead of being lost.
        delivered_to = self._emitted_to
        events: list[ParseEvent] = []
        try:
            while self._step(final, events):
                pass
        except DSMLParseError as err:
            self._error, self._emitted_to = str(err), delivered_to
            raise DSMLParseError(self._error, self._input[delivered_to:]) from None
        for event in events:
            if isinstance(event, ReasoningDelta):
                self._reasoning.append(event.text)
            elif isinstance(event, ContentDelta):
                self._content.append(event.text)
            else:
                self._calls.append(ParsedToolCall(event.name, event.arguments))
        return events

    def _step(self, final: bool, events: list[ParseEvent]) -> bool:
        """Advance once; False when more input is needed."""
        state, rest = self._state, self._input[self._pos :]
        if state in _ENDS:
            offset, marker = _find_marker(rest, _ENDS[state] + _FORBIDDEN[state], final)
            self._emit_text(self._pos + offset, events)
            if marker is None:
                return False
            if marker not in _ENDS[state]:
                self._fail(f"unexpected {marker!r} in {_WHERE[state]}")
            self._pos += len(marker)
            if marker == TOOL_CALLS_START:
                # Until the block closes, its raw text stays "unparsed" for error recovery.
                self._state, self._block = _State.TOOL_CALLS, ToolCallBlockParser()
                return True
            self._emitted_to = self._pos
            if marker == THINK_END:
                self._state = _State.CONTENT
            else:
                self._state = _State.DONE
            return True
        if state is _State.TOOL_CALLS:
            assert self._block is not None, "tool-call state without a block parser"
            try:
                calls = self._block.feed(rest)
            except DSMLParseError as err:
                self._fail(str(err))
            self._pos = len(self._input)
            num_calls = len(self._calls) + sum(isinstance(e, ToolCallEvent) for e in events)
            events.extend(
                ToolCallEvent(num_calls + i, c.name, c.arguments) for i, c in enumerate(calls)
            )
            if not self._block.done:
                if final:
                    self._fail("unterminated DSML tool_calls block: the completion ended inside it")
                return False
            # Re-scan what followed the close tag in the next state.
            self._pos = self._emitted_to = len(self._input) - len(self._block.rest)
            self._state = _State.AFTER_TOOL_CALLS
            return True
        if state is _State.AFTER_TOOL_CALLS:
            if rest.startswith(EOS):
                self._pos += len(EOS)
                self._emitted_to = self._pos
                self._state = _State.DONE
                return True
            if rest and not (EOS.startswith(rest) and not final):
                self._fail(f"unexpected text after the tool_calls block: {rest[:40]!r}")
            return False
        if rest:  # DONE
            self._fail(f"unexpected text after the end of sequence: {rest[:40]!r}")
        return False


def parse_completion(text: str, mode: ChatMode | str) -> ParsedCompletion:
    """Parse a whole completion. Raises DSMLParseError on malformed output."""
    parser = StreamingParser(mode)
    parser.feed(text)
    parser.finish()
    return parser.result
