"""Legacy completions through the official `openai` SDK against the real gateway and a `tiny` model worker: a raw
prompt whole and streamed, fill-in-the-middle with `suffix` (its prompt is BOS and the FIM tokens around prefix and
suffix), logprobs in completions' shape, `n` choices, refused fields, and the README's section."""

from __future__ import annotations

import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import openai
import pytest

from foundation.chat.tokenizer import load_tokenizer
from services.gateway.completions_types import FIM_BEGIN, FIM_END, FIM_HOLE

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model(gateway):
    return gateway.client().models.list().data[0].id


def test_a_raw_completion_with_usage(gateway, model):
    reply = gateway.client().completions.create(model=model, prompt="The capital of France is", temperature=0,
                                                max_tokens=5)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    choice = reply.choices[0]
    assert choice.index == 0 and choice.finish_reason in ("stop", "length") and choice.logprobs is None
    tokens = load_tokenizer().encode("The capital of France is")
    assert reply.usage.prompt_tokens == 1 + len(tokens)  # BOS and the text, no chat template
    assert 0 < reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_the_default_is_sixteen_tokens_and_a_stream_equals_the_whole(gateway, model):
    client = gateway.client()
    request = dict(model=model, prompt="Once upon a time", temperature=0, seed=7)
    whole = client.completions.create(**request)
    assert whole.usage.completion_tokens <= 16
    chunks = list(client.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert {chunk.object for chunk in chunks} == {"text_completion"}
    text = "".join(c.text for chunk in chunks for c in chunk.choices)
    assert text == whole.choices[0].text
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_suffix_is_fill_in_the_middle(gateway, model):
    tokenizer = load_tokenizer()
    prefix, suffix = "def add(a, b):\n", "\n\nprint(add(1, 2))\n"
    assert all(tokenizer.token_to_id(t) is not None for t in (FIM_BEGIN, FIM_HOLE, FIM_END))
    reply = gateway.client().completions.create(model=model, prompt=prefix, suffix=suffix, temperature=0,
                                                max_tokens=6)
    fim = tokenizer.encode(f"<｜begin▁of▁sentence｜>{FIM_BEGIN}{prefix}{FIM_HOLE}{suffix}{FIM_END}")
    assert reply.usage.prompt_tokens == len(fim) == 4 + len(tokenizer.encode(prefix)) + len(tokenizer.encode(suffix))
    plain = gateway.client().completions.create(model=model, prompt=prefix, temperature=0, max_tokens=1)
    assert plain.usage.prompt_tokens == 1 + len(tokenizer.encode(prefix))


def test_logprobs_in_completions_shape(gateway, model):
    client = gateway.client()
    request = dict(model=model, prompt="1, 2, 3,", temperature=0, max_tokens=4, logprobs=2)
    reply = client.completions.create(**request)
    choice = reply.choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == \
        reply.usage.completion_tokens == 4
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert logprob <= 0 and len(top) == 2 and max(top.values()) == pytest.approx(logprob, abs=1e-4)
        assert token in top
    streamed = [t for chunk in client.completions.create(**request, stream=True)
                for c in chunk.choices if c.logprobs for t in c.logprobs.tokens]
    assert streamed == logprobs.tokens
    assert client.completions.create(**{**request, "logprobs": None}).choices[0].logprobs is None


def test_n_choices_and_a_prompt_of_token_ids(gateway, model):
    client = gateway.client()
    reply = client.completions.create(model=model, prompt="Hello", n=2, temperature=1.0, seed=3, max_tokens=4)
    assert [c.index for c in reply.choices] == [0, 1]
    ids = [0, *load_tokenizer().encode("Hello")]
    by_ids = client.completions.create(model=model, prompt=ids, temperature=0, max_tokens=3)
    by_text = client.completions.create(model=model, prompt=["Hello"], temperature=0, max_tokens=3)
    assert by_ids.usage.prompt_tokens == len(ids) and by_ids.choices[0].text == by_text.choices[0].text


@pytest.mark.parametrize("fields, param", [
    ({"echo": True}, "echo"), ({"best_of": 3}, "best_of"), ({"prompt": ["a", "b"]}, "prompt"),
    ({"logprobs": 9}, "logprobs"), ({"max_tokens": 0}, "max_tokens"), ({"n": 1000}, "n"),
    ({"prompt": [1, 2], "suffix": "x"}, "suffix"), ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"prompt": [10**9]}, "prompt"), ({"prompt": []}, "prompt")])
def test_a_client_error_is_a_400_naming_the_field(gateway, model, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client().completions.create(**{"model": model, "prompt": "hi", **fields})
    assert refused.value.status_code == 400 and refused.value.body["param"] == param


def test_the_readme_completions_section_runs(gateway, model):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Raw completions and fill-in-the-middle"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", gateway.base_url.removesuffix("/v1")).replace("YOUR-KEY", "key-acme")
    code = code.replace('"tiny"', repr(model))
    out = StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec", dont_inherit=True), {"__name__": "readme"})
    tokenizer = load_tokenizer()
    fim = 4 + len(tokenizer.encode("def add(a, b):\n")) + len(tokenizer.encode("\n\nprint(add(1, 2))\n"))
    assert out.getvalue().rstrip().endswith(f" {fim}")



def test_a_generation_past_the_workers_context_gets_its_status(gateway, model):
    """The worker's own refusal, mapped as chat maps it (OUT_OF_RANGE: 400)."""
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client().completions.create(model=model, prompt="hi", max_tokens=1 << 20)
    assert refused.value.body["code"] == "out_of_range" and "context" in refused.value.body["message"]
