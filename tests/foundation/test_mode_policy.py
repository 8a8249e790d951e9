"""The default reasoning-mode policy: explicit modes win within the operator's limits; hard tasks and repeated failures
earn Think Max when its prefill is affordable; every decision says why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from foundation.mode_policy import DefaultPolicy, ModeDecision, OperatorLimits, TurnSignals, load_policy

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


@pytest.mark.parametrize("name", ["mode_policy_testlib:ThinkWhenTooled", "mode_policy_testlib:INSTANCE",
                                  "mode_policy_testlib:make"])
def test_a_policy_is_loaded_by_name_as_a_class_an_instance_or_a_factory(name):
    policy = load_policy(name)
    assert policy.choose(TurnSignals(tool_count=3), LIMITS) == ModeDecision("think-high", "operator policy: 3 tools")
    assert isinstance(load_policy("default"), DefaultPolicy)


@pytest.mark.parametrize("name, error", [
    ("mode_policy_testlib", "package.module:object"),
    ("os.system; rm -rf /:x", "package.module:object"),
    ("no_such_module_here:Policy", "No module named"),
    ("mode_policy_testlib:Missing", "has no attribute"),
    ("mode_policy_testlib:NOT_A_POLICY", "int has no choose"),
])
def test_a_name_that_is_no_policy_is_refused_saying_why(name, error):
    with pytest.raises(ValueError, match=error):
        load_policy(name)


def test_the_readme_policy_of_ones_own_answers_directly_past_a_long_history():
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text[text.index("### Reasoning-mode policy\n"):]
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), namespace)
    policy = namespace["ShortWhenLong"]()
    assert policy.choose(TurnSignals(context_tokens=200_000, difficulty="hard"), LIMITS).mode == "non-think"
    assert policy.choose(TurnSignals(requested_mode="think-high", context_tokens=200_000), LIMITS).mode == "think-high"
    assert policy.choose(TurnSignals(difficulty="normal"), LIMITS).mode == "think-high"
