"""The model runner: the seam between the scheduler (plain Python over requests) and the device.

A runner turns a step's plan (`SchedulerOutput`) into one forward pass and hands back the logits each request asked
for (`RunnerOutput`). It owns the device, the CPU thread policy and `torch.no_grad()`: the model's own forward is
plain torch (trainable), and every inference entry point goes through a runner or holds `no_grad` itself.

`LocalRunner` runs `DeepseekV4` in this process; the tensor-parallel `ReplicaLeader` (engine/replica.py) is a
runner that first sends each pass to the other ranks of its replica; tests drive the scheduler with a fake one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from model_worker.config import ModelConfig
from model_worker.engine.contracts import RunnerOutput, SchedulerOutput, logit_rows
from model_worker.engine.threads import threads_for
from model_worker.model import DeepseekV4, ForwardBatch, ForwardOutput
from model_worker.numerics import Numerics
from model_worker.state import SequenceState, StateLayout


class ModelRunner(Protocol):
    """What the engine and the server need of a model: who it is, its sequences' states and its passes."""

    @property
    def config(self) -> ModelConfig: ...

    @property
    def layout(self) -> StateLayout:
        """The layout of this model's sequence states (a request's state must have it)."""
        ...

    @property
    def numerics(self) -> Numerics: ...

    @property
    def fingerprint(self) -> str | None:
        """Names the weights (stored sessions are tied to it)."""
        ...

    @property
    def can_draft(self) -> bool:
        """Whether the model has an MTP layer to draft with."""
        ...

    def new_state(self) -> SequenceState: ...

    def run(self, plan: SchedulerOutput) -> RunnerOutput:
        """One forward pass over the plan's rows; each request's state is extended by exactly its tokens."""
        ...

    def forward(self, batch: ForwardBatch) -> ForwardOutput:
        """One forward pass as the model takes it (tools that want every row's logits, parity checks)."""
        ...

    def draft(self, states: Sequence[SequenceState], next_tokens: Sequence[int]) -> torch.Tensor:
        """Draft logits [B, V] for the token after each `next_tokens[b]` (sampled, not yet fed)."""
        ...


class LocalRunner:
    """`DeepseekV4` on its device in this process."""

    def __init__(self, model: DeepseekV4) -> None:
        self.model = model

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def layout(self) -> StateLayout:
        return self.model.layout

    @property
    def numerics(self) -> Numerics:
        return self.model.numerics

    @property
    def fingerprint(self) -> str | None:
        return self.model.fingerprint

    @property
    def can_draft(self) -> bool:
        return len(self.model.mtp) > 0

    @property
    def device(self) -> torch.device:
        """Where the weights, states and logits live."""
        return self.model.embed.weight.device

    def new_state(self) -> SequenceState:
        return self.model.new_state()

    def run(self, plan: SchedulerOutput) -> RunnerOutput:
        rows = plan.rows
        # Token ids stay on the host: the model moves them to its device, and under tensor parallelism they cross
        # to the other ranks as they are.
        tokens = torch.tensor([t for row in rows for t in row.token_ids], dtype=torch.long)
        batch = ForwardBatch(tokens, [len(row.token_ids) for row in rows], [row.request.state for row in rows],
                             last_rows=logit_rows(plan))
        return RunnerOutput.split(plan, self.forward(batch).logits)

    def forward(self, batch: ForwardBatch) -> ForwardOutput:
        with threads_for(int(batch.token_ids.shape[0])), torch.no_grad():
            return self.model(batch)

    def draft(self, states: Sequence[SequenceState], next_tokens: Sequence[int]) -> torch.Tensor:
        with threads_for(len(states)), torch.no_grad():
            return self.model.draft(list(states), list(next_tokens))


def as_runner(model: DeepseekV4 | ModelRunner) -> ModelRunner:
    """A runner for `model`: itself when it already is one, else the model run in this process."""
    return LocalRunner(model) if isinstance(model, DeepseekV4) else model
