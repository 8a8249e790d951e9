"""Automatic prefix caching on a real worker (gRPC on localhost, the `tiny` engine): a caller without a session that
resends its conversation pays only for what it added, gets the tokens a worker without the cache gives, and never
reuses another tenant's state; long inputs leave checkpoints on the way, so a prompt that parts from a cached one in
the middle reuses what they share."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from server_testlib import Worker

from protos.dsv4.worker.v1 import worker_pb2 as pb

KEYS = {"ka": "acme", "kb": "globex"}
DOCUMENT = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))


@pytest.fixture
def workers(model, tmp_path):
    cached = Worker(model, tmp_path / "cached", api_keys=KEYS, prefix_checkpoint_every=64)
    plain = Worker(model, tmp_path / "plain", api_keys=KEYS, prefix_cache_bytes=0)
    yield cached, plain
    cached.stop()
    plain.stop()


def call(worker: Worker, messages: list[pb.ChatMessage], key: str = "ka", max_tokens: int = 6) -> tuple[list, pb.Final]:
    request = pb.GenerateRequest(messages=pb.Messages(messages=messages),
                                 sampling=pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
    responses = list(worker.stub.Generate(request, timeout=120, metadata=[("authorization", f"Bearer {key}")]))
    tokens = [t for r in responses if r.WhichOneof("event") == "delta" for t in r.delta.token_ids]
    return tokens, responses[-1].final


def test_a_resent_conversation_prefills_only_what_it_added(workers) -> None:
    cached, plain = workers
    conversation = [pb.ChatMessage(role="user", content=DOCUMENT + " What is line 3?")]
    for turn in range(3):
        tokens, final = call(cached, conversation)
        plain_tokens, plain_final = call(plain, conversation)
        assert tokens == plain_tokens and final.content == plain_final.content
        assert final.usage.prompt_tokens == plain_final.usage.prompt_tokens
        assert final.usage.reused_tokens + final.usage.prefilled_tokens == final.usage.prompt_tokens
        if turn == 0:
            assert final.usage.reused_tokens == 0
        else:  # at least the last call's input came from the cache
            assert final.usage.reused_tokens >= previous_prompt
            assert final.usage.prefilled_tokens <= final.usage.prompt_tokens - previous_prompt
        previous_prompt = final.usage.prompt_tokens
        conversation += [pb.ChatMessage(role="assistant", content=final.content),
                         pb.ChatMessage(role="user", content=f"And line {turn + 4}?")]
    _, other = call(cached, conversation[:1], key="kb")
    assert other.usage.reused_tokens == 0  # acme's checkpoints are not globex's
    metrics = generate_latest(cached.runtime.metrics.registry).decode()
    assert 'dsv4_prefix_cache_events_total{event="hit"} 2.0' in metrics
    assert 'dsv4_prefix_cache_events_total{event="miss"} 2.0' in metrics


def test_a_prompt_that_parts_in_the_middle_reuses_the_checkpoints_before_it(workers) -> None:
    cached, _ = workers
    _, first = call(cached, [pb.ChatMessage(role="user", content=DOCUMENT + " Summarize.")])
    edited = DOCUMENT[: len(DOCUMENT) // 2] + " (edited) " + DOCUMENT[len(DOCUMENT) // 2 :]
    _, second = call(cached, [pb.ChatMessage(role="user", content=edited + " Summarize.")])
    assert first.usage.prompt_tokens > 256
    # The longest checkpoint before the edit: a multiple of 64 tokens, within 64 tokens of where they part.
    assert second.usage.reused_tokens > 0 and second.usage.reused_tokens % 64 == 0
    assert second.usage.prefilled_tokens < second.usage.prompt_tokens - second.usage.reused_tokens + 64
