"""/v1/responses through the official `openai` SDK against the live gateway: a chain continued by
previous_response_id reuses the worker session (cached tokens, only the new turn prefilled), an older response
forks, background Think Max responses are polled and cancelled, function calls round-trip, and stored responses
belong to their tenant."""

from __future__ import annotations

import json
import time
import uuid

import openai
import pytest

from foundation.clients.worker import NotFound, WorkerClient
from foundation.tenancy import acting_for

PICK = {"type": "function", "name": "pick", "description": "Pick a color.", "parameters": {
    "type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}}, "required": ["color"],
    "additionalProperties": False}}
SAME = dict(temperature=0, max_output_tokens=8)


def _poll(client, response_id: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while (response := client.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{response_id} still {response.status}"
        time.sleep(0.2)
    return response


def test_a_chain_reuses_its_session_and_an_older_response_forks(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    instructions = f"{uuid.uuid4().hex} Be brief."  # a head no other session shares a prefix with
    first = client.responses.create(model=model, instructions=instructions, input="Say hi.", **SAME)
    second = client.responses.create(model=model, previous_response_id=first.id, input="Once more.",
                                     instructions=instructions, **SAME)  # repeated as agents do: accepted
    third = client.responses.create(model=model, previous_response_id=second.id, input="Once more.", **SAME)
    assert first.usage.input_tokens_details.cached_tokens == 0  # a new conversation: all of it prefilled
    new = second.usage.input_tokens - first.usage.total_tokens  # "Once more." as a user turn
    assert 0 < new < 12
    # Each continuation is computed from the whole conversation so far plus the new turn, and reuses the history:
    # only the new turn (and the token the last reply still owed the session) is prefilled.
    for earlier, later in ((first, second), (second, third)):
        assert later.usage.input_tokens == earlier.usage.total_tokens + new
        cached = later.usage.input_tokens_details.cached_tokens
        assert earlier.usage.total_tokens - 2 <= cached < earlier.usage.total_tokens
        assert later.usage.input_tokens - cached <= new + 2
    # Continuing from the first response again branches the conversation there: the same turn on the same history.
    fork = client.responses.create(model=model, previous_response_id=first.id, input="Once more.", **SAME)
    assert fork.usage.model_dump() == second.usage.model_dump()
    assert fork.output_text == second.output_text and fork.id != second.id
    after_fork = client.responses.create(model=model, previous_response_id=third.id, input="Once more.", **SAME)
    assert after_fork.usage.input_tokens == third.usage.total_tokens + new  # the chain's own session is intact
    # Sessions are named after the response that started them: the chain went on in place, the fork has its own.
    with WorkerClient(gateway.worker) as worker, acting_for("acme"):  # the gateway acts for its caller's tenant
        assert worker.get_session(fork.id).tokens >= fork.usage.total_tokens - 2
        for continued_in_place in (second, third, after_fork):
            with pytest.raises(NotFound):
                worker.get_session(continued_in_place.id)
    stored = client.responses.retrieve(third.id)
    assert (stored.output_text, stored.previous_response_id, stored.status) == (third.output_text, second.id,
                                                                                 third.status)
    assert [item.content[0].text for item in client.responses.input_items.list(second.id)] == ["Once more."]


def test_a_streamed_response_with_reasoning_is_stored_and_continued(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    with client.responses.stream(model=model, input="Think, then answer.", reasoning={"effort": "high"},
                                 temperature=0, max_output_tokens=24) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.reasoning_text.delta" in kinds  # think-high opens with reasoning
    streamed = events[-1].response
    stored = client.responses.retrieve(streamed.id)
    assert [item.model_dump() for item in stored.output] == [item.model_dump() for item in streamed.output]
    reasoning = [item for item in stored.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].content[0].text
    after = client.responses.create(model=model, previous_response_id=stored.id, input="Go on.", **SAME)
    assert after.usage.input_tokens_details.cached_tokens >= stored.usage.total_tokens - 2


def test_a_stream_the_caller_closes_ends_failed_and_cannot_be_continued(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    stream = client.responses.create(model=model, input="Write at length.", stream=True, temperature=0,
                                     max_output_tokens=3000)
    created = next(iter(stream)).response
    assert client.responses.retrieve(created.id).status == "in_progress"  # stored while it streams
    stream.close()
    cut = _poll(client, created.id)
    assert cut.status == "failed" and "closed" in cut.error.message
    with pytest.raises(openai.ConflictError):
        client.responses.create(model=model, previous_response_id=created.id, input="more", **SAME)


def test_a_forced_function_call_and_its_output_continue_the_conversation(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    events = list(client.responses.create(model=model, input="Pick a color.", tools=[PICK], stream=True,
                                          tool_choice={"type": "function", "name": "pick"}, temperature=0,
                                          max_output_tokens=60))
    assert "response.function_call_arguments.done" in [event.type for event in events]
    called = events[-1].response
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "pick" and json.loads(call.arguments)["color"] in ("red", "blue")
    assert client.responses.retrieve(called.id).output[-1].call_id == call.call_id
    # As agent frameworks send it: the call echoed back (already in the session, so skipped), then its result.
    answered = client.responses.create(model=model, previous_response_id=called.id, tools=[PICK], input=[
        call.model_dump(exclude_none=True), {"type": "function_call_output", "call_id": call.call_id, "output": "ok"}],
        **SAME)
    assert answered.status in ("completed", "incomplete")
    assert answered.usage.input_tokens_details.cached_tokens >= called.usage.total_tokens - 2
    with pytest.raises(openai.BadRequestError) as error:  # tools are fixed by the conversation's first response
        client.responses.create(model=model, previous_response_id=called.id, input="again", tools=[
            {**PICK, "name": "choose"}])
    assert error.value.body["param"] == "tools"


def test_a_background_think_max_response_is_polled_to_completion(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    queued = client.responses.create(model=model, input="Prove it carefully.", background=True, temperature=0,
                                     max_output_tokens=16)
    assert queued.status in ("queued", "in_progress") and queued.background
    done = _poll(client, queued.id)
    assert done.status in ("completed", "incomplete") and done.output
    assert done.usage.output_tokens > 0
    reasoning = [item for item in done.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].content[0].text  # Think Max reasons first
    # The conversation goes on from the job's own session: its history is reused, not prefilled again.
    after = client.responses.create(model=model, previous_response_id=done.id, input="Summarize.", **SAME)
    assert after.usage.input_tokens_details.cached_tokens >= done.usage.total_tokens - 2


def test_cancelling_a_background_response(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    running = client.responses.create(model=model, input="Write at length.", background=True, temperature=0,
                                      max_output_tokens=4000)
    with pytest.raises(openai.ConflictError):  # its reply is not there yet to continue from
        client.responses.create(model=model, previous_response_id=running.id, input="more", **SAME)
    cancelled = client.responses.cancel(running.id)
    final = _poll(client, running.id)
    assert final.status == cancelled.status or cancelled.status in ("queued", "in_progress")
    assert final.status in ("cancelled", "completed", "incomplete")
    if final.status == "cancelled":  # a job cancelled while running keeps its partial output
        assert final.usage is None or final.usage.output_tokens < 4000


def test_unstored_and_other_tenants_responses_are_not_found(gateway):
    client, other = gateway.client(), gateway.client("key-other")
    model = client.models.list().data[0].id
    unstored = client.responses.create(model=model, input="hi", store=False, **SAME)
    assert unstored.output and unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    stored = client.responses.create(model=model, input="hi", **SAME)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError) as error:
        other.responses.create(model=model, previous_response_id=stored.id, input="hi", **SAME)
    assert error.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(stored.id)
    client.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stored.id)


def test_unsupported_requests_are_refused(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    refusals = [dict(tools=[{"type": "web_search"}]), dict(background=True, store=False),
                dict(truncation="auto"), dict(input=[{"type": "input_image", "image_url": "x"}])]
    for fields in refusals:
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model=model, **{"input": "hi", **fields})


def test_deleting_responses_deletes_the_worker_sessions_only_they_need(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    first = client.responses.create(model=model, instructions=uuid.uuid4().hex, input="Say hi.", **SAME)
    in_place = client.responses.create(model=model, previous_response_id=first.id, input="Once more.", **SAME)
    fork = client.responses.create(model=model, previous_response_id=first.id, input="Again.", **SAME)
    with WorkerClient(gateway.worker) as worker, acting_for("acme"):
        def sessions() -> set[str]:
            return set(worker.list_sessions(page_size=1000)) & {first.id, in_place.id, fork.id}

        assert sessions() == {first.id, fork.id}  # the chain lives on the first response's session
        client.responses.delete(first.id)
        assert sessions() == {first.id, fork.id}  # the response that went on in place still names it
        after = client.responses.create(model=model, previous_response_id=in_place.id, input="Go on.", **SAME)
        assert after.usage.input_tokens_details.cached_tokens >= in_place.usage.total_tokens - 2
        for response in (in_place, after):
            client.responses.delete(response.id)
        assert sessions() == {fork.id}  # the last response naming it is gone: so is the session
        client.responses.delete(fork.id)  # a fork is a session of its own, deleted with its only response
        assert sessions() == set()


def test_a_new_conversation_that_resends_a_chat_history_finds_it_in_the_prefix_cache(gateway):
    """No previous_response_id: the new conversation's session starts from what the chat completion computed."""
    client = gateway.client()
    model = client.models.list().data[0].id
    question = "Here is a report. " + "Everything nominal. " * 40
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                          temperature=0, max_tokens=4)
    response = client.responses.create(model=model, max_output_tokens=4, input=[
        {"role": "user", "content": question}, {"role": "assistant", "content": chat.choices[0].message.content},
        {"role": "user", "content": "Go on."}], extra_body={"prompt_cache_key": "report-1"})
    assert response.usage.input_tokens_details.cached_tokens >= chat.usage.prompt_tokens - 1  # all but BOS
