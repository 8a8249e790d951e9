"""A real model worker (gRPC on localhost, the `tiny` engine, sessions on disk) driven through the generated stub:
streaming, sessions across calls and across a worker restart without re-prefill, status codes, cancellation."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2
from server_testlib import Worker, greedy, run, user

from model_worker.server.serve import SERVICE_NAME
from protos.dsv4.worker.v1 import worker_pb2 as pb


def test_stateless_generation_streams_deltas_then_a_final(worker) -> None:
    assert worker.health_stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status == \
        health_pb2.HealthCheckResponse.SERVING
    deltas, final = run(worker.stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2, 3, 4]),
                                                        sampling=greedy(5, ignore_eos=True)))
    assert final.finish_reason == pb.LENGTH and final.usage.completion_tokens == 5
    assert final.usage.prompt_tokens == 4 and final.usage.prefilled_tokens == 4
    assert sum(len(d.delta.token_ids) for d in deltas) == 5


def test_a_session_resumes_across_calls_and_a_worker_restart_paying_only_new_tokens(model, tmp_path) -> None:
    first = Worker(model, tmp_path / "store")
    try:
        session = first.stub.CreateSession(pb.CreateSessionRequest(system_prompt="You are terse."))
        head = session.tokens
        assert head > 0 and session.commit >= 0
        _, final = run(first.stub, pb.GenerateRequest(session_id=session.session_id, messages=user("Hi"),
                                                      sampling=greedy(4)))
        assert final.usage.reused_tokens == head and final.usage.prefilled_tokens == final.usage.prompt_tokens
        after_turn_one = final.usage.session_tokens
    finally:
        first.stop()
    second = Worker(model, tmp_path / "store")  # a new process's worth of state: nothing hot
    try:
        _, final = run(second.stub, pb.GenerateRequest(session_id=session.session_id, messages=user("Again"),
                                                       sampling=greedy(3)))
        # the history came from the store: only the new turn (and the tokens owed from the last reply) were computed
        assert final.usage.reused_tokens == after_turn_one and not final.usage.session_rebuilt
        assert final.usage.prefilled_tokens <= final.usage.prompt_tokens + 2
        info = second.stub.GetSession(pb.GetSessionRequest(session_id=session.session_id))
        assert info.tokens == final.usage.session_tokens
    finally:
        second.stop()


def test_status_codes(model, tmp_path, worker) -> None:
    def code_of(call) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        return raised.value.code()

    stub = worker.stub
    assert code_of(lambda: run(stub, pb.GenerateRequest(session_id="nope", messages=user("x")))) == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: run(stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[10**7])))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: run(stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1]),
                                                        sampling=pb.SamplingParams(temperature=-1)))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: run(stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1]),
                                                        tool_choice=pb.ToolChoice(required=True)))) == \
        grpc.StatusCode.INVALID_ARGUMENT  # required, but no tools
    unenforceable = pb.ResponseFormat(json_schema='{"type": "string", "format": "no-such-format"}')
    assert code_of(lambda: run(stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1]),
                                                        response_format=unenforceable))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: run(stub, pb.GenerateRequest(messages=pb.Messages()))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    stub.CreateSession(pb.CreateSessionRequest(session_id="taken"))
    assert code_of(lambda: stub.CreateSession(pb.CreateSessionRequest(session_id="taken"))) == \
        grpc.StatusCode.ALREADY_EXISTS
    keyed = Worker(worker.runtime.model, tmp_path / "keyed", api_keys={"k1": "acme"})
    try:
        assert code_of(lambda: keyed.stub.GetModelInfo(pb.GetModelInfoRequest())) == \
            grpc.StatusCode.UNAUTHENTICATED
        info = keyed.stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=[("authorization", "Bearer k1")])
        assert info.vocab_size == worker.runtime.model.config.vocab_size
    finally:
        keyed.stop()
    # the server still serves after all of that
    assert run(stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[5]), sampling=greedy(1)))[1].usage


def test_one_request_per_session_and_cancellation_keeps_the_last_commit(worker) -> None:
    stub = worker.stub
    session = stub.CreateSession(pb.CreateSessionRequest(system_prompt="s"))
    stream = stub.Generate(pb.GenerateRequest(session_id=session.session_id, messages=user("go"),
                                              sampling=greedy(500, ignore_eos=True)), timeout=120)
    next(stream)  # running
    with pytest.raises(grpc.RpcError) as raised:
        run(stub, pb.GenerateRequest(session_id=session.session_id, messages=user("too"), sampling=greedy(1)))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stream.cancel()
    done = threading.Event()
    for _ in range(100):  # the engine stops the request at its next step, releasing the session
        if stub.GetLoad(pb.GetLoadRequest()).running_requests == 0:
            done.set()
            break
        threading.Event().wait(0.05)
    assert done.is_set()
    # the turn's input commit is written after the engine lets the request go: wait for it, not for a clock
    for _ in range(200):
        info = stub.GetSession(pb.GetSessionRequest(session_id=session.session_id))
        if info.tokens > session.tokens:
            break
        threading.Event().wait(0.05)
    # the input was committed; nothing of the cancelled output was
    _, final = run(stub, pb.GenerateRequest(session_id=session.session_id, messages=user("again"),
                                            sampling=greedy(1)))
    assert final.usage.reused_tokens == info.tokens


def test_session_rpcs(worker) -> None:
    stub = worker.stub
    session = stub.CreateSession(pb.CreateSessionRequest(session_id="base", system_prompt="s"))
    appended = stub.AppendSession(pb.AppendSessionRequest(session_id="base", token_ids=pb.TokenIds(ids=[7, 8, 9])))
    assert appended.tokens == session.tokens + 2  # the last appended token waits to be fed by the next Generate
    fork = stub.ForkSession(pb.ForkSessionRequest(session_id="base", new_session_id="child"))
    assert fork.tokens == appended.tokens and fork.parent.startswith("base@")
    assert not stub.GetSession(pb.GetSessionRequest(session_id="base")).bytes_by_tier  # asked for explicitly
    sized = stub.GetSession(pb.GetSessionRequest(session_id="base", include_bytes=True)).bytes_by_tier
    assert list(sized.values()) and all(size > 0 for size in sized.values())
    rewound = stub.RewindSession(pb.RewindSessionRequest(session_id="base", commit=session.commit))
    assert rewound.tokens == session.tokens
    listed = stub.ListSessions(pb.ListSessionsRequest(page_size=1))
    assert listed.session_ids == ["base"] and listed.next_page_token == "base"
    assert stub.ListSessions(pb.ListSessionsRequest(page_token="base")).session_ids == ["child"]
    export = b"".join(c.data for c in stub.ExportSession(pb.ExportSessionRequest(session_id="child")))
    assert export[257:262] == b"ustar"  # a tar file
    stub.DeleteSession(pb.DeleteSessionRequest(session_id="child"))
    with pytest.raises(grpc.RpcError):
        stub.GetSession(pb.GetSessionRequest(session_id="child"))
    ids = stub.Tokenize(pb.TokenizeRequest(text="hello world")).ids
    assert stub.Detokenize(pb.DetokenizeRequest(ids=ids)).text == "hello world"
    assert not stub.Abort(pb.AbortRequest(request_id="nothing")).aborted


def test_a_held_session_outlives_its_ttl_until_released(worker) -> None:
    import time

    from model_worker.sessions import admin

    stub, store = worker.stub, worker.runtime.store
    stub.CreateSession(pb.CreateSessionRequest(session_id="paused", system_prompt="s"))
    stub.HoldSession(pb.HoldSessionRequest(session_id="paused", holder="turn-1", seconds=3600))
    later = time.time() + 600
    assert admin.expire(store, "default", ttl_seconds=60, now=later) == []
    stub.HoldSession(pb.HoldSessionRequest(session_id="paused", holder="turn-1", seconds=0))
    assert admin.expire(store, "default", ttl_seconds=60, now=later) == ["paused"]
    with pytest.raises(grpc.RpcError) as error:
        stub.HoldSession(pb.HoldSessionRequest(session_id="paused", holder="turn-1", seconds=60))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as error:
        stub.HoldSession(pb.HoldSessionRequest(session_id="x", holder="turn-1", seconds=-1))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_append_then_generate_the_reply_without_new_input(worker) -> None:
    stub = worker.stub
    session = stub.CreateSession(pb.CreateSessionRequest(system_prompt="s"))
    appended = stub.AppendSession(pb.AppendSessionRequest(session_id=session.session_id, messages=user("a long doc")))
    _, final = run(stub, pb.GenerateRequest(session_id=session.session_id, sampling=greedy(2)))
    assert final.usage.prompt_tokens == 0 and final.usage.prefilled_tokens == 1  # the held-back token only
    assert final.usage.reused_tokens == appended.tokens
    with pytest.raises(grpc.RpcError) as raised:  # the reply was given: a turn needs input now
        run(stub, pb.GenerateRequest(session_id=session.session_id, sampling=greedy(1)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_typed_client_against_the_real_worker(worker) -> None:
    from foundation.clients.worker import Final, Sampling, WorkerClient
    from foundation.clients.worker.errors import FailedPrecondition, NotFound

    port = worker.channel._channel.target().decode().rsplit(":", 1)[1]
    with WorkerClient(f"127.0.0.1:{port}", timeout=60) as client:
        session = client.create_session(system_prompt="You are terse.")
        final, text = client.generate_text(session_id=session.session_id,
                                           messages=[{"role": "user", "content": "Hello"}],
                                           sampling=Sampling(temperature=0.0, max_tokens=3))
        assert isinstance(final, Final) and final.usage.completion_tokens == 3
        assert final.usage.reused_tokens == session.tokens
        events = list(client.generate(token_ids=[1, 2, 3], sampling=Sampling(temperature=0.0, max_tokens=2,
                                                                             ignore_eos=True)))
        assert isinstance(events[-1], Final) and events[-1].finish_reason == "length"
        assert client.detokenize(client.tokenize("agents")) == "agents"
        current = client.get_session(session.session_id)
        client.append(session.session_id, token_ids=[9, 9], expected_commit=current.commit)
        with pytest.raises(FailedPrecondition):  # a repeat of that append is refused, not applied twice
            client.append(session.session_id, token_ids=[9, 9], expected_commit=current.commit)
        assert session.session_id in client.list_sessions()
        with pytest.raises(NotFound):
            client.get_session("missing")


def test_a_tenant_over_its_request_limit_is_told_to_back_off(model, tmp_path) -> None:
    limited = Worker(model, tmp_path / "limited", max_requests_per_tenant=1)
    try:
        running = limited.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2]),
                                                           sampling=greedy(400, ignore_eos=True)), timeout=120)
        next(running)
        with pytest.raises(grpc.RpcError) as raised:
            run(limited.stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[3]), sampling=greedy(1)))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert float(dict(raised.value.trailing_metadata())["retry-after"]) == 1.0
        running.cancel()
    finally:
        limited.stop()


def test_spans_join_the_callers_trace_and_metrics_count(worker, spans) -> None:
    exporter = spans
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    session = worker.stub.CreateSession(pb.CreateSessionRequest(system_prompt="s"))
    responses = list(worker.stub.Generate(
        pb.GenerateRequest(session_id=session.session_id, messages=user("hi"), sampling=greedy(2)),
        metadata=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01")], timeout=60))
    usage = responses[-1].final.usage
    worker.stub.GetSession(pb.GetSessionRequest(session_id=session.session_id),
                           metadata=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01")], timeout=60)
    traced = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    assert sorted(s.name for s in traced) == ["/dsv4.worker.v1.ModelWorker/GetSession", "chat tiny"]  # one each
    assert all(s.parent.span_id == 0xb7ad6b7169203331 for s in traced)  # children of the caller's span
    spans = [s for s in traced if s.name.startswith("chat ")]
    span = spans[0]
    assert span.attributes["gen_ai.conversation.id"] == session.session_id
    assert span.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens == 2
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == usage.reused_tokens > 0
    registry = worker.runtime.metrics.registry
    assert registry.get_sample_value("dsv4_completion_tokens_total") == 2
    assert registry.get_sample_value("dsv4_reused_tokens_total") == usage.reused_tokens
    assert registry.get_sample_value("dsv4_time_to_first_token_seconds_count") == 1
    assert registry.get_sample_value("dsv4_inter_token_latency_seconds_count") == 1
    assert registry.get_sample_value("dsv4_running_requests") == 0


def test_a_restarted_worker_continues_a_session_exactly_as_one_that_never_stopped(model, tmp_path) -> None:
    """The resumed state is bitwise the committed one, so greedy continuations agree token for token."""
    def turn(stub, session_id: str, text: str) -> list[int]:
        deltas, _ = run(stub, pb.GenerateRequest(session_id=session_id, messages=user(text),
                                                 sampling=greedy(8, ignore_eos=True)))
        return [t for d in deltas if d.WhichOneof("event") == "delta" for t in d.delta.token_ids]

    steady = Worker(model, tmp_path / "steady")
    try:
        steady.stub.CreateSession(pb.CreateSessionRequest(session_id="s", system_prompt="You are terse."))
        turn(steady.stub, "s", "first")
        expected = turn(steady.stub, "s", "second")
    finally:
        steady.stop()
    before = Worker(model, tmp_path / "restarted")
    try:
        before.stub.CreateSession(pb.CreateSessionRequest(session_id="s", system_prompt="You are terse."))
        turn(before.stub, "s", "first")
    finally:
        before.stop()
    after = Worker(model, tmp_path / "restarted")
    try:
        assert turn(after.stub, "s", "second") == expected
    finally:
        after.stop()


def test_import_and_expected_commits(worker) -> None:
    stub = worker.stub
    session = stub.CreateSession(pb.CreateSessionRequest(session_id="orig", system_prompt="s"))
    appended = stub.AppendSession(pb.AppendSessionRequest(session_id="orig", token_ids=pb.TokenIds(ids=[5, 6]),
                                                          expected_commit=session.commit))
    with pytest.raises(grpc.RpcError) as raised:  # the same append retried: the session moved on
        stub.AppendSession(pb.AppendSessionRequest(session_id="orig", token_ids=pb.TokenIds(ids=[5, 6]),
                                                   expected_commit=session.commit))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    data = b"".join(c.data for c in stub.ExportSession(pb.ExportSessionRequest(session_id="orig")))
    chunks = [pb.ImportChunk(session_id="copy", data=data[:1000]), pb.ImportChunk(data=data[1000:])]
    imported = stub.ImportSession(iter(chunks))
    assert imported.session_id == "copy" and imported.tokens == appended.tokens
    # the copy carries the renderer state and the owed token: it continues like the original
    _, final = run(stub, pb.GenerateRequest(session_id="copy", token_ids=pb.TokenIds(ids=[7]), sampling=greedy(1)))
    assert final.usage.prefilled_tokens == 2 and final.usage.reused_tokens == appended.tokens


def test_the_first_response_names_the_request_so_it_can_be_aborted(worker) -> None:
    stream = worker.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2]),
                                                     sampling=greedy(500, ignore_eos=True)), timeout=120)
    first = next(stream)
    assert first.request_id and first.WhichOneof("event") is None
    assert worker.stub.Abort(pb.AbortRequest(request_id=first.request_id)).aborted
    final = [r for r in stream if r.WhichOneof("event") == "final"][0].final
    assert final.finish_reason == pb.CANCELLED and final.usage.completion_tokens < 500


def test_a_tenant_over_its_token_rate_is_told_when_to_come_back(model, tmp_path) -> None:
    limited = Worker(model, tmp_path / "rated", tokens_per_second_per_tenant=1.0)  # 10 tokens of burst
    try:
        run(limited.stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=list(range(1, 21))), sampling=greedy(2)))
        with pytest.raises(grpc.RpcError) as raised:
            run(limited.stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[3]), sampling=greedy(1)))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry_after = float(dict(raised.value.trailing_metadata())["retry-after"])
        assert 10 < retry_after < 13  # 20 input + 2 output tokens against 10 of burst, at 1 token/s
    finally:
        limited.stop()


def test_a_one_token_reply_is_owed_to_the_next_turn_like_any_other(worker) -> None:
    """A reply of one token feeds nothing (its token is sampled, never fed), yet its end is a commit point: the next
    turn feeds that token and the reply's closing first, exactly as after a longer reply."""
    prefilled = {}
    for max_tokens in (1, 2):
        session = worker.stub.CreateSession(pb.CreateSessionRequest(system_prompt="s")).session_id
        _, first = run(worker.stub, pb.GenerateRequest(session_id=session, messages=user("one"),
                                                       sampling=greedy(max_tokens, ignore_eos=True)))
        assert first.usage.completion_tokens == max_tokens
        _, second = run(worker.stub, pb.GenerateRequest(session_id=session, messages=user("two"), sampling=greedy(1)))
        prefilled[max_tokens] = second.usage.prefilled_tokens
    assert prefilled[1] == prefilled[2]
