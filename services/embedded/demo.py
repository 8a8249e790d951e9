"""The guided demo: the three things agent builders do with the platform, run against the live services.

1. An agent turn with a tool call, over gRPC (the agent service drives the model worker and runs the tool).
2. The same agent session resumed after the model worker restarts: its compressed KV comes back from the session
   store, so the next turn computes only its new tokens (the usage says so).
3. A small Think Max batch on the Celery queue, followed with a progress bar.

With the model trained here (`models/agent-small`, a directory holding `training.json`), the turns are the work it
was trained for: the calculator called with the question's numbers, a value remembered, and after the restart
recalled. With random weights (`tiny`) the words are noise: the demo forces a call of the clock (a closed-set
argument ends within a few tokens) and shows the machinery; the numbers are real either way."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from foundation.clients.agent import AgentClient, ModeChosen, ToolFinished, ToolStarted, TurnDone, TurnFailed
from foundation.clients.jobs import JobsClient
from foundation.clients.worker import Sampling

ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Script:
    system_prompt: str
    tools: tuple[str, ...]
    first_turns: tuple[str, ...]  # before the worker restarts
    resumed_turn: str
    forced_tool: str = ""  # the first turn's call, forced through the worker's grammar
    max_tokens: int = 64


RANDOM_WEIGHTS = Script("You are a helpful assistant. Use the clock for the time.", ("clock", "calculator"),
                        ("What time is it in Tokyo?",), "Thanks. And in Paris?", forced_tool="clock")
# The trained model's own system prompt and tools (training/data/traces.py; tests/training/test_data.py compares).
TRAINED = Script("You are a careful agent. Use a tool when one fits; answer briefly.",
                 ("calculator", "remember", "recall"),
                 ("What is 128 * 37 + 9?", "Please remember that my locker code is K-4821."),
                 "What is my locker code?", max_tokens=160)


@dataclass
class DemoResult:
    """What the demo measured (the embedded platform's test checks it)."""

    tool_called: str = ""  # the first one
    resumed_reused_tokens: int = 0  # tokens of the next turn that came from the store, not computed
    resumed_prefilled_tokens: int = 0  # tokens that turn computed
    batch_status: str = ""
    batch_completed: int = 0


def run_demo(endpoints: dict[str, str], restart_worker: Callable[[], None], out=sys.stdout,
             script: Script = RANDOM_WEIGHTS) -> DemoResult:
    say = _printer(out)
    result = DemoResult()
    agent = AgentClient(endpoints["agent service (gRPC)"], timeout=300)
    jobs = JobsClient(endpoints["jobs (gRPC)"], timeout=60)
    try:
        session_id = f"demo-{uuid.uuid4().hex[:8]}"
        say(f"\n== 1. An agent turn with a tool call (gRPC, agent session {session_id}) ==")
        agent.create_session(session_id, system_prompt=script.system_prompt, tools=list(script.tools))
        for number, text in enumerate(script.first_turns):
            _turn(agent, session_id, text, say, result, first_tool_choice="" if number else script.forced_tool,
                  max_tokens=script.max_tokens)

        say("\n== 2. The session resumed after the model worker restarts ==")
        session = agent.get_session(session_id)
        say(f"   the session holds {session.steps} steps; restarting the model worker...")
        restart_worker()
        say("   the worker is back (a new process: nothing of the session in its memory)")
        done = _turn(agent, session_id, script.resumed_turn, say, result, max_tokens=script.max_tokens)
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
        match event:
            case ModeChosen(mode=mode, reason=reason):
                say(f"   mode: {mode} ({reason})")
            case ToolStarted(name=name, arguments=arguments):
                result.tool_called = result.tool_called or name
                say(f"   tool call: {name}({json.dumps(arguments)[:80]})")
            case ToolFinished(content=content):
                say(f"   tool result: {content[:80]!r}")
            case TurnDone(content=content, usage=usage):
                done = event
                say(f"   assistant: {content[:80]!r}")
                say(f"   usage: {usage.prompt_tokens} prompt ({usage.reused_tokens} reused, "
                    f"{usage.prefilled_tokens} prefilled), {usage.completion_tokens} completion tokens")
            case TurnFailed(code=code, message=message):
                raise RuntimeError(f"the turn failed: {code} {message}")
    return done


def _follow(jobs: JobsClient, batch_id: str, out, width: int = 30, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = jobs.get(batch_id)
        counts = batch.request_counts
        ended = counts.completed + counts.failed + counts.cancelled + counts.expired
        tokens = sum(r.tokens for r in jobs.progress(batch_id))
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
