"""Continuous batching: many sequences share every forward pass; requests join and leave between steps.

One step is three stages with typed hand-offs (contracts.py), as in vLLM v1 and nano-vllm:

    plan = self.schedule()          admit waiting requests, then plan the pass (`SchedulerOutput`)
    out = self.runner.run(plan)     the forward pass (`RunnerOutput`; runner.py: the only stage on the device)
    self.postprocess(plan, out)     sample, detokenize and check stops, commit, finish (postprocess.py)

and, under speculative decoding, the drafter proposes each decoding request's next token for the next step's plan.
Each plan takes every decoding request's last sampled token, then fills the rest of a per-step token budget with
prefill chunks of requests still appending input (interactive before batch priority, then arrival order), so a long
append never stalls the streams already decoding.

The scheduler runs on one engine thread (`run`; the terminal chat and tools step it on their own thread through
`Generator`, one request at a time) and talks to callers through callbacks invoked on that thread: `on_event` gets
text deltas and the final event, `on_commit` gets each commit point with its tokens. A cancelled request (abort,
client gone, deadline) stops at the next step; its partial output is returned and nothing of it is committed: its
state is left past its last commit and the final event says to discard it.
"""

from __future__ import annotations

import threading

from foundation.chat import Tokenizer
from foundation.limits import RETRY_AFTER_SECONDS
from model_worker.engine.contracts import DecodeRow, PrefillChunk, SchedulerOutput, SchedulerStats
from model_worker.engine.postprocess import Ending, Postprocessor
from model_worker.engine.request import INTERACTIVE, Phase, Request
from model_worker.engine.runner import ModelRunner, as_runner
from model_worker.engine.speculative import Drafter
from model_worker.model import DeepseekV4


class Overloaded(RuntimeError):
    """The waiting queue is full (RESOURCE_EXHAUSTED: back off and retry)."""

    retry_after = RETRY_AFTER_SECONDS


class Scheduler:
    def __init__(self, model: DeepseekV4 | ModelRunner, tokenizer: Tokenizer, token_budget: int = 512,
                 max_running: int = 64, max_waiting: int = 1024, kv_budget_bytes: int | None = None,
                 drafter: Drafter | None = None) -> None:
        """`model`: the runner of the passes, or a model to run in this process."""
        self.runner, self.tokenizer, self.drafter = as_runner(model), tokenizer, drafter
        self.config = self.runner.config
        self.token_budget, self.max_running, self.max_waiting = token_budget, max_running, max_waiting
        self.kv_budget_bytes = kv_budget_bytes
        self._growth = sum(self.runner.layout.growth_bytes_per_token(kind) for kind in self.config.layer_types)
        self.stats = SchedulerStats()
        self.postprocess = Postprocessor(tokenizer, self.config, self.stats)
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self._ids: dict[tuple[str, str], Request] = {}  # (tenant, request ID): each tenant names its own
        self._arrivals = 0
        self._lock = threading.Condition()

    # -- called from any thread ------------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        if not request.prompt_token_ids:
            raise ValueError("generation needs at least one new token to condition on")
        if request.state.layout != self.runner.layout:
            raise ValueError("the sequence state was made for another model or numerics")
        if not all(0 <= t < self.config.vocab_size for t in request.prompt_token_ids):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        request.params.validate(self.config.vocab_size)
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
        """One engine step over every running request; returns False when there was nothing to do."""
        plan = self.schedule()
        if not plan:
            return False
        try:
            out = self.runner.run(plan)
        except Exception as exc:  # noqa: BLE001 - a failed pass fails its requests, never the worker
            for request in plan.requests:
                self._finish(request, Ending.of(exc))
            return True
        self.stats.steps += 1
        for request, ending in self.postprocess(plan, out).items():
            self._finish(request, ending)
        if self.drafter is not None:
            self._draft()
        return True

    def schedule(self) -> SchedulerOutput:
        """Admit waiting requests, end the cancelled ones, and plan the pass: decodes first (each its last sampled
        token and its draft), then prefill chunks in priority order within the token budget."""
        self._admit()
        for request in [r for r in self.running if r.cancelled]:
            self._finish(request, Ending(cancelled=True))
        decodes = []
        for request in self.running:
            if request.phase is Phase.DECODE:
                decodes.append(DecodeRow(request, request.output.token_ids[-1], request.draft))
                request.draft = None  # the plan carries it now; the pass verifies it
        budget = self.token_budget - sum(len(row.token_ids) for row in decodes)
        prefills = []
        for request in sorted((r for r in self.running if r.phase is Phase.PREFILL),
                              key=lambda r: (r.priority, r.arrival)):
            if budget <= 0:
                break
            take = budget
            if request.checkpoint_every:  # a chunk ends at each checkpoint, where the state is kept
                take = min(take, request.checkpoint_every - request.state.num_tokens % request.checkpoint_every)
            chunk = request.prompt_token_ids[request.fed : request.fed + take]
            prefills.append(PrefillChunk(request, chunk, request.fed + len(chunk) == len(request.prompt_token_ids)))
            budget -= len(chunk)
        return SchedulerOutput(decodes, prefills)

    def _draft(self) -> None:
        """Propose the next draft of every decoding request (the token after its last sampled one)."""
        requests = [r for r in self.running if r.phase is Phase.DECODE and not r.cancelled]
        if not requests:
            return
        try:
            drafts = self.drafter.propose(requests)
        except Exception as exc:  # noqa: BLE001 - the drafted requests fail, never the worker
            for request in requests:
                self._finish(request, Ending.of(exc, "drafting failed: "))
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
        context = self.config.max_seq_len
        for request in [r for r in self.waiting if not r.fits(context)]:
            self._finish(request, Ending(error=f"the input reaches the model's context of {context} tokens"))
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
            self._finish(request, Ending(cancelled=True))

    def _bytes_at_end(self, request: Request) -> int:
        growth = request.growth_bound(self.config.max_seq_len)
        # Pages shared with a prefix checkpoint (or with other requests resumed from it) are counted once, by the
        # prefix cache's budget, not once per request that holds them.
        state = request.state
        return state.nbytes()["total"] - state.shared_page_bytes() + int(self._growth * growth)

    def _finish(self, request: Request, ending: Ending) -> None:
        self.postprocess.finish(request, ending)
        self.stats.finished += 1
        with self._lock:
            (self.running if request in self.running else self.waiting).remove(request)
            if self._ids.get(key := (request.tenant, request.request_id)) is request:
                del self._ids[key]
