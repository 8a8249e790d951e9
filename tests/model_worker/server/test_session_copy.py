"""CreateSession(from_session=...): a Think Max copy of a session's transcript, prefilled, with the source unchanged
and the conversation going on in the copy as it would have in the source."""

from __future__ import annotations

import grpc
import pytest
from server_testlib import Worker, run, user

from foundation.chat import ChatMode, ChatSession, SessionHead, load_tokenizer
from model_worker.engine.loading import load_model
from protos.dsv4.worker.v1 import worker_pb2 as pb


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(load_model(None, "tiny", numerics="official"), tmp_path_factory.mktemp("copy"))
    yield w
    w.stop()


def test_a_think_max_copy_of_a_sessions_transcript(worker):
    stub = worker.stub
    tool = pb.Tool(name="lookup", parameters_json='{"type": "object"}')
    stub.CreateSession(pb.CreateSessionRequest(session_id="plain", system_prompt="be brief", tools=[tool]))
    greedy = pb.SamplingParams(temperature=0.0, max_tokens=3)
    _, first = run(stub, pb.GenerateRequest(session_id="plain", messages=user("hello"), sampling=greedy))
    source = stub.GetSession(pb.GetSessionRequest(session_id="plain"))
    copy = stub.CreateSession(pb.CreateSessionRequest(session_id="deep", from_session="plain", think_max=True))
    assert copy.think_max and not source.think_max
    tokenizer = load_tokenizer()

    def head(think_max: bool) -> int:
        tools = ({"type": "function", "function": {"name": "lookup", "description": "", "parameters":
                                                   {"type": "object"}}},)
        return len(ChatSession(SessionHead(think_max=think_max, system_prompt="be brief", tools=tools),
                               tokenizer).token_ids)

    assert copy.tokens == source.tokens + head(True) - head(False)  # the transcript under a Think Max head
    assert stub.GetSession(pb.GetSessionRequest(session_id="plain")).commit == source.commit  # unchanged
    _, reply = run(stub, pb.GenerateRequest(session_id="deep", messages=user("think hard"), sampling=greedy,
                                            mode=pb.THINK_HIGH))
    # The copy owes the source's last reply token and its EOS, then the new turn: nothing else is prefilled.
    expected_turn = len(ChatSession(SessionHead(), tokenizer).render_turn([{"role": "user", "content": "think hard"}],
                                                                         ChatMode.THINK_HIGH).token_ids)
    assert reply.usage.prefilled_tokens == expected_turn + 2 and reply.usage.reused_tokens == copy.tokens
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateSession(pb.CreateSessionRequest(from_session="plain", think_max=True, system_prompt="other"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateSession(pb.CreateSessionRequest(from_session="missing", think_max=True))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert first.finish_reason in (pb.STOP, pb.LENGTH)
