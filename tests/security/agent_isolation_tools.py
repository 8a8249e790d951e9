"""Tools the agent isolation tests plug in (`--tool-plugins agent_isolation_tools:register`): each parameter is a
closed set, so the call a random-weight model writes under the worker's grammar is exactly the hostile input."""

from __future__ import annotations

from agent_runtime.tools import ToolRegistry
from agent_runtime.tools.calculator import calculate

BOMB = "(9**9999)**9999"  # small exponents, an intermediate result of ~317 million bits


def register(registry: ToolRegistry, namespace: str) -> None:
    @registry.tool(idempotent=True, timeout_s=30, parameters={
        "type": "object", "properties": {"expression": {"type": "string", "enum": [BOMB]}},
        "required": ["expression"], "additionalProperties": False})
    def calc_bomb(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return calculate(expression)

    @registry.tool(timeout_s=1, parameters={
        "type": "object", "properties": {"size": {"type": "integer", "enum": [9999]}},
        "required": ["size"], "additionalProperties": False})
    def stall(size: int) -> str:
        """A computation that holds the interpreter lock for minutes (one C-level big-integer power)."""
        return str(pow(9, size * size).bit_length())

    @registry.tool(idempotent=True, parameters={
        "type": "object", "properties": {"path": {"type": "string", "enum": ["blob.bin"]}},
        "required": ["path"], "additionalProperties": False})
    def read_blob(path: str) -> str:
        """Read a binary file as text (NUL characters and all, as a file reader decoding bytes leaves them)."""
        return "PK\x00\x03 header"
