"""What the stages of one engine step hand each other: schedule -> run -> postprocess.

    plan = scheduler.schedule()        SchedulerOutput: which requests run this step and the tokens each feeds
    out = runner.run(plan)             RunnerOutput: the logits rows each of them gets back
    postprocess(plan, out)             sampling, detokenization and stops, commits, finishing

The scheduler side is plain Python over requests (no tensors, no device); the runner is the only stage that touches
the model, so a fake runner (tests) or a replica leader (tensor parallelism) can stand in for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model_worker.engine.request import Request


@dataclass(frozen=True)
class DecodeRow:
    """A decoding request feeds its last sampled token (not yet fed) and, under speculative decoding, a draft of the
    token after it; it gets a logits row after each (the second verifies the draft)."""

    request: Request
    token_id: int
    draft: int | None = None

    @property
    def token_ids(self) -> list[int]:
        return [self.token_id] if self.draft is None else [self.token_id, self.draft]


@dataclass(frozen=True)
class PrefillChunk:
    """A request still appending its input feeds the next `token_ids` of it; it gets the logits row after the last,
    which it samples from when `completes` (the chunk ends its input)."""

    request: Request
    token_ids: list[int]
    completes: bool


@dataclass(frozen=True)
class SchedulerOutput:
    """One step's plan, in batch order: every decode row first, then prefill chunks (interactive before batch
    priority, then arrival order) within the step's token budget."""

    decodes: list[DecodeRow] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)

    @property
    def rows(self) -> list[DecodeRow | PrefillChunk]:
        return [*self.decodes, *self.prefills]

    @property
    def requests(self) -> list[Request]:
        return [row.request for row in self.rows]

    @property
    def num_tokens(self) -> int:
        return sum(len(row.token_ids) for row in self.rows)

    def __bool__(self) -> bool:
        return bool(self.decodes or self.prefills)


@dataclass(frozen=True)
class RunnerOutput:
    """The pass's logits [rows, vocab] float32, per scheduled row and in the plan's order: a decode row's after its
    sampled token (and after its draft, when it fed one); a prefill chunk's after its last token."""

    decode_logits: list[torch.Tensor]
    prefill_logits: list[torch.Tensor]

    @classmethod
    def split(cls, plan: SchedulerOutput, logits: torch.Tensor) -> RunnerOutput:
        """Cut a pass's logits (the rows `logit_rows(plan)` asked for, stacked) into the rows of each request."""
        pieces = list(torch.split(logits, logit_rows(plan)))
        return cls(pieces[: len(plan.decodes)], pieces[len(plan.decodes) :])


def logit_rows(plan: SchedulerOutput) -> list[int]:
    """How many trailing rows of each scheduled segment the pass returns logits for, in batch order."""
    return [len(row.token_ids) for row in plan.decodes] + [1] * len(plan.prefills)


@dataclass
class SchedulerStats:
    """What the engine counts, all told (every stage adds its own)."""

    steps: int = 0
    prefilled_tokens: int = 0
    decoded_tokens: int = 0
    finished: int = 0
    preempted: int = 0
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    reserved_tokens: int = 0  # sequence growth reserved at admissions (what the KV budget counts), all told
