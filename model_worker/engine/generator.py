"""One sequence at a time: chunked prefill of new tokens, then sample, stream and stop.

Every prefill chunk is committed (prompt tokens are never rolled back); generated tokens are committed when the
generation ends, after the state is truncated back to the stop point, so a stop string costs no recomputation.
A persistent session hooks `on_commit`: it hears each commit point (the end of the appended input, every
`commit_every` generated tokens, the end of the output) with the tokens fed since the previous one.
Continuous batching across requests is the gRPC worker's scheduler; this is its single-sequence core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from model_worker.chat import Tokenizer
from model_worker.engine.output import RequestOutput
from model_worker.engine.threads import threads_for
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.sampling import FinishReason, Sampler, SamplingParams, TokenConstraint
from model_worker.state import SequenceState

PREFILL_CHUNK = 512


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    num_prefilled: int
    logprobs: list[float] = field(default_factory=list)


class Generator:
    def __init__(self, model: DeepseekV4, tokenizer: Tokenizer, prefill_chunk: int = PREFILL_CHUNK) -> None:
        self.model, self.tokenizer, self.prefill_chunk = model, tokenizer, prefill_chunk
        self.sampler = Sampler()

    def prefill(self, state: SequenceState, token_ids: Sequence[int]) -> torch.Tensor | None:
        """Extend the state by token_ids in committed chunks; return the logits after the last token."""
        logits = None
        for start in range(0, len(token_ids), self.prefill_chunk):
            chunk = token_ids[start : start + self.prefill_chunk]
            with threads_for(len(chunk)):
                logits = self.model(ForwardBatch.single(list(chunk), state)).logits[-1]
            state.commit()
        return logits

    def generate(
        self, state: SequenceState, new_token_ids: Sequence[int], params: SamplingParams,
        on_text: Callable[[str], None] | None = None, on_commit: Callable[[list[int]], None] | None = None,
        commit_every: int = 0, constraint: TokenConstraint | None = None,
    ) -> GenerationResult:
        """Append new_token_ids to the sequence, then generate until a stop (within `constraint`'s grammar)."""
        logits = self.prefill(state, new_token_ids)
        if logits is None:
            raise ValueError("generation needs at least one new token to condition on")
        if on_commit:
            on_commit(list(new_token_ids))
        output = RequestOutput(self.tokenizer, params, new_token_ids, self.model.config.eos_token_id,
                               state.num_tokens, self.model.config.max_seq_len, constraint)
        text: list[str] = []

        def emit(piece: str) -> None:
            if piece:
                text.append(piece)
                if on_text:
                    on_text(piece)

        while True:
            sampled = self.sampler.sample(logits.unsqueeze(0), [output.sampling])
            emit(output.accept(int(sampled.token_ids[0]), float(sampled.logprobs[0])))
            if output.finished:
                break
            with threads_for(1):
                logits = self.model(ForwardBatch.single([output.token_ids[-1]], state)).logits[-1]
            if on_commit and commit_every and state.num_tokens - output.committed_at >= commit_every:
                on_commit(output.commit_fed(state))
        committed, held_back = output.finish(state)
        if on_commit and committed:
            on_commit(committed)
        emit(held_back)
        return GenerationResult(output.token_ids, "".join(text), output.check.finish_reason, len(new_token_ids),
                                output.logprobs)
