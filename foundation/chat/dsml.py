"""DSML tool-call markup: rendering assistant tool calls, and an incremental parser for the
`<｜DSML｜tool_calls>` block a model emits (grammar exactly as the official encoder writes it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from foundation.chat.errors import DSMLParseError
from foundation.chat.protocol import (
    DSML,
    INVOKE_CLOSE,
    INVOKE_OPEN,
    PARAMETER_CLOSE,
    PARAMETER_OPEN,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_OPEN,
    TOOLS_BLOCK_HEAD,
    TOOLS_BLOCK_TAIL,
)


def to_json(value: Any) -> str:
    """JSON as the official encoder writes it: default separators, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False)


def render_tools_block(schemas: Sequence[dict[str, Any]]) -> str:
    """The "## Tools" system-prompt section: fixed instructions, then one JSON schema per line."""
    return TOOLS_BLOCK_HEAD + "\n".join(to_json(s) for s in schemas) + TOOLS_BLOCK_TAIL


def render_parameter(name: str, value: Any) -> str:
    # Strings go in raw (string="true"); every other JSON type is serialised (string="false").
    if isinstance(value, str):
        return f'{PARAMETER_OPEN} name="{name}" string="true">{value}{PARAMETER_CLOSE}'
    return f'{PARAMETER_OPEN} name="{name}" string="false">{to_json(value)}{PARAMETER_CLOSE}'


def render_tool_calls(calls: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The tool-call block (without the leading blank line) for (name, arguments) pairs."""
    invokes = [
        f'{INVOKE_OPEN} name="{name}">\n'
        + "\n".join(render_parameter(k, v) for k, v in arguments.items())
        + f"\n{INVOKE_CLOSE}"
        for name, arguments in calls
    ]
    return f"{TOOL_CALLS_OPEN}\n" + "\n".join(invokes) + f"\n{TOOL_CALLS_CLOSE}"


@dataclass
class ParsedToolCall:
    """A tool call decoded from DSML: string="true" values are raw strings, others decoded JSON."""

    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


class _NeedMore(Exception):
    """The buffer ends before the grammar can decide; wait for more text."""


class _Cursor:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def fail(self, what: str) -> DSMLParseError:
        got = self.text[self.pos : self.pos + 40]
        return DSMLParseError(f"malformed DSML tool call: expected {what}, got {got!r}")

    def expect_one(self, *options: str) -> str:
        rest = self.text[self.pos :]
        for option in options:
            if rest.startswith(option):
                self.pos += len(option)
                return option
        if any(option.startswith(rest) for option in options):
            raise _NeedMore
        raise self.fail(" or ".join(repr(o) for o in options))

    def read_until(self, terminator: str, what: str, *, single_line: bool = False) -> str:
        end = self.text.find(terminator, self.pos)
        if end < 0:
            if single_line and "\n" in self.text[self.pos :]:
                raise self.fail(f"{what} ending in {terminator!r}")
            raise _NeedMore
        value = self.text[self.pos : end]
        if single_line and "\n" in value:
            raise self.fail(f"{what} ending in {terminator!r}")
        self.pos = end + len(terminator)
        return value


def _decode_value(name: str, raw: str, kind: str) -> Any:
    if kind == "true":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise DSMLParseError(
            f'parameter {name!r} has string="false" but is not JSON: {raw!r} ({err})'
        ) from None


def _read_value(cur: _Cursor, key: str) -> str:
    # A value cannot contain DSML markup, so the first DSML token must be the one of the close tag;
    # checking that catches an unclosed parameter early instead of at the end of the stream.
    dsml_at = cur.text.find(DSML, cur.pos)
    if dsml_at < 0:
        raise _NeedMore
    start = dsml_at - len("</")
    tail = cur.text[start:]
    if start >= cur.pos and tail.startswith(PARAMETER_CLOSE):
        value = cur.text[cur.pos : start]
        cur.pos = start + len(PARAMETER_CLOSE)
        return value
    if start >= cur.pos and PARAMETER_CLOSE.startswith(tail):
        raise _NeedMore
    raise DSMLParseError(
        f"malformed DSML tool call: value of parameter {key!r} is not closed by {PARAMETER_CLOSE!r}"
    )


def _parse_invoke(cur: _Cursor) -> ParsedToolCall:
    cur.expect_one(INVOKE_OPEN)
    while cur.pos < len(cur.text) and cur.text[cur.pos] in " \t":
        cur.pos += 1
    cur.expect_one('name="')
    name = cur.read_until('">\n', "a tool name", single_line=True)
    if not name or DSML in name:
        raise DSMLParseError(f"malformed DSML tool call: bad tool name {name!r}")
    arguments: dict[str, Any] = {}
    # An invoke without parameters is rendered with an empty line before the close tag.
    tag = cur.expect_one(PARAMETER_OPEN, INVOKE_CLOSE, "\n" + INVOKE_CLOSE)
    while tag == PARAMETER_OPEN:
        cur.expect_one(' name="')
        key = cur.read_until('"', "a parameter name", single_line=True)
        cur.expect_one(" string=")
        kind = cur.expect_one('"true">', '"false">')[1:-2]
        raw = _read_value(cur, key)
        if key in arguments:
            raise DSMLParseError(f"duplicate parameter {key!r} in call to {name!r}")
        arguments[key] = _decode_value(key, raw, kind)
        cur.expect_one("\n")
        tag = cur.expect_one(PARAMETER_OPEN, INVOKE_CLOSE)
    return ParsedToolCall(name=name, arguments=arguments)


class ToolCallBlockParser:
    """Incremental parser for the text that follows `\\n\\n<｜DSML｜tool_calls`.

    `feed` returns the tool calls completed by the new text and raises DSMLParseError as soon as
    the text cannot be valid. After the closing tag, `done` is true and `rest` holds what followed.
    """

    def __init__(self) -> None:
        self._text = ""
        self._pos = 0  # committed position: after the open tag or after a complete invoke
        self._opened = False
        self._expect_sep = True  # ">\n" after the open tag, "\n" after each invoke
        self.done = False
        self.rest = ""

    def feed(self, delta: str) -> list[ParsedToolCall]:
        if self.done:
            self.rest += delta
            return []
        self._text += delta
        calls: list[ParsedToolCall] = []
        try:
            while True:
                cur = _Cursor(self._text, self._pos)
                if self._expect_sep:
                    cur.expect_one(">\n" if not self._opened else "\n")
                    self._pos, self._opened, self._expect_sep = cur.pos, True, False
                if cur.expect_one(INVOKE_OPEN, TOOL_CALLS_CLOSE) == TOOL_CALLS_CLOSE:
                    self.done, self.rest = True, self._text[cur.pos :]
                    return calls
                cur.pos = self._pos
                calls.append(_parse_invoke(cur))
                # Commit right after the invoke so a call is never reported twice.
                self._pos, self._expect_sep = cur.pos, True
        except _NeedMore:
            return calls

    def finish(self) -> None:
        """Raise unless the block was closed."""
        if not self.done:
            raise DSMLParseError("unterminated DSML tool_calls block (completion ended inside it)")
