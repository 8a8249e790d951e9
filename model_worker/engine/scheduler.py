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

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model_worker.chat import Tokenizer
from model_worker.engine.output import RequestOutput
from model_worker.engine.threads import threads_for
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.sampling import FinishReason, Sampler, SamplingParams, TokenConstraint
from model_worker.state import SequenceState

INTERACTIVE, BATCH = 0, 1


class Overloaded(RuntimeError):
    """The waiting queue is full (RESOURCE_EXHAUSTED: back off and retry)."""


@dataclass
class TextDelta:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # per token, when asked for


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
    constraint: TokenConstraint | None = None  # the grammar the output must follow
    phase: Phase = Phase.PREFILL
    fed: int = 0  # prompt tokens fed so far
    output: RequestOutput | None = None
    cancelled: bool = False
    arrival: int = 0
    reserved_bytes: int = 0  # KV bytes this request may reach, counted against the scheduler's budget


@dataclass
class SchedulerStats:
    steps: int = 0
    prefilled_tokens: int = 0
    decoded_tokens: int = 0
    finished: int = 0
    preempted: int = 0


class Scheduler:
    def __init__(self, model: DeepseekV4, tokenizer: Tokenizer, token_budget: int = 512, max_running: int = 64,
                 max_waiting: int = 1024, kv_budget_bytes: int | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.token_budget, self.max_running, self.max_waiting = token_budget, max_running, max_waiting
        self.kv_budget_bytes = kv_budget_bytes
        layout = model.layout
        self._growth = sum(layout.growth_bytes_per_token(kind) for kind in model.config.layer_types)
        self.sampler = Sampler()
        self.stats = SchedulerStats()
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self._ids: dict[str, Request] = {}
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
        with self._lock:
            if request.request_id in self._ids:
                raise ValueError(f"request {request.request_id} is already running")
            if len(self.waiting) >= self.max_waiting:
                raise Overloaded(f"{len(self.waiting)} requests are waiting; retry later")
            request.arrival, self._arrivals = self._arrivals, self._arrivals + 1
            self.waiting.append(request)
            self._ids[request.request_id] = request
            self._lock.notify()

    def abort(self, request_id: str) -> bool:
        """Stop a request at the next step; False if it is unknown or already finished."""
        with self._lock:
            request = self._ids.get(request_id)
            if request is None:
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
        batch = ForwardBatch(torch.tensor([t for _, tokens in segments for t in tokens], dtype=torch.long),
                             [len(tokens) for _, tokens in segments], [r.state for r, _ in segments])
        try:
            with threads_for(int(batch.token_ids.shape[0])), torch.no_grad():
                logits = self.model(batch).logits
        except Exception as exc:  # a failed pass fails its requests, never the worker
            for request, _ in segments:
                self._finish(request, error=f"{type(exc).__name__}: {exc}")
            return True
        self.stats.steps += 1
        sampling = []
        for (request, tokens), row in zip(segments, logits):
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
                self.stats.decoded_tokens += 1
                output = request.output
                if request.on_commit and request.commit_every and \
                        request.state.num_tokens - output.committed_at >= request.commit_every:
                    if not self._commit(request, output.commit_fed(request.state)):
                        continue
            sampling.append((request, row))
        if sampling:
            sampled = self.sampler.sample(torch.stack([row for _, row in sampling]),
                                          [r.output.sampling for r, _ in sampling])
            tops = sampled.top_logprobs or [None] * len(sampling)
            for (request, _), token, logprob, top in zip(sampling, sampled.token_ids.tolist(),
                                                         sampled.logprobs.tolist(), tops):
                try:
                    text = request.output.accept(token, logprob)
                except Exception as exc:  # noqa: BLE001 - a grammar that rejects its own mask fails its request only
                    self._finish(request, error=f"{type(exc).__name__}: {exc}")
                    continue
                request.on_event(TextDelta(text, [token], [logprob], [top] if top is not None else []))
                if request.output.finished:
                    self._finish(request)
        return True

    def _admit(self) -> None:
        """Running requests up to max_running and, with a KV budget, up to the bytes their states may reach at
        their longest (input + max_tokens); one request always runs, so a large one is never starved. An
        interactive request waiting on a full batch preempts the latest batch-priority request, which goes back
        to waiting with its progress (state, output) kept and resumes where it stopped."""
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
                self.running.append(self.waiting.pop(0))
        for request in [r for r in self.waiting if r.cancelled]:
            self._finish(request, cancelled=True)

    def _bytes_at_end(self, request: Request) -> int:
        longest = len(request.prompt_token_ids) + (request.params.max_tokens or self.token_budget)
        return request.state.nbytes()["total"] + int(self._growth * longest)

    def _plan(self) -> list[tuple[Request, list[int]]]:
        """Decodes first (one token each), then prefill chunks in priority order within the token budget."""
        segments = [(r, [r.output.token_ids[-1]]) for r in self.running if r.phase is Phase.DECODE]
        budget = self.token_budget - len(segments)
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
                                       self.model.config.eos_token_id, request.state.num_tokens, request.constraint)
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

    def _finish(self, request: Request, cancelled: bool = False, error: str | None = None) -> None:
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
                                  discard_state=discard, error=error))
        self.stats.finished += 1
        with self._lock:
            (self.running if request in self.running else self.waiting).remove(request)
            self._ids.pop(request.request_id, None)
