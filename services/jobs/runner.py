"""Running one request: claim it, generate through the model worker's typed client with a heartbeat that renews the
lease and notices cancellation, and end it with its result. A worker that is unavailable hands the request back (the
task retries with backoff); a lost lease writes nothing (whoever holds it now will). A request the worker's call
cannot carry fails at once; any other exception fails the attempt, and the request ends failed after
`max_attempts` of them (JobStore.fail_attempt)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from foundation.blobs import BlobStore
from foundation.clients.worker import (
    Delta,
    Final,
    ResourceExhausted,
    Sampling,
    Tool,
    Unavailable,
    WorkerClient,
    WorkerError,
)
from foundation.clients.worker import requests as worker_requests
from foundation.registry import WorkerPool
from foundation.tenancy import acting_for, in_current_context
from services.jobs.job_store import JobStore, Outcome
from services.jobs.metrics import RunMetrics
from services.jobs.spec import JobRequest
from services.jobs.tables import CANCELLED, COMPLETED, FAILED, BatchRequest
from services.openai_shapes import chat_completion

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 500  # of an exception's text kept in a result


class InvalidRequest(ValueError):
    """A stored request the model worker's call cannot carry (a number past the wire's range, say): the request's
    own fault, so it fails at once instead of once per attempt."""


class AttemptFailed(Exception):
    """The attempt raised what no handler knew; the request went back to the queue for another attempt."""


@dataclass
class Progress:
    phase: str = "prefill"
    tokens: int = 0
    verdict: str = "ok"  # what the last renewal said: ok, cancel, lost


class Runner:
    def __init__(self, store: JobStore, workers: WorkerPool[WorkerClient] | WorkerClient, owner: str,
                 lease_s: float = 60.0, results: BlobStore | None = None, inline_output_bytes: int = 64 << 10,
                 model: str = "", check_every_tokens: int = 64, metrics: RunMetrics | None = None) -> None:
        self.workers = workers if isinstance(workers, WorkerPool) else WorkerPool.of(workers)
        self.metrics = metrics or RunMetrics()
        self.store, self.owner, self.lease_s = store, owner, lease_s
        self.check_every_tokens = check_every_tokens
        self.results, self.inline_output_bytes, self.model = results, inline_output_bytes, model

    def run(self, request_id: int) -> str:
        """"done", "skipped" (not ours to run), "lost" (the lease went elsewhere); raises Unavailable or
        ResourceExhausted after handing the request back when the model worker cannot take it now, AttemptFailed
        after putting it back in the queue when the attempt failed and attempts are left."""
        claimed = self.store.claim(request_id, self.owner, self.lease_s)
        if claimed is None:
            return "skipped"
        request, batch = claimed
        started = time.monotonic()
        with acting_for(batch.tenant):  # the batch's owner, not this service, is who the worker serves
            try:
                return self._run_claimed(request_id, request, started)
            except (Unavailable, ResourceExhausted):
                raise  # handed back already: the task retries it later, and the attempt does not count
            except Exception as exc:  # noqa: BLE001 - whatever it is, this attempt failed and counts
                return self._attempt_failed(request_id, exc, started)

    def _attempt_failed(self, request_id: int, exc: Exception, started: float) -> str:
        log.exception("request %s: attempt failed", request_id)
        error = {"code": type(exc).__name__, "message": str(exc)[:MAX_ERROR_CHARS]}
        verdict = self.store.fail_attempt(request_id, self.owner, error)
        if verdict == "requeued":
            raise AttemptFailed(f"request {request_id}: {error['code']}") from exc
        if verdict == "failed":
            self.metrics.ended(Outcome(FAILED, error=error), time.monotonic() - started)
            return "done"
        return "lost"

    def _run_claimed(self, request_id: int, request: BatchRequest, started: float) -> str:
        job = JobRequest.from_json(request.body)
        call_id = f"job-{request_id}-{request.attempts}"
        progress = Progress()
        try:
            arguments = generate_arguments(job)
        except InvalidRequest as exc:
            return self._end(request_id, Outcome(FAILED, error={"code": "invalid_request", "message": str(exc)}),
                             started)
        try:  # the worker holding the job's session hot, else the one its opening prefers, else the least loaded
            address, client = self.workers.connect(job.session_id, affinity=job.affinity)
        except Unavailable:
            self.store.release(request_id, self.owner)
            raise
        stop = threading.Event()
        heartbeat = threading.Thread(target=in_current_context(self._heartbeat),
                                     args=(client, request_id, call_id, progress, stop),
                                     name=f"lease-{request_id}", daemon=True)
        heartbeat.start()
        error: WorkerError | None = None
        try:
            outcome = self._generate(client, job, arguments, request_id, call_id, progress)
        except WorkerError as exc:  # refused: a retry will not do better (but see below)
            error, outcome = exc, Outcome(FAILED, error={"code": type(exc).__name__, "message": str(exc)})
        finally:
            stop.set()
            heartbeat.join()
        if isinstance(error, (Unavailable, ResourceExhausted)):  # down or overloaded: back to the queue, retry later
            if isinstance(error, Unavailable):
                self.workers.lost(address)  # the retry goes to another worker, which resumes the session
            self.store.release(request_id, self.owner)
            raise error
        if progress.verdict == "lost":
            return "lost"
        return self._end(request_id, outcome, started)

    def _end(self, request_id: int, outcome: Outcome, started: float) -> str:
        if not self.store.finish(request_id, self.owner, outcome):
            return "lost"
        self.metrics.ended(outcome, time.monotonic() - started)
        return "done"

    def _heartbeat(self, client: WorkerClient, request_id: int, call_id: str, progress: Progress,
                   stop: threading.Event) -> None:
        """Renew the lease a few times per lease period, also during a long prefill that streams nothing."""
        while not stop.wait(self.lease_s / 4) and self._check(client, request_id, call_id, progress):
            pass

    def _check(self, client: WorkerClient, request_id: int, call_id: str, progress: Progress) -> bool:
        """Renew the lease with the progress so far; when the batch is cancelled or the lease lost, abort the
        generation (its partial output comes back in a cancelled final). Returns whether to go on."""
        if progress.verdict != "ok":
            return False
        progress.verdict = self.store.renew(request_id, self.owner, self.lease_s, progress.phase, progress.tokens)
        if progress.verdict == "ok":
            return True
        try:
            client.abort(call_id, timeout=10)
        except WorkerError:
            pass  # the stream ends anyway once the worker is back, or its deadline passes
        return False

    def _generate(self, client: WorkerClient, job: JobRequest, arguments: dict[str, Any], request_id: int,
                  call_id: str, progress: Progress) -> Outcome:
        session_id, built = self._job_session(client, job, call_id)
        if session_id:
            arguments = {**arguments, "tools": None}  # a session has its own tools
        final, checked = None, 0
        for event in client.generate(session_id=session_id, priority="batch", request_id=call_id, **arguments):
            if isinstance(event, Delta):
                progress.phase = "decode"
                progress.tokens += len(event.token_ids)
                if progress.tokens - checked >= self.check_every_tokens:  # a cancel stops at the next decode chunk
                    checked = progress.tokens
                    self._check(client, request_id, call_id, progress)
            elif isinstance(event, Final):  # its content, reasoning and tool calls are the whole reply
                final = event
        usage = {"prompt_tokens": final.usage.prompt_tokens, "prefilled_tokens": final.usage.prefilled_tokens + built,
                 "reused_tokens": final.usage.reused_tokens, "completion_tokens": final.usage.completion_tokens,
                 "reasoning_tokens": final.usage.reasoning_tokens}
        status = CANCELLED if final.finish_reason == "cancelled" else COMPLETED
        if not self.model:
            self.model = client.model_info().model
        response = chat_completion(call_id, self.model, final, {
            "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["reused_tokens"],  # written: what the job's session keeps
                                      "cache_write_tokens": usage["prefilled_tokens"] if session_id else 0},
            "completion_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]}})
        if session_id:
            response["session_id"] = session_id  # the job's own session: a caller may go on from its reply
        return self._store_large(Outcome(status, response=response, usage=usage,
                                         error={"code": "batch_cancelled", "message": "cancelled while running; "
                                                "the partial output is kept"} if status == CANCELLED else None))

    def _job_session(self, client: WorkerClient, job: JobRequest, call_id: str) -> tuple[str | None, int]:
        """(the session the job runs on, tokens prefilled to make it). A job never changes the caller's session: it
        runs on a fork of its last commit (free: the stored state is shared), or, for a Think Max job on a session
        that is not Think Max, on a Think Max copy of its transcript (prefilled). Each attempt makes its own, named
        after the attempt."""
        if job.session_id is None:
            return None, 0
        info = client.get_session(job.session_id)
        if job.mode == "think-max" and not info.think_max:
            copy = client.create_session(session_id=call_id, think_max=True, from_session=job.session_id)
            return copy.session_id, copy.tokens - copy.reused_prefix_tokens
        return client.fork(job.session_id, new_session_id=call_id).session_id, 0

    def _store_large(self, outcome: Outcome) -> Outcome:
        """Outputs over the inline limit go to the result store; the row keeps their address."""
        if self.results is None or outcome.response is None:
            return outcome
        data = json.dumps(outcome.response, ensure_ascii=False).encode()
        if len(data) <= self.inline_output_bytes:
            return outcome
        key = f"results/{outcome.response['id']}.json"
        self.results.put(key, data)
        outcome.response, outcome.output_ref = None, key
        return outcome


def generate_arguments(job: JobRequest) -> dict[str, Any]:
    """The Generate call's arguments for the job, built as the wire will carry them before the worker is asked
    anything: what cannot be built is the request's own fault (InvalidRequest)."""
    try:
        arguments = dict(messages=job.messages, tools=[_tool(t) for t in job.tools] or None, mode=job.mode,
                         sampling=Sampling(**job.sampling), tool_choice=job.tool_choice,
                         response_format=job.response_format)
        worker_requests.generate(session_id=job.session_id, priority="batch", **arguments)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(f"the model worker's call cannot carry it: {str(exc)[:MAX_ERROR_CHARS]}") from None
    return arguments


def _tool(tool: dict[str, Any]) -> Tool:
    function = tool.get("function", tool)
    return Tool(function["name"], function.get("description", ""), function.get("parameters") or {})
