"""Synthetic agent conversations, deterministic from (family, seed, phrasing set).

Every family has two phrasing sets: "train" and "held_out" (templates training never sees); seeds below
`EVAL_SEED_BASE` are for training, those at or above it for evaluation. The replies are what a good agent does: the
calculator called with the question's own numbers and its result reported, values remembered and recalled by key,
a planted fact read back from far up the history, JSON under a response format, independent calls made together,
and a plain refusal when no tool fits.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from training.data.tools import ALL_TOOLS, CALCULATOR, RECALL, REMEMBER, calculate

MODES = ("non-think", "think-high", "think-max")
EVAL_SEED_BASE = 1 << 40
SYSTEM = "You are a careful agent. Use a tool when one fits; answer briefly."


@dataclass
class Turn:
    inputs: list[dict]  # the user / tool messages before the reply
    reply: dict  # the assistant message: content, reasoning_content, tool_calls


@dataclass
class Trace:
    family: str
    seed: int
    phrasing: str
    mode: str
    turns: list[Turn]
    answer: str  # what the last reply must say (evaluation)
    tools: tuple[dict, ...] = ALL_TOOLS
    response_format: dict | None = None
    system: str = SYSTEM
    calls: list[list[tuple[str, dict]]] = field(default_factory=list)  # the tool calls of each reply


class _Writer:
    """Builds a trace's turns: tool calls get ids in order, and replies their reasoning in thinking modes."""

    def __init__(self, mode: str) -> None:
        self.mode, self.turns, self.calls, self._pending, self._next_id = mode, [], [], [], 0

    def say(self, *inputs: dict) -> None:
        self._pending.extend(inputs)

    def reply(self, content: str = "", reasoning: str = "", calls: tuple[tuple[str, dict], ...] = ()) -> list[str]:
        """The assistant's reply; returns its calls' ids (their results go in with `result`)."""
        ids = [f"call_{self._next_id + i}" for i in range(len(calls))]
        self._next_id += len(calls)
        message: dict = {"role": "assistant", "content": content}
        if self.mode != "non-think":
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": name,
                                                                                "arguments": json.dumps(args)}}
                                     for i, (name, args) in zip(ids, calls, strict=True)]
        self.turns.append(Turn(self._pending, message))
        self.calls.append(list(calls))
        self._pending = []
        return ids

    def result(self, call_id: str, content: str) -> None:
        self._pending.append({"role": "tool", "tool_call_id": call_id, "content": content})


def _pick(rng: random.Random, templates: dict[str, list[str]], phrasing: str) -> str:
    return rng.choice(templates[phrasing])


def _expression(rng: random.Random) -> str:
    ops = ["+", "-", "*", "/"]
    terms = [str(rng.randint(2, 999)) for _ in range(rng.choice((2, 2, 3)))]
    text = terms[0]
    for i, term in enumerate(terms[1:]):
        op = rng.choice(ops)
        text = f"({text}) {op} {term}" if i and rng.random() < 0.5 else f"{text} {op} {term}"
    return text


ASK_CALC = {"train": ["What is {e}?", "Compute {e}.", "How much is {e}?", "Calculate {e}, please."],
            "held_out": ["Could you work out {e} for me?", "I need the value of {e}."]}


def calculator(w: _Writer, rng: random.Random, phrasing: str) -> str:
    expression = _expression(rng)
    w.say({"role": "user", "content": _pick(rng, ASK_CALC, phrasing).format(e=expression)})
    (call,) = w.reply(reasoning=f"This needs {expression} computed exactly: the calculator does that.",
                      calls=(("calculator", {"expression": expression}),))
    result = calculate(expression)
    w.result(call, result)
    w.reply(f"{expression} = {result}.", reasoning=f"The calculator returned {result}.")
    return result


KEYS = ["locker code", "project name", "meeting room", "badge number", "favorite color", "parking spot"]
ASK_STORE = {"train": ["Please remember that my {k} is {v}.", "Note my {k}: {v}."],
             "held_out": ["Keep in mind for later: my {k} is {v}."]}
ASK_RECALL = {"train": ["What is my {k}?", "Remind me of my {k}."], "held_out": ["Which {k} did I give you?"]}


def memory(w: _Writer, rng: random.Random, phrasing: str) -> str:
    key, value = rng.choice(KEYS), f"{rng.choice(['A', 'B', 'C', 'K', 'R'])}-{rng.randint(100, 9999)}"
    w.say({"role": "user", "content": _pick(rng, ASK_STORE, phrasing).format(k=key, v=value)})
    (call,) = w.reply(reasoning=f"Store {key} for later.", calls=(("remember", {"key": key, "value": value}),))
    w.result(call, "stored")
    w.reply(f"I will remember your {key}.", reasoning="Stored.")
    for _ in range(rng.randint(0, 2)):  # other work in between
        calculator(w, rng, phrasing)
    w.say({"role": "user", "content": _pick(rng, ASK_RECALL, phrasing).format(k=key)})
    (call,) = w.reply(reasoning=f"The {key} was stored earlier: recall it.", calls=(("recall", {"key": key}),))
    w.result(call, value)
    w.reply(f"Your {key} is {value}.", reasoning=f"The store returned {value}.")
    return value


SERVICES = ["billing", "search", "ingest", "auth", "payments", "reports", "mailer", "scheduler"]
ASK_NEEDLE = {"train": ["What was the deploy token of {s} in those logs?", "Which deploy token did {s} have?"],
              "held_out": ["Look back at the logs: {s}'s deploy token?"]}


def needle(w: _Writer, rng: random.Random, phrasing: str, lines: int = 60) -> str:
    """A deploy token planted early in a long log paste, asked for at the end."""
    service, token = rng.choice(SERVICES), f"tok-{rng.randint(10**5, 10**6 - 1)}"
    log = [f"2026-0{rng.randint(1, 9)}-{rng.randint(10, 28)} {rng.randint(10, 23)}:{rng.randint(10, 59)} "
           f"{rng.choice(SERVICES)}-{rng.randint(1, 9)} {rng.choice(['INFO', 'WARN', 'DEBUG'])} job "
           f"{rng.randint(1000, 9999)} took {rng.randint(5, 900)} ms" for _ in range(lines)]
    log.insert(rng.randint(0, max(lines // 4, 1)), f"NOTE deploy token of {service} is {token}")
    w.say({"role": "user", "content": "Keep these logs in mind:\n" + "\n".join(log)})
    w.reply("Noted.", reasoning="Logs received.")
    w.say({"role": "user", "content": _pick(rng, ASK_NEEDLE, phrasing).format(s=service)})
    w.reply(f"The deploy token of {service} is {token}.", reasoning=f"The logs note {service}'s token: {token}.")
    return token


PEOPLE = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Edsger", "Margaret", "Dennis"]
CITIES = ["Lyon", "Osaka", "Quito", "Tartu", "Recife", "Bergen", "Perth", "Graz"]
ASK_JSON = {"train": ["Extract the person: {n} is {a} years old and lives in {c}."],
            "held_out": ["Turn this into a record: {n}, {a}, from {c}."]}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                     "city": {"type": "string"}},
    "required": ["name", "age", "city"], "additionalProperties": False}}}


def json_reply(w: _Writer, rng: random.Random, phrasing: str) -> str:
    name, age, city = rng.choice(PEOPLE), rng.randint(18, 90), rng.choice(CITIES)
    w.say({"role": "user", "content": _pick(rng, ASK_JSON, phrasing).format(n=name, a=age, c=city)})
    answer = json.dumps({"name": name, "age": age, "city": city})
    w.reply(answer, reasoning="Fill the schema from the sentence.")
    return answer


ASK_BOTH = {"train": ["What are {a} and {b}?", "Compute both {a} and {b}."],
            "held_out": ["Give me {a} as well as {b}."]}


def parallel(w: _Writer, rng: random.Random, phrasing: str) -> str:
    first, second = _expression(rng), _expression(rng)
    w.say({"role": "user", "content": _pick(rng, ASK_BOTH, phrasing).format(a=first, b=second)})
    ids = w.reply(reasoning="Two independent computations: call the calculator for both at once.",
                  calls=(("calculator", {"expression": first}), ("calculator", {"expression": second})))
    results = [calculate(first), calculate(second)]
    for call, result in zip(ids, results, strict=True):
        w.result(call, result)
    answer = f"{first} = {results[0]} and {second} = {results[1]}."
    w.reply(answer, reasoning="Both results are in.")
    return answer


ASK_NO_TOOL = {"train": ["Book me a flight to {c}.", "Order a taxi to the {c} station."],
               "held_out": ["Reserve a hotel room in {c} for tonight."]}


def decline(w: _Writer, rng: random.Random, phrasing: str) -> str:
    w.say({"role": "user", "content": _pick(rng, ASK_NO_TOOL, phrasing).format(c=rng.choice(CITIES))})
    answer = "I can't do that: none of my tools books travel."
    w.reply(answer, reasoning="No tool fits this request.")
    return answer


FAMILIES: dict[str, Callable[[_Writer, random.Random, str], str]] = {
    "calculator": calculator, "memory": memory, "needle": needle, "json": json_reply, "parallel": parallel,
    "decline": decline}


def generate(family: str, seed: int, phrasing: str = "train", mode: str | None = None,
             needle_lines: int | None = None) -> Trace:
    """One trace; `mode` None draws it from the seed; `needle_lines` sets how many log lines bury the planted fact
    (its distance from the question: ~30 tokens a line)."""
    if phrasing not in ("train", "held_out"):
        raise ValueError(f"phrasing: train or held_out, not {phrasing!r}")
    rng = random.Random(f"{family}:{seed}:{phrasing}")
    mode = mode or rng.choice(MODES)
    writer = _Writer(mode)
    if family == "needle" and needle_lines is not None:
        answer = needle(writer, rng, phrasing, needle_lines)
    else:
        answer = FAMILIES[family](writer, rng, phrasing)
    tools = (CALCULATOR, REMEMBER, RECALL) if family != "decline" else ALL_TOOLS
    return Trace(family, seed, phrasing, mode, writer.turns, answer, tools=tools,
                 response_format=PERSON if family == "json" else None, calls=writer.calls)
