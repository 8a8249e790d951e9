"""A tool the telemetry tests plug into the agent service (`tool_plugins`): a closed parameter set, so a call forced
through the random-weight model's constrained decoding ends within a few tokens."""

from __future__ import annotations

from agent_runtime.tools import ToolRegistry


def register(registry: ToolRegistry, namespace: str) -> None:
    @registry.tool(idempotent=True, parameters={
        "type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
        "required": ["color"], "additionalProperties": False})
    def pick(color: str) -> str:
        """Pick a color."""
        return f"picked {color}"
