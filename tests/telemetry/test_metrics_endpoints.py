"""Every service's Prometheus endpoint answers, and its counters move when the service works: the model worker and
the gateway (its own /metrics route) on a chat completion, the jobs gRPC service and the Celery worker (the endpoint
the worker starts itself from `metrics_port`) on a batch, the agent service on a turn with a tool call."""

from __future__ import annotations

import json

from readings import http, total
from realparts import wait_for

from foundation.clients.agent import AgentClient
from foundation.clients.jobs import JobsClient
from foundation.clients.worker import Sampling


def moved(url: str, name: str, before: float, by: float = 1, **labels: str) -> float:
    """Wait until the sample has moved `by` from `before` (a service counts just after it answers)."""
    return wait_for(lambda: total(url, name, **labels) == before + by or None, 10,
                    f"{name}{labels} on {url} did not move from {before} by {by} (now {total(url, name, **labels)})")


def test_the_worker_and_the_gateway_count_a_chat_completion(platform):
    worker, gateway = platform.metrics["worker"], f"{platform.gateway}/metrics"
    requests = total(worker, "dsv4_requests_total")
    chats = total(gateway, "gateway_requests_total", route="chat", status="200")
    tokens = total(gateway, "gateway_tokens_total", kind="completion")
    reply = http(f"{platform.gateway}/v1/chat/completions", {
        "model": platform.model, "messages": [{"role": "user", "content": "count me"}], "max_tokens": 2,
        "temperature": 0, "reasoning_effort": "none"})
    moved(worker, "dsv4_requests_total", requests)
    moved(gateway, "gateway_requests_total", chats, route="chat", status="200")
    moved(gateway, "gateway_tokens_total", tokens, by=reply["usage"]["completion_tokens"], kind="completion")


def test_the_jobs_service_and_the_celery_worker_count_a_batch(platform):
    service, celery = platform.metrics["jobs"], platform.metrics["celery"]
    batches = total(service, "dsv4_jobs_batches_submitted_total", interactive="false")
    valid = total(service, "dsv4_jobs_requests_submitted_total", valid="true")
    invalid = total(service, "dsv4_jobs_requests_submitted_total", valid="false")
    completed = total(celery, "dsv4_jobs_requests_total", status="completed")
    runs = total(celery, "dsv4_jobs_request_run_seconds_count")
    tokens = total(celery, "dsv4_jobs_tokens_total", kind="completion")
    line = {"custom_id": "counted", "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                            "reasoning_effort": "none", "temperature": 0}}
    with JobsClient(platform.jobs) as jobs:
        batch = jobs.submit_jsonl(json.dumps(line) + "\n{not json")
        wait_for(lambda: jobs.get(batch.id).status == "completed", 30, "the batch did not complete")
        [result] = list(jobs.results(batch.id))
    moved(service, "dsv4_jobs_batches_submitted_total", batches, interactive="false")
    moved(service, "dsv4_jobs_requests_submitted_total", valid, valid="true")
    moved(service, "dsv4_jobs_requests_submitted_total", invalid, valid="false")
    moved(celery, "dsv4_jobs_requests_total", completed, status="completed")
    moved(celery, "dsv4_jobs_request_run_seconds_count", runs)
    moved(celery, "dsv4_jobs_tokens_total", tokens, by=result.usage.completion_tokens, kind="completion")


def test_the_agent_service_counts_a_turn_its_step_tool_call_and_tokens(platform):
    url = platform.metrics["agent"]
    started = total(url, "dsv4_agent_turns_started_total")
    ended = total(url, "dsv4_agent_turns_ended_total", reason="step_limit")
    timed = total(url, "dsv4_agent_turn_seconds_count")
    steps = total(url, "dsv4_agent_steps_total", mode="non-think")
    calls = total(url, "dsv4_agent_tool_calls_total", tool="clock", outcome="ok")
    tokens = total(url, "dsv4_agent_tokens_total", kind="completion")
    with AgentClient(platform.agent, timeout=120) as agent:
        agent.create_session("counted", tools=["clock"])
        events = list(agent.run_turn("counted", "what time is it?", mode="non-think", first_tool_choice="clock",
                                     max_steps=1, sampling=Sampling(temperature=0.0, max_tokens=48)))
    done = events[-1]
    assert done.reason == "step_limit"  # its one step called the tool
    moved(url, "dsv4_agent_turns_started_total", started)
    moved(url, "dsv4_agent_turns_ended_total", ended, reason="step_limit")
    moved(url, "dsv4_agent_turn_seconds_count", timed)
    moved(url, "dsv4_agent_steps_total", steps, mode="non-think")
    moved(url, "dsv4_agent_tool_calls_total", calls, tool="clock", outcome="ok")
    moved(url, "dsv4_agent_tokens_total", tokens, by=done.usage.completion_tokens, kind="completion")
