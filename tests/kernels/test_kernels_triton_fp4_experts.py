"""kernels.triton.fp4_experts: the grouped FP4 expert GEMM vs its torch twin (CPU interpreter without a GPU)."""

from __future__ import annotations

import pytest
import torch

from kernels.ref import fp4_experts as ref
from kernels.ref.formats import quantize_fp4
from kernels.triton import fp4_experts as tri


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _experts(e: int, d: int, i: int, device: str) -> tuple[torch.Tensor, ...]:
    """Packed FP4 w13 [E, 2I, D/2] / w2 [E, D, I/2] with ue8m0 scales, sized so gate/up reach the limit of 10."""

    def pack(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        packed, scale = quantize_fp4(torch.randn(e * rows, cols) * (10 / cols**0.5))
        return packed.view(e, rows, cols // 2).to(device), scale.view(e, rows, cols // 32).to(device)

    return (*pack(2 * i, d), *pack(d, i))


def _check(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == torch.float32 and got.shape == expected.shape
    if expected.numel() == 0:
        return
    # the order of float32 accumulation differs from the twin's matmul; nothing else may
    bound = 1e-5 * max(float(expected.abs().max()), 1e-30)
    assert float((got - expected).abs().max()) <= bound


@pytest.mark.parametrize(("t", "e", "k", "d", "i", "limit", "dtype"), [
    (0, 4, 2, 64, 32, 10.0, torch.float32),
    (1, 4, 1, 64, 32, 0.0, torch.bfloat16),
    (1, 8, 3, 128, 96, 10.0, torch.float32),
    (5, 6, 2, 64, 96, 0.0, torch.float32),
    (5, 5, 3, 96, 64, 10.0, torch.bfloat16),
    (13, 8, 1, 64, 160, 10.0, torch.float32),  # I > 128: a second hidden quantization block, a short tail
    (13, 4, 3, 160, 32, 0.0, torch.bfloat16),  # D > 128: the x quantization block tail
    (13, 7, 2, 64, 96, 10.0, torch.bfloat16),
])
@pytest.mark.parametrize("quantize", [False, True])
def test_matches_twin(
    t: int, e: int, k: int, d: int, i: int, limit: float, dtype: torch.dtype, quantize: bool, device: str,
) -> None:
    w13, w13_s, w2, w2_s = _experts(e, d, i, device)
    x = torch.randn(t, d, device=device).to(dtype)
    # randint routing: duplicate experts within a token and experts without tokens both occur
    ids = torch.randint(0, e, (t, k), device=device)
    weights = torch.rand(t, k, device=device) + 0.1
    got = tri.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, limit, quantize)
    _check(got, ref.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, limit, quantize))
    assert got.shape == (t, d)


def test_exact_routing_one_expert_per_token(device: str) -> None:
    e, d, i, t = 8, 64, 96, 6
    w13, w13_s, w2, w2_s = _experts(e, d, i, device)
    x = torch.randn(t, d, device=device)
    ids = torch.randperm(e, device=device)[:t, None]
    weights = torch.ones(t, 1, device=device)
    got = tri.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 10.0, True)
    _check(got, ref.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 10.0, True))


@pytest.mark.parametrize("block_m", [16, 64])
def test_prefill_shaped_many_tiles_per_expert(block_m: int, device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # ~30 rows per expert: several BLOCK_M = 16 tiles per expert, partial tiles at every size
    monkeypatch.setattr(tri, "_block_m", lambda rows, experts: block_m)
    e, d, i, t, k = 4, 64, 96, 40, 3
    w13, w13_s, w2, w2_s = _experts(e, d, i, device)
    x = torch.randn(t, d, device=device)
    ids = torch.randint(0, e, (t, k), device=device)
    weights = torch.rand(t, k, device=device)
    got = tri.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 10.0, True)
    _check(got, ref.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 10.0, True))


def test_padded_tile_list_with_empty_programs(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the GPU launch: programs for every tile of the upper bound, the ones past the real tiles without rows
    monkeypatch.setattr(tri, "_launch_tiles", lambda tile_rows: tile_rows.numel())
    e, d, i, t, k = 8, 64, 32, 3, 2
    w13, w13_s, w2, w2_s = _experts(e, d, i, device)
    x = torch.randn(t, d, device=device)
    ids = torch.tensor([[5, 1], [1, 5], [2, 1]], device=device)  # 3 tiles launched as 1 + min(8, 6) = 7
    weights = torch.rand(t, k, device=device)
    got = tri.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 10.0, True)
    _check(got, ref.fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 10.0, True))


@pytest.mark.parametrize("block_m", [16, 64])
def test_expert_tiles_cover_each_row_once(block_m: int) -> None:
    e = 9
    counts = torch.tensor([0, 70, 1, 0, 16, 17, 0, 3, 0])  # empty experts first, last and in between
    ids = torch.repeat_interleave(torch.arange(e), counts)[torch.randperm(int(counts.sum()))]
    order, expert, start, rows = tri._expert_tiles(ids, e, block_m)
    assert torch.equal(ids[order], ids.sort().values)
    seen = torch.zeros(ids.numel(), dtype=torch.long)
    for tile in range(expert.numel()):
        n = int(rows[tile])
        assert 0 <= n <= block_m
        if n:
            span = slice(int(start[tile]), int(start[tile]) + n)
            assert bool((ids[order[span]] == int(expert[tile])).all())
            seen[span] += 1
    assert bool((seen == 1).all())


def test_dense_weights_use_the_twin(device: str) -> None:
    w13, w2 = torch.randn(3, 64, 32, device=device), torch.randn(3, 32, 32, device=device)
    x, ids, weights = torch.randn(4, 32, device=device), torch.randint(0, 3, (4, 2), device=device), torch.rand(4, 2)
    weights = weights.to(device)
    got = tri.fp4_expert_ffn(x, ids, weights, w13, None, w2, None, 10.0, True)
    assert torch.equal(got, ref.fp4_expert_ffn(x, ids, weights, w13, None, w2, None, 10.0, True))
