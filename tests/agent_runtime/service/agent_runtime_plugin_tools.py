"""Tools the service tests plug in (`--tool-plugins`): closed parameter sets, so a call forced through a random-weight
model's constrained decoding ends within a few tokens. And the operator's mode policy (`--mode-policy`)."""

from __future__ import annotations

from agent_runtime.tools import ToolRegistry
from foundation.mode_policy import THINK_HIGH, DefaultPolicy, ModeDecision, OperatorLimits, TurnSignals


class OperatorPolicy(DefaultPolicy):
    """Think High for every turn that names no mode, saying so; explicit modes as the default policy takes them."""

    def choose(self, signals: TurnSignals, limits: OperatorLimits) -> ModeDecision:
        if signals.requested_mode is None:
            return ModeDecision(THINK_HIGH, f"operator policy ({signals.tool_count} tools)")
        return super().choose(signals, limits)


def register(registry: ToolRegistry, namespace: str) -> None:
    @registry.tool(idempotent=True, parameters={
        "type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
        "required": ["color"], "additionalProperties": False})
    def pick(color: str) -> str:
        """Pick a color."""
        return f"picked {color}"

    @registry.tool(parameters={
        "type": "object", "properties": {"amount": {"type": "integer", "enum": [5, 10]}},
        "required": ["amount"], "additionalProperties": False})
    def charge(amount: int) -> str:
        """Charge the customer."""
        return f"charged {amount} to {namespace}"
