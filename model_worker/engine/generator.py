"""One sequence at a time, synchronously (the terminal chat, tools, tests): a thin driver over the gRPC worker's own
`Scheduler` and step, holding one request at a time and stepping it on the caller's thread until it finishes.

So it prefills, samples, stops, truncates and commits exactly as the worker does: input is fed in committed chunks
of `prefill_chunk` tokens (prompt tokens are never rolled back); generated tokens are committed when the generation
ends, after the state is truncated back to the stop point, so a stop string costs no recomputation. A persistent
session hooks `on_commit`: it hears each commit point (the end of the appended input, every `commit_every` generated
tokens, the end of the output) with the tokens fed since the previous one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foundation.chat import Tokenizer
from model_worker.engine.request import Finished, Request, TextDelta
from model_worker.engine.runner import ModelRunner, as_runner
from model_worker.engine.scheduler import Scheduler
from model_worker.model import DeepseekV4
from model_worker.sampling import FinishReason, SamplingParams, TokenConstraint
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
    def __init__(self, model: DeepseekV4 | ModelRunner, tokenizer: Tokenizer,
                 prefill_chunk: int = PREFILL_CHUNK) -> None:
        self.model, self.tokenizer, self.prefill_chunk = model, tokenizer, prefill_chunk
        self.runner = as_runner(model)
        self.scheduler = Scheduler(self.runner, tokenizer, token_budget=prefill_chunk, max_running=1, max_waiting=1)

    def prefill(self, state: SequenceState, token_ids: Sequence[int]) -> None:
        """Extend the state by token_ids in committed chunks, sampling nothing."""
        if token_ids:
            self._run(Request("prefill", state, list(token_ids), SamplingParams(), _ignore, prefill_only=True))

    def generate(
        self, state: SequenceState, new_token_ids: Sequence[int], params: SamplingParams,
        on_text: Callable[[str], None] | None = None, on_commit: Callable[[list[int]], None] | None = None,
        commit_every: int = 0, constraint: TokenConstraint | None = None,
    ) -> GenerationResult:
        """Append new_token_ids to the sequence, then generate until a stop (within `constraint`'s grammar). A
        failed generation (a failed pass or commit, a grammar that rejects its own mask) raises what the worker
        reports to its caller."""
        text: list[str] = []
        logprobs: list[float] = []

        def on_event(event: TextDelta) -> None:
            logprobs.extend(event.logprobs)
            if event.text:
                text.append(event.text)
                if on_text:
                    on_text(event.text)

        final = self._run(Request("generate", state, list(new_token_ids), params, on_event, on_commit=on_commit,
                                  commit_every=commit_every, constraint=constraint))
        kept = final.token_ids  # a stop string's tokens past the stop point are not kept
        return GenerationResult(kept, "".join(text), final.finish_reason, len(new_token_ids), logprobs[: len(kept)])

    def _run(self, request: Request) -> Finished:
        """Step the scheduler until `request` finishes; a caller's callback that raises (or Ctrl-C) cancels it."""
        finals: list[Finished] = []
        deltas = request.on_event
        request.on_event = lambda event: finals.append(event) if isinstance(event, Finished) else deltas(event)
        self.scheduler.submit(request)
        try:
            while not finals:
                self.scheduler.step()
        except BaseException:
            deltas = _ignore  # the caller has gone: nothing more reaches it
            if self.scheduler.cancel(request):
                self.scheduler.step()
            raise
        failure = finals[0].failure()
        if failure is not None:
            raise failure
        return finals[0]


def _ignore(event: TextDelta | Finished) -> None:
    pass
