"""Single-sequence generation over the real model: stops, truncation back to the stop point, commits."""

from __future__ import annotations

import pytest
import torch
from small_config import SMALL

from foundation.chat import load_tokenizer
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.engine import Generator
from model_worker.model import DeepseekV4
from model_worker.numerics import REFERENCE
from model_worker.sampling import FinishReason, SamplingParams, SamplingState


@pytest.fixture(scope="module")
def generator() -> Generator:
    model = DeepseekV4(SMALL, quantized=True, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, 5), assign=True, strict=True)
    return Generator(model, load_tokenizer(), prefill_chunk=7)


def forced(token: int, **params) -> SamplingParams:
    """Greedy with a bias that makes `token` the only choice, so the test knows what comes out."""
    return SamplingParams(temperature=0.0, logit_bias={token: 100.0}, **params)


def test_length_finish_feeds_all_but_the_last_token(generator: Generator) -> None:
    tok = load_tokenizer().encode("a")[0]
    state = generator.model.new_state()
    result = generator.generate(state, list(range(1, 20)), forced(tok, max_tokens=5))
    assert result.finish_reason == FinishReason.LENGTH and result.token_ids == [tok] * 5
    assert result.text == "a" * 5 and result.num_prefilled == 19
    # The last sampled token is never fed: the next turn feeds it with its new tokens.
    assert state.num_tokens == 19 + 4 and state.committed == state.num_tokens
    assert SamplingState.restore(state.sampling).output_token_ids == [tok] * 5


def test_stop_string_across_tokens_truncates_the_state(generator: Generator) -> None:
    tok = load_tokenizer().encode("a")[0]
    state = generator.model.new_state()
    streamed: list[str] = []
    result = generator.generate(state, list(range(1, 10)), forced(tok, max_tokens=10, stop=("aaa",)),
                                on_text=streamed.append)
    assert result.finish_reason == FinishReason.STOP
    assert result.token_ids == [tok] * 3 and result.text == "" and "".join(streamed) == ""
    assert state.num_tokens == 9 + 2


def test_generation_resumes_where_the_sequence_left_off(generator: Generator) -> None:
    """Two turns on one state equal one state fed the concatenation (only the new tokens are prefilled)."""
    model = generator.model
    first, second = list(range(30, 45)), list(range(50, 58))
    params = SamplingParams(temperature=0.0, max_tokens=3)
    state = model.new_state()
    turn1 = generator.generate(state, first, params)
    pending = turn1.token_ids[-1:]  # sampled, not yet fed
    turn2 = generator.generate(state, pending + second, params)
    fresh = model.new_state()
    fed = first + turn1.token_ids[:-1]
    generator.prefill(fresh, fed)
    replay = generator.generate(fresh, pending + second, params)
    assert turn2.num_prefilled == 1 + len(second)
    assert turn2.token_ids == replay.token_ids
    assert torch.equal(torch.tensor(state.num_tokens), torch.tensor(fresh.num_tokens))
