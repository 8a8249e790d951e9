"""One sequence at a time: chunked prefill of new tokens, then sample, stream and stop.

Every prefill chunk is committed (prompt tokens are never rolled back); generated tokens are committed when the
generation ends, after the state is truncated back to the stop point, so a stop string costs no recomputation.
A persistent session hooks `on_commit`: it hears each commit point (the end of the appended input, every
`commit_every` generated tokens, the end of the output) with the tokens fed since the previous one. Mid-output commits
are safe because the stop checker only ever cuts the token of its last update, which is never fed to the model.
Continuous batching across requests is the gRPC worker's scheduler; this is its single-sequence core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from model_worker.chat import IncrementalDetokenizer, Tokenizer
from model_worker.engine.threads import threads_for
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.sampling import FinishReason, Sampler, SamplingParams, SamplingState, StopChecker
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
        commit_every: int = 0,
    ) -> GenerationResult:
        """Append new_token_ids to the sequence, then generate until a stop."""
        logits = self.prefill(state, new_token_ids)
        if logits is None:
            raise ValueError("generation needs at least one new token to condition on")
        if on_commit:
            on_commit(list(new_token_ids))
        sampling = SamplingState(params, prompt_token_ids=tuple(new_token_ids))
        stopper = StopChecker(params, eos_token_ids=(self.model.config.eos_token_id,))
        detok = IncrementalDetokenizer(self.tokenizer)
        generated, logprobs, text = [], [], []
        start = committed_at = state.num_tokens

        def emit(piece: str) -> None:
            if piece:
                text.append(piece)
                if on_text:
                    on_text(piece)

        while True:
            out = self.sampler.sample(logits.unsqueeze(0), [sampling])
            token = int(out.token_ids[0])
            sampling.append(token)
            generated.append(token)
            logprobs.append(float(out.logprobs[0]))
            check = stopper.update([token], [detok.feed([token])])
            emit(check.text)
            if check.finished:
                break
            with threads_for(1):
                logits = self.model(ForwardBatch.single([token], state)).logits[-1]
            if on_commit and commit_every and state.num_tokens - committed_at >= commit_every:
                committed_at = self._commit(state, sampling, generated, start, committed_at, on_commit)
        kept = len(generated) - check.num_tokens_to_truncate
        # The last sampled token was never fed to the model; roll back anything fed past the stop point.
        state.truncate(min(state.num_tokens, start + kept))
        sampling.rollback(len(generated) - kept)
        state.sampling = sampling.snapshot()  # the RNG position travels with the sequence's snapshots
        state.commit()
        if on_commit and state.num_tokens > committed_at:
            on_commit(generated[committed_at - start : state.num_tokens - start])
        emit(stopper.flush())
        return GenerationResult(generated[:kept], "".join(text), check.finish_reason, len(new_token_ids),
                                logprobs[:kept])

    @staticmethod
    def _commit(state: SequenceState, sampling: SamplingState, generated: list[int], start: int, committed_at: int,
                on_commit: Callable[[list[int]], None]) -> int:
        """Commit mid-output: every token fed so far (all but the last sampled) is final. The sampler state stored
        with it is the one before that last sample, which a resume draws again."""
        fed = SamplingState.restore(sampling.snapshot())
        fed.rollback(len(generated) - (state.num_tokens - start))
        state.sampling = fed.snapshot()
        state.commit()
        on_commit(generated[committed_at - start : state.num_tokens - start])
        return state.num_tokens
