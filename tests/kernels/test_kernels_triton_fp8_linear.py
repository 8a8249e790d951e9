"""kernels.triton.fp8_linear vs its torch twin (kernels.ref.fp8_linear): random shapes, groups, fused act quant.

Runs on CUDA when present, else on Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch

from kernels.ref.act_quant import fp8_round_trip
from kernels.ref.formats import quantize_fp8_blocks
from kernels.ref.fp8_linear import fp8_linear as twin
from kernels.triton.fp8_linear import fp8_linear


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _fp8_weight(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Every finite e4m3 byte (subnormals included) and scale bytes around 1, so blocks differ in range."""
    codes = torch.randint(0, 256, (n, k), generator=gen, dtype=torch.uint8)
    codes = torch.where((codes & 0x7F) == 0x7F, codes - 1, codes)  # 0x7F / 0xFF are NaN
    scale = torch.randint(117, 138, (-(-n // 128), -(-k // 128)), generator=gen, dtype=torch.uint8)
    return codes.view(torch.float8_e4m3fn), scale


def _activations(m: int, width: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    # column magnitudes spanning 1e-3..1e2, so the 128-blocks get different scales
    magnitudes = torch.logspace(-3, 2, width)[torch.randperm(width, generator=gen)]
    return (torch.randn(m, width, generator=gen) * magnitudes).to(dtype)


def _assert_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if ref.numel() == 0:
        return
    g, r = got.double(), ref.double()
    peak = float(r.abs().max())
    err = (g - r).abs()
    if ref.dtype == torch.float32:
        assert float(err.max()) <= 1e-5 * peak, float(err.max()) / peak
        return
    # bf16: float32 results a few ulps apart may round to neighbouring bf16 values
    _, exponent = torch.frexp(torch.maximum(g.abs(), r.abs()).float())
    ulp = torch.ldexp(torch.ones_like(r), (exponent - 8).to(torch.int64).double())
    assert bool((err <= torch.maximum(ulp, torch.full_like(ulp, 1e-5 * max(1.0, peak)))).all())


SHAPES = [  # (n, k, groups): odd sizes, exact multiples of 128, short tail blocks, groups splitting a scale block
    (7, 9, 1),
    (128, 128, 1),
    (129, 200, 1),
    (65, 256, 1),
    (130, 133, 2),
    (256, 96, 2),
]


@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize(("n", "k", "groups"), SHAPES)
@pytest.mark.parametrize("quantize_input", [True, False])
def test_matches_twin(device: str, m: int, n: int, k: int, groups: int, quantize_input: bool) -> None:
    gen = torch.Generator().manual_seed(m * 1000 + n * 10 + k + groups + quantize_input)
    weight, scale = _fp8_weight(n, k, gen)
    # vary activation / output dtypes across cases instead of multiplying the case count
    x_dtype = (torch.float32, torch.bfloat16)[(m + n) % 2]
    out_dtype = (torch.float32, torch.bfloat16)[(m + k + quantize_input) % 2]
    x = _activations(m, groups * k, gen, x_dtype)
    ref = twin(x, weight, scale, quantize_input, out_dtype, groups)
    got = fp8_linear(x.to(device), weight.to(device), scale.to(device), quantize_input, out_dtype, groups)
    _assert_close(got.cpu(), ref)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_dtype_combinations(device: str, x_dtype: torch.dtype, out_dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    weight, scale = _fp8_weight(66, 150, gen)
    x = _activations(5, 300, gen, x_dtype)
    for quantize_input in (True, False):
        ref = twin(x, weight, scale, quantize_input, out_dtype, 2)
        got = fp8_linear(x.to(device), weight.to(device), scale.to(device), quantize_input, out_dtype, 2)
        _assert_close(got.cpu(), ref)


@pytest.mark.parametrize("k", [128, 200])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("magnitude", [1.0, 1e-3])
def test_identity_weight_returns_quantized_input_exactly(
    device: str, k: int, x_dtype: torch.dtype, magnitude: float
) -> None:
    # magnitude 1e-3 keeps every block's amax below 1, so a tail block padded with anything but zeros shows
    gen = torch.Generator().manual_seed(k)
    weight, scale = quantize_fp8_blocks(torch.eye(k))
    x = (_activations(4, k, gen, torch.float32) * magnitude).to(x_dtype)
    got = fp8_linear(x.to(device), weight.to(device), scale.to(device), True, torch.float32)
    assert torch.equal(got.cpu(), fp8_round_trip(x, 128).float())


def test_empty_batch(device: str) -> None:
    weight, scale = _fp8_weight(9, 130, torch.Generator().manual_seed(0))
    got = fp8_linear(torch.randn(0, 130, device=device), weight.to(device), scale.to(device), True, torch.bfloat16)
    assert got.shape == (0, 9) and got.dtype == torch.bfloat16


def test_dense_and_fp4_weights_follow_twin(device: str) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 64, generator=gen)
    dense = torch.randn(10, 64, generator=gen).to(torch.bfloat16)
    packed = torch.randint(0, 256, (12, 32), generator=gen, dtype=torch.uint8)
    fp4_scale = torch.randint(120, 130, (12, 2), generator=gen, dtype=torch.uint8)
    for w, s in ((dense, None), (packed, fp4_scale)):
        got = fp8_linear(x.to(device), w.to(device), None if s is None else s.to(device), True, torch.float32)
        _assert_close(got.cpu(), twin(x, w, s, True, torch.float32))
