"""Scoring turns of held-out traces: the reference replies score perfectly, and each way of getting a turn wrong
is caught."""

from __future__ import annotations

from foundation.clients.worker.convert import message_from_openai
from foundation.clients.worker.types import Final, ToolCall
from training.data.traces import EVAL_SEED_BASE, MODES
from training.evaluation import CALL_FAMILIES, cases, eval_traces, request_args, score, summarize


def reference_final(case) -> Final:
    reply = message_from_openai(case.trace.turns[case.turn].reply)
    return Final(finish_reason="tool_calls" if reply.tool_calls else "stop", content=reply.content,
                 reasoning_content=reply.reasoning_content, tool_calls=reply.tool_calls)


def test_the_reference_replies_score_perfectly_in_every_family_and_mode() -> None:
    traces = eval_traces(2, "held_out")
    assert {t.family for t in traces} == set(CALL_FAMILIES) and {t.mode for t in traces} == set(MODES)
    assert all(t.seed >= EVAL_SEED_BASE for t in traces)
    scores = [score(case, reference_final(case)) for trace in traces for case in cases(trace)]
    summary = summarize(scores)
    assert summary["valid_calls"] == summary["right_calls"] == summary["right_answers"] == 1.0
    assert summary["traces"] == len(traces) and summary["call_turns"] > len(traces) // 2


def test_history_tools_and_mode_go_with_each_turn() -> None:
    (trace,) = eval_traces(1, "train", ("memory",), ("think-high",))
    turns = list(cases(trace))
    assert [c.messages[0].role for c in turns] == ["system"] * len(turns)
    assert turns[1].messages[-1].role == "tool"  # the remember call's result, before the acknowledgement
    assert turns[1].messages[-2].tool_calls[0].name == "remember"
    args = request_args(trace)
    assert args["mode"] == "think-high" and [t.name for t in args["tools"]] == ["calculator", "remember", "recall"]


def test_wrong_arguments_unparsed_calls_and_wrong_answers_are_caught() -> None:
    (trace,) = eval_traces(1, "train", ("calculator",), ("non-think",))
    first, last = list(cases(trace))
    good = reference_final(first)
    wrong_args = Final(finish_reason="tool_calls", tool_calls=[ToolCall("c", "calculator", {"expression": "1 + 1"})])
    assert score(first, good).right_calls and not score(first, wrong_args).right_calls
    assert score(first, wrong_args).valid
    bad_schema = Final(finish_reason="tool_calls", tool_calls=[ToolCall("c", "calculator", {"expr": "1"})])
    assert not score(first, bad_schema).valid
    unparsed = Final(finish_reason="stop", content="<｜DSML｜tool_calls> calculator {")
    assert score(first, unparsed).called and not score(first, unparsed).valid
    silent = Final(finish_reason="stop", content="It is 12.")
    assert not score(first, silent).right_calls and not score(first, silent).called
    assert score(last, reference_final(last)).right_answer
    assert not score(last, Final(finish_reason="stop", content="No idea.")).right_answer
    spurious = Final(finish_reason="tool_calls", content="", tool_calls=good.tool_calls)
    assert not score(last, spurious).right_answer  # calling again instead of answering
