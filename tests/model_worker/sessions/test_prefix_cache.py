"""The prefix cache's hot tier with the real engine (small configs, random weights): a hit gives the logits of a full
prefill at every new position; lookup finds the longest checkpoint the tokens extend and always leaves a token to
feed; tenants, weights and numerics never share; the byte budget evicts least recently used first."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from sessions_testlib import small_model
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE
from model_worker.sessions import SessionStore, open_blobs
from model_worker.sessions.prefix_cache import PrefixCache

CONFIGS = [SMALL, dataclasses.replace(SMALL, window_size=16, compress_ratios=(4, 16, 0, 16, 0), index_topk=5)]


def prefill(model: DeepseekV4, state, token_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(ForwardBatch.single(token_ids, state, logits="all")).logits


def cache_for(model: DeepseekV4, root, budget: int = 1 << 30, every: int = 64) -> PrefixCache:
    return PrefixCache(SessionStore(open_blobs(str(root)), model.fingerprint, model.layout), budget, every)


@pytest.mark.parametrize("config_index", range(len(CONFIGS)))
def test_a_hit_gives_the_logits_of_a_full_prefill_at_every_new_position(tmp_path, config_index) -> None:
    model = DeepseekV4(CONFIGS[config_index], quantized=True, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, 20 + config_index), assign=True, strict=True)
    model.fingerprint = f"parity-{config_index}"
    rng = random.Random(config_index)
    tokens = [rng.randrange(1, 500) for _ in range(420)]
    full = prefill(model, model.new_state(), tokens)
    for split in sorted(rng.sample(range(1, 400), 3)):
        cache = cache_for(model, tmp_path / f"s{split}")
        state = model.new_state()
        prefill(model, state, tokens[:split])
        state.commit()
        cache.put("acme", tokens, state)
        hit = cache.lookup("acme", tokens)
        assert hit.tokens == split
        resumed = prefill(model, hit.state, tokens[split:])
        torch.testing.assert_close(resumed, full[split:], rtol=1e-4, atol=1e-4 * full.abs().max().item())


def test_the_longest_checkpoint_the_tokens_extend_and_never_the_whole_input(tmp_path) -> None:
    model = small_model()
    cache = cache_for(model, tmp_path)
    tokens = list(range(2, 302))
    for end in (100, 300):
        state = model.new_state()
        prefill(model, state, tokens[:end])
        state.commit()
        cache.put("acme", tokens, state)
    assert cache.lookup("acme", tokens + [7]).tokens == 300
    assert cache.lookup("acme", tokens).tokens == 100  # one token at least is fed: its logits start the reply
    diverged = tokens[:150] + [9] * 200
    assert cache.lookup("acme", diverged).tokens == 100
    assert cache.lookup("acme", [5] + tokens).tokens == 0


def test_tenants_weights_and_numerics_never_share(tmp_path) -> None:
    model = small_model()
    tokens = list(range(2, 202))
    state = model.new_state()
    prefill(model, state, tokens[:150])
    state.commit()
    cache = cache_for(model, tmp_path / "one")
    cache.put("acme", tokens, state)
    assert cache.lookup("acme", tokens).tokens == 150
    assert cache.lookup("globex", tokens).tokens == 0
    other = small_model()
    other.fingerprint = "other-weights"
    assert cache_for(other, tmp_path / "one").lookup("acme", tokens).tokens == 0


def test_the_byte_budget_evicts_the_least_recently_used(tmp_path) -> None:
    model = small_model()
    probe = cache_for(model, tmp_path / "probe")
    states = {}
    for n, start in ((120, 2), (120, 132), (120, 262)):
        tokens = list(range(start, start + n))
        state = model.new_state()
        prefill(model, state, tokens)
        state.commit()
        states[start] = (tokens, state)
    probe.put("acme", *states[2])
    one = probe.nbytes
    cache = cache_for(model, tmp_path / "budget", budget=2 * one + one // 2)
    cache.put("acme", *states[2])
    cache.put("globex", *states[132])
    assert cache.lookup("acme", states[2][0] + [1]).tokens == 120  # now the most recently used
    cache.put("acme", *states[262])
    assert len(cache) == 2 and cache.nbytes <= cache.budget_bytes
    assert cache.lookup("globex", states[132][0] + [1]).tokens == 0  # evicted
    assert cache.lookup("acme", states[2][0] + [1]).tokens == 120
    assert cache.tenant_bytes("acme") == cache.nbytes and cache.tenant_bytes("globex") == 0
