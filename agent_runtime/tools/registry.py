"""A registry of JSON-schema tools the model may call. Every call ends in a `ToolResult`, never an exception: an unknown
tool, arguments that are not an object or do not match the schema, a timeout, an error in the tool and an oversized
output all become error results the model reads and can recover from. With a sandbox (agent_runtime/tools/sandbox.py)
the tools added through `register_from` run in its processes, where a timeout stops them, and every call is held to
the sandbox's timeout and output bounds.

    tools = ToolRegistry()

    @tools.tool(timeout_s=5)
    def lookup(word: str) -> str:
        "Look a word up."

    results = await tools.run_calls([ToolCall("c1", "lookup", {"word": "cat"})])
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import jsonschema

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_OUTPUT_BYTES = 64 << 10



class Sandbox(Protocol):
    """Where tools with an origin run (agent_runtime/tools/sandbox.py's `ToolSandbox`): another process, bounded."""

    timeout_s: float
    max_output_bytes: int

    def run(self, origin: ToolOrigin, name: str, arguments: dict[str, Any], timeout_s: float,
            max_output_bytes: int) -> tuple[str, int]: ...


class ToolFailed(Exception):
    """A tool run elsewhere (a sandbox process) raised; the message names the error, for the model to read."""


@dataclass(frozen=True)
class ToolOrigin:
    """How another process finds a tool again: `entry` ("package.module:function") called as
    function(registry, *args) registers it (args are JSON values)."""

    entry: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: Any  # as the model wrote them: usually a dict, anything when it erred


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str  # what the model reads next
    is_error: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class Tool:
    """A callable with its JSON schema and how it may be run.

    Attributes:
        serial: run alone, never concurrently with other calls of the same assistant message.
        idempotent: safe to run again after a crash left a call unfinished (it gets the same idempotency key).
        requires_approval: a human approves or rejects each call first (the turn pauses until then).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] | Callable[..., Awaitable[Any]]
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    serial: bool = False
    idempotent: bool = False
    requires_approval: bool = False
    wants_idempotency_key: bool = field(default=False, repr=False)
    origin: ToolOrigin | None = field(default=None, repr=False)  # set: it may run in a sandbox process

    def schema(self) -> dict[str, Any]:
        """The OpenAI tool object given to the model worker."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolRegistry:
    def __init__(self, sandbox: Sandbox | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.sandbox = sandbox
        self._origin: ToolOrigin | None = None

    def add(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        jsonschema.Draft202012Validator.check_schema(tool.parameters)
        if tool.parameters.get("type", "object") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be an object schema")
        if tool.origin is None and self._origin is not None:
            tool = replace(tool, origin=self._origin)
        self._tools[tool.name] = tool
        return tool

    def register_from(self, entry: str, *args: Any) -> ToolRegistry:
        """Add the tools `entry` ("package.module:function") adds, called as function(self, *args) with JSON
        arguments; a sandbox process finds them again the same way, so they run there."""
        module, _, function = entry.partition(":")
        if not module or not function:
            raise ValueError(f"tool entry {entry!r}: expected package.module:function")
        json.dumps(args)  # the sandbox process gets them as JSON
        register = getattr(importlib.import_module(module), function)
        self._origin = ToolOrigin(entry, args)
        try:
            register(self, *args)
        finally:
            self._origin = None
        return self

    def tool(self, name: str | None = None, *, description: str | None = None,
             parameters: dict[str, Any] | None = None, **options: Any) -> Callable:
        """Register a function; its parameters schema comes from its signature unless given."""

        def register(fn: Callable) -> Callable:
            signature = inspect.signature(fn)
            self.add(Tool(name or fn.__name__, description or inspect.getdoc(fn) or "",
                          parameters or schema_from_signature(fn), fn,
                          wants_idempotency_key="idempotency_key" in signature.parameters, **options))
            return fn

        return register

    def only(self, names: Sequence[str]) -> ToolRegistry:
        """The registry of just these tools (an agent session's own choice among those offered)."""
        unknown = set(names) - set(self._tools)
        if unknown:
            raise ValueError(f"no such tools: {', '.join(sorted(unknown))}; offered: {', '.join(sorted(self._tools))}")
        subset = ToolRegistry(self.sandbox)
        subset._tools = {name: tool for name, tool in self._tools.items() if name in names}
        return subset

    def require_approval(self, names: Sequence[str]) -> ToolRegistry:
        """Each call of these tools waits for a human's approval."""
        unknown = set(names) - set(self._tools)
        if unknown:
            raise ValueError(f"require_approval: no such tools: {', '.join(sorted(unknown))}")
        for name in names:
            self._tools[name] = replace(self._tools[name], requires_approval=True)
        return self

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def all(self) -> list[Tool]:
        return list(self._tools.values())

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self._tools.values()]

    async def call(self, call: ToolCall, idempotency_key: str | None = None) -> ToolResult:
        """Run one call; whatever happens, a result for the model."""
        tool = self._tools.get(call.name)
        if tool is None:
            return _error(call, f"unknown tool {call.name!r}; the tools are: {', '.join(sorted(self._tools))}")
        if not isinstance(call.arguments, dict):
            return _error(call, f"arguments must be a JSON object, got {json.dumps(call.arguments)[:200]}")
        try:
            problems = sorted(jsonschema.Draft202012Validator(tool.parameters).iter_errors(call.arguments),
                              key=lambda e: list(e.path))
        except RecursionError:
            return _error(call, "invalid arguments: nested too deeply")
        if problems:
            return _error(call, "invalid arguments: " + "; ".join(
                f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in problems[:5]))
        arguments = dict(call.arguments)
        if tool.wants_idempotency_key:
            arguments["idempotency_key"] = idempotency_key or call.id
        timeout_s, max_bytes = tool.timeout_s, tool.max_output_bytes
        if self.sandbox is not None:
            timeout_s, max_bytes = min(timeout_s, self.sandbox.timeout_s), min(max_bytes, self.sandbox.max_output_bytes)
        try:
            if tool.origin is not None and self.sandbox is not None:
                text, size = await asyncio.to_thread(self.sandbox.run, tool.origin, tool.name, arguments, timeout_s,
                                                     max_bytes)
                return _result(call, text, size)
            if inspect.iscoroutinefunction(tool.fn):
                output = await asyncio.wait_for(tool.fn(**arguments), timeout_s)
            else:
                output = await asyncio.wait_for(asyncio.to_thread(tool.fn, **arguments), timeout_s)
        except TimeoutError:
            return _error(call, f"timed out after {timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - the tool's failure is the model's information
            return _error(call, str(exc) if isinstance(exc, ToolFailed) else f"{type(exc).__name__}: {exc}")
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
        return _result(call, *cut_output(text, max_bytes))

    async def run_calls(self, calls: Sequence[ToolCall], idempotency_keys: Sequence[str | None] | None = None,
                        on_result: Callable[[int, ToolResult], Awaitable[None]] | None = None) -> list[ToolResult]:
        """The calls of one assistant message, results in call order: concurrently, except serial tools, which
        run one at a time after the others. `on_result(index, result)` is awaited as each call ends, while the
        others may still run: a caller that records it there keeps every ended call's result even if a later one
        never ends (the agent loop's transcript, so a crash re-runs only the calls that had not ended)."""
        keys = list(idempotency_keys or [None] * len(calls))
        results: list[ToolResult | None] = [None] * len(calls)

        async def run(i: int) -> None:
            results[i] = await self.call(calls[i], keys[i])
            if on_result is not None:
                await on_result(i, results[i])

        concurrent = [i for i, c in enumerate(calls) if not (self._tools.get(c.name) and self._tools[c.name].serial)]
        await asyncio.gather(*(run(i) for i in concurrent))
        for i in sorted(set(range(len(calls))) - set(concurrent)):
            await run(i)
        return results  # type: ignore[return-value] - every slot is filled above


def _error(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call.id, call.name, json.dumps({"error": message}, ensure_ascii=False), is_error=True)


def cut_output(text: str, max_bytes: int) -> tuple[str, int]:
    """`text` cut to at most `max_bytes` of UTF-8 (at a character boundary; unencodable characters replaced), and
    its size before the cut."""
    data = text.encode("utf-8", errors="replace")
    return data[:max_bytes].decode("utf-8", errors="ignore"), len(data)


def _result(call: ToolCall, kept: str, size: int) -> ToolResult:
    if size <= len(kept.encode()):
        return ToolResult(call.id, call.name, kept)
    note = f"\n[output truncated: {size:,} bytes, the first {len(kept.encode()):,} shown]"
    return ToolResult(call.id, call.name, kept + note, truncated=True)


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def schema_from_signature(fn: Callable) -> dict[str, Any]:
    """An object schema from a function's annotated parameters (str, int, float, bool, list, dict; a default makes
    a parameter optional). `idempotency_key` is the runtime's to give, not the model's."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    hints = inspect.get_annotations(fn, eval_str=True)
    for name, parameter in inspect.signature(fn).parameters.items():
        if name == "idempotency_key":
            continue
        kind = _JSON_TYPES.get(hints.get(name, str))
        if kind is None:
            raise ValueError(f"{fn.__name__}({name}): give a parameters schema for type {hints.get(name)!r}")
        properties[name] = {"type": kind}
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
