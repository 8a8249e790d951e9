"""Speculative decoding: a drafter proposes each decoding request's next token; the scheduler feeds it after the last
sampled token and the main model verifies it in the same pass.

Verification samples the draft's position as usual (the request's own RNG stream, grammar and processors) and keeps
the draft only when that sample is the draft itself, so speculation changes how many passes a reply takes, never which
tokens it gets: greedy and seeded sampling give the non-speculative output (to the float rounding of a 2-token pass
vs a 1-token pass). A kept draft also yields the token after it from the same pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from model_worker.engine.request import Request
from model_worker.engine.runner import ModelRunner, as_runner
from model_worker.model import DeepseekV4


class Drafter(Protocol):
    def propose(self, requests: Sequence[Request]) -> list[int | None]:
        """One draft (or None) per request: the token after its last sampled token, which is not yet fed."""
        ...


class MtpDrafter:
    """DeepSeek-V4's MTP layer as the drafter: from the main model's streams at the last fed position and the
    embedding of the sampled token, it predicts the token after; the greedy draft is proposed. A request with a
    grammar gets the best draft its grammar allows."""

    def __init__(self, model: DeepseekV4 | ModelRunner) -> None:
        """`model`: the runner to draft through (the scheduler's), or a model to run in this process."""
        self.runner = as_runner(model)
        if not self.runner.can_draft:
            raise ValueError("the model has no MTP layer to draft with")

    def propose(self, requests: Sequence[Request]) -> list[int | None]:
        logits = self.runner.draft([r.state for r in requests], [r.output.token_ids[-1] for r in requests])
        for row, request in zip(logits, requests):
            constraint = request.output.sampling.constraint
            if constraint is not None:
                row.masked_fill_(~constraint.allowed().to(row.device), float("-inf"))
        return logits.argmax(dim=-1).tolist()
