"""The output stage of postprocessing: one request's output as it is sampled, its sampler state, detokenization,
stop checks and the text released so far. Its input is a `SampledToken`, its output an `OutputDelta`.

It runs on the engine thread, right after sampling, and not on a thread of its own: a stop string must end the
output at the exact token that completes it, before that token is fed to the model. Checked off-thread, the stop
would be seen a step late, after the next pass had fed the token (and drafted past it), which would cost that
step's compute and a rollback of the state for every stop; and the grammar of a constrained request must see each
token before the next is sampled anyway. Detokenizing one token is microseconds beside a forward pass.

Every sampled token but the last is fed to the model; at the end the state is truncated back to the stop point (the
stop checker only ever cuts the token of its last update, which is never fed, so commits made mid-output stay
valid) and the sampler state of exactly the kept tokens travels with the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from foundation.chat import IncrementalDetokenizer, Tokenizer
from model_worker.sampling import FinishReason, SamplingParams, SamplingState, StopChecker, TokenConstraint
from model_worker.sampling.stopping import StopCheckResult
from model_worker.state import SequenceState


@dataclass(frozen=True)
class SampledToken:
    """What the sampler drew for a request: the output stage's input."""

    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]] | None = None  # when the request asked for them


@dataclass(frozen=True)
class OutputDelta:
    """What one sampled token did to the output: the text it releases (text that may begin a stop string is held
    back until it cannot) and whether the output ends with it (a stop, EOS, max_tokens or the context)."""

    text: str
    finished: bool


class RequestOutput:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, prompt_token_ids: Sequence[int],
                 eos_token_id: int, start: int, context: int, constraint: TokenConstraint | None = None) -> None:
        # The output ends at the model's context (`context` tokens, the last sampled one unfed) whatever max_tokens
        # says: with LENGTH, as if max_tokens were what the context leaves.
        room = max(context - start, 1)
        if params.max_tokens is None or params.max_tokens > room:
            params = replace(params, max_tokens=room)
        self.sampling = SamplingState(params, prompt_token_ids=tuple(prompt_token_ids), constraint=constraint)
        self.stopper = StopChecker(params, eos_token_ids=(eos_token_id,))
        self.detok = IncrementalDetokenizer(tokenizer)
        self.start = start  # the sequence's length when output began
        self.committed_at = start  # the sequence length of the last commit made during output
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.check = StopCheckResult("")

    @property
    def finished(self) -> bool:
        return self.check.finished

    def update(self, sampled: SampledToken) -> OutputDelta:
        """Take one sampled token. Raises when the request's grammar rejects it."""
        self.sampling.append(sampled.token_id)
        self.token_ids.append(sampled.token_id)
        self.logprobs.append(sampled.logprob)
        self.check = self.stopper.update([sampled.token_id], [self.detok.feed([sampled.token_id])])
        return OutputDelta(self.check.text, self.check.finished)

    def abort(self) -> str:
        """End as cancelled; returns the held-back text."""
        self.check = StopCheckResult("", finish_reason=FinishReason.ABORT)
        return self.stopper.flush()

    def fed_since_commit(self, state: SequenceState) -> list[int]:
        """Output tokens fed to the model since the last commit."""
        return self.token_ids[self.committed_at - self.start : state.num_tokens - self.start]

    def commit_fed(self, state: SequenceState) -> list[int]:
        """Commit mid-output: every fed token is final. The sampler state stored with the commit is the one before
        the last (unfed) sample, which a resumed sequence draws again. Returns the tokens newly committed."""
        fed = SamplingState.restore(self.sampling.snapshot())
        fed.rollback(len(self.token_ids) - (state.num_tokens - self.start))
        state.sampling = fed.snapshot()
        state.commit()
        tokens = self.fed_since_commit(state)
        self.committed_at = state.num_tokens
        return tokens

    def finish(self, state: SequenceState) -> tuple[list[int], str]:
        """Truncate the state back to the stop point and commit it; returns (tokens committed since the last commit,
        the text still held back)."""
        kept = len(self.token_ids) - self.check.num_tokens_to_truncate
        self.sampling.constraint = None  # the output is complete: the grammar has nothing more to check
        # Roll back anything fed past the stop point, and the last sampled token if a kept draft fed it: the state
        # ends as without speculation (the last sampled token unfed, owed to the next turn).
        unfed_last = self.start + max(len(self.token_ids) - 1, 0)
        state.truncate(min(state.num_tokens, self.start + kept, unfed_last))
        self.sampling.rollback(len(self.token_ids) - kept)
        del self.token_ids[kept:], self.logprobs[kept:]
        state.sampling = self.sampling.snapshot()  # the RNG position travels with the sequence's snapshots
        state.commit()
        tokens = self.fed_since_commit(state)
        self.committed_at = state.num_tokens
        return tokens, self.stopper.flush()
