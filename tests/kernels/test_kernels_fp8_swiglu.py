"""kernels.cpu.fp8_swiglu (the fused shared expert) vs its torch twin, on the shapes the C path takes (the twin is made
to raise there); bit-exact against the same three linears run as separate C fp8_linear calls; the shapes and dense
weights that fall back to the twin; the Triton path's composition."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
import torch
from cpu_twins import (
    assert_close_to_scale,
    assert_falls_back,
    assert_within_one_bf16_ulp,
    run_both,
    skip_when_disabled,
)

import kernels
from kernels.cpu import fp8_linear as cpu_fp8_linear
from kernels.cpu import fp8_swiglu as cpu_fp8_swiglu
from kernels.ref import fp8_swiglu as ref_fp8_swiglu
from kernels.ref.formats import quantize_fp8_blocks

pytestmark = skip_when_disabled

TOKENS = [t for t in (1, 2, 3, 5, 16) if t <= cpu_fp8_swiglu.MAX_TOKENS]
SHAPES = [(256, 128), (128, 64), (200, 136)]  # (dim, inter): tiny model, small test config, partial scale blocks


def _weights(dim: int, inter: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """w1, w1_scale, w3, w3_scale, w2, w2_scale: FP8 blocks with rows spread over a few powers of two."""
    out = []
    for n, k in ((inter, dim), (inter, dim), (dim, inter)):
        rows = torch.randn(n, k, generator=gen) * 2.0 ** torch.randint(-2, 3, (n, 1), generator=gen).float()
        out.extend(quantize_fp8_blocks(rows * 3 * k**-0.5))
    return tuple(out)


def _check(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The tolerance fp8_linear's C kernel meets against its twin."""
    if expected.dtype == torch.bfloat16:
        assert_within_one_bf16_ulp(got, expected, atol=1e-5)
    else:
        assert_close_to_scale(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quantize_input", [True, False])
@pytest.mark.parametrize("swiglu_limit", [0.0, 2.0])
@pytest.mark.parametrize(("dim", "inter"), SHAPES)
@pytest.mark.parametrize("tokens", TOKENS)
def test_fp8_swiglu_ffn(
    monkeypatch: pytest.MonkeyPatch, tokens: int, dim: int, inter: int, swiglu_limit: float, quantize_input: bool,
    act_dtype: torch.dtype,
) -> None:
    gen = torch.Generator().manual_seed(tokens * 1000 + dim + inter)
    weights = _weights(dim, inter, gen)
    x = torch.randn(tokens, dim, generator=gen).to(act_dtype)
    args = (x, *weights, swiglu_limit, quantize_input, act_dtype)
    got, expected = run_both(monkeypatch, "fp8_swiglu", "fp8_swiglu_ffn", *args)
    assert got.shape == (tokens, dim)
    if swiglu_limit:
        assert not torch.equal(ref_fp8_swiglu.fp8_swiglu_ffn(x, *weights, 0.0, quantize_input, act_dtype), expected)
    _check(got, expected)


def _libm_silu(gate: torch.Tensor) -> torch.Tensor:
    """gate / (1 + expf(-gate)) in float32 with the C library's expf, as the kernel computes it (torch's vectorized
    exp differs from it in the last bit now and then)."""
    expf = ctypes.CDLL(ctypes.util.find_library("m")).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    e = torch.tensor([expf(-v) for v in gate.flatten().tolist()], dtype=torch.float32).view(gate.shape)
    return gate / (1 + e)


@pytest.mark.parametrize("act_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quantize_input", [True, False])
@pytest.mark.parametrize("tokens", [1, 3, 16])
def test_fp8_swiglu_ffn_sums_as_the_separate_c_linears(tokens: int, quantize_input: bool, act_dtype: torch.dtype
                                                       ) -> None:
    """Fusing changes nothing: the result is bit-identical to three kernels.cpu.fp8_linear calls around the same
    SwiGLU, so it is as close to the twin as fp8_linear's C kernel is (identical where that is)."""
    gen = torch.Generator().manual_seed(tokens)
    w1, s1, w3, s3, w2, s2 = _weights(256, 128, gen)
    x = torch.randn(tokens, 256, generator=gen).to(act_dtype)
    gate = cpu_fp8_linear.fp8_linear(x, w1, s1, quantize_input, act_dtype).float().clamp(max=2.0)
    up = cpu_fp8_linear.fp8_linear(x, w3, s3, quantize_input, act_dtype).float().clamp(-2.0, 2.0)
    hidden = (_libm_silu(gate) * up).to(act_dtype)
    expected = cpu_fp8_linear.fp8_linear(hidden, w2, s2, quantize_input, act_dtype)
    got = cpu_fp8_swiglu.fp8_swiglu_ffn(x, w1, s1, w3, s3, w2, s2, 2.0, quantize_input, act_dtype)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("case", ["too_many_tokens", "dense_weights", "dim_not_multiple_of_8", "float64_x",
                                  "mismatched_w2"])
def test_fp8_swiglu_ffn_falls_back(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    gen = torch.Generator().manual_seed(3)
    dim = 60 if case == "dim_not_multiple_of_8" else 64
    w1, s1, w3, s3, w2, s2 = _weights(dim, 32, gen)
    if case == "dense_weights":  # the HF layout's shared expert
        w1, w3, w2 = (torch.randn(*w.shape, generator=gen).to(torch.bfloat16) for w in (w1, w3, w2))
        s1 = s3 = s2 = None
    tokens = cpu_fp8_swiglu.MAX_TOKENS + 1 if case == "too_many_tokens" else 2
    x = torch.randn(tokens, dim, generator=gen, dtype=torch.float64 if case == "float64_x" else torch.float32)
    if case == "mismatched_w2":  # the twin raises on it; the kernel must not read past w2
        w2 = w2[:, :16].contiguous()
        with pytest.raises((RuntimeError, ValueError)):
            cpu_fp8_swiglu.fp8_swiglu_ffn(x, w1, s1, w3, s3, w2, s2, 2.0, True, torch.float32)
        return
    assert_falls_back(monkeypatch, "fp8_swiglu", "fp8_swiglu_ffn", x, w1, s1, w3, s3, w2, s2, 2.0, True,
                      torch.float32)


def test_fp8_swiglu_ffn_triton_composes_its_fp8_linear() -> None:
    """The Triton path (CUDA, or the CPU interpreter in CI) is the twin over kernels.triton.fp8_linear, and the
    "triton" kernel mode takes it. Unquantized float32, so the two GEMM summation orders differ by rounding only
    (an FP8 rounding of the hidden activations can flip between them)."""
    triton_fp8_swiglu = pytest.importorskip("kernels.triton.fp8_swiglu")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(4)
    weights = [t.to(device) for t in _weights(128, 64, gen)]
    args = (torch.randn(3, 128, generator=gen).to(device), *weights, 2.0, False, torch.float32)
    got = triton_fp8_swiglu.fp8_swiglu_ffn(*args)
    assert_close_to_scale(got.cpu(), ref_fp8_swiglu.fp8_swiglu_ffn(*args).cpu(), rtol=1e-5, atol=1e-5)
    with kernels.use("triton"):
        assert torch.equal(kernels.fp8_swiglu_ffn(*args), got)
