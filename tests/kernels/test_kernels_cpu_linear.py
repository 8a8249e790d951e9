"""kernels.cpu linear ops vs their torch twins: fp8_linear (FP8 block weights, grouped, dense bf16), bf16_linear,
fp4_expert_ffn and fp4_round_trip, on the shapes the C path takes (the twin is made to raise there), plus the
shapes that fall back to the twin and return its exact result."""

from __future__ import annotations

import pytest
import torch
from cpu_twins import (
    E4M3_EDGES,
    assert_close_to_scale,
    assert_falls_back,
    assert_within_one_bf16_ulp,
    edge_block,
    force_thread_split,
    run_both,
    skip_when_disabled,
)

from kernels.cpu import bf16_linear as cpu_bf16_linear
from kernels.cpu import fp4_experts as cpu_fp4_experts
from kernels.cpu import fp8_linear as cpu_fp8_linear
from kernels.cpu.parallel import split
from kernels.ref import fp4_experts
from kernels.ref.act_quant import fp8_round_trip
from kernels.ref.formats import quantize_fp4, quantize_fp8_blocks

pytestmark = skip_when_disabled

TOKENS = (1, 2, 3, 4, 5, 8, 16)
FP8_TOKENS = [t for t in TOKENS if t <= cpu_fp8_linear.MAX_TOKENS]
DENSE_TOKENS = [t for t in TOKENS if t <= cpu_bf16_linear.MAX_TOKENS]
EXPERT_TOKENS = [t for t in (1, 2, 5, 16) if t <= cpu_fp4_experts.MAX_TOKENS]

# Multiples of the block scale: e2m1 midpoints (ties to the even code) with 6 setting the scale.
E2M1_EDGES = (6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.0, 0.1, 5.9, 4.5, 2.75, 0.5)


def _fp8_edge_rows(k: int, gen: torch.Generator) -> torch.Tensor:
    """Rows exercising the activation quantizer: edge blocks, their negation, random, all below the 1e-4 amax
    floor, zeros."""
    blocks = [
        edge_block(E4M3_EDGES, min(128, k - first), 2.0 ** (first // 128 * 8 - 3), gen) for first in range(0, k, 128)
    ]
    edge = torch.cat(blocks)
    return torch.stack(
        (
            edge,
            -edge,
            torch.randn(k, generator=gen) * 3,
            torch.randn(k, generator=gen) * 1e-5,
            torch.zeros(k),
            edge.flip(0),
        )
    )


def _fp8_weight(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randn(n, k, generator=gen) * 2.0 ** torch.randint(-3, 3, (n, 1), generator=gen).float()
    return quantize_fp8_blocks(rows * 0.05)


def _check_linear_out(got: torch.Tensor, expected: torch.Tensor) -> None:
    if expected.dtype == torch.bfloat16:
        assert_within_one_bf16_ulp(got, expected, atol=1e-5)
    else:
        assert_close_to_scale(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quantize_input", [True, False])
@pytest.mark.parametrize(("n", "k"), [(300, 200), (130, 136), (512, 256)])
@pytest.mark.parametrize("tokens", FP8_TOKENS)
def test_fp8_linear(
    monkeypatch: pytest.MonkeyPatch,
    tokens: int,
    n: int,
    k: int,
    quantize_input: bool,
    x_dtype: torch.dtype,
    out_dtype: torch.dtype,
) -> None:
    gen = torch.Generator().manual_seed(tokens * 1000 + n + k)
    weight, scale = _fp8_weight(n, k, gen)
    x = torch.randn(tokens, k, generator=gen).to(x_dtype)
    got, expected = run_both(monkeypatch, "fp8_linear", "fp8_linear", x, weight, scale, quantize_input, out_dtype)
    assert got.shape == (tokens, n)
    _check_linear_out(got, expected)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quantize_input", [True, False])
@pytest.mark.parametrize(("n", "k"), [(128, 128), (300, 200)])
@pytest.mark.parametrize("tokens", [t for t in (1, 2, 3, 5, 16) if t <= cpu_fp8_linear.MAX_TOKENS])
def test_fp8_linear_groups(
    monkeypatch: pytest.MonkeyPatch, tokens: int, n: int, k: int, quantize_input: bool, out_dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(tokens + n + k)
    weight, scale = _fp8_weight(n, k, gen)
    x = torch.randn(tokens, 2 * k, generator=gen)
    x[:, k:] *= 16
    got, expected = run_both(monkeypatch, "fp8_linear", "fp8_linear", x, weight, scale, quantize_input, out_dtype, 2)
    assert got.shape == (tokens, n)
    _check_linear_out(got, expected)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [128, 200, 256])
def test_fp8_activation_quantizer_is_exact(monkeypatch: pytest.MonkeyPatch, k: int, x_dtype: torch.dtype) -> None:
    x = _fp8_edge_rows(k, torch.Generator().manual_seed(k)).to(x_dtype)
    weight, scale = quantize_fp8_blocks(torch.eye(k))
    got, expected = run_both(monkeypatch, "fp8_linear", "fp8_linear", x, weight, scale, True, torch.float32)
    assert torch.equal(expected, fp8_round_trip(x, 128).float())
    assert torch.equal(got, expected)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("n", "k"), [(37, 64), (300, 256)])
@pytest.mark.parametrize("tokens", DENSE_TOKENS)
def test_fp8_linear_dense_bf16_weight(
    monkeypatch: pytest.MonkeyPatch, tokens: int, n: int, k: int, out_dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(tokens + n)
    weight = torch.randn(n, k, generator=gen).to(torch.bfloat16)
    x = torch.randn(tokens, k, generator=gen)
    got, expected = run_both(monkeypatch, "fp8_linear", "fp8_linear", x, weight, None, False, out_dtype)
    _check_linear_out(got, expected)


@pytest.mark.parametrize(
    ("tokens", "n", "k", "dense", "quantize_input", "x_dtype"),
    [
        (cpu_fp8_linear.MAX_TOKENS + 1, 130, 136, False, True, torch.float32),
        (2, 64, 60, False, False, torch.float32),
        (2, 64, 128, False, True, torch.float64),
        (cpu_bf16_linear.MAX_TOKENS + 1, 64, 128, True, False, torch.float32),
        (2, 64, 128, True, True, torch.float32),
        (2, 64, 48, True, False, torch.float32),
    ],
)
def test_fp8_linear_falls_back(
    monkeypatch: pytest.MonkeyPatch,
    tokens: int,
    n: int,
    k: int,
    dense: bool,
    quantize_input: bool,
    x_dtype: torch.dtype,
) -> None:
    gen = torch.Generator().manual_seed(tokens * n + k)
    weight, scale = (torch.randn(n, k, generator=gen).to(torch.bfloat16), None) if dense else _fp8_weight(n, k, gen)
    x = torch.randn(tokens, k, generator=gen).to(x_dtype)
    assert_falls_back(monkeypatch, "fp8_linear", "fp8_linear", x, weight, scale, quantize_input, torch.float32)


@pytest.mark.parametrize(("n", "k"), [(37, 64), (256, 96), (40000, 128)])
@pytest.mark.parametrize("tokens", DENSE_TOKENS)
def test_bf16_linear(monkeypatch: pytest.MonkeyPatch, tokens: int, n: int, k: int) -> None:
    force_thread_split(monkeypatch)
    assert (len(split(n, cpu_bf16_linear.ROWS_PER_THREAD)) > 1) == (n == 40000)
    gen = torch.Generator().manual_seed(tokens + n + k)
    weight = torch.randn(n, k, generator=gen).to(torch.bfloat16)
    x = torch.randn(tokens, k, generator=gen)
    got, expected = run_both(monkeypatch, "bf16_linear", "bf16_linear", x, weight)
    assert got.shape == (tokens, n) and got.dtype == torch.float32
    assert_within_one_bf16_ulp(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("tokens", "k", "contiguous"), [(cpu_bf16_linear.MAX_TOKENS + 1, 64, True), (2, 48, True), (2, 64, False)]
)
def test_bf16_linear_falls_back(monkeypatch: pytest.MonkeyPatch, tokens: int, k: int, contiguous: bool) -> None:
    gen = torch.Generator().manual_seed(tokens + k)
    weight = torch.randn(37, k, generator=gen).to(torch.bfloat16)
    if not contiguous:
        weight = weight.T.contiguous().T
    assert_falls_back(monkeypatch, "bf16_linear", "bf16_linear", torch.randn(tokens, k, generator=gen), weight)


def _experts(num: int, dim: int, inter: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Packed FP4 w13 [E, 2I, D/2] + scales, w2 [E, D, I/2] + scales."""
    w13, w13_scale = quantize_fp4(torch.randn(num * 2 * inter, dim, generator=gen))
    w2, w2_scale = quantize_fp4(torch.randn(num * dim, inter, generator=gen) * 0.1)
    return (
        w13.view(num, 2 * inter, -1),
        w13_scale.view(num, 2 * inter, -1),
        w2.view(num, dim, -1),
        w2_scale.view(num, dim, -1),
    )


def _routing(tokens: int, top_k: int, num: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.stack([torch.randperm(num, generator=gen)[:top_k] for _ in range(tokens)])
    return ids, torch.rand(tokens, top_k, generator=gen) + 0.2


@pytest.mark.parametrize("quantize_input", [True, False])
@pytest.mark.parametrize("swiglu_limit", [0.0, 10.0])
@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("tokens", EXPERT_TOKENS)
def test_fp4_expert_ffn(
    monkeypatch: pytest.MonkeyPatch, tokens: int, top_k: int, swiglu_limit: float, quantize_input: bool
) -> None:
    gen = torch.Generator().manual_seed(tokens * 10 + top_k)
    weights = _experts(4, 128, 64, gen)
    ids, route = _routing(tokens, top_k, 4, gen)
    x = torch.randn(tokens, 128, generator=gen)
    got, expected = run_both(
        monkeypatch, "fp4_experts", "fp4_expert_ffn", x, ids, route, *weights, swiglu_limit, quantize_input
    )
    assert got.shape == (tokens, 128) and got.dtype == torch.float32
    if swiglu_limit:
        unclamped = fp4_experts.fp4_expert_ffn(x, ids, route, *weights, 0.0, quantize_input)
        assert not torch.allclose(unclamped, expected)
    assert_close_to_scale(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantize_input", [True, False])
@pytest.mark.parametrize("tokens", [1, 5])
def test_fp4_expert_ffn_bf16_input(monkeypatch: pytest.MonkeyPatch, tokens: int, quantize_input: bool) -> None:
    gen = torch.Generator().manual_seed(tokens)
    weights = _experts(3, 64, 32, gen)
    ids, route = _routing(tokens, 2, 3, gen)
    x = torch.randn(tokens, 64, generator=gen).to(torch.bfloat16)
    got, expected = run_both(
        monkeypatch, "fp4_experts", "fp4_expert_ffn", x, ids, route, *weights, 10.0, quantize_input
    )
    assert_close_to_scale(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["too_many_tokens", "dense_weights"])
def test_fp4_expert_ffn_falls_back(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    gen = torch.Generator().manual_seed(7)
    tokens = cpu_fp4_experts.MAX_TOKENS + 1 if case == "too_many_tokens" else 3
    w13, w13_scale, w2, w2_scale = _experts(3, 64, 32, gen)
    if case == "dense_weights":
        w13, w13_scale = torch.randn(3, 64, 64, generator=gen), None
        w2, w2_scale = torch.randn(3, 64, 32, generator=gen), None
    ids, route = _routing(tokens, 2, 3, gen)
    x = torch.randn(tokens, 64, generator=gen)
    assert_falls_back(
        monkeypatch, "fp4_experts", "fp4_expert_ffn", x, ids, route, w13, w13_scale, w2, w2_scale, 10.0, True
    )


def _fp4_edge_input(tokens: int, gen: torch.Generator) -> torch.Tensor:
    """[T, 8, 128]: random blocks at assorted scales, e2m1 tie blocks at normal and subnormal scales, zeros, tiny."""
    x = torch.randn(tokens, 8, 4, 32, generator=gen) * 2.0 ** torch.randint(-12, 12, (tokens, 8, 4, 1), generator=gen)
    for t in range(tokens):
        x[t, 0, 0] = edge_block(E2M1_EDGES, 32, 2.0**-3, gen)
        x[t, 1, 1] = -edge_block(E2M1_EDGES, 32, 2.0**7, gen)
        x[t, 2, 2] = edge_block(E2M1_EDGES, 32, 2.0**-126, gen)
        x[t, 3, 3] = 0.0
        x[t, 4, 0] = torch.randn(32, generator=gen) * 1e-30
        x[t, 5, 1] = torch.randn(32, generator=gen) * 1e-39
        x[t, 6, 2] = edge_block(E2M1_EDGES, 32, 2.0 ** (t - 1), gen).flip(0)
    return x.flatten(-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [1, 3])
def test_fp4_round_trip(monkeypatch: pytest.MonkeyPatch, tokens: int, dtype: torch.dtype) -> None:
    x = _fp4_edge_input(tokens, torch.Generator().manual_seed(tokens)).to(dtype)
    got, expected = run_both(monkeypatch, "act_quant", "fp4_round_trip", x)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("shape", "block", "dtype"), [((2, 64), 16, torch.float32), ((2, 64), 32, torch.float64)])
def test_fp4_round_trip_falls_back(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], block: int, dtype: torch.dtype
) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(block)).to(dtype)
    assert_falls_back(monkeypatch, "act_quant", "fp4_round_trip", x, block)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 256), (5, 3, 48), (2, 7)])
def test_rms_norm(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], dtype: torch.dtype, weighted: bool) -> None:
    gen = torch.Generator().manual_seed(shape[-1])
    x = (torch.randn(shape, generator=gen) * 4).to(dtype)
    weight = torch.randn(shape[-1], generator=gen).to(torch.bfloat16) if weighted else None
    got, expected = run_both(monkeypatch, "rms_norm", "rms_norm", x, weight, 1e-6)
    if dtype == torch.bfloat16:
        assert_within_one_bf16_ulp(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_rms_norm_falls_back_for_float32_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_falls_back(monkeypatch, "rms_norm", "rms_norm", torch.randn(2, 16), torch.randn(16), 1e-6)
