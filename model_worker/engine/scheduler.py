"""Continuous batching: many sequences share every forward pass; requests join and leave between steps.

Each step takes every decoding request's last sampled token, then fills the rest of a per-step token budget with
prefill chunks of requests still appending input (interactive before batch priority, then arrival order), so a long
append never stalls the streams already decoding. After the pass, each request whose input is all in samples from
its last row; all rows are sampled in one call. Requests are independent: a request's tokens never depend on which
others share its batch (the sampler draws from per-request RNG streams).

The scheduler runs on one engine thread (`run`) and talks to callers through callbacks invoked on that thread:
`on_event` gets text deltas and the final event, `on_commit` gets each commit point with its tokens, as
`Generator.generate` reports them. A cancelled request (abort, client gone, deadline) stops at the next step; its
partial output is returned and nothing of it is committed: its state is left past its last commit and the final
event says to discard it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from model_worker.chat import Tokenizer
from model_worker.engine.output import RequestOutput
from model_worker.engine.request import INTERACTIVE, EngineUnavailable, Finished, Phase, Request, TextDelta
from model_worker.engine.speculative import Drafter
from model_worker.engine.threads import threads_for
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.sampling import FinishReason, Sampler


class Overloaded(RuntimeError):
    """The waiting queue is full (RESOURCE_EXHAUSTED: back off and retry)."""


@dataclass
class SchedulerStats:
    steps: int = 0
    prefilled_tokens: int = 0
    decoded_tokens: int = 0
    finished: int = 0
    preempted: int = 0
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    reserved_tokens: int = 0  # sequence growth reserved at admissions (what the KV budget counts), all told


class Scheduler:
    def __init__(self, model: DeepseekV4, tokenizer: Tokenizer, token_budget: int = 512, max_running: int = 64,
                 max_waiting: int = 1024, kv_budget_bytes: int | None = None, drafter: Drafter | None = None) -> None:
        self.model, self.tokenizer, self.drafter = model, tokenizer, drafter
        self.token_budget, self.max_running, self.max_waiting = token_budget, max_running, max_waiting
        self.kv_budget_bytes = kv_budget_bytes
        layout = model.layout
        self._growth = sum(layout.growth_bytes_per_token(kind) for kind in model.config.layer_types)
        self.sampler = Sampler()
        self.stats = SchedulerStats()
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self._ids: dict[tuple[str, str], Request] = {}  # (tenant, request ID): each tenant names its own
        self._arrivals = 0
        self._lock = threading.Condition()

    # -- called from any thread ------------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        if not request.prompt_token_ids:
            raise ValueError("generation needs at least one new token to condition on")
        if request.state.layout != self.model.layout:
            raise ValueError("the sequence state was made for another model or numerics")
        if not all(0 <= t < self.model.config.vocab_size for t in request.prompt_token_ids):
            raise ValueError(f"token ids must lie in [0, {self.model.config.vocab_size})")
        request.params.validate(self.model.config.vocab_size)
        key = (request.tenant, request.request_id)
        with self._lock:
            if key in self._ids:
                raise ValueError(f"request {request.request_id} is already running")
            if len(self.waiting) >= self.max_waiting:
                raise Overloaded(f"{len(self.waiting)} requests are waiting; retry later")
            request.arrival, self._arrivals = self._arrivals, self._arrivals + 1
            self.waiting.append(request)
            self._ids[key] = request
            self._lock.notify()

    def abort(self, request_id: str, tenant: str = "") -> bool:
        """Stop the tenant's request `request_id` at the next step; False if the tenant runs no such request (another
        tenant's request of that ID is not this one)."""
        with self._lock:
            request = self._ids.get((tenant, request_id))
        return request is not None and self.cancel(request)

    def cancel(self, request: Request) -> bool:
        """Stop `request` itself at the next step (its caller went away); False once it has finished."""
        with self._lock:
            if self._ids.get((request.tenant, request.request_id)) is not request:
                return False
            request.cancelled = True
            self._lock.notify()
            return True

    @property
    def load(self) -> dict[str, int]:
        with self._lock:
            return {"waiting": len(self.waiting), "running": len(self.running)}

    def run(self, stop: threading.Event) -> None:
        """The engine loop: step while there is work, sleep when there is none."""
        while not stop.is_set():
            if not self.step():
                with self._lock:
                    if not self.waiting and not self.running:
                        self._lock.wait(timeout=0.05)

    # -- the engine thread -----------------------------------------------------------------------------------

    def step(self) -> bool:
        """One forward pass over every running request; returns False when there was nothing to do."""
        self._admit()
        for request in [r for r in self.running if r.cancelled]:
            self._finish(request, cancelled=True)
        segments = self._plan()
        if not segments:
            return False
        # A decoding request's logits at its last sampled token and, after a draft, at the draft.
        last_rows = [len(tokens) if r.phase is Phase.DECODE else 1 for r, tokens in segments]
        batch = ForwardBatch(torch.tensor([t for _, tokens in segments for t in tokens], dtype=torch.long),
                             [len(tokens) for _, tokens in segments], [r.state for r, _ in segments],
                             last_rows=last_rows)
        try:
            with threads_for(int(batch.token_ids.shape[0])), torch.no_grad():
                logits = self.model(batch).logits
        except Exception as exc:  # a failed pass fails its requests, never the worker
            for request, _ in segments:
                self._finish(request, error=f"{type(exc).__name__}: {exc}",
                             unavailable=isinstance(exc, EngineUnavailable))
            return True
        self.stats.steps += 1
        ready, decoding, offset = [], [], 0
        for (request, tokens), count in zip(segments, last_rows):
            rows, offset = logits[offset : offset + count], offset + count
            if request.phase is Phase.PREFILL:
                request.fed += len(tokens)
                self.stats.prefilled_tokens += len(tokens)
                request.state.commit()  # input tokens are never rolled back
                if request.fed < len(request.prompt_token_ids):
                    continue
                if not self._start_output(request):
                    continue
                if request.prefill_only:
                    self._finish(request)
                    continue
            else:
                decoding.append(request)
            ready.append((request, rows))
        accepted = self._sample([(request, rows[0]) for request, rows in ready])
        self._sample([(request, rows[1]) for request, rows in ready if request in accepted])
        for request in decoding:
            self.stats.decoded_tokens += 1 + (request in accepted)
            output = request.output
            if request in self.running and request.on_commit and request.commit_every and \
                    request.state.num_tokens - output.committed_at >= request.commit_every:
                self._commit(request, output.commit_fed(request.state))
        if self.drafter is not None:
            self._draft()
        return True

    def _sample(self, items: list[tuple[Request, torch.Tensor]]) -> set[Request]:
        """Sample one token per request from its logits row and stream it. A request that fed a draft keeps it when
        the token sampled in its place is the draft itself (so speculation never changes what is sampled: each
        position draws from the request's own RNG stream); otherwise the draft leaves the state. Returns the
        requests whose draft was kept and who go on to sample from the row after it."""
        accepted: set[Request] = set()
        if not items:
            return accepted
        sampled = self.sampler.sample(torch.stack([row for _, row in items]), [r.output.sampling for r, _ in items])
        tops = sampled.top_logprobs or [None] * len(items)
        for (request, _), token, logprob, top in zip(items, sampled.token_ids.tolist(), sampled.logprobs.tolist(),
                                                     tops):
            draft, request.draft = request.draft, None
            if draft is not None:
                request.drafted += 1
                if token == draft:
                    request.accepted += 1
                    self.stats.accepted_draft_tokens += 1
                    accepted.add(request)
                else:  # before the output can finish: the state must hold exactly the kept tokens
                    request.state.truncate(request.state.num_tokens - 1)
            try:
                text = request.output.accept(token, logprob)
            except Exception as exc:  # noqa: BLE001 - a grammar that rejects its own mask fails its request only
                self._finish(request, error=f"{type(exc).__name__}: {exc}")
                accepted.discard(request)
                continue
            request.on_event(TextDelta(text, [token], [logprob], [top] if top is not None else []))
            if request.output.finished:
                self._finish(request)
                accepted.discard(request)
        return accepted

    def _draft(self) -> None:
        """Propose the next draft of every decoding request (the token after its last sampled one)."""
        requests = [r for r in self.running if r.phase is Phase.DECODE and not r.cancelled]
        if not requests:
            return
        try:
            with threads_for(len(requests)), torch.no_grad():
                drafts = self.drafter.propose(requests)
        except Exception as exc:  # noqa: BLE001 - the drafted requests fail, never the worker
            for request in requests:
                self._finish(request, error=f"drafting failed: {type(exc).__name__}: {exc}")
            return
        for request, draft in zip(requests, drafts):
            request.draft = draft
        self.stats.draft_tokens += sum(d is not None for d in drafts)

    def _admit(self) -> None:
        """Running requests up to max_running and, with a KV budget, up to the bytes their states may reach at
        their longest (input + max_tokens, never past the model's context); one request always runs, so a large
        one is never starved. An interactive request waiting on a full batch preempts the latest batch-priority
        request, which goes back to waiting with its progress (state, output) kept and resumes where it stopped.
        A request whose input leaves no room in the context fails before it runs."""
        context = self.model.config.max_seq_len
        for request in [r for r in self.waiting if not r.fits(context)]:
            self._finish(request, error=f"the input reaches the model's context of {context} tokens")
        with self._lock:
            self.waiting.sort(key=lambda r: (r.priority, r.arrival))
            if self.waiting and self.waiting[0].priority == INTERACTIVE and len(self.running) >= self.max_running:
                batch = [r for r in self.running if r.priority != INTERACTIVE]
                if batch:
                    victim = max(batch, key=lambda r: r.arrival)
                    self.running.remove(victim)
                    self.waiting.append(victim)
                    self.stats.preempted += 1
            reserved = sum(r.reserved_bytes for r in self.running)
            while self.waiting and len(self.running) < self.max_running:
                request = self.waiting[0]
                request.reserved_bytes = self._bytes_at_end(request)
                if self.running and self.kv_budget_bytes is not None and \
                        reserved + request.reserved_bytes > self.kv_budget_bytes:
                    break
                reserved += request.reserved_bytes
                self.stats.reserved_tokens += request.growth_bound(context)
                self.running.append(self.waiting.pop(0))
        for request in [r for r in self.waiting if r.cancelled]:
            self._finish(request, cancelled=True)

    def _bytes_at_end(self, request: Request) -> int:
        growth = request.growth_bound(self.model.config.max_seq_len)
        return request.state.nbytes()["total"] + int(self._growth * growth)

    def _plan(self) -> list[tuple[Request, list[int]]]:
        """Decodes first (one token each), then prefill chunks in priority order within the token budget."""
        segments = [(r, [r.output.token_ids[-1]] + ([r.draft] if r.draft is not None else []))
                    for r in self.running if r.phase is Phase.DECODE]
        budget = self.token_budget - sum(len(tokens) for _, tokens in segments)
        for request in sorted((r for r in self.running if r.phase is Phase.PREFILL),
                              key=lambda r: (r.priority, r.arrival)):
            if budget <= 0:
                break
            chunk = request.prompt_token_ids[request.fed : request.fed + budget]
            segments.append((request, chunk))
            budget -= len(chunk)
        return segments

    def _start_output(self, request: Request) -> bool:
        request.phase = Phase.DECODE
        # The end of the appended input is a turn boundary.
        if request.on_commit and not self._commit(request, list(request.prompt_token_ids)):
            return False
        request.output = RequestOutput(self.tokenizer, request.params, request.prompt_token_ids,
                                       self.model.config.eos_token_id, request.state.num_tokens,
                                       self.model.config.max_seq_len, request.constraint)
        return True

    def _commit(self, request: Request, tokens: list[int]) -> bool:
        """Hand a commit point to the request's owner; a failing commit (byte cap, store down) fails the request,
        not the engine. Returns whether the request goes on."""
        try:
            request.on_commit(tokens)
            return True
        except Exception as exc:  # noqa: BLE001 - reported to the request's caller
            self._finish(request, error=f"commit failed: {type(exc).__name__}: {exc}")
            return False

    def _finish(self, request: Request, cancelled: bool = False, error: str | None = None,
                unavailable: bool = False) -> None:
        output = request.output
        held_back, committed = "", []
        if output is not None and not cancelled and error is None:
            committed, held_back = output.finish(request.state)
            if request.on_commit and committed and not self._commit(request, committed):
                return
        elif output is not None:
            held_back = output.abort()
        if held_back:
            request.on_event(TextDelta(held_back, [], []))
        if error:
            reason = FinishReason.ERROR
        elif cancelled:
            reason = FinishReason.ABORT
        else:
            reason = output.check.finish_reason or FinishReason.STOP  # prefill only: nothing was to be sampled
        tokens = output.token_ids if output else []
        # A failed pass may have touched the state; a cancelled request only once it fed something.
        discard = error is not None or (cancelled and request.fed > 0)
        request.on_event(Finished(reason, output.check.stop_reason if output else None, list(tokens),
                                  len(request.prompt_token_ids), len(tokens), request.state.num_tokens,
                                  discard_state=discard, error=error, draft_tokens=request.drafted,
                                  accepted_draft_tokens=request.accepted, unavailable=unavailable))
        self.stats.finished += 1
        with self._lock:
            (self.running if request in self.running else self.waiting).remove(request)
            if self._ids.get(key := (request.tenant, request.request_id)) is request:
                del self._ids[key]
