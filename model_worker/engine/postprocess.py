"""Postprocessing one engine step: what the pass's logits (`RunnerOutput`) do to each request of the plan
(`SchedulerOutput`), in stages:

    advance   a prefill chunk is in: its tokens are committed (input is never rolled back); a request whose input
              is all in hands that commit point to its owner (a turn boundary) and starts its output
    sample    one token per request from its row, every row in one sampler call; a kept draft also samples the row
              after it
    output    detokenize and check stops (output.py: `SampledToken` in, `OutputDelta` out); stream a `TextDelta`
    commit    mid-output commit points, every `commit_every` fed tokens (and, with `checkpoint_every`, mid-input ones
              where the input reaches each multiple of it)

It returns the requests that end this step and why (`Ending`); the scheduler finishes them (`finish`: truncate to
the stop point, the last commit, the `Finished` event) and drops them from its queues. Requests are independent: a
request's tokens never depend on which others share its batch (the sampler draws from per-request RNG streams).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foundation.chat import Tokenizer
from model_worker.config import ModelConfig
from model_worker.engine.contracts import PrefillChunk, RunnerOutput, SchedulerOutput, SchedulerStats
from model_worker.engine.output import RequestOutput, SampledToken
from model_worker.engine.request import EngineUnavailable, Finished, Phase, Request, TextDelta
from model_worker.sampling import FinishReason, Sampler


@dataclass(frozen=True)
class Ending:
    """Why a request stops running: its output ended (the default), it was cancelled, or it failed."""

    cancelled: bool = False
    error: str | None = None
    unavailable: bool = False  # the error is the engine's own (EngineUnavailable), not the request's

    @classmethod
    def of(cls, exc: Exception, what: str = "") -> Ending:
        return cls(error=f"{what}{type(exc).__name__}: {exc}", unavailable=isinstance(exc, EngineUnavailable))


class Postprocessor:
    def __init__(self, tokenizer: Tokenizer, config: ModelConfig, stats: SchedulerStats) -> None:
        self.tokenizer, self.config, self.stats = tokenizer, config, stats
        self.sampler = Sampler()

    def __call__(self, plan: SchedulerOutput, out: RunnerOutput) -> dict[Request, Ending]:
        ended: dict[Request, Ending] = {}
        ready = [(row.request, rows, row.draft) for row, rows in zip(plan.decodes, out.decode_logits)]
        for chunk, rows in zip(plan.prefills, out.prefill_logits):
            if self._advance(chunk, ended):
                ready.append((chunk.request, rows, None))
        accepted = self._sample([(request, rows[0], draft) for request, rows, draft in ready], ended)
        self._sample([(request, rows[1], None) for request, rows, _ in ready if request in accepted], ended)
        for row in plan.decodes:
            request = row.request
            self.stats.decoded_tokens += 1 + (request in accepted)
            output = request.output
            if request not in ended and request.on_commit and request.commit_every and \
                    request.state.num_tokens - output.committed_at >= request.commit_every:
                if error := commit(request, output.commit_fed(request.state)):
                    ended[request] = Ending(error=error)
        return ended

    def _advance(self, chunk: PrefillChunk, ended: dict[Request, Ending]) -> bool:
        """Take a prefill chunk in; returns whether its request samples from the row after it."""
        request = chunk.request
        request.fed += len(chunk.token_ids)
        self.stats.prefilled_tokens += len(chunk.token_ids)
        request.state.commit()  # input tokens are never rolled back
        checkpoint = request.checkpoint_every and request.state.num_tokens % request.checkpoint_every == 0
        if not chunk.completes:
            if checkpoint and request.on_commit and (error := commit_input(request)):
                ended[request] = Ending(error=error)
            return False
        request.phase = Phase.DECODE
        # The end of the appended input is a turn boundary.
        if request.on_commit and (error := commit_input(request)):
            ended[request] = Ending(error=error)
            return False
        request.output = RequestOutput(self.tokenizer, request.params,
                                       [*request.context_token_ids, *request.prompt_token_ids],
                                       self.config.eos_token_id, request.state.num_tokens, self.config.max_seq_len,
                                       request.constraint)
        if request.prefill_only:
            ended[request] = Ending()
            return False
        return True

    def _sample(self, items: list[tuple[Request, torch.Tensor, int | None]], ended: dict[Request, Ending]
                ) -> set[Request]:
        """Sample one token per request from its logits row and stream it. A request that fed a draft keeps it when
        the token sampled in its place is the draft itself (so speculation never changes what is sampled: each
        position draws from the request's own RNG stream); otherwise the draft leaves the state. Returns the
        requests whose draft was kept and who go on to sample from the row after it."""
        accepted: set[Request] = set()
        if not items:
            return accepted
        sampled = self.sampler.sample(torch.stack([row for _, row, _ in items]),
                                      [r.output.sampling for r, _, _ in items])
        tops = sampled.top_logprobs or [None] * len(items)
        for (request, _, draft), token, logprob, top in zip(items, sampled.token_ids.tolist(),
                                                            sampled.logprobs.tolist(), tops):
            if draft is not None:
                request.drafted += 1
                if token == draft:
                    request.accepted += 1
                    self.stats.accepted_draft_tokens += 1
                    accepted.add(request)
                else:  # before the output can finish: the state must hold exactly the kept tokens
                    request.state.truncate(request.state.num_tokens - 1)
            try:
                delta = request.output.update(SampledToken(token, logprob, top))
            except Exception as exc:  # noqa: BLE001 - a grammar that rejects its own mask fails its request only
                ended[request] = Ending.of(exc)
                accepted.discard(request)
                continue
            request.on_event(TextDelta(delta.text, [token], [logprob], [top] if top is not None else []))
            if delta.finished:
                ended[request] = Ending()
                accepted.discard(request)
        return accepted

    def finish(self, request: Request, ending: Ending) -> None:
        """End `request`: a finished output is truncated to its stop point and committed; then the text held back
        and the `Finished` event. A cancelled or failed request commits nothing of its output."""
        output = request.output
        held_back, committed = "", []
        if output is not None and not ending.cancelled and ending.error is None:
            committed, held_back = output.finish(request.state)
            # The end of an output is a commit point even when it fed nothing since the last one (max_tokens=1, a
            # stop right after a commit): its owner records the reply and what the next turn owes the model.
            if request.on_commit and (committed or output.token_ids) and (error := commit(request, committed)):
                self.finish(request, Ending(error=error))
                return
        elif output is not None:
            held_back = output.abort()
        if held_back:
            request.on_event(TextDelta(held_back, [], []))
        if ending.error:
            reason = FinishReason.ERROR
        elif ending.cancelled:
            reason = FinishReason.ABORT
        else:
            reason = output.check.finish_reason or FinishReason.STOP  # prefill only: nothing was to be sampled
        tokens = output.token_ids if output else []
        # A failed pass may have touched the state; a cancelled request only once it fed something.
        discard = ending.error is not None or (ending.cancelled and request.fed > 0)
        request.on_event(Finished(reason, output.check.stop_reason if output else None, list(tokens),
                                  len(request.prompt_token_ids), len(tokens), request.state.num_tokens,
                                  discard_state=discard, error=ending.error, draft_tokens=request.drafted,
                                  accepted_draft_tokens=request.accepted, unavailable=ending.unavailable))


def commit_input(request: Request) -> str | None:
    """A commit point inside or at the end of the input: the input tokens fed since the last one."""
    tokens = list(request.prompt_token_ids[request.committed_input : request.fed])
    request.committed_input = request.fed
    return commit(request, tokens)


def commit(request: Request, tokens: list[int]) -> str | None:
    """Hand a commit point to the request's owner; returns why it failed (a byte cap, the store down): that fails
    the request, not the engine."""
    try:
        request.on_commit(tokens)
        return None
    except Exception as exc:  # noqa: BLE001 - reported to the request's caller
        return f"commit failed: {type(exc).__name__}: {exc}"
