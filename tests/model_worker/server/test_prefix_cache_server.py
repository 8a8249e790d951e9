"""Automatic prefix caching on a real worker (gRPC on localhost, the `tiny` engine): a caller without a session that
resends its conversation pays only for what it added, gets the tokens a worker without the cache gives, and never
reuses another tenant's state; long inputs leave checkpoints on the way, so a prompt that parts from a cached one in
the middle reuses what they share."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import generate_latest
from server_testlib import Worker

from model_worker.engine.loading import load_model
from protos.dsv4.worker.v1 import worker_pb2 as pb

KEYS = {"ka": "acme", "kb": "globex"}
DOCUMENT = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))


@pytest.fixture(scope="module")
def model():
    """Reference numerics: a hit computes the rest in other chunks than a full prefill, and only float32 keeps the
    greedy tokens of both the same on every CPU (official numerics round per chunk shape, so near-ties may part:
    seen on an AVX-512 machine at the 6th token of the third call). Logit parity of hits:
    tests/model_worker/sessions/test_prefix_cache.py."""
    return load_model(None, "tiny", numerics="reference")


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
    previous_prompt = 0
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
    # every page once: the checkpoints share the conversation's pages, which count under "pages" and "prefix" alike
    pages = float(metrics.split('dsv4_kv_bytes{tier="pages"} ')[1].split()[0])
    prefix = float(metrics.split('dsv4_kv_bytes{tier="prefix"} ')[1].split()[0])
    assert 0 < pages and 0 < prefix


def test_a_prompt_that_parts_in_the_middle_reuses_the_checkpoints_before_it(workers) -> None:
    cached, _ = workers
    _, first = call(cached, [pb.ChatMessage(role="user", content=DOCUMENT + " Summarize.")])
    edited = DOCUMENT[: len(DOCUMENT) // 2] + " (edited) " + DOCUMENT[len(DOCUMENT) // 2 :]
    _, second = call(cached, [pb.ChatMessage(role="user", content=edited + " Summarize.")])
    assert first.usage.prompt_tokens > 256
    # The longest checkpoint before the edit: a multiple of 64 tokens, within 64 tokens of where they part.
    assert second.usage.reused_tokens > 0 and second.usage.reused_tokens % 64 == 0
    assert second.usage.prefilled_tokens < second.usage.prompt_tokens - second.usage.reused_tokens + 64


def test_requests_that_share_a_document_at_the_same_time_compute_it_once(workers) -> None:
    cached, _ = workers
    finals = []
    threads = [threading.Thread(target=lambda i=i: finals.append(call(cached, [pb.ChatMessage(
        role="user", content=f"{DOCUMENT} Question {i}: what is on line {i}?")], max_tokens=2)[1])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    prompt = max(final.usage.prompt_tokens for final in finals)
    assert len(finals) == 4 and sorted(final.usage.reused_tokens for final in finals)[0] == 0
    assert sum(final.usage.prefilled_tokens for final in finals) < prompt + 3 * 80  # the document once


def test_a_new_session_starts_from_what_stateless_requests_computed_of_its_head(workers) -> None:
    cached, plain = workers
    call(cached, [pb.ChatMessage(role="system", content=DOCUMENT), pb.ChatMessage(role="user", content="Hi.")])
    replies = {}
    for name, worker in (("cached", cached), ("plain", plain)):
        metadata = [("authorization", "Bearer ka")]
        session = worker.stub.CreateSession(pb.CreateSessionRequest(system_prompt=DOCUMENT), metadata=metadata)
        responses = list(worker.stub.Generate(pb.GenerateRequest(
            session_id=session.session_id, messages=pb.Messages(messages=[pb.ChatMessage(role="user", content="Go.")]),
            sampling=pb.SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)), metadata=metadata,
            timeout=120))
        replies[name] = (session.reused_prefix_tokens, [t for r in responses if r.WhichOneof("event") == "delta"
                                                         for t in r.delta.token_ids])
    assert replies["cached"][0] >= 448 and replies["plain"][0] == 0  # the head is ~500 tokens, checkpoints every 64
    assert replies["cached"][1] == replies["plain"][1]


def test_a_restarted_worker_finds_the_checkpoints_in_the_store(model, tmp_path) -> None:
    conversation = [pb.ChatMessage(role="user", content=DOCUMENT + " Summarize.")]
    first = Worker(model, tmp_path / "store", api_keys=KEYS, prefix_checkpoint_every=64)
    try:
        _, before = call(first, conversation)
    finally:
        first.stop()  # its commit writer writes what it holds first
    again = Worker(model, tmp_path / "store", api_keys=KEYS, prefix_checkpoint_every=64)
    try:
        _, after = call(again, conversation + [pb.ChatMessage(role="assistant", content=before.content),
                                               pb.ChatMessage(role="user", content="Shorter.")])
    finally:
        again.stop()
    assert after.usage.reused_tokens >= before.usage.prompt_tokens
    metrics = generate_latest(again.runtime.metrics.registry).decode()
    assert 'dsv4_prefix_cache_events_total{event="stored_hit"} 1.0' in metrics


def test_a_new_sessions_first_turn_starts_from_what_its_tenant_computed(model, tmp_path) -> None:
    """A session's first turn (a Responses call without previous_response_id) finds the stateless call before it;
    its commit stores the whole state, so the session goes on after a restart as if it had computed it all."""
    message = pb.ChatMessage(role="user", content=DOCUMENT + " Summarize.")
    metadata = [("authorization", "Bearer ka")]
    replies = {}
    for name, cache_bytes in (("cached", 1 << 30), ("plain", 0)):
        root = tmp_path / name
        worker = Worker(model, root, api_keys=KEYS, prefix_checkpoint_every=64, prefix_cache_bytes=cache_bytes)
        try:
            call(worker, [message])
            session = worker.stub.CreateSession(pb.CreateSessionRequest(), metadata=metadata).session_id
            first = run_on(worker, session, message)
        finally:
            worker.stop()
        again = Worker(model, root, api_keys=KEYS, prefix_cache_bytes=0)  # nothing cached: the store's session only
        try:
            second = run_on(again, session, pb.ChatMessage(role="user", content="Shorter."))
        finally:
            again.stop()
        replies[name] = (first, second)
    (first, second), (plain_first, plain_second) = replies["cached"], replies["plain"]
    assert first[1].usage.prefilled_tokens <= 64 < first[1].usage.reused_tokens  # the document came from the cache
    assert plain_first[1].usage.reused_tokens <= 1
    assert first[0] == plain_first[0] and second[0] == plain_second[0]
    assert second[1].usage.prefilled_tokens == plain_second[1].usage.prefilled_tokens


def run_on(worker: Worker, session_id: str, message: pb.ChatMessage) -> tuple[list[int], pb.Final]:
    responses = list(worker.stub.Generate(pb.GenerateRequest(
        session_id=session_id, messages=pb.Messages(messages=[message]),
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)),
        metadata=[("authorization", "Bearer ka")], timeout=120))
    return [t for r in responses if r.WhichOneof("event") == "delta" for t in r.delta.token_ids], responses[-1].final


def test_a_hit_gives_the_tokens_of_the_session_path_in_official_numerics(tmp_path) -> None:
    """A stateless caller resending its raw token history and a session fed the same turns compute the same thing
    (the checkpoint at the end of each reply is where the session's commit is), so in official numerics too the
    tokens are the same, call after call."""
    worker = Worker(load_model(None, "tiny", numerics="official"), tmp_path / "store", api_keys=KEYS)
    acme = [("authorization", "Bearer ka")]
    sampling = pb.SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)

    def generate(request: pb.GenerateRequest) -> tuple[list[int], pb.Final]:
        responses = list(worker.stub.Generate(request, timeout=120, metadata=acme))
        tokens = [t for r in responses if r.WhichOneof("event") == "delta" for t in r.delta.token_ids]
        return tokens, responses[-1].final

    try:
        session = worker.stub.CreateSession(pb.CreateSessionRequest(), metadata=acme)
        assert session.tokens == 1  # the BOS
        history = [0]
        for turn, new in enumerate([list(range(1000, 1600)), list(range(3000, 3020)), list(range(5000, 5030))]):
            in_session, _ = generate(pb.GenerateRequest(session_id=session.session_id, token_ids=pb.TokenIds(ids=new),
                                                        sampling=sampling))
            stateless, final = generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=history + new),
                                                           sampling=sampling))
            assert stateless == in_session
            if turn:  # everything but the last reply's last token (never fed) came from the cache
                assert final.usage.reused_tokens == len(history) - 1
            history += new + stateless
    finally:
        worker.stop()
