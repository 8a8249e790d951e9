"""Anthropic's Messages API through the official `anthropic` SDK against the real gateway and a `tiny` worker:
whole and streamed replies with usage, a forced tool call and its result, signed thinking blocks, stop sequences,
token counts, Anthropic-shaped errors, and the README's section."""

from __future__ import annotations

import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import anthropic
import pytest

PICK = {"name": "pick", "description": "Pick a color.", "input_schema": {
    "type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}}, "required": ["color"],
    "additionalProperties": False}}
ROOT = Path(__file__).resolve().parents[3]
HI = [{"role": "user", "content": "hi"}]
GREEDY = {"temperature": 0}  # sampling fields the SDK no longer names; the gateway takes them


@pytest.fixture(scope="module")
def client(gateway):
    return anthropic.Anthropic(base_url=gateway.base_url.removesuffix("/v1"), api_key="key-acme", max_retries=0,
                               timeout=120)


@pytest.fixture(scope="module")
def model(gateway):
    return gateway.client().models.list().data[0].id


def test_a_message_with_usage(client, model):
    reply = client.messages.create(model=model, max_tokens=8, messages=HI, system="Be brief.", extra_body=GREEDY)
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.stop_reason in ("end_turn", "max_tokens") and [b.type for b in reply.content] in ([], ["text"])
    assert reply.usage.input_tokens > 0 and 0 < reply.usage.output_tokens <= 8
    assert reply.usage.cache_read_input_tokens is not None


def test_a_streamed_message_accumulated_by_the_sdk(client, model):
    with client.messages.stream(model=model, max_tokens=8, messages=HI, extra_body=GREEDY,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0 and final.content[0].type == "thinking" and final.content[0].signature
    turn = [*HI, {"role": "assistant", "content": final.content}, {"role": "user", "content": "again"}]
    assert client.messages.create(model=model, max_tokens=2, messages=turn).stop_reason  # its signature verifies


def test_a_forced_tool_call_and_its_result(client, model):
    ask = [{"role": "user", "content": [{"type": "text", "text": "pick a color",
                                         "cache_control": {"type": "ephemeral"}}]}]
    with client.messages.stream(model=model, max_tokens=60, messages=ask, tools=[PICK], extra_body=GREEDY,
                                tool_choice={"type": "tool", "name": "pick"}) as stream:
        reply = stream.get_final_message()
    calls = [b for b in reply.content if b.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and [c.name for c in calls] == ["pick"]
    assert calls[0].input["color"] in ("red", "blue")
    answer = [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "done"}]
    after = client.messages.create(model=model, max_tokens=4, tools=[PICK], extra_body=GREEDY, messages=[
        *ask, {"role": "assistant", "content": reply.content}, {"role": "user", "content": answer}])
    assert after.usage.cache_read_input_tokens > 0  # routed by its cache_control prefix to the worker holding it
    assert after.usage.input_tokens + after.usage.cache_read_input_tokens > reply.usage.input_tokens


def test_disable_parallel_tool_use_is_one_call_by_the_grammar(client, model):
    reply = client.messages.create(model=model, max_tokens=120, messages=[{"role": "user", "content": "colors"}],
                                   tools=[PICK], tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                   extra_body={"temperature": 1.0})
    assert reply.stop_reason == "tool_use" and [b.name for b in reply.content if b.type == "tool_use"] == ["pick"]


def test_thinking_blocks_are_signed_and_verified_when_sent_back(client, model):
    reply = client.messages.create(model=model, max_tokens=6, messages=HI, extra_body=GREEDY,
                                   thinking={"type": "enabled", "budget_tokens": 1024})
    thinking = reply.content[0]
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    turn = [*HI, {"role": "assistant", "content": [thinking.model_dump(), {"type": "text", "text": "hello"}]},
            {"role": "user", "content": "again"}]
    assert client.messages.create(model=model, max_tokens=2, messages=turn).usage.input_tokens > 0
    turn[1]["content"][0]["thinking"] += " (edited)"
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        client.messages.create(model=model, max_tokens=2, messages=turn)


def test_stop_sequences_and_count_tokens(client, model):
    free = client.messages.create(model=model, max_tokens=12, messages=HI, extra_body=GREEDY)
    text = "".join(b.text for b in free.content if b.type == "text")
    if len(text) > 2:
        stopped = client.messages.create(model=model, max_tokens=12, messages=HI, extra_body=GREEDY,
                                         stop_sequences=[text[1:3]])
        assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == text[1:3]
    counted = client.messages.count_tokens(model=model, messages=HI)
    assert counted.input_tokens == free.usage.input_tokens + free.usage.cache_read_input_tokens


def test_errors_are_anthropic_shaped(gateway, client, model):
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=gateway.base_url.removesuffix("/v1"), api_key="wrong",
                            max_retries=0).messages.create(model=model, max_tokens=2, messages=HI)
    assert refused.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-nope", max_tokens=2, messages=HI)
    assert missing.value.body == {"type": "error", "error": {"type": "not_found_error",
                                                             "message": missing.value.body["error"]["message"]}}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with pytest.raises(anthropic.BadRequestError, match="image"):
        client.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": [image]}])


def test_the_readme_anthropic_section_runs(gateway, model):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Anthropic Messages API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", gateway.base_url.removesuffix("/v1")).replace("YOUR-KEY", "key-acme")
    code = code.replace('"tiny"', repr(model))
    out = StringIO()
    with redirect_stdout(out):  # dont_inherit: as a reader would paste it, without this module's __future__ imports
        exec(compile(code, "README.md", "exec", dont_inherit=True), {"__name__": "readme"})
    printed = out.getvalue()
    assert printed.startswith("['thinking'") and "cache_read_input_tokens=" in printed
