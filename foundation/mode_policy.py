"""Which reasoning mode a turn runs in. A policy weighs the request (an explicit mode always wins, within what the
operator allows), the task (declared difficulty, tools, failures so far in the session, the budget left, the context
length) and the cost: Think Max runs as a batch job on a Think Max session, which costs a prefill of the whole history
unless the agent session was created in Think Max. The decision carries its reason, recorded on the turn.

The agent runtime asks it for every turn; the gateway, when its operator enables it, for requests that name no
reasoning effort. Both load it from their settings by name (`load_policy`): `default`, or `package.module:object` for
an operator's own (an object with `choose(signals, limits) -> ModeDecision`, or a class or function that makes one
from no arguments)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Protocol

NON_THINK, THINK_HIGH, THINK_MAX = "non-think", "think-high", "think-max"
MODES = (NON_THINK, THINK_HIGH, THINK_MAX)


@dataclass(frozen=True)
class TurnSignals:
    requested_mode: str | None = None  # the caller's explicit choice
    difficulty: str | None = None  # "easy", "normal", "hard", as the caller declares it
    tool_count: int = 0
    prior_failures: int = 0  # failed tool calls and step-limit turns in this session so far
    remaining_tokens: int | None = None  # the session's token budget left
    context_tokens: int = 0  # the worker session's length
    session_think_max: bool = False  # the agent session was created in Think Max


@dataclass(frozen=True)
class OperatorLimits:
    allow_think_max: bool = True
    max_think_max_prefill: int = 262_144  # the most history a Think Max copy may prefill for one turn
    min_tokens_for_thinking: int = 2_048  # below this budget left, answer without thinking


@dataclass(frozen=True)
class ModeDecision:
    mode: str
    reason: str
    via_job: bool = False  # Think Max goes through the jobs service's queue
    prefill_tokens: int = 0  # what the choice costs before the first new token


class ModePolicy(Protocol):
    def choose(self, signals: TurnSignals, limits: OperatorLimits) -> ModeDecision: ...


class DefaultPolicy:
    """Explicit modes win; hard tasks and repeated failures earn Think Max when its prefill is affordable; tool-heavy
    and normal tasks think high; easy tasks and exhausted budgets answer directly."""

    def __init__(self, many_tools: int = 8, failures_for_max: int = 2) -> None:
        self.many_tools, self.failures_for_max = many_tools, failures_for_max

    def choose(self, signals: TurnSignals, limits: OperatorLimits) -> ModeDecision:
        if signals.requested_mode is not None:
            if signals.requested_mode not in MODES:
                raise ValueError(f"mode: one of {', '.join(MODES)}, not {signals.requested_mode!r}")
            if signals.requested_mode == THINK_MAX and not limits.allow_think_max:
                return ModeDecision(THINK_HIGH, "think-max was asked for but the operator does not allow it")
            if signals.requested_mode == THINK_MAX:
                return self._think_max(signals, "asked for")
            return ModeDecision(signals.requested_mode, "asked for")
        if signals.remaining_tokens is not None and signals.remaining_tokens < limits.min_tokens_for_thinking:
            return ModeDecision(NON_THINK, f"{signals.remaining_tokens} tokens of budget left")
        wants_max = signals.difficulty == "hard" or signals.prior_failures >= self.failures_for_max
        if wants_max and limits.allow_think_max:
            cost = self._prefill(signals)
            why = "declared hard" if signals.difficulty == "hard" else f"{signals.prior_failures} failures so far"
            affordable = signals.remaining_tokens is None or cost < signals.remaining_tokens
            if cost <= limits.max_think_max_prefill and affordable:
                return self._think_max(signals, why)
            return ModeDecision(THINK_HIGH, f"{why}, but a Think Max copy would prefill {cost:,} tokens")
        if signals.difficulty == "easy":
            return ModeDecision(NON_THINK, "declared easy")
        if signals.tool_count >= self.many_tools:
            return ModeDecision(THINK_HIGH, f"{signals.tool_count} tools to choose among")
        return ModeDecision(THINK_HIGH if signals.difficulty == "normal" else NON_THINK,
                            "declared normal" if signals.difficulty == "normal" else "no sign the turn needs thinking")

    def _think_max(self, signals: TurnSignals, why: str) -> ModeDecision:
        cost = self._prefill(signals)
        where = "on the Think Max session" if signals.session_think_max else f"on a Think Max copy ({cost:,} tokens)"
        return ModeDecision(THINK_MAX, f"{why}; runs as a job {where}", via_job=True, prefill_tokens=cost)

    @staticmethod
    def _prefill(signals: TurnSignals) -> int:
        return 0 if signals.session_think_max else signals.context_tokens


DEFAULT = "default"
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_policy(name: str) -> ModePolicy:
    """The policy a setting names: `default` (DefaultPolicy) or `package.module:object`. ValueError, naming the
    setting's value, for one that does not import or is no policy, so a service refuses to start with it."""
    if name == DEFAULT:
        return DefaultPolicy()
    if not _ENTRY.match(name):
        raise ValueError(f"mode policy {name!r}: `default` or package.module:object")
    module_name, _, path = name.partition(":")
    try:
        found: object = importlib.import_module(module_name)
        for attribute in path.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"mode policy {name!r}: {error}") from None
    is_policy = callable(getattr(found, "choose", None)) and not isinstance(found, type)
    policy = found if is_policy or not callable(found) else found()  # a class or factory: made here
    if not callable(getattr(policy, "choose", None)):
        raise ValueError(f"mode policy {name!r}: {type(policy).__name__} has no choose(signals, limits)")
    return policy
