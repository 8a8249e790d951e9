"""The asyncio client's core paths against the same real server and fake (conftest.py); each test runs its own event
loop with asyncio.run, so no pytest plugin is needed."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from foundation.clients.worker import AsyncWorkerClient, Delta, Final, Message, Sampling, ToolCall, errors
from protos.dsv4.worker.v1 import worker_pb2 as pb


def run(target: str, body, **kwargs):
    """Run `body(client)` in a fresh loop, with a client made inside it (a grpc.aio channel belongs to one loop)."""
    kwargs.setdefault("backoff", 0.001)

    async def main():
        async with AsyncWorkerClient(target, **kwargs) as client:
            return await body(client)

    return asyncio.run(main())


async def collect(stream) -> list:
    return [event async for event in stream]


def test_stream_order_sampling_and_metadata(worker):
    fake, target = worker

    async def body(c):
        events = await collect(c.generate(messages=[Message("user", "hi")], sampling=Sampling(temperature=0.0)))
        return events, await c.generate_text(token_ids=[1])

    events, (final, text) = run(target, body, api_key="k")
    assert [type(e) for e in events] == [Delta, Delta, Delta, ToolCall, Final]
    assert events[3] == ToolCall("call_1", "search", {"query": "kv cache", "top_k": 3})
    assert text == "Hello, world" and final.finish_reason == "tool_calls" and final.usage.completion_tokens == 4
    sent = fake.requests("Generate")[0].sampling
    assert sent.HasField("temperature") and sent.temperature == 0.0 and not sent.HasField("top_p")
    assert all(md["authorization"] == "Bearer k" for md in fake.metadata("Generate"))


@pytest.mark.parametrize(
    "code, cls",
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    ],
)
def test_errors(worker, code, cls):
    fake, target = worker
    fake.fail("GetSession", code, details="nope")

    async def body(c):
        with pytest.raises(cls) as caught:
            await c.get_session("s")
        return caught.value

    error = run(target, body)
    assert error.code is code and error.details == "nope" and len(fake.requests("GetSession")) == 1


def test_resource_exhausted_in_a_stream(worker):
    fake, target = worker
    fake.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, trailing=[("retry-after", "3")])

    async def body(c):
        with pytest.raises(errors.ResourceExhausted) as caught:
            await c.generate_text(token_ids=[1])
        return caught.value

    assert run(target, body).retry_after == 3.0


def test_retries(worker):
    fake, target = worker
    fake.fail("GetLoad", grpc.StatusCode.UNAVAILABLE, times=2)
    fake.fail("Generate", grpc.StatusCode.UNAVAILABLE, times=2)

    async def body(c):
        return await c.load(), await c.generate_text(token_ids=[1])

    load, (final, text) = run(target, body, retries=3)
    assert load.running_requests == 5 and text == "Hello, world"
    assert len(fake.requests("GetLoad")) == 3 and len(fake.requests("Generate")) == 3


def test_no_retry_once_an_event_arrived(worker):
    fake, target = worker
    fake.abort_after = (1, grpc.StatusCode.UNAVAILABLE)
    received = []

    async def body(c):
        with pytest.raises(errors.Unavailable):
            async for event in c.generate(token_ids=[1]):
                received.append(event)

    run(target, body, retries=3)
    assert len(received) == 1 and len(fake.requests("Generate")) == 1


def test_deadline(worker):
    fake, target = worker
    fake.hang = {"GetSession", "Generate"}

    async def body(c):
        with pytest.raises(errors.DeadlineExceeded):
            await c.get_session("s")
        with pytest.raises(errors.DeadlineExceeded):
            await c.generate_text(token_ids=[1], timeout=0.1)

    run(target, body, timeout=0.2)


def test_closing_the_stream_cancels_the_generation(worker):
    fake, target = worker
    fake.endless = True

    async def body(c):
        stream = c.generate(token_ids=[1])
        first = await anext(stream)
        await stream.aclose()
        return first

    assert run(target, body).text == "x"
    assert fake.cancelled.wait(5)


def test_sessions_paging_and_export(worker, tmp_path):
    fake, target = worker
    path = tmp_path / "a.dsv4"

    async def body(c):
        created = await c.create_session(system_prompt="sys", session_id="a")
        appended = await c.append("a", [Message("user", "hi")], mode="think-high")
        forked = await c.fork("a", commit=1)
        ids = await c.list_sessions(page_size=2)
        size = await c.export_session("a", path)
        tokens = await c.tokenize("hello"), await c.detokenize([1, 2])
        return created, appended, forked, ids, size, tokens

    created, appended, forked, ids, size, tokens = run(target, body)
    assert created.session_id == "a" and appended.tokens == 10 and forked.parent == "a" and forked.commit == 1
    assert ids == ["s0", "s1", "s2", "s3", "s4"] and len(fake.requests("ListSessions")) == 3
    assert size == 18 and path.read_bytes() == b"DSV4-session-bytes"
    assert tokens == ([1, 2, 3], "1 2")
    assert fake.requests("AppendSession")[0].mode == pb.THINK_HIGH
