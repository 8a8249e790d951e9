"""The prefix cache's hot tier with the real engine (small configs, random weights): a hit gives the logits of a full
prefill at every new position; lookup finds the longest checkpoint the tokens extend and always leaves a token to
feed; tenants, weights and numerics never share; the byte budget evicts least recently used first."""

from __future__ import annotations

import dataclasses
import gc
import random
import threading
import time

import pytest
import torch
from sessions_testlib import small_model
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE
from model_worker.sessions import InvalidSessionRequest, SessionStore, admin, open_blobs
from model_worker.sessions.commits import CommitWriter
from model_worker.sessions.prefix_cache import HOT_SHARE, PrefixCache
from model_worker.state.pages import pools_for

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
    sequences = {}
    for first in range(HOT_SHARE + 1):  # each its own sequence (a different first token), 120 tokens
        tokens = [first + 2] + list(range(100, 219))
        state = model.new_state()
        prefill(model, state, tokens)
        state.commit()
        sequences[first] = (tokens, state)
    probe = cache_for(model, tmp_path / "probe")
    probe.put("acme", *sequences[0])
    one = probe.nbytes
    cache = cache_for(model, tmp_path, budget=HOT_SHARE * one)  # room for HOT_SHARE of them
    for first in range(HOT_SHARE):
        cache.put("globex" if first == 1 else "acme", *sequences[first])
    assert cache.lookup("acme", sequences[0][0] + [1]).tokens == 120  # the oldest, now the most recently used
    cache.put("acme", *sequences[HOT_SHARE])
    assert len(cache) == HOT_SHARE and cache.nbytes <= cache.budget_bytes
    assert cache.lookup("globex", sequences[1][0] + [1]).tokens == 0  # the least recently used went
    assert cache.lookup("acme", sequences[0][0] + [1]).tokens == 120
    assert cache.tenant_bytes("acme") == cache.nbytes and cache.tenant_bytes("globex") == 0
    too_large = cache_for(model, tmp_path / "small", budget=HOT_SHARE * one - 1)
    too_large.put("acme", *sequences[0])  # over its share of the budget: not kept hot
    assert len(too_large) == 0


def test_a_request_waits_for_another_computing_its_prefix_instead_of_computing_it_again(tmp_path) -> None:
    model = small_model()
    cache = cache_for(model, tmp_path, every=64)
    document = list(range(2, 302))
    first, computing = cache.acquire("acme", document + [7])
    assert first.tokens == 0 and computing is not None
    got = []
    waiter = threading.Thread(target=lambda: got.append(cache.acquire("acme", document + [8, 9], compute=False)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # the first request will leave the checkpoint at 256 (a multiple of 64 both share)
    other, _ = cache.acquire("globex", document + [8, 9], compute=False)
    assert other.tokens == 0  # another tenant never waits on acme's work
    state = model.new_state()
    prefill(model, state, document[:256])
    state.commit()
    cache.put("acme", document, state)
    waiter.join(10)
    assert got[0][0].tokens == 256
    cache.release(computing)
    late, _ = cache.acquire("acme", document + [5], compute=False, wait_s=0)
    assert late.tokens == 256


@pytest.fixture(params=["files", "redis"])
def store_url(request, tmp_path):
    """The cold tier on files, and on Redis (skipped without a server), each empty."""
    return str(tmp_path / "store") if request.param == "files" else request.getfixturevalue("redis_url")


def test_stored_checkpoints_serve_another_process_and_expire_with_their_record(store_url) -> None:
    model = small_model()
    store = SessionStore(open_blobs(store_url), model.fingerprint, model.layout)
    writer = CommitWriter(store)
    cache = PrefixCache(store, 1 << 30, every=64, writer=writer)
    tokens = list(range(2, 302))
    hit, computing = cache.acquire("acme", tokens)
    assert hit.tokens == 0
    state = model.new_state()
    for end in (128, 300):  # a mid-input checkpoint, then the end of the input
        prefill(model, state, tokens[state.num_tokens : end])
        state.commit()
        cache.put("acme", tokens, state, computing)
    cache.release(computing)
    writer.close()
    full = prefill(model, model.new_state(), tokens + [7, 8])

    # Another worker of the same store (nothing hot): the stored checkpoint, the same logits from there.
    fresh = PrefixCache(SessionStore(open_blobs(store_url), model.fingerprint, model.layout), 1 << 30, every=64,
                        writer=CommitWriter(store))
    stored, _ = fresh.acquire("acme", tokens + [7, 8], compute=False)
    assert stored.tokens == 300
    torch.testing.assert_close(prefill(model, stored.state, [7, 8]), full[300:], rtol=1e-4, atol=1e-4)
    assert fresh.lookup("acme", tokens[:200] + [9]).tokens == 128 and len(fresh) == 2  # each hit turned hot
    assert fresh.cold.find("globex", fresh.chain("globex", tokens + [7]), tokens + [7], 0, 300) is None
    assert admin.list_sessions(store, "acme") == []  # records are the cache's, not the tenant's sessions
    with pytest.raises(InvalidSessionRequest):
        store.create("acme", session_id="prefix.mine")

    # Unused past the TTL, the record goes, and collection takes its values; the marker goes at the next lookup.
    assert len(admin.expire(store, "acme", ttl_seconds=60, now=time.time() + 3600)) == 1
    assert admin.collect(store, "acme", grace_seconds=0) > 0
    later = PrefixCache(store, 1 << 30, every=64, writer=CommitWriter(store))
    assert later.lookup("acme", tokens + [7]).tokens == 0
    assert not [key for key in store.blobs.list("t/") if "/px/" in key]


def test_a_checkpoint_past_the_tenants_quota_is_not_stored_and_fails_nothing(tmp_path) -> None:
    model = small_model()
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout, tenant_quota_bytes=1000)
    writer = CommitWriter(store)
    cache = PrefixCache(store, 1 << 30, every=64, writer=writer)
    tokens = list(range(2, 202))
    _, computing = cache.acquire("acme", tokens)
    state = model.new_state()
    prefill(model, state, tokens)
    state.commit()
    cache.put("acme", tokens, state, computing)
    writer.close()
    assert cache.lookup("acme", tokens + [5]).tokens == 200  # hot still
    assert PrefixCache(store, 1 << 30, writer=CommitWriter(store)).lookup("acme", tokens + [5]).tokens == 0


def _page_bytes(state) -> tuple[int, int]:
    """(bytes of one page of each paged stream, bytes of every page the state holds)."""
    streams = [paged for layer in state.layers for paged in layer.paged()]
    return sum(paged.pool.page_bytes for paged in streams), sum(paged.nbytes() for paged in streams)


def test_concurrent_hits_hold_the_prefix_pages_once(tmp_path) -> None:
    model = small_model()
    pools = pools_for(model.layout, "cpu")
    tokens = [2 + i % 509 for i in range(1100)]
    state = model.new_state()
    prefill(model, state, tokens[:1030])
    state.commit()
    cache = cache_for(model, tmp_path)
    cache.put("acme", tokens, state)
    one_page_each, prefix_pages = _page_bytes(state)
    del state
    gc.collect()
    gc.disable()  # no unrelated state may give pages back while the pool is measured
    try:
        before = pools.nbytes_in_use()
        hits = [cache.lookup("acme", tokens) for _ in range(8)]
        assert [hit.tokens for hit in hits] == [1030] * 8
        assert pools.nbytes_in_use() == before  # adopting a checkpoint copies no page
        # the scheduler's admission counts them once, not once per request
        assert all(hit.state.shared_page_bytes() == prefix_pages for hit in hits)
        for hit in hits:  # each goes on: its shared partial pages are copied before it writes, nothing else
            prefill(model, hit.state, tokens[1030:1040])
        grown = pools.nbytes_in_use() - before
    finally:
        gc.enable()
    # per stream and hit, one page of its own (the shared partial page copied, or a new one), against a copy of
    # every page of the prefix each without sharing
    assert grown <= 8 * one_page_each < 8 * prefix_pages
    for hit in hits:  # the full pages are the same pages
        for mine, first in zip(hit.state.layers, hits[0].state.layers, strict=True):
            for paged, other in zip(mine.paged(), first.paged(), strict=True):
                full = 1030 // mine.ratio // paged.page_size
                assert paged.pages[:full] == other.pages[:full]


def test_checkpoints_of_one_conversation_count_their_common_pages_once(tmp_path) -> None:
    model = small_model()
    tokens = [2 + i % 509 for i in range(1200)]
    state = model.new_state()
    alone = []
    cache = cache_for(model, tmp_path)
    for end in (600, 1200):
        prefill(model, state, tokens[state.num_tokens : end])
        state.commit()
        probe = cache_for(model, tmp_path / f"probe{end}")
        probe.put("acme", tokens, state)
        alone.append(probe.nbytes)
        cache.put("acme", tokens, state)
    assert len(cache) == 2
    assert alone[1] < cache.nbytes < sum(alone)  # the first checkpoint's full pages counted once
    assert cache.tenant_bytes("acme") == cache.nbytes
