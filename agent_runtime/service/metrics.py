"""The agent service's Prometheus metrics, read off the events its turns stream (so a turn run here is counted once,
whoever follows it): turns started and ended by stop reason, turn wall time, steps by mode, tool calls by tool and
outcome, tokens by kind. Served with `serve --metrics-port` (AgentSettings.metrics_port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from agent_runtime.events import USAGE_NAMES, StepStarted, ToolFinished, TurnDone, TurnEvent

# A turn spans seconds (one short answer) to hours (Think Max, or waiting on a human's approval).
_TURN_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600)


class AgentMetrics:
    """In their own registry (one per runtime; tests make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.turns_started = Counter("dsv4_agent_turns_started", "turns started or continued in this process",
                                     registry=r)
        self.turns_ended = Counter("dsv4_agent_turns_ended", "turns ended in this process by stop reason (answer, "
                                   "length, step_limit, token_budget, time_budget, cancelled, failed)", ["reason"],
                                   registry=r)
        self.turn_seconds = Histogram("dsv4_agent_turn_seconds", "a turn's wall time in this process, waits for "
                                      "approval included", buckets=_TURN_BUCKETS, registry=r)
        self.steps = Counter("dsv4_agent_steps", "steps started by reasoning mode", ["mode"], registry=r)
        self.tool_calls = Counter("dsv4_agent_tool_calls", "tool calls ended by tool and outcome (ok, error, "
                                  "interrupted, rejected)", ["tool", "outcome"], registry=r)
        self.tokens = Counter("dsv4_agent_tokens", "tokens of ended turns by kind", ["kind"], registry=r)

    def observe(self, event: TurnEvent) -> None:
        """Count what one of a turn's events says."""
        if isinstance(event, StepStarted):
            self.steps.labels(event.mode).inc()
        elif isinstance(event, ToolFinished):
            self.tool_calls.labels(event.name, tool_outcome(event)).inc()
        elif isinstance(event, TurnDone):
            for kind in USAGE_NAMES:
                self.tokens.labels(kind.removesuffix("_tokens")).inc(getattr(event.usage, kind))

    def turn_ended(self, reason: str, seconds: float) -> None:
        self.turns_ended.labels(reason).inc()
        self.turn_seconds.observe(seconds)


def tool_outcome(event: ToolFinished) -> str:
    if event.status != "finished":
        return event.status  # interrupted by a restart, or rejected by a human
    return "error" if event.is_error else "ok"
