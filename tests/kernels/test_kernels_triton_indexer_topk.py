"""kernels.triton.indexer_topk vs its torch twin: the same ids in the same order, on integer-grid data where every
score is exact in float32 on both sides (FP4-exact keys, exact ties from repeated key rows, bf16 rounding that merges
scores), for stored FP4, float32 and bf16 keys, bf16 and float32 queries, both score dtypes, a running merge over
several key blocks and the empty / invisible edge cases. Without a GPU it runs on the Triton CPU interpreter."""

from __future__ import annotations

import pytest
import torch

import kernels.triton.indexer_topk as triton_module
from kernels.ref.formats import E2M1_VALUES
from kernels.ref.indexer_topk import indexer_topk as twin
from kernels.ref.kv_codec import decode_index_keys, encode_index_keys

E2M1 = torch.tensor(E2M1_VALUES)
SCORE_DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _e2m1_grid(rows: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """[rows, dim] e2m1 values times 2^-1, 2^0 or 2^1 per 32-dim block: exact in FP4 and in bf16."""
    codes = torch.randint(0, 16, (rows, dim), generator=gen)
    powers = 2.0 ** torch.randint(-1, 2, (rows, dim // 32, 1), generator=gen).float()
    return (E2M1[codes].view(rows, dim // 32, 32) * powers).flatten(1)


def _inputs(t: int, heads: int, dim: int, n: int, q_kind: str, distinct: int | None,
            gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Queries, head weights (some negative), float keys (repeats of `distinct` rows when given: many exact ties) and
    visible counts of 0, < N, N and > N."""
    keys = _e2m1_grid(distinct or n, dim, gen)
    if distinct:
        keys = keys[torch.randint(0, distinct, (n,), generator=gen)]
    if q_kind == "fp4":  # bf16 queries: one bf16 piece per dot
        q = _e2m1_grid(t * heads, dim, gen).view(t, heads, dim).bfloat16()
    else:  # float32 integers up to 300, often not exact in bf16: the three-piece split matters
        q = torch.randint(-300, 301, (t, heads, dim), generator=gen).float()
    weights = torch.tensor([-1.0, 0.5, 1.0, 2.0])[torch.randint(0, 4, (t, heads), generator=gen)]
    visible = torch.tensor([n, 0, n // 2, 1, n - 1, n + 3, 2 * n // 3, 3, n] * (t // 9 + 1))[:t].clamp(min=0)
    # every partial sum is a multiple of 2^-5 below 2^19, so exact in float32 in any order
    bound = torch.einsum("th,thc,nc->tn", weights.abs().double(), q.abs().double(), keys.abs().double())
    assert float(bound.max()) < 2.0**19
    return q, weights, keys, visible


def _key_form(keys: torch.Tensor, form: str) -> torch.Tensor:
    if form == "fp4":
        stored = encode_index_keys(keys)
        assert torch.equal(decode_index_keys(stored, keys.shape[1]), keys)
        return stored
    return keys.to(getattr(torch, form))


def _both(device: str, q, weights, keys, visible, topk: int, score_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    args = (q.to(device), weights.to(device), keys.to(device), visible.to(device))
    got = triton_module.indexer_topk(*args, topk, score_dtype)
    expected = twin(*args, topk, score_dtype)
    assert got.dtype == torch.long and got.shape == expected.shape
    return got.cpu(), expected.cpu()


CASES = [  # t, heads, dim, n, topk, q_kind, distinct
    (1, 4, 32, 1, 4, "fp4", None),
    (3, 8, 64, 50, 7, "integer", 3),
    (9, 4, 32, 200, 16, "fp4", 3),
    (3, 8, 64, 200, 64, "fp4", None),
    (9, 8, 32, 50, 50, "integer", None),
    (1, 8, 64, 200, 300, "integer", 3),
    (20, 4, 32, 100, 12, "fp4", 3),  # more than 16 queries: the prefill tiles
]


@pytest.mark.parametrize("score_dtype", SCORE_DTYPES)
@pytest.mark.parametrize("key_form", ["fp4", "float32", "bfloat16"])
@pytest.mark.parametrize(("t", "heads", "dim", "n", "topk", "q_kind", "distinct"), CASES)
def test_matches_twin(device: str, t: int, heads: int, dim: int, n: int, topk: int, q_kind: str,
                      distinct: int | None, key_form: str, score_dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(t * 1000 + n + topk)
    q, weights, keys, visible = _inputs(t, heads, dim, n, q_kind, distinct, gen)
    got, expected = _both(device, q, weights, _key_form(keys, key_form), visible, topk, score_dtype)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("key_form", ["fp4", "float32"])
@pytest.mark.parametrize("topk", [5, 40])
def test_running_merge_over_key_blocks(monkeypatch: pytest.MonkeyPatch, device: str, topk: int,
                                       key_form: str) -> None:
    # 16-key blocks (under one 128-key tile) over 200 keys; k = 40 outgrows the first block
    monkeypatch.setattr(triton_module, "KEY_BLOCK", 16)
    monkeypatch.setattr(triton_module, "SCORES_PER_PASS", 0)
    gen = torch.Generator().manual_seed(topk)
    q, weights, keys, visible = _inputs(9, 4, 32, 200, "fp4", 3, gen)
    visible = visible.clamp(max=120)  # the key blocks past 120 are invisible to every query: their dots are skipped
    got, expected = _both(device, q, weights, _key_form(keys, key_form), visible, topk, torch.bfloat16)
    assert torch.equal(got, expected)


def test_bf16_rounding_ties_to_even_and_lower_id(device: str) -> None:
    # scores 256 (x4), 257 (x4: bf16 halfway, rounds to even 256), 100, 300, 259 (rounds to even 260)
    keys = torch.zeros(11, 32)
    keys[:, 0] = torch.tensor([256.0] * 4 + [257.0] * 4 + [100.0, 300.0, 259.0])
    q, weights, visible = torch.zeros(2, 1, 32), torch.ones(2, 1), torch.tensor([11, 8])
    q[..., 0] = 1.0
    got, expected = _both(device, q, weights, keys, visible, 5, torch.bfloat16)
    assert got.tolist() == expected.tolist() == [[9, 10, 0, 1, 2], [0, 1, 2, 3, 4]]
    got, expected = _both(device, q, weights, keys, visible, 5, torch.float32)
    assert got.tolist() == expected.tolist() == [[9, 10, 4, 5, 6], [4, 5, 6, 7, 0]]


@pytest.mark.parametrize("score_dtype", SCORE_DTYPES)
def test_zero_scores_from_negative_weights_rank_by_id(device: str, score_dtype: torch.dtype) -> None:
    # q . k <= 0 everywhere: every score is w * 0, -0.0 where w < 0, and all must tie
    gen = torch.Generator().manual_seed(5)
    keys = _e2m1_grid(20, 32, gen).abs()
    q = -_e2m1_grid(8, 32, gen).abs().view(2, 4, 32)
    weights = torch.tensor([[-1.0, -0.5, -2.0, -1.0], [1.0, -1.0, 0.5, -2.0]])
    got, expected = _both(device, q, weights, _key_form(keys, "fp4"), torch.tensor([20, 7]), 10, score_dtype)
    assert got.tolist() == expected.tolist() == [list(range(10)), list(range(7)) + [-1] * 3]


@pytest.mark.parametrize("key_form", ["fp4", "bfloat16", "float32"])
def test_float32_queries_keep_all_24_bits(device: str, key_form: str) -> None:
    # one-hot keys score the query's own values, which differ only in their last 8 of 24 bits: all three bf16 pieces
    # of a float32 query count
    gen = torch.Generator().manual_seed(7)
    low_bits = torch.randperm(255, generator=gen)[:32] + 1
    q = (1 + 2.0**-8 + 2.0**-12 + low_bits * 2.0**-23).float().view(1, 1, 32)
    keys = _key_form(torch.eye(32), key_form)
    got, expected = _both(device, q, torch.ones(1, 1), keys, torch.tensor([32]), 8, torch.float32)
    assert got.tolist() == expected.tolist() == [low_bits.argsort(descending=True)[:8].tolist()]


def test_edge_cases(device: str) -> None:
    gen = torch.Generator().manual_seed(0)
    q, weights, keys, _ = _inputs(3, 4, 32, 6, "fp4", None, gen)
    stored = encode_index_keys(keys)
    for visible, topk in (([0, 0, 0], 4), ([6, 2, 0], 10)):  # nothing visible; k > N
        got, expected = _both(device, q, weights, stored, torch.tensor(visible), topk, torch.bfloat16)
        assert torch.equal(got, expected)
    assert _both(device, q, weights, stored, torch.tensor([0, 0, 0]), 4, torch.bfloat16)[0].tolist() == [[-1] * 4] * 3
    got, _ = _both(device, q, weights, stored, torch.tensor([6, 2, 0]), 10, torch.bfloat16)
    assert got.shape == (3, 6) and got[1].tolist()[2:] == [-1] * 4
    got, expected = _both(device, q, weights, stored[:0], torch.tensor([0, 0, 0]), 5, torch.float32)  # N == 0
    assert got.shape == expected.shape == (3, 0)
    got, expected = _both(device, q[:0], weights[:0], stored, torch.zeros(0, dtype=torch.long), 5, torch.float32)
    assert got.shape == expected.shape == (0, 5)


def test_unsupported_head_dim_falls_back_to_the_twin(device: str) -> None:
    gen = torch.Generator().manual_seed(1)
    q, keys = torch.randint(-3, 4, (2, 4, 16), generator=gen).float(), torch.randint(-3, 4, (9, 16), generator=gen)
    got, expected = _both(device, q, torch.ones(2, 4), keys.float(), torch.tensor([9, 4]), 3, torch.bfloat16)
    assert torch.equal(got, expected)
