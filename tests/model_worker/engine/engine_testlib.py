"""What the engine tests share: prompts, requests that record their events and commits, a scheduler drained step
by step, and a fake model runner that makes scheduler tests model-free and fast."""

from __future__ import annotations

import torch
from small_config import SMALL

from model_worker.config import ModelConfig
from model_worker.engine import Finished, Request, RunnerOutput, Scheduler, SchedulerOutput, TextDelta
from model_worker.numerics import REFERENCE
from model_worker.sampling import SamplingParams
from model_worker.state import StateLayout

PROMPTS = [torch.randint(1, 500, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (700, 50, 5)]


def forced(tokens: list[int], **params) -> SamplingParams:
    """Greedy with a bias that makes the output predictable whatever the batch (no argmax near-ties)."""
    return SamplingParams(temperature=0.0, logit_bias={t: 50.0 for t in tokens}, **params)


class Recorder:
    def __init__(self) -> None:
        self.events: list[TextDelta | Finished] = []
        self.commits: list[list[int]] = []

    def __call__(self, event) -> None:
        self.events.append(event)

    @property
    def final(self) -> Finished:
        assert isinstance(self.events[-1], Finished)
        return self.events[-1]

    @property
    def finished(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], Finished)


def request(model, name: str, prompt: list[int], params: SamplingParams, **kwargs) -> tuple[Request, Recorder]:
    """A request over a new state of `model` (a model or a runner) that records its events and commits."""
    recorder = Recorder()
    return Request(name, model.new_state(), prompt, params, recorder, on_commit=recorder.commits.append,
                   **kwargs), recorder


def drain(scheduler: Scheduler, limit: int = 500) -> int:
    steps = 0
    while scheduler.step():
        steps += 1
        assert steps < limit
    return steps


def next_token(history: list[int], vocab_size: int) -> int:
    """The fake model's prediction after `history`: a function of the whole sequence so far, never EOS (0 or 1)."""
    return 2 + (31 * history[-1] + 7 * len(history) + sum(history)) % (vocab_size - 2)


class FakeState:
    """A sequence state that is only its tokens: what the scheduler and the output stage touch of a state."""

    def __init__(self, layout: StateLayout, bytes_per_token: int) -> None:
        self.layout, self.bytes_per_token = layout, bytes_per_token
        self.tokens: list[int] = []
        self.committed = 0
        self.sampling: bytes | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def commit(self) -> None:
        self.committed = len(self.tokens)

    def truncate(self, num_tokens: int) -> None:
        if num_tokens < self.committed:
            raise ValueError(f"cannot truncate to {num_tokens}: {self.committed} tokens are committed")
        del self.tokens[num_tokens:]

    def nbytes(self) -> dict[str, int]:
        return {"total": self.bytes_per_token * len(self.tokens)}

    def shared_page_bytes(self) -> int:
        return 0  # a fake state holds no pages


class FakeRunner:
    """A model runner without a model. The logits after each position peak (at 10) at `next_token` of the sequence
    so far, so what a request samples depends on exactly what its state was fed and on nothing else in the batch.
    It records every plan it ran; `fail_with` makes the next passes raise. Its MTP drafts are the model's own
    greedy tokens (or, with `wrong_drafts`, never)."""

    fingerprint = "fake"
    numerics = REFERENCE

    def __init__(self, config: ModelConfig = SMALL) -> None:
        self.config = config
        self.layout = StateLayout(config, REFERENCE)
        self.bytes_per_token = int(sum(self.layout.growth_bytes_per_token(kind) for kind in config.layer_types))
        self.plans: list[SchedulerOutput] = []
        self.fail_with: Exception | None = None
        self.can_draft, self.wrong_drafts = True, False

    def new_state(self) -> FakeState:
        return FakeState(self.layout, self.bytes_per_token)

    def run(self, plan: SchedulerOutput) -> RunnerOutput:
        self.plans.append(plan)
        if self.fail_with is not None:
            raise self.fail_with
        return RunnerOutput([self._feed(row.request.state, row.token_ids, len(row.token_ids)) for row in plan.decodes],
                            [self._feed(chunk.request.state, chunk.token_ids, 1) for chunk in plan.prefills])

    def draft(self, states: list[FakeState], next_tokens: list[int]) -> torch.Tensor:
        return torch.stack([self._logits(s.tokens + [t], wrong=self.wrong_drafts) for s, t in zip(states, next_tokens)])

    def _feed(self, state: FakeState, token_ids: list[int], rows: int) -> torch.Tensor:
        state.tokens.extend(token_ids)
        ends = range(len(state.tokens) - rows + 1, len(state.tokens) + 1)
        return torch.stack([self._logits(state.tokens[:end]) for end in ends])

    def _logits(self, history: list[int], wrong: bool = False) -> torch.Tensor:
        vocab = self.config.vocab_size
        token = next_token(history, vocab)
        if wrong:  # another token, never EOS
            token = 2 + (token - 1) % (vocab - 2)
        row = torch.zeros(vocab)
        row[token] = 10.0
        return row


def alone(runner: FakeRunner, prompt: list[int], reply: list[int]) -> list[int]:
    """What the fake model greedily replies to `prompt` run alone, as long as `reply`."""
    history, out = list(prompt), []
    for _ in reply:
        out.append(next_token(history, runner.config.vocab_size))
        history.append(out[-1])
    return out
