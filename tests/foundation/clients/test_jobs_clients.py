"""The jobs service's typed clients, blocking and asyncio, against the real service (served in this process, on
PostgreSQL; no Celery worker consumes its queue, so batches wait until cancelled): dataclasses in and out, the same
answers from both."""

import asyncio
import json

import pytest
from realparts import database_url  # noqa: F401 - fixtures

from foundation.clients.jobs import AsyncJobsClient, Batch, JobRequest, JobsClient, RequestProgress, ResultLine
from foundation.clients.worker import InvalidArgument, Message, Sampling, Tool

KEYS = {"key-acme": "acme"}
REQUEST = JobRequest("q-1", [Message("system", "Be brief."), Message("user", "Weather in Paris?")],
                     tools=[Tool("weather", "The weather in a city.", {
                         "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})],
                     mode="think-high", sampling=Sampling(temperature=0.0, max_tokens=16), tool_choice="weather")


@pytest.fixture(scope="module")
def jobs_target(database_url):  # noqa: F811 - fixture
    from foundation.sql import make_engine, sessions
    from services.jobs import celery_app
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = JobsSettings(database_url=database_url, broker_url="memory://")
    celery_app.configure(settings)
    engine = make_engine(database_url)
    server, port = build_server(Jobs(JobStore(sessions(engine)), celery_app.CeleryPublisher()), "127.0.0.1", 0, KEYS)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=1).wait()
    engine.dispose()


def test_the_blocking_client_takes_and_returns_dataclasses(jobs_target):
    with JobsClient(jobs_target, api_key="key-acme") as jobs:
        batch = jobs.submit([REQUEST, JobRequest("q-2", [Message("user", "hi")], response_format={
            "type": "object", "properties": {"answer": {"type": "string"}}})], metadata={"owner": "tests"})
        assert isinstance(batch, Batch) and batch.request_counts.total == 2 and batch.metadata == {"owner": "tests"}
        assert batch.created_at > 0 and batch.completed_at == 0
        assert jobs.get(batch.id) == batch
        assert [(p.custom_id, p.phase) for p in jobs.progress(batch.id)] == [("q-1", "queued"), ("q-2", "queued")]
        assert all(isinstance(p, RequestProgress) for p in jobs.progress(batch.id))
        assert batch.id in [b.id for b in jobs.list(100).batches]
        cancelled = jobs.cancel(batch.id)
        assert cancelled.status == "cancelled" and cancelled.request_counts.cancelled == 2
        lines = list(jobs.results(batch.id))
        assert all(isinstance(line, ResultLine) and line.status == "cancelled" for line in lines)
        with pytest.raises(InvalidArgument):  # a bad line comes back in the batch's errors; a bad ID is refused
            jobs.get("../etc")


def test_the_asyncio_client_gives_the_same_answers(jobs_target):
    async def run() -> tuple[Batch, Batch, list, list]:
        async with AsyncJobsClient(jobs_target, api_key="key-acme") as jobs:
            batch = await jobs.submit_jsonl(json.dumps({
                "custom_id": "line-1", "method": "POST", "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}) + "\n{broken")
            progress = await jobs.progress(batch.id)
            cancelled = await jobs.cancel(batch.id)
            lines = [line async for line in jobs.results(batch.id)]
            return batch, cancelled, progress, lines

    batch, cancelled, progress, lines = asyncio.run(run())
    assert batch.request_counts.total == 1 and [(e.line, "JSON" in e.message) for e in batch.errors] == [(2, True)]
    assert [p.custom_id for p in progress] == ["line-1"] and cancelled.status == "cancelled"
    assert [(line.custom_id, line.status) for line in lines] == [("line-1", "cancelled")]
    with JobsClient(jobs_target, api_key="key-acme") as jobs:
        assert jobs.get(batch.id) == cancelled
