"""A trace as the model sees it: token ids and a loss mask, rendered turn by turn through the platform's own
`ChatSession` (the append-only rendering a served session uses), so what the model learns to produce is exactly what
the worker's parser reads back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from foundation.chat import ChatSession, SessionHead, Tokenizer
from training.data.traces import Trace


@dataclass
class RenderedTrace:
    trace: Trace
    token_ids: list[int]
    loss_mask: list[bool]  # True on the tokens the model must produce: every reply, its EOS included
    replies: list[str]  # each reply's rendered text (what the parser gets)


def render(trace: Trace, tokenizer: Tokenizer | None = None) -> RenderedTrace:
    head = SessionHead(think_max=trace.mode == "think-max", system_prompt=trace.system, tools=trace.tools,
                       response_format=trace.response_format)
    session = ChatSession(head, tokenizer)
    ids, mask, replies = list(session.token_ids), [False] * len(session.token_ids), []
    for turn in trace.turns:
        prompt = session.render_turn(turn.inputs, trace.mode)
        reply = session.append_assistant(turn.reply)
        ids += prompt.token_ids + reply.token_ids
        mask += [False] * len(prompt.token_ids) + [True] * len(reply.token_ids)
        replies.append(reply.text)
    return RenderedTrace(trace, ids, mask, replies)


def fingerprint(token_ids: list[int]) -> str:
    """A rendered trace's identity: evaluation sets are checked absent from training data by it."""
    return hashlib.sha256(",".join(map(str, token_ids)).encode()).hexdigest()


def held_out(candidates: Iterable[RenderedTrace], training: set[str]) -> list[RenderedTrace]:
    """An evaluation set: the candidates whose tokens training never saw (by fingerprint), each once. Short families
    (a refusal, a JSON record) repeat across seeds, so a seed split alone would not keep them apart."""
    kept, seen = [], set(training)
    for rendered in candidates:
        key = fingerprint(rendered.token_ids)
        if key not in seen:
            seen.add(key)
            kept.append(rendered)
    return kept
