"""A Think Max step as an interactive job on the jobs service: on a fork of the agent's worker session if it is a
Think Max session, on a Think Max copy of its transcript otherwise (a prefill the policy has weighed). The job's
status is streamed while it waits in the queue and runs; its reply comes back as the step's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from agent_runtime.events import JobStatus, StepReply
from agent_runtime.tools import ToolCall
from foundation.clients.jobs import JobRequest, JobsClient
from foundation.clients.worker import Sampling
from foundation.clients.worker.convert import message_from_openai

_ENDED = ("completed", "failed", "expired", "cancelled")


class ThinkMaxJobFailed(RuntimeError):
    """The job behind a Think Max step did not complete (its status and error in the message)."""


def job_step(jobs: JobsClient, worker_session_id: str, inputs: list[dict], sampling: Sampling | None,
             cancelled: Callable[[], bool], poll_s: float) -> Iterator[JobStatus]:
    """Yields the job's status as it changes; returns the step's reply (with the job's session), or None when the
    turn was cancelled (the job is cancelled too)."""
    request = JobRequest("turn", [message_from_openai(m) for m in inputs], mode="think-max",
                         session_id=worker_session_id, sampling=sampling or Sampling())
    batch = jobs.submit([request], interactive=True)
    last = None
    while jobs.get(batch.id).status not in _ENDED:
        if cancelled():
            jobs.cancel(batch.id)
            return None
        progress = jobs.progress(batch.id)
        status = (progress[0].status, progress[0].tokens) if progress else ("queued", 0)
        if status != last:
            yield JobStatus(batch.id, *status)
            last = status
        time.sleep(poll_s)
    [line] = list(jobs.results(batch.id))
    yield JobStatus(batch.id, line.status, line.usage.completion_tokens)
    if line.status != "completed":
        raise ThinkMaxJobFailed(f"the Think Max job {batch.id} ended {line.status}: {line.error_message}")
    response = json.loads(line.response_json)
    message = response["choices"][0]["message"]
    calls = [ToolCall(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
             for c in message.get("tool_calls") or []]
    usage = response["usage"]
    return StepReply(message.get("content") or "", message.get("reasoning_content") or "", calls,
                     {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                      "reused_tokens": usage["prompt_tokens_details"]["cached_tokens"],
                      "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"]},
                     response["choices"][0].get("finish_reason") or "", response.get("session_id"))
