"""The engine's streaming contract: any chunking gives the same logits, one pass can mix sequences, and the state can
be truncated inside its uncommitted tail, snapshotted and restored without changing what comes next."""

from __future__ import annotations

import pytest
import torch
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import OFFICIAL, REFERENCE


def build(numerics=REFERENCE, quantized=True, seed=0) -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=quantized, numerics=numerics)
    model.load_state_dict(random_state_dict(model, seed), assign=True, strict=True)
    return model


@pytest.fixture(scope="module")
def model() -> DeepseekV4:
    return build()


def rel_err(ours: torch.Tensor, full: torch.Tensor) -> float:
    return ((ours - full).norm(dim=-1) / full.norm(dim=-1)).max().item()


def run_chunks(model: DeepseekV4, ids: torch.Tensor, sizes: list[int], commit: bool = True) -> torch.Tensor:
    state, outs, start = model.new_state(), [], 0
    for size in sizes:
        outs.append(model(ForwardBatch.single(ids[start : start + size], state, logits="all")).logits)
        start += size
        if commit:
            state.commit()
    assert start == ids.shape[0] and state.num_tokens == start
    return torch.cat(outs)


def test_any_chunking_gives_the_same_logits(model: DeepseekV4) -> None:
    ids = torch.randint(0, SMALL.vocab_size, (70,))
    full = run_chunks(model, ids, [70])
    assert rel_err(run_chunks(model, ids, [7, 1, 20, 1, 16, 25]), full) <= 1e-4
    assert rel_err(run_chunks(model, ids, [1] * 70), full) <= 1e-4
    assert rel_err(run_chunks(model, ids, [33, 37], commit=False), full) <= 1e-4


def test_mtp_state_is_chunking_invariant(model: DeepseekV4) -> None:
    ids = torch.randint(0, SMALL.vocab_size, (41,))
    drafts = []
    for sizes in ([40, 1], [3, 16, 1, 20, 1], [1] * 41):
        state, start = model.new_state(), 0
        for size in sizes:
            out = model(ForwardBatch.single(ids[start : start + size], state, draft_logits=True))
            start += size
            state.commit()
        assert state.mtp_pairs == 40 and state.layers[-1].window.end == 40
        drafts.append(out.mtp_logits)
    assert rel_err(drafts[1], drafts[0]) <= 1e-4 and rel_err(drafts[2], drafts[0]) <= 1e-4


def test_mtp_catches_up_lazily_to_the_same_drafts(model: DeepseekV4) -> None:
    """Drafts asked for only at the end (the MTP layer catches up over its last window) equal drafts asked for at
    every step, also after a truncation below the catch-up point."""
    ids = torch.randint(0, SMALL.vocab_size, (60,))
    eager, lazy = model.new_state(), model.new_state()
    for start in range(0, 59):
        out = model(ForwardBatch.single(ids[start : start + 1], eager, draft_logits=True))
    model(ForwardBatch.single(ids[:50], lazy))
    lazy.commit()
    drafted = model(ForwardBatch.single(ids[50:59], lazy, draft_logits=True))
    assert drafted.mtp_segments == [0] and lazy.mtp_pairs == eager.mtp_pairs == 58
    assert rel_err(drafted.mtp_logits, out.mtp_logits) <= 1e-5
    lazy.truncate(52)
    again = model(ForwardBatch.single(ids[52:59], lazy, draft_logits=True))
    assert rel_err(again.mtp_logits, out.mtp_logits) <= 1e-5


def test_one_pass_mixes_prefills_and_decodes(model: DeepseekV4) -> None:
    prompts = [torch.randint(0, SMALL.vocab_size, (n,)) for n in (13, 21, 5)]
    separate = []
    states = [model.new_state() for _ in prompts]
    # Sequence 1 already holds 20 tokens and decodes its 21st; sequence 2 holds 2 and prefills 3 more.
    model(ForwardBatch.single(prompts[1][:20], states[1]))
    states[1].commit()
    model(ForwardBatch.single(prompts[2][:2], states[2]))
    states[2].commit()
    snapshots = [s.snapshot() for s in states]
    chunks = [prompts[0], prompts[1][20:], prompts[2][2:]]
    for state, chunk in zip(states, chunks):
        separate.append(model(ForwardBatch.single(chunk, state, logits="all")).logits)
    for state, snap in zip(states, snapshots):
        state.restore(snap)
    batch = ForwardBatch(torch.cat(chunks), [len(c) for c in chunks], states, logits="all")
    mixed = model(batch).logits
    assert rel_err(mixed, torch.cat(separate)) <= 1e-5
    assert [s.num_tokens for s in states] == [13, 21, 5]


def test_truncate_inside_the_tail_then_reextend(model: DeepseekV4) -> None:
    ids = torch.randint(0, SMALL.vocab_size, (40,))
    state = model.new_state()
    model(ForwardBatch.single(ids[:21], state))
    state.commit()
    original = model(ForwardBatch.single(ids[21:], state, logits="all")).logits
    state.truncate(26)  # keep 21..25, forget 26..39 (crosses CSA groups and an HCA group boundary at 32)
    assert state.num_tokens == 26 and state.layers[2].entries.count == 1
    again = model(ForwardBatch.single(ids[26:], state, logits="all")).logits
    assert rel_err(again, original[5:]) <= 1e-5
    with pytest.raises(ValueError, match="uncommitted tail"):
        state.truncate(20)


def test_snapshot_restore_continues_identically(model: DeepseekV4) -> None:
    ids = torch.randint(0, SMALL.vocab_size, (50,))
    state = model.new_state()
    model(ForwardBatch.single(ids[:30], state))
    state.commit()
    snap, held = state.snapshot(), state.nbytes()
    first = model(ForwardBatch.single(ids[30:], state, logits="all")).logits
    fresh = model.new_state()
    fresh.restore(snap)
    assert fresh.nbytes() == held and fresh.num_tokens == 30
    second = model(ForwardBatch.single(ids[30:], fresh, logits="all")).logits
    assert torch.equal(first, second)


def test_bad_token_ids_fail_before_touching_the_state(model: DeepseekV4) -> None:
    state = model.new_state()
    model(ForwardBatch.single([1, 2, 3], state))
    held = state.nbytes()
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(ForwardBatch.single([4, SMALL.vocab_size], state))
    assert state.num_tokens == 3 and state.nbytes() == held


def test_byte_accounting_is_exact(model: DeepseekV4) -> None:
    n, state = 45, model.new_state()
    model(ForwardBatch.single(torch.randint(0, SMALL.vocab_size, (n,)), state))
    state.commit()
    w, d, c_idx, page = SMALL.window_size, SMALL.head_dim, SMALL.index_head_dim, 64
    kv_row, idx_row = 4 * d, 4 * c_idx
    window = 4 * (w - 1) * kv_row  # each main layer keeps the last W-1 rows; MTP holds none until drafts are asked
    csa_pages = 2 * (page * kv_row + page * idx_row)  # 11 entries each: one partial page of KV and of index keys
    hca_pages = page * kv_row  # 2 entries
    # fp32 rows of (kv, score): CSA keeps its previous group and the pending one (rows 40..44) at 2c features for
    # the main and the indexer compressor; HCA keeps its pending group (rows 32..44) at c features.
    csa_tail = 2 * 5 * (2 * 2 * d + 2 * 2 * c_idx) * 4
    hca_tail = (n - 32) * 2 * d * 4
    got = state.nbytes()
    assert got["window"] == window
    assert got["kv_pages"] + got["index_pages"] == csa_pages + hca_pages
    assert got["compressor_tail"] == csa_tail + hca_tail
    assert got["mtp_inputs"] == (w + 1) * (SMALL.hc_mult * SMALL.dim * 4 + 8)  # last W+1 hidden rows and tokens
    assert got["total"] == sum(v for k, v in got.items() if k != "total")


def test_official_numerics_store_the_official_formats() -> None:
    model = build(OFFICIAL)
    state = model.new_state()
    ids = torch.randint(0, SMALL.vocab_size, (20,))
    out = model(ForwardBatch.single(ids, state, logits="all")).logits
    assert torch.isfinite(out).all()
    csa = state.layers[1]
    assert csa.entries.view().dtype == torch.uint8 and csa.entries.view().shape == (5, 64 + 128 + 1 + 7)
    assert csa.index_keys.view().shape == (5, 32 + 2)  # FP4 codes + ue8m0 scales
    # The stored window rows decode to values whose nope dims are FP8-representable with power-of-two block scales.
    rows = model.layout.decode_kv(csa.window.rows(12, 20))
    assert torch.equal(model.layout.decode_kv(model.layout.encode_kv(rows)), rows)


def test_a_draft_for_a_sampled_token_equals_the_draft_after_feeding_it(model: DeepseekV4) -> None:
    """`draft(state, [t])` before t is fed gives the drafts a pass feeding t would give, and later passes go on from
    the pair it added; a truncation drops it."""
    ids = torch.randint(0, SMALL.vocab_size, (30,))
    ahead, fed = model.new_state(), model.new_state()
    model(ForwardBatch.single(ids[:20], ahead))
    drafted = model.draft([ahead], [int(ids[20])])
    assert ahead.mtp_pairs == 20 and ahead.num_tokens == 20
    expected = model(ForwardBatch.single(ids[:21], fed, draft_logits=True)).mtp_logits
    assert rel_err(drafted, expected) <= 1e-5
    assert model(ForwardBatch(ids[20:22], [2], [ahead], last_rows=[2])).logits.shape[0] == 2
    again = model.draft([ahead], [int(ids[22])])
    assert rel_err(again, model(ForwardBatch.single(ids[21:23], fed, draft_logits=True)).mtp_logits) <= 1e-5
    ahead.truncate(21)
    assert ahead.mtp_pairs == 20
