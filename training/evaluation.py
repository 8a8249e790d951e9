"""Scoring a model on held-out agent traces, one assistant turn at a time.

Each turn is asked with the trace's history before it (the reference replies, so one mistake does not spoil the
turns after it), its tools, mode and response format, through the worker's chat API. A turn whose reference calls
tools is right when the model calls the same tools with the same arguments (in any order); a call is valid when it
parsed and its arguments fit the tool's schema. The last turn is right when its answer carries the trace's answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from foundation.chat.protocol import DSML
from foundation.clients.worker.convert import message_from_openai
from foundation.clients.worker.types import Final, Message, Tool
from training.data.traces import EVAL_SEED_BASE, MODES, Trace, generate

CALL_FAMILIES = ("calculator", "memory", "json", "parallel", "decline")


@dataclass
class TurnCase:
    trace: Trace
    turn: int
    messages: list[Message]  # the system prompt, the history and this turn's inputs

    @property
    def expected_calls(self) -> list[tuple[str, dict]]:
        return self.trace.calls[self.turn]

    @property
    def last(self) -> bool:
        return self.turn == len(self.trace.turns) - 1


@dataclass
class TurnScore:
    family: str
    mode: str
    expects_call: bool
    called: bool  # the reply made at least one tool call (parsed or not)
    valid: bool  # every call parsed and fits its tool's schema
    right_calls: bool  # the reference's calls exactly (for turns that expect some); no call otherwise
    last: bool
    right_answer: bool  # the last turn: the trace's answer is in the reply


def eval_traces(per_cell: int, phrasing: str, families=CALL_FAMILIES, modes=MODES) -> list[Trace]:
    """`per_cell` traces per (family, mode) from evaluation seeds (never drawn in training)."""
    return [generate(family, EVAL_SEED_BASE + i, phrasing=phrasing, mode=mode)
            for family in families for mode in modes for i in range(per_cell)]


def cases(trace: Trace) -> Iterator[TurnCase]:
    history = [Message(role="system", content=trace.system)]
    for index, turn in enumerate(trace.turns):
        history += [message_from_openai(m) for m in turn.inputs]
        yield TurnCase(trace, index, list(history))
        history.append(message_from_openai(turn.reply))


def request_args(trace: Trace) -> dict:
    """The Generate arguments a trace's turns share."""
    tools = [Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
             for t in trace.tools]
    return {"tools": tools, "mode": trace.mode, "response_format": trace.response_format}


def score(case: TurnCase, final: Final) -> TurnScore:
    trace, expected = case.trace, case.expected_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in trace.tools}
    made = [(call.name, call.arguments) for call in final.tool_calls]
    unparsed = DSML in final.content  # a call the parser could not read comes back as text
    called = bool(made) or unparsed
    valid = called and not unparsed and all(_fits(args, schemas.get(name)) for name, args in made)
    right_calls = same_calls(made, expected) and not unparsed if expected else not called
    return TurnScore(trace.family, trace.mode, bool(expected), called, valid, right_calls, case.last,
                     case.last and right_calls and answers(trace, final.content))


def summarize(scores: list[TurnScore]) -> dict[str, float | int]:
    calls = [s for s in scores if s.expects_call]
    attempted = [s for s in scores if s.called]
    lasts = [s for s in scores if s.last]
    return {"turns": len(scores), "call_turns": len(calls),
            "valid_calls": _rate(s.valid for s in attempted), "calls_made": len(attempted),
            "right_calls": _rate(s.right_calls for s in calls),
            "right_answers": _rate(s.right_answer for s in lasts), "traces": len(lasts)}


def _rate(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else float("nan")


def _fits(args: dict, schema: dict | None) -> bool:
    """Our tools' schemas: an object of required string properties, nothing else."""
    if schema is None or not isinstance(args, dict):
        return False
    properties = schema.get("properties", {})
    return set(schema.get("required", ())) <= set(args) and set(args) <= set(properties) and \
        all(isinstance(value, str) for value in args.values())


def same_calls(made: list[tuple[str, dict]], expected: list[tuple[str, dict]]) -> bool:
    """The same tools with the same arguments, in any order."""
    key = lambda call: (call[0], json.dumps(call[1], sort_keys=True))  # noqa: E731
    return sorted(map(key, made)) == sorted(map(key, expected))


def answers(trace: Trace, content: str) -> bool:
    """Whether a last reply carries the trace's answer."""
    if trace.family == "json":
        try:
            return json.loads(content) == json.loads(trace.answer)
        except ValueError:
            return False
    if trace.family == "parallel":  # both results, in the reference's words or not
        return all(part.split(" = ")[-1].rstrip(".") in content for part in trace.answer.split(" and "))
    if trace.family == "decline":
        return True  # declining is not calling (right_calls): the words are free
    return trace.answer in content
