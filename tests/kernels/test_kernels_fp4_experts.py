"""kernels.ref.fp4_experts: routed SwiGLU experts vs a naive per-token, per-slot loop over dequantized weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_oracles import naive_dequant_fp4, naive_dequant_fp8, random_e4m3

from kernels import fp4_expert_ffn, fp8_round_trip


def _fp4_experts(e: int, d: int, i: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Packed FP4 w13 [E, 2I, D/2] / w2 [E, D, I/2] with ue8m0 scales per 32 (kept small so values stay O(1))."""
    w13 = torch.randint(0, 256, (e, 2 * i, d // 2), generator=gen, dtype=torch.uint8)
    w13_s = torch.randint(121, 125, (e, 2 * i, d // 32), generator=gen, dtype=torch.uint8)
    w2 = torch.randint(0, 256, (e, d, i // 2), generator=gen, dtype=torch.uint8)
    w2_s = torch.randint(121, 125, (e, d, i // 32), generator=gen, dtype=torch.uint8)
    return w13, w13_s, w2, w2_s


def _naive(
    x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w13: list[torch.Tensor], w2: list[torch.Tensor],
    limit: float, quantize: bool,
) -> torch.Tensor:
    """Per token, per slot: (fp8 x) -> gate/up -> clamp -> silu(gate)*up*w -> (fp8 h) -> w2; float32 throughout."""
    out = torch.zeros(x.shape[0], w2[0].shape[0], dtype=torch.float64)
    for t in range(x.shape[0]):
        xt = fp8_round_trip(x[t : t + 1], 128)[0] if quantize else x[t]
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            half = w13[e].shape[0] // 2
            gate = (w13[e][:half].float() @ xt.float())
            up = (w13[e][half:].float() @ xt.float())
            if limit > 0:
                gate = torch.minimum(gate, torch.tensor(limit))
                up = torch.maximum(torch.minimum(up, torch.tensor(limit)), torch.tensor(-limit))
            h = gate * torch.sigmoid(gate) * up * float(weights[t, j])
            if quantize:
                h = fp8_round_trip(h[None], 128)[0]
            out[t] += (w2[e].float() @ h).double()
    return out


def _check(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == torch.float32 and got.shape == expected.shape
    scale = max(float(expected.abs().max()), 1.0)
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4 * scale)


def _route(t: int, e: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.stack([torch.randperm(e, generator=gen)[:k] for _ in range(t)]) if t else torch.zeros(0, k).long()
    return ids, torch.rand(t, k, generator=gen) + 0.1


@pytest.mark.parametrize(("t", "e", "k", "d", "i", "limit"), [
    (7, 5, 3, 96, 64, 0.0), (7, 5, 3, 96, 64, 0.75), (1, 4, 2, 32, 32, 10.0), (10, 8, 4, 64, 96, 1.0),
])
@pytest.mark.parametrize("quantize", [False, True])
def test_packed_fp4_matches_naive(t: int, e: int, k: int, d: int, i: int, limit: float, quantize: bool) -> None:
    gen = torch.Generator().manual_seed(t * 1000 + d + i)
    w13, w13_s, w2, w2_s = _fp4_experts(e, d, i, gen)
    x = torch.randn(t, d, generator=gen) * 2
    ids, weights = _route(t, e, k, gen)
    got = fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, limit, quantize)
    dense13 = [naive_dequant_fp4(w13[n], w13_s[n]) for n in range(e)]
    dense2 = [naive_dequant_fp4(w2[n], w2_s[n]) for n in range(e)]
    _check(got, _naive(x, ids, weights, dense13, dense2, limit, quantize))


@pytest.mark.parametrize("quantize", [False, True])
def test_dense_weights_odd_sizes_and_unused_experts(quantize: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    e, d, i = 9, 13, 7
    w13, w2 = torch.randn(e, 2 * i, d, generator=gen), torch.randn(e, d, i, generator=gen)
    x = torch.randn(5, d, generator=gen)
    ids = torch.tensor([[0, 3], [3, 0], [8, 3], [0, 8], [3, 8]])  # experts 1, 2, 4..7 get no tokens
    weights = torch.rand(5, 2, generator=gen)
    got = fp4_expert_ffn(x, ids, weights, w13, None, w2, None, 1.5, quantize)
    _check(got, _naive(x, ids, weights, list(w13), list(w2), 1.5, quantize))


def test_fp8_block_weights() -> None:
    gen = torch.Generator().manual_seed(9)
    e, d, i = 3, 130, 64
    w13 = random_e4m3((e, 2 * i, d), gen).to(torch.float8_e4m3fn)
    w13_s = torch.randint(118, 122, (e, 1, 2), generator=gen, dtype=torch.uint8)
    w2 = random_e4m3((e, d, i), gen).to(torch.float8_e4m3fn)
    w2_s = torch.randint(118, 122, (e, 2, 1), generator=gen, dtype=torch.uint8)
    x = torch.randn(4, d, generator=gen)
    ids, weights = _route(4, e, 2, gen)
    got = fp4_expert_ffn(x, ids, weights, w13, w13_s, w2, w2_s, 2.0, False)
    dense13 = [naive_dequant_fp8(w13[n], w13_s[n]) for n in range(e)]
    dense2 = [naive_dequant_fp8(w2[n], w2_s[n]) for n in range(e)]
    _check(got, _naive(x, ids, weights, dense13, dense2, 2.0, False))


def test_duplicate_expert_in_one_token_counts_twice() -> None:
    gen = torch.Generator().manual_seed(2)
    w13, w2 = torch.randn(2, 8, 6, generator=gen), torch.randn(2, 6, 4, generator=gen)
    x = torch.randn(2, 6, generator=gen)
    ids, weights = torch.tensor([[1, 1], [0, 1]]), torch.tensor([[0.25, 0.5], [1.0, 1.0]])
    got = fp4_expert_ffn(x, ids, weights, w13, None, w2, None, 0.0, False)
    _check(got, _naive(x, ids, weights, list(w13), list(w2), 0.0, False))


def test_empty_batch() -> None:
    w13, w13_s, w2, w2_s = _fp4_experts(3, 64, 32, torch.Generator().manual_seed(1))
    got = fp4_expert_ffn(torch.zeros(0, 64), torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2), w13, w13_s, w2,
                         w2_s, 10.0, True)
    assert got.shape == (0, 64) and got.dtype == torch.float32


def test_hand_computed_clamp() -> None:
    # one expert, D = I = 1: gate = 2x, up = -3x, w2 = 0.5; x = 4, limit 5 -> gate 8 -> 5, up -12 -> -5
    w13, w2 = torch.tensor([[[2.0], [-3.0]]]), torch.tensor([[[0.5]]])
    got = fp4_expert_ffn(torch.tensor([[4.0]]), torch.tensor([[0]]), torch.tensor([[0.5]]), w13, None, w2, None, 5.0,
                         False)
    assert torch.allclose(got, torch.tensor([[F.silu(torch.tensor(5.0)).item() * -5.0 * 0.5 * 0.5]]))
    # gate is not clamped from below: x = -4 -> gate -8 (silu(-8)), up 12 -> 5
    got = fp4_expert_ffn(torch.tensor([[-4.0]]), torch.tensor([[0]]), torch.tensor([[1.0]]), w13, None, w2, None, 5.0,
                         False)
    assert torch.allclose(got, torch.tensor([[F.silu(torch.tensor(-8.0)).item() * 5.0 * 0.5]]))
