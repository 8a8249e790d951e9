"""kernels.cpu attention-side ops vs their torch twins: indexer_topk over FP4 keys (exact picks and tie order on
integer data, one and several threads), sparse_attention, apply_rope, encode_kv / decode_kv and sinkhorn, on the
shapes the C path takes (the twin is made to raise there), plus shapes that fall back to the twin's exact result."""

from __future__ import annotations

import pytest
import torch
from cpu_twins import (
    E4M3_EDGES,
    assert_falls_back,
    assert_within_one_bf16_ulp,
    edge_block,
    force_thread_split,
    run_both,
    skip_when_disabled,
)
from small_config import SMALL

from kernels.cpu import indexer_topk as cpu_indexer_topk
from kernels.cpu import sparse_attention as cpu_sparse_attention
from kernels.cpu.parallel import split
from kernels.ref.formats import E2M1_VALUES, pow2_scale
from kernels.ref.kv_codec import decode_index_keys, encode_index_keys, encode_kv, kv_entry_bytes
from model_worker.model.rope import inv_freq

pytestmark = skip_when_disabled

QUERIES = [t for t in (1, 3, 8) if t <= cpu_indexer_topk.MAX_QUERIES]
E2M1 = torch.tensor(E2M1_VALUES)


def _e2m1_blocks(rows: int, dim: int, low: int, high: int, gen: torch.Generator) -> torch.Tensor:
    """[rows, dim] e2m1 values times a power of two 2^[low, high) per 32-block: FP4-exact."""
    codes = torch.randint(0, 16, (rows, dim), generator=gen)
    powers = 2.0 ** torch.randint(low, high, (rows, dim // 32, 1), generator=gen).float()
    return (E2M1[codes].view(rows, dim // 32, 32) * powers).flatten(1)


def _int8_path(q: torch.Tensor) -> bool:
    """Whether every value of each query vector is an integer in [-128, 127] times half its smallest block's FP4
    scale: the C kernel's exact int8 scoring applies (otherwise it scores in float)."""
    blocks = q.float().unflatten(-1, (-1, 32))
    scales = pow2_scale(blocks.abs().amax(-1, keepdim=True).clamp_min(6 * 2.0**-126), 6.0)
    steps = scales.amin(dim=-2, keepdim=True) / 2
    units = blocks / steps
    return bool((units == units.round()).all() and (units >= -128).all() and (units <= 127).all())


def _index_inputs(
    t: int, heads: int, n: int, q_kind: str, distinct: int | None, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Integer-grid data (every score exact in float32): FP4-exact keys (repeats of `distinct` rows when given, so
    scores tie throughout the scan), queries that take the int8 path ("fp4") or the float path ("integer", with one
    tiny block), small power-of-two head weights, visible counts of 0, < N, N and > N."""
    dim = 64
    keys = _e2m1_blocks(distinct or n, dim, -1, 2, gen)
    if distinct:
        keys = keys[torch.randint(0, distinct, (n,), generator=gen)]
    stored = encode_index_keys(keys)
    assert torch.equal(decode_index_keys(stored, dim), keys)
    if q_kind == "fp4":
        q = _e2m1_blocks(t * heads, dim, 0, 2, gen).view(t, heads, dim)
    else:
        q = torch.randint(-15, 16, (t, heads, dim), generator=gen).float()
        q[..., 0] = 15.0
        q[..., -32:] = torch.randint(-1, 2, (t, heads, 32), generator=gen) / 16  # a tiny block: step too fine
    assert _int8_path(q) == (q_kind == "fp4")
    weights = torch.tensor([-1.0, 0.5, 1.0, 2.0])[torch.randint(0, 4, (t, heads), generator=gen)]
    visible = torch.tensor([n, 0, n // 2, 1, n - 1, n + 3, 2 * n // 3, 3][:t]).clamp(min=0)
    return q, weights, stored, visible


@pytest.mark.parametrize("distinct", [None, 3])
@pytest.mark.parametrize("q_kind", ["fp4", "integer"])
@pytest.mark.parametrize("score_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("n", "topk"), [(1, 4), (50, 7), (50, 64)])
@pytest.mark.parametrize("heads", [8, 16])
@pytest.mark.parametrize("t", QUERIES)
def test_indexer_topk_exact(
    monkeypatch: pytest.MonkeyPatch,
    t: int,
    heads: int,
    n: int,
    topk: int,
    score_dtype: torch.dtype,
    q_kind: str,
    distinct: int | None,
) -> None:
    gen = torch.Generator().manual_seed(t * heads + n)
    q, weights, stored, visible = _index_inputs(t, heads, n, q_kind, distinct, gen)
    got, expected = run_both(
        monkeypatch, "indexer_topk", "indexer_topk", q, weights, stored, visible, topk, score_dtype
    )
    assert got.shape == (t, min(topk, n)) and got.dtype == torch.long
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("t", "heads", "score_dtype", "q_kind", "distinct"),
    [
        (QUERIES[-1], 16, torch.bfloat16, "fp4", None),
        (QUERIES[-1], 16, torch.float32, "integer", 40),
        (1, 8, torch.float32, "fp4", None),
        (3, 8, torch.bfloat16, "integer", 300),
    ],
)
def test_indexer_topk_split_across_threads(
    monkeypatch: pytest.MonkeyPatch, t: int, heads: int, score_dtype: torch.dtype, q_kind: str, distinct: int | None
) -> None:
    n = 70000
    force_thread_split(monkeypatch)
    assert len(split(n, cpu_indexer_topk.KEYS_PER_THREAD)) > 1
    gen = torch.Generator().manual_seed(t + heads)
    q, weights, stored, visible = _index_inputs(t, heads, n, q_kind, distinct, gen)
    got, expected = run_both(monkeypatch, "indexer_topk", "indexer_topk", q, weights, stored, visible, 512, score_dtype)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("q_kind", ["fp4", "float"])
def test_indexer_topk_random_scores(monkeypatch: pytest.MonkeyPatch, q_kind: str) -> None:
    gen = torch.Generator().manual_seed(11)
    t, heads, dim, n, k = QUERIES[-1], 16, 128, 300, 20
    keys = encode_index_keys(torch.randn(n, dim, generator=gen))
    q = torch.randn(t, heads, dim, generator=gen)
    if q_kind == "fp4":
        q = _e2m1_blocks(t * heads, dim, -3, 0, gen).view(t, heads, dim)
    weights = torch.rand(t, heads, generator=gen) * 0.2
    visible = torch.tensor([n, 17, 0, n - 1, 200, 1, 40, 299][:t])
    got, expected = run_both(monkeypatch, "indexer_topk", "indexer_topk", q, weights, keys, visible, k, torch.float32)
    logits = torch.einsum("thc,nc->thn", q.double(), decode_index_keys(keys, dim).double()).relu()
    scores = torch.einsum("thn,th->tn", logits, weights.double())
    for row in range(t):
        assert (got[row] < 0).tolist() == (expected[row] < 0).tolist()
        picked, twin_picked = got[row][got[row] >= 0], expected[row][expected[row] >= 0]
        assert bool((picked < visible[row]).all())
        torch.testing.assert_close(scores[row, picked], scores[row, twin_picked], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["too_many_queries", "heads_not_multiple_of_8", "float_keys", "no_keys"])
def test_indexer_topk_falls_back(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    t = cpu_indexer_topk.MAX_QUERIES + 1 if case == "too_many_queries" else 2
    heads = 4 if case == "heads_not_multiple_of_8" else 8
    n = 0 if case == "no_keys" else 40
    q, weights, stored, _ = _index_inputs(t, heads, n, "fp4", None, torch.Generator().manual_seed(5))
    keys = decode_index_keys(stored, 64) if case == "float_keys" else stored
    visible = torch.full((t,), n // 2)
    assert_falls_back(monkeypatch, "indexer_topk", "indexer_topk", q, weights, keys, visible, 6, torch.bfloat16)


def _attention_inputs(t: int, q_dtype: torch.dtype, empty_last: bool, gen: torch.Generator) -> tuple[object, ...]:
    heads, dim, n_window, n_comp = 4, 128, 24, 12
    q = torch.randn(t, heads, dim, generator=gen).to(q_dtype)
    window_kv = torch.randn(n_window, dim, generator=gen).to(q_dtype)
    comp_kv = torch.randn(n_comp, dim, generator=gen).to(q_dtype)
    window_idx = torch.randint(0, n_window, (t, 8), generator=gen)
    window_idx[torch.rand(t, 8, generator=gen) < 0.3] = -1
    comp_idx = torch.randint(0, n_comp, (t, 6), generator=gen)
    comp_idx[torch.rand(t, 6, generator=gen) < 0.3] = -1
    if empty_last:
        window_idx[-1], comp_idx[-1] = -1, -1
    sinks = torch.randn(heads, generator=gen)
    return q, window_kv, window_idx, comp_kv, comp_idx, sinks, dim**-0.5


@pytest.mark.parametrize("empty_last", [False, True])
@pytest.mark.parametrize("q_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [t for t in (1, 4, 8) if t <= cpu_sparse_attention.MAX_QUERIES])
def test_sparse_attention(monkeypatch: pytest.MonkeyPatch, t: int, q_dtype: torch.dtype, empty_last: bool) -> None:
    args = _attention_inputs(t, q_dtype, empty_last, torch.Generator().manual_seed(t))
    got, expected = run_both(monkeypatch, "sparse_attention", "sparse_attention", *args)
    assert got.shape == args[0].shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if empty_last:
        assert torch.equal(expected[-1], torch.zeros_like(expected[-1])) and torch.equal(got[-1], expected[-1])


@pytest.mark.parametrize("t", [t for t in (1, 5) if t <= cpu_sparse_attention.MAX_QUERIES])
def test_sparse_attention_over_stored_entries(monkeypatch: pytest.MonkeyPatch, t: int) -> None:
    # the window log and the pages in their stored form, decoded in the kernel; the window a strided view
    q, window_kv, window_idx, comp_kv, comp_idx, sinks, scale = _attention_inputs(
        t, torch.bfloat16, True, torch.Generator().manual_seed(10 + t))
    rope = 64
    window_log = torch.zeros(window_kv.shape[0] + 3, kv_entry_bytes(128, rope) + 8, dtype=torch.uint8)
    window_log[3:, : kv_entry_bytes(128, rope)] = encode_kv(window_kv, rope)
    window_view = window_log[3:, : kv_entry_bytes(128, rope)]
    args = (q, window_view, window_idx, encode_kv(comp_kv, rope), comp_idx, sinks, scale, rope)
    got, expected = run_both(monkeypatch, "sparse_attention", "sparse_attention", *args)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("t", "dim"), [(cpu_sparse_attention.MAX_QUERIES + 1, 128), (2, 8)])
def test_sparse_attention_falls_back(monkeypatch: pytest.MonkeyPatch, t: int, dim: int) -> None:
    q, window_kv, window_idx, comp_kv, comp_idx, sinks, _ = _attention_inputs(
        t, torch.float32, True, torch.Generator().manual_seed(t)
    )
    args = (q[..., :dim], window_kv[:, :dim], window_idx, comp_kv[:, :dim], comp_idx, sinks, dim**-0.5)
    assert_falls_back(monkeypatch, "sparse_attention", "sparse_attention", *args)


def _positions(t: int, gen: torch.Generator) -> torch.Tensor:
    return torch.cat((torch.tensor([0, 1_000_000, 999_999]), torch.randint(0, 1_000_001, (t,), generator=gen)))[:t]


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(6, 4, 128), (6, 128), (1, 64)])
def test_apply_rope(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], dtype: torch.dtype, inverse: bool, compressed: bool
) -> None:
    gen = torch.Generator().manual_seed(len(shape) + shape[-1])
    x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    positions, freqs = _positions(shape[0], gen), inv_freq(SMALL, compressed)
    got, expected = run_both(monkeypatch, "rope", "apply_rope", x, positions, freqs, inverse)
    assert got.dtype == dtype and got.shape == x.shape
    rope_dim = 2 * freqs.shape[0]
    assert torch.equal(got[..., :-rope_dim], x[..., :-rope_dim])
    if dtype == torch.bfloat16:
        assert_within_one_bf16_ulp(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["float64", "float64_freqs"])
def test_apply_rope_falls_back(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    gen = torch.Generator().manual_seed(3)
    t = 3
    x = torch.randn(t, 2, 128, generator=gen).to(torch.float64 if case == "float64" else torch.float32)
    freqs = inv_freq(SMALL, False).to(torch.float64 if case == "float64_freqs" else torch.float32)
    assert_falls_back(monkeypatch, "rope", "apply_rope", x, _positions(t, gen), freqs, False)


def _kv_rows(n: int, dim: int, rope_dim: int, gen: torch.Generator) -> torch.Tensor:
    """[n, dim]: rows of e4m3 tie blocks (and their negation), tiny, zero and large blocks, with bf16-tie rope dims,
    then random rows at assorted block scales."""
    nope, blocks = dim - rope_dim, (dim - rope_dim) // 64
    special = torch.zeros(4, dim)
    special[0, :nope] = torch.cat([edge_block(E4M3_EDGES, 64, 2.0 ** (3 * b - 6), gen) for b in range(blocks)])
    special[1, :nope] = -special[0, :nope].flip(0)
    kinds = (
        torch.randn(64, generator=gen) * 1e-6,
        torch.full((64,), -1e-12),
        torch.zeros(64),
        torch.randn(64, generator=gen) * 1e3,
    )
    special[2, :nope] = torch.cat([kinds[b % 4] for b in range(blocks)])
    rope_ties = torch.tensor([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 3e-39, 0.0])
    special[:3, nope:] = torch.cat((rope_ties, torch.randn(rope_dim - 5, generator=gen))).repeat(3, 1)
    rows = torch.randn(n, dim, generator=gen)
    rows[:, :nope] *= (
        2.0 ** torch.randint(-8, 8, (n, blocks, 1), generator=gen).float().repeat_interleave(64, 1)[..., 0]
    )
    return torch.cat((special, rows))[:n]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [0, 1, 130])
@pytest.mark.parametrize(("dim", "rope_dim"), [(128, 64), (512, 64)])
def test_kv_codec(monkeypatch: pytest.MonkeyPatch, dim: int, rope_dim: int, n: int, dtype: torch.dtype) -> None:
    x = _kv_rows(n, dim, rope_dim, torch.Generator().manual_seed(n + dim)).to(dtype)
    stored, expected = run_both(monkeypatch, "kv_codec", "encode_kv", x, rope_dim)
    assert stored.dtype == torch.uint8 and torch.equal(stored, expected)
    decoded, expected = run_both(monkeypatch, "kv_codec", "decode_kv", stored, dim, rope_dim)
    assert decoded.dtype == torch.float32 and torch.equal(decoded, expected)
    decoded, expected = run_both(monkeypatch, "kv_codec", "decode_kv", stored[::2], dim, rope_dim)
    assert decoded.shape == ((n + 1) // 2, dim) and torch.equal(decoded, expected)


def test_kv_codec_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _kv_rows(5, 128, 64, torch.Generator().manual_seed(1))
    assert_falls_back(monkeypatch, "kv_codec", "encode_kv", x.double(), 64)
    columns = run_both(monkeypatch, "kv_codec", "encode_kv", x, 64)[0].T.contiguous().T
    assert columns.stride(1) != 1
    assert_falls_back(monkeypatch, "kv_codec", "decode_kv", columns, 128, 64)


@pytest.mark.parametrize("eps", [1e-6, 0.01])
@pytest.mark.parametrize("iters", [1, 20])
@pytest.mark.parametrize("shape", [(1, 4, 4), (7, 4, 4), (2, 3, 4, 4)])
def test_sinkhorn(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], iters: int, eps: float) -> None:
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape) + shape[0])) * 3
    got, expected = run_both(monkeypatch, "sinkhorn", "sinkhorn", logits, iters, eps)
    assert got.shape == shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_sinkhorn_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_falls_back(monkeypatch, "sinkhorn", "sinkhorn", logits, 20, 1e-6)
