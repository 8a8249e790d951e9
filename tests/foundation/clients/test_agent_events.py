"""A turn's events cross the wire and come back as the same dataclasses: what the runtime emits is what a client's
`match` sees (arguments as parsed JSON, usage typed), whichever kind."""

import pytest

from foundation.clients.agent import convert
from foundation.clients.agent.events import (
    ApprovalRequested,
    Compacted,
    JobStatus,
    ModeChosen,
    StepStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnFailed,
    TurnUsage,
    from_fields,
    kind_of,
)
from foundation.clients.worker.errors import ProtocolError
from protos.dsv4.agent.v1 import agent_pb2 as pb

EVENTS = [
    ModeChosen("think-max", "declared hard; runs as a job", via_job=True),
    JobStatus("batch_1", "running", 12),
    StepStarted(3, "think-high"),
    TextDelta("thinking...", reasoning=True),
    ToolStarted("c1", "calculator", {"expression": "2 + 2", "nested": [1, {"a": None}]}),
    ApprovalRequested("c2", "charge", {"amount": 5}),
    ToolFinished("c1", "calculator", "4", is_error=False, status="finished"),
    Compacted("clear_tool_results", 9000, 1200, "ws-2"),
    TurnDone("answer", "It is 4.", "2 + 2 = 4", 2, TurnUsage(100, 20, 80, 7, 3)),
    TurnFailed("UNAVAILABLE", "no model worker answered"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_kind_comes_back_as_it_was_sent(event):
    message = convert.event_to_proto("turn-1", 7, event)
    assert (message.turn_id, message.seq, message.WhichOneof("event")) == ("turn-1", 7, kind_of(event))
    assert convert.event_from_proto(pb.TurnEvent.FromString(message.SerializeToString())) == event


def test_arguments_that_are_not_json_stay_the_text_the_model_wrote():
    message = convert.event_to_proto("t", 0, ToolStarted("c", "f", '{"unclosed": '))
    assert convert.event_from_proto(message) == ToolStarted("c", "f", '{"unclosed": ')


def test_a_stored_event_with_a_field_a_newer_runtime_added_still_reads():
    stored = {"reason": "answer", "content": "hi", "reasoning": "", "steps": 1, "usage": {"completion_tokens": 2},
              "from_the_future": True}
    assert from_fields("turn_done", stored) == TurnDone("answer", "hi", "", 1, TurnUsage(completion_tokens=2))


def test_an_event_without_a_kind_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        convert.event_from_proto(pb.TurnEvent(turn_id="t", seq=1))


def test_a_match_statement_takes_a_turn_apart():
    said = []
    for event in EVENTS:
        match event:
            case TextDelta(text=text, reasoning=False):
                said.append(text)
            case ToolStarted(name=name, arguments={"expression": expression}):
                said.append(f"{name}({expression})")
            case TurnDone(reason="answer", usage=TurnUsage(completion_tokens=tokens)):
                said.append(f"done in {tokens} tokens")
    assert said == ["calculator(2 + 2)", "done in 7 tokens"]
