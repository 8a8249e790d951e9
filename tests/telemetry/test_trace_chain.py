"""One trace from a caller through each service down to the model worker's Generate span, checked by span ids on the
platform running in this process (conftest.py): the gateway's HTTP span continues the caller's `traceparent` and is
the parent of its worker and jobs calls; a batch submitted over the jobs gRPC API reaches the Celery task through the
message headers, and the worker from there; an agent turn runs on its own thread inside the RunTurn span, and a
Think Max turn's job joins the same trace."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from readings import assert_child, finished, http
from realparts import wait_for

from foundation.clients.agent import AgentClient
from foundation.clients.agent.events import kind_of
from foundation.clients.jobs import JobRequest, JobsClient
from foundation.clients.worker import Message, Sampling

TRACER = trace.get_tracer("tests.telemetry")
SAMPLING = Sampling(temperature=0.0, max_tokens=3)
CREATE_BATCH, RUN_TURN = "/dsv4.jobs.v1.Jobs/CreateBatch", "/dsv4.agent.v1.AgentService/RunTurn"


def test_the_gateways_request_span_parents_its_worker_and_jobs_calls(platform, spans):
    generate = f"chat {platform.model}"
    with TRACER.start_as_current_span("http client") as caller:
        reply = http(f"{platform.gateway}/v1/chat/completions", {
            "model": platform.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "temperature": 0, "reasoning_effort": "none"})
    assert reply["object"] == "chat.completion"
    found = finished(spans, ["http client", "POST /v1/chat/completions", generate], caller.get_span_context().trace_id)
    [client], [request], [worker] = found["http client"], found["POST /v1/chat/completions"], found[generate]
    assert request.kind == SpanKind.SERVER and worker.kind == SpanKind.SERVER
    assert_child(request, client)
    assert_child(worker, request)
    assert worker.attributes["gen_ai.request.max_tokens"] == 2  # the worker's own GenAI attributes are kept

    # A route the thread pool runs (the jobs client is blocking): its jobs call is the request span's child too.
    with TRACER.start_as_current_span("http client, batches") as caller:
        assert http(f"{platform.gateway}/v1/batches")["object"] == "list"
    found = finished(spans, ["GET /v1/batches", "/dsv4.jobs.v1.Jobs/ListBatches"], caller.get_span_context().trace_id)
    assert_child(found["/dsv4.jobs.v1.Jobs/ListBatches"][0], found["GET /v1/batches"][0])


def test_a_think_max_batch_runs_in_its_submitters_trace_through_celery(platform, spans):
    generate = f"chat {platform.model}"
    request = JobRequest("traced", [Message("user", "hi")], mode="think-max", sampling=SAMPLING)
    with JobsClient(platform.jobs) as jobs:
        with TRACER.start_as_current_span("submitter") as caller:
            batch = jobs.submit([request])
        wait_for(lambda: jobs.get(batch.id).status == "completed", 30, "the batch did not complete")
    found = finished(spans, ["submitter", CREATE_BATCH, "jobs.run_request", generate],
                     caller.get_span_context().trace_id)
    [submitter], [create], [task], [worker] = (found[name] for name in ("submitter", CREATE_BATCH,
                                                                        "jobs.run_request", generate))
    assert create.kind == SpanKind.SERVER
    assert_child(create, submitter)
    assert_child(task, create)  # crossed the broker in the task's headers
    assert_child(worker, task)
    assert worker.attributes["gen_ai.request.model"] == platform.model


def test_an_agent_turn_and_its_think_max_job_share_the_callers_trace(platform, spans):
    generate = f"chat {platform.model}"
    with AgentClient(platform.agent, timeout=120) as agent:
        agent.create_session("traced", system_prompt="be brief", tools=[])
        with TRACER.start_as_current_span("agent caller") as caller:
            events = list(agent.run_turn("traced", "hi", mode="non-think", max_steps=1, sampling=SAMPLING))
        assert kind_of(events[-1]) == "turn_done"
        found = finished(spans, ["agent caller", RUN_TURN, "agent.turn", generate], caller.get_span_context().trace_id)
        [client], [run_turn], [turn], [worker] = (found[name] for name in ("agent caller", RUN_TURN, "agent.turn",
                                                                           generate))
        assert_child(run_turn, client)
        assert_child(turn, run_turn)  # the turn's thread runs in the RunTurn call's context
        assert_child(worker, turn)

        with TRACER.start_as_current_span("agent caller, think max") as caller:
            events = list(agent.run_turn("traced", "prove it", mode="think-max", max_steps=1, sampling=SAMPLING))
        assert events[0].via_job and kind_of(events[-1]) == "turn_done"
        found = finished(spans, [RUN_TURN, "agent.turn", CREATE_BATCH, "jobs.run_request", generate],
                         caller.get_span_context().trace_id)
        [run_turn], [turn], [create], [task], [worker] = (found[name] for name in (
            RUN_TURN, "agent.turn", CREATE_BATCH, "jobs.run_request", generate))
        assert_child(turn, run_turn)
        assert_child(create, turn)  # the turn submitted the job
        assert_child(task, create)
        assert_child(worker, task)
