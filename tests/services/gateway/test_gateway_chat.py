"""Chat completions through the official `openai` SDK: a streamed reply with a forced tool call (constrained decoding
on the worker), a plain completion with usage, OpenAI-shaped errors for bad input, auth and models; health and
metrics."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid

import openai
import pytest

PICK = {"type": "function", "function": {"name": "pick", "description": "Pick a color.", "parameters": {
    "type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}}, "required": ["color"],
    "additionalProperties": False}}}


def test_a_streamed_chat_completion_with_a_forced_tool_call(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "pick a color"}], tools=[PICK],
        tool_choice={"type": "function", "function": {"name": "pick"}}, stream=True, temperature=0, max_tokens=60,
        stream_options={"include_usage": True})
    chunks = list(stream)
    calls = [c for chunk in chunks if chunk.choices for c in chunk.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == ["pick"]
    assert json.loads(calls[0].function.arguments)["color"] in ("red", "blue")
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "tool_calls"
    usage = chunks[-1].usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_parallel_tool_calls_off_is_one_call_by_the_grammar(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "pick colors"}], tools=[PICK], tool_choice="required",
        parallel_tool_calls=False, temperature=1.0, seed=3, max_tokens=120)
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["pick"]
    assert reply.choices[0].finish_reason == "tool_calls"


def test_a_completion_with_usage_and_reasoning(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                           temperature=0, max_tokens=8, reasoning_effort="high")
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason in ("stop", "length")
    message = reply.choices[0].message.model_dump()
    assert "reasoning_content" in message  # DeepSeek's field, beside content
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens_details is not None


def test_logprobs_come_back_whole_and_streamed(gateway):
    """The worker's log probabilities of the content tokens, named by their text and bytes, with the alternatives
    asked for; the streamed ones, chunk by chunk, are the same (greedy: the chosen token is the best alternative)."""
    client = gateway.client()
    model = client.models.list().data[0].id
    request = dict(model=model, messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=6,
                   logprobs=True, top_logprobs=3)
    reply = client.chat.completions.create(**request)
    tokens = reply.choices[0].logprobs.content
    assert len(tokens) == reply.usage.completion_tokens == 6
    assert "".join(bytes(t.bytes).decode("utf-8", "replace") for t in tokens) == reply.choices[0].message.content
    for token in tokens:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        assert token.top_logprobs[0].token == token.token and token.top_logprobs[0].logprob == token.logprob
    streamed = [t for chunk in client.chat.completions.create(**request, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for t in chunk.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in tokens]
    plain = client.chat.completions.create(**{**request, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_n_choices_share_one_prefill_of_the_prompt(gateway):
    """Three choices, whole and streamed, each its own; what the workers compute of the prompt is one prompt and the
    tail past its last prefix checkpoint for each other choice, not three prompts."""
    client = gateway.client()
    model = client.models.list().data[0].id
    prompt = [{"role": "user", "content": "Name three colors, please, and say why you chose them. " + uuid.uuid4().hex}]
    reply = client.chat.completions.create(model=model, messages=prompt, max_tokens=4, n=3, seed=7, temperature=1.0)
    assert [c.index for c in reply.choices] == [0, 1, 2] and all(c.finish_reason for c in reply.choices)
    assert reply.usage.completion_tokens == 12
    chunks = list(client.chat.completions.create(model=model, messages=prompt, max_tokens=4, n=3, stream=True,
                                                 stream_options={"include_usage": True}))
    finished = {c.index for chunk in chunks for c in chunk.choices if c.finish_reason}
    assert finished == {0, 1, 2} and chunks[-1].usage.completion_tokens == 12
    # A long prompt: the others wait for the first to compute it and reuse its checkpoints (one every 2,048 tokens);
    # only the part past the last checkpoint is computed again for each.
    document = uuid.uuid4().hex + " ".join(f"line {i}: the log said nothing new." for i in range(260))
    before = prefilled_tokens(gateway)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": document}],
                                           max_tokens=2, n=3)
    prompt, computed = reply.usage.prompt_tokens, prefilled_tokens(gateway) - before
    assert prompt > 2048 and prompt <= computed <= prompt + 2 * (prompt - 2048), (prompt, computed)  # not 3 prompts


def prefilled_tokens(gateway) -> float:
    """The gateway's count of prompt tokens the workers computed (its Prometheus endpoint)."""
    with urllib.request.urlopen(gateway.base_url.removesuffix("/v1") + "/metrics") as answer:
        text = answer.read().decode()
    return float(re.search(r'^gateway_tokens_total\{kind="prefilled"\} (\S+)$', text, re.M).group(1))


def test_the_operators_mode_policy_picks_the_mode_of_a_request_that_names_no_effort(gateway):
    """The gateway runs with the agent service's default policy: many tools to choose among earn Think High, as they
    do for an agent turn; a request that names its effort keeps it; few tools and no effort stay Non-think."""
    client = gateway.client()
    model = client.models.list().data[0].id
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
             for i in range(8)]

    def reasoning_tokens(**options) -> int:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               temperature=0, max_tokens=4, **options)
        return reply.usage.completion_tokens_details.reasoning_tokens

    assert reasoning_tokens(tools=tools) > 0  # thinking: the reply opens inside <think>
    assert reasoning_tokens(tools=tools, reasoning_effort="none") == 0
    assert reasoning_tokens(tools=tools[:2]) == 0


def test_errors_are_openai_shaped(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    with pytest.raises(openai.AuthenticationError):
        gateway.client("wrong-key").models.list()
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="gpt-nothing", messages=[{"role": "user", "content": "hi"}])
    assert error.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], n=99)
    assert error.value.body["param"] == "n" and "at most 8" in error.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       tool_choice="sometimes")
    with pytest.raises(openai.BadRequestError) as error:  # an SDK field the platform cannot honour: named
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       prediction={"type": "content", "content": "hello"})
    assert (error.value.body["param"], error.value.body["code"]) == ("prediction", "unsupported_parameter")


def test_health_and_metrics(gateway):
    root = gateway.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/healthz") as health:
        assert json.loads(health.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{root}/metrics") as metrics:
        assert "gateway_requests_total" in metrics.read().decode()


def test_the_migrations_build_the_models_schema(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from foundation.sql import make_engine
    from services.gateway.store import Base, upgrade

    url = f"sqlite:///{tmp_path}/gateway.db"
    upgrade(url)
    with make_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "gateway_alembic_version"})
        assert compare_metadata(context, Base.metadata) == []


def test_response_format_is_enforced(gateway):
    client = gateway.client()
    model = client.models.list().data[0].id
    schema = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["verdict"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "yes or no?"}], temperature=0, max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}})
    assert json.loads(reply.choices[0].message.content)["verdict"] in ("yes", "no")


def test_a_client_that_resends_its_conversation_gets_its_history_from_the_cache(gateway):
    """No session, no `previous_response_id`: the worker's prefix cache finds what the last call computed."""
    client = gateway.client()
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "Here is a long document. " + "All work and no play. " * 60}]
    key = {"prompt_cache_key": "conversation-1"}  # a routing hint: this conversation's calls go to one worker
    first = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4, extra_body=key)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Shorter, please."}]
    second = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4,
                                            extra_body=key)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    assert second.usage.prompt_tokens > second.usage.prompt_tokens_details.cached_tokens
