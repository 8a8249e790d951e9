"""A generation request as the scheduler runs it, and the events it streams back to its caller."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foundation.sampling import BATCH, INTERACTIVE  # noqa: F401 - BATCH too: the engine's priorities, re-exported
from model_worker.engine.output import RequestOutput
from model_worker.sampling import FinishReason, SamplingParams, TokenConstraint
from model_worker.state import SequenceState


@dataclass
class TextDelta:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # per token, when asked for


class EngineUnavailable(RuntimeError):
    """The engine can run no more passes (a rank of its replica is gone): its requests fail UNAVAILABLE, and callers
    go on elsewhere (another worker resumes their sessions from the store)."""

    message_is_public = True  # the engine's own words, safe for the caller (foundation.errors)


@dataclass
class Finished:
    finish_reason: FinishReason
    stop_reason: int | str | None
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    sequence_tokens: int
    discard_state: bool = False  # cancelled or failed: the state holds uncommitted tokens; reopen the last commit
    error: str | None = None
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    unavailable: bool = False  # the error is the engine's own (EngineUnavailable), not this request's

    def failure(self) -> Exception | None:
        """What a failed request raises to its caller."""
        if not self.error:
            return None
        return EngineUnavailable(self.error) if self.unavailable else RuntimeError(self.error)


class Phase(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(eq=False)  # a request is itself, not its field values
class Request:
    """A generation over one sequence: append `prompt_token_ids`, then sample until a stop."""

    request_id: str
    state: SequenceState
    prompt_token_ids: list[int]
    params: SamplingParams
    on_event: Callable[[TextDelta | Finished], None]
    on_commit: Callable[[list[int]], None] | None = None
    commit_every: int = 0
    priority: int = INTERACTIVE
    prefill_only: bool = False  # append the input, commit it and finish without sampling
    # Tokens already in the state before the prompt (a cached prefix): the sampler's penalties count them as input.
    context_token_ids: Sequence[int] = ()
    checkpoint_every: int = 0  # also a commit point wherever the input reaches a multiple of this (prefix checkpoints)
    committed_input: int = 0  # prompt tokens handed to commit points so far
    constraint: TokenConstraint | None = None  # the grammar the output must follow
    draft: int | None = None  # a proposed next token, fed after the last sampled one and verified by sampling
    drafted: int = 0
    accepted: int = 0
    phase: Phase = Phase.PREFILL
    fed: int = 0  # prompt tokens fed so far
    output: RequestOutput | None = None
    cancelled: bool = False
    arrival: int = 0
    reserved_bytes: int = 0  # KV bytes this request may reach, counted against the scheduler's budget
    tenant: str = ""  # whose request: request IDs are per tenant

    def fits(self, context: int) -> bool:
        """Whether the input not yet fed leaves room in a context of `context` tokens (for at least one sampled
        token, unless the request only appends)."""
        if self.output is not None:
            return True
        left = context - self.state.num_tokens - (len(self.prompt_token_ids) - self.fed)
        return left >= (0 if self.prefill_only else 1)

    def growth_bound(self, context: int) -> int:
        """Tokens this request may still add to its sequence: the input not yet fed, then the output up to
        max_tokens, or else up to the context; never past the context (where the output ends)."""
        room = context - self.state.num_tokens
        wanted = len(self.prompt_token_ids) - self.fed
        if not self.prefill_only:
            max_tokens = self.params.max_tokens
            sampled = len(self.output.token_ids) if self.output is not None else 0
            wanted += max_tokens - sampled if max_tokens is not None else room
        return max(0, min(wanted, room))
