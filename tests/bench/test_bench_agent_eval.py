"""The agent-service evaluation's bookkeeping: a trace's user messages and the calls each agent turn should make."""

from __future__ import annotations

from bench.agent_eval import service_turns
from training.data.traces import EVAL_SEED_BASE, generate
from training.evaluation import same_calls


def test_each_user_message_expects_the_calls_of_its_whole_agent_turn() -> None:
    trace = generate("memory", EVAL_SEED_BASE, mode="non-think")
    turns = service_turns(trace)
    users = [m["content"] for turn in trace.turns for m in turn.inputs if m["role"] == "user"]
    assert [text for text, _ in turns] == users and len(users) >= 2
    assert [call for _, calls in turns for call in calls] == [call for calls in trace.calls for call in calls]
    assert [name for name, _ in turns[0][1]] == ["remember"] and [name for name, _ in turns[-1][1]] == ["recall"]


def test_calls_match_by_name_and_arguments_in_any_order() -> None:
    """As the agent client gives them: parsed arguments, or the text the model wrote when it is not JSON."""
    expected = [("calculator", {"expression": "2 + 3"}), ("recall", {"key": "a"})]
    made = [("recall", {"key": "a"}), ("calculator", {"expression": "2 + 3"})]
    assert same_calls(made, expected)
    assert not same_calls(made[:1], expected)
    assert not same_calls([("recall", {"key": "b"}), made[1]], expected)
    assert not same_calls([("recall", '{"key": '), made[1]], expected)  # cut short: not a call
