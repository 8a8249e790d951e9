"""The guided demo: the three things agent builders do with the platform, run against the live services.

1. An agent turn with a tool call, over gRPC (the agent service drives the model worker and runs the tool).
2. The same agent session resumed after the model worker restarts: its compressed KV comes back from the session
   store, so the next turn computes only its new tokens (the usage says so).
3. A small Think Max batch on the Celery queue, followed with a progress bar.

The `tiny` model has random weights: its words are noise. What the demo shows is the machinery, and the numbers are
real."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from foundation.clients.agent import AgentClient
from foundation.clients.jobs import JobsClient
from foundation.clients.worker import Sampling

ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class DemoResult:
    """What the demo measured (the embedded platform's test checks it)."""

    tool_called: str = ""
    history_tokens: int = 0  # the session's tokens before the worker restarted
    resumed_reused_tokens: int = 0  # tokens of the next turn that came from the store, not computed
    resumed_prefilled_tokens: int = 0  # tokens that turn computed
    batch_status: str = ""
    batch_completed: int = 0


def run_demo(endpoints: dict[str, str], restart_worker: Callable[[], None], out=sys.stdout) -> DemoResult:
    say = _printer(out)
    result = DemoResult()
    agent = AgentClient(endpoints["agent service (gRPC)"], timeout=300)
    jobs = JobsClient(endpoints["jobs (gRPC)"], timeout=60)
    try:
        session_id = f"demo-{uuid.uuid4().hex[:8]}"
        say(f"\n== 1. An agent turn with a tool call (gRPC, agent session {session_id}) ==")
        agent.create_session(session_id, system_prompt="You are a helpful assistant. Use the clock for the time.",
                             tools=["clock", "calculator"])
        # The call is forced (random weights would rarely choose one) and written under the worker's grammar.
        done = _turn(agent, session_id, "What time is it in Tokyo?", say, result, first_tool_choice="clock",
                     max_tokens=64)
        result.history_tokens = done.usage.prompt_tokens + done.usage.completion_tokens

        say("\n== 2. The session resumed after the model worker restarts ==")
        session = agent.get_session(session_id)
        say(f"   the session holds {session.steps} steps; restarting the model worker...")
        restart_worker()
        say("   the worker is back (a new process: nothing of the session in its memory)")
        done = _turn(agent, session_id, "Thanks. And in Paris?", say, result)
        usage = done.usage
        result.resumed_reused_tokens, result.resumed_prefilled_tokens = usage.reused_tokens, usage.prefilled_tokens
        say(f"   resumed from the session store: {usage.reused_tokens} tokens of history reused, "
            f"{usage.prefilled_tokens} new tokens prefilled (no re-prefill of the history)")

        say("\n== 3. A Think Max batch on the Celery queue ==")
        lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "tiny", "messages": [{"role": "user", "content": question}],
                           "reasoning_effort": "max", "max_tokens": 48, "temperature": 0.0}}
                 for i, question in enumerate(("Prove that there are infinitely many primes.",
                                               "How many r's are in 'strawberry'?",
                                               "Plan a three-step experiment on sleep and memory."))]
        batch = jobs.submit_jsonl("\n".join(json.dumps(line) for line in lines))
        say(f"   batch {batch.id}: {batch.request_counts.total} requests in Think Max")
        batch = _follow(jobs, batch.id, out)
        result.batch_status, result.batch_completed = batch.status, batch.request_counts.completed
        for line in jobs.results(batch.id):
            message = json.loads(line.response_json)["choices"][0]["message"] if line.response_json else {}
            text = message.get("content") or message.get("reasoning_content") or ""
            say(f"   {line.custom_id}: {line.status}, {line.usage.completion_tokens} tokens "
                f"({line.usage.reasoning_tokens} reasoning): {text[:60]!r}")
    finally:
        agent.close()
        jobs.close()
    return result


def _turn(agent: AgentClient, session_id: str, text: str, say, result: DemoResult, first_tool_choice: str = "",
          max_tokens: int = 32):
    say(f"   user: {text}")
    done = None
    for event in agent.run_turn(session_id, text, mode="non-think", first_tool_choice=first_tool_choice,
                                max_steps=2, sampling=Sampling(temperature=0.0, max_tokens=max_tokens)):
        kind = event.WhichOneof("event")
        if kind == "mode_chosen":
            say(f"   mode: {event.mode_chosen.mode} ({event.mode_chosen.reason})")
        elif kind == "tool_started":
            result.tool_called = event.tool_started.name
            say(f"   tool call: {event.tool_started.name}({event.tool_started.arguments_json[:80]})")
        elif kind == "tool_finished":
            say(f"   tool result: {event.tool_finished.content[:80]!r}")
        elif kind == "turn_done":
            done = event.turn_done
            say(f"   assistant: {done.content[:80]!r}")
            say(f"   usage: {done.usage.prompt_tokens} prompt ({done.usage.reused_tokens} reused, "
                f"{done.usage.prefilled_tokens} prefilled), {done.usage.completion_tokens} completion tokens")
        elif kind == "turn_failed":
            raise RuntimeError(f"the turn failed: {event.turn_failed.code} {event.turn_failed.message}")
    return done


def _follow(jobs: JobsClient, batch_id: str, out, width: int = 30, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = jobs.get(batch_id)
        counts = batch.request_counts
        ended = counts.completed + counts.failed + counts.cancelled + counts.expired
        tokens = sum(r.tokens for r in jobs.progress(batch_id).requests)
        filled = width * ended // max(counts.total, 1)
        out.write(f"\r   [{'#' * filled}{'.' * (width - filled)}] {ended}/{counts.total} done, {tokens} tokens, "
                  f"{batch.status}   ")
        out.flush()
        if batch.status in ENDED or time.monotonic() > deadline:
            out.write("\n")
            return batch
        time.sleep(0.5)


def _printer(out):
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    return say
