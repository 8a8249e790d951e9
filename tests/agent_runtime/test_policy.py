"""The default reasoning-mode policy: explicit modes win within the operator's limits; hard tasks and repeated failures
earn Think Max when its prefill is affordable; every decision says why."""

from __future__ import annotations

import pytest

from agent_runtime.policy import DefaultPolicy, OperatorLimits, TurnSignals

POLICY, LIMITS = DefaultPolicy(), OperatorLimits()


@pytest.mark.parametrize("signals, limits, mode, via_job, reason", [
    (TurnSignals(requested_mode="non-think", difficulty="hard"), LIMITS, "non-think", False, "asked for"),
    (TurnSignals(requested_mode="think-max", context_tokens=5000), LIMITS, "think-max", True, "copy (5,000 tokens)"),
    (TurnSignals(requested_mode="think-max"), OperatorLimits(allow_think_max=False), "think-high", False,
     "does not allow"),
    (TurnSignals(difficulty="hard", session_think_max=True, context_tokens=900_000), LIMITS, "think-max", True,
     "on the Think Max session"),
    (TurnSignals(difficulty="hard", context_tokens=900_000), LIMITS, "think-high", False, "would prefill 900,000"),
    (TurnSignals(prior_failures=2, context_tokens=1000), LIMITS, "think-max", True, "2 failures so far"),
    (TurnSignals(difficulty="hard", context_tokens=10_000, remaining_tokens=8_000), LIMITS, "think-high", False,
     "would prefill"),
    (TurnSignals(difficulty="hard", remaining_tokens=100), LIMITS, "non-think", False, "100 tokens of budget"),
    (TurnSignals(tool_count=12), LIMITS, "think-high", False, "12 tools"),
    (TurnSignals(difficulty="easy", tool_count=12), LIMITS, "non-think", False, "declared easy"),
    (TurnSignals(), LIMITS, "non-think", False, "no sign"),
])
def test_decisions(signals, limits, mode, via_job, reason):
    decision = POLICY.choose(signals, limits)
    assert (decision.mode, decision.via_job) == (mode, via_job) and reason in decision.reason


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="one of"):
        POLICY.choose(TurnSignals(requested_mode="think-extreme"), LIMITS)
