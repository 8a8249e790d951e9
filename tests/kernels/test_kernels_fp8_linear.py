"""kernels.ref.fp8_linear: y = act_quant(x) @ dequant(W)^T vs a table dequantization and a float64 matmul."""

from __future__ import annotations

import pytest
import torch
from kernel_oracles import naive_dequant_fp4, naive_dequant_fp8, naive_fp8, random_e4m3

from kernels import fp8_linear


def _fp8_weight(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    w = random_e4m3((n, k), gen).to(torch.float8_e4m3fn)
    scale = torch.randint(117, 131, (-(-n // 128), -(-k // 128)), generator=gen, dtype=torch.uint8)
    return w, scale


@pytest.mark.parametrize(("t", "n", "k"), [(3, 128, 128), (5, 130, 200), (1, 256, 384), (4, 7, 9)])
def test_fp8_weight_matches_dequant_matmul(t: int, n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(t * n * k)
    w, scale = _fp8_weight(n, k, gen)
    x = torch.randn(t, k, generator=gen)
    got = fp8_linear(x, w, scale, False, torch.float32)
    expected = x.double() @ naive_dequant_fp8(w, scale).T
    assert got.shape == (t, n) and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("k", [128, 200, 384])
def test_quantize_input_rounds_x_per_128_block(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    w, scale = _fp8_weight(64, k, gen)
    x = torch.randn(6, k, generator=gen) * torch.logspace(-2, 2, k)  # blocks with very different ranges
    got = fp8_linear(x, w, scale, True, torch.float32)
    expected = naive_fp8(x, 128).double() @ naive_dequant_fp8(w, scale).T
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    unquantized = x.double() @ naive_dequant_fp8(w, scale).T
    assert not torch.allclose(got.double(), unquantized, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_out_dtype_bf16_and_dense_weight() -> None:
    x, w = torch.randn(4, 48), torch.randn(10, 48)
    got = fp8_linear(x, w, None, False, torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == (4, 10)
    assert torch.allclose(got.double(), x.double() @ w.double().T, rtol=2**-8, atol=1e-5)
    wb = w.to(torch.bfloat16)
    got_b = fp8_linear(x.to(torch.bfloat16), wb, None, True, torch.float32)
    expected = naive_fp8(x.to(torch.bfloat16), 128).double() @ wb.double().T
    assert got_b.dtype == torch.float32
    assert torch.allclose(got_b.double(), expected, rtol=1e-5, atol=1e-5)


def test_packed_fp4_weight() -> None:
    gen = torch.Generator().manual_seed(11)
    packed = torch.randint(0, 256, (12, 32), generator=gen, dtype=torch.uint8)
    scale = torch.randint(120, 130, (12, 2), generator=gen, dtype=torch.uint8)
    x = torch.randn(3, 64, generator=gen)
    got = fp8_linear(x, packed, scale, False, torch.float32)
    expected = x.double() @ naive_dequant_fp4(packed, scale).T
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-4)


def test_hand_values() -> None:
    # W = [[1, 2], [448, -0.5]] as e4m3 with scale byte 126 (x0.5); x = [[1, 1]] -> [1.5, 223.75]
    w = torch.tensor([[1.0, 2.0], [448.0, -0.5]]).to(torch.float8_e4m3fn)
    got = fp8_linear(torch.tensor([[1.0, 1.0]]), w, torch.tensor([[126]], dtype=torch.uint8), False, torch.float32)
    assert got.tolist() == [[1.5, 223.75]]
