"""kernels.ref.act_quant: FP8 (blocks of 64 / 128) and FP4 (blocks of 32) activation round trips vs naive blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_oracles import E2M1_GRID, E4M3_GRID, is_on_grid, naive_fp4, naive_fp8, pow2_exponent

from kernels import fp4_round_trip, fp8_round_trip

HYP = settings(max_examples=30, derandomize=True, deadline=None)


def _blocks_on_grid(x: torch.Tensor, out: torch.Tensor, block: int, grid: np.ndarray, floor: float) -> bool:
    """Every output block divided by 2^ceil(log2(amax_in / fmt_max)) lies on the format grid."""
    xs = x.float().reshape(-1, x.shape[-1]).double().numpy()
    os_ = out.float().reshape(-1, out.shape[-1]).double().numpy()
    for r in range(xs.shape[0]):
        for b in range(0, xs.shape[1], block):
            amax = max(float(np.abs(xs[r, b : b + block]).max()), floor)
            scale = 2.0 ** pow2_exponent(amax, float(grid[-1]))
            if not is_on_grid(os_[r, b : b + block] / scale, grid):
                return False
    return True


@pytest.mark.parametrize("block", [64, 128])
@pytest.mark.parametrize("k", [64, 128, 200, 448, 7])
def test_fp8_round_trip_matches_naive_blocks(block: int, k: int) -> None:
    x = torch.randn(3, k) * torch.logspace(-3, 3, 3)[:, None]
    got = fp8_round_trip(x, block)
    assert got.shape == x.shape and got.dtype == torch.float32
    assert torch.equal(got, naive_fp8(x, block))
    assert _blocks_on_grid(x, got, block, E4M3_GRID, 1e-4)
    assert torch.equal(fp8_round_trip(got, block), got)  # idempotent


@given(st.integers(0, 2**31 - 1), st.integers(1, 300), st.sampled_from([64, 128]), st.floats(1e-8, 1e8))
@HYP
def test_fp8_round_trip_hypothesis(seed: int, k: int, block: int, mag: float) -> None:
    x = torch.randn(2, k, generator=torch.Generator().manual_seed(seed)) * mag
    got = fp8_round_trip(x, block)
    assert torch.equal(got, naive_fp8(x, block))
    assert torch.equal(fp8_round_trip(got, block), got)


def test_fp8_round_trip_hand_values() -> None:
    # amax 448 -> scale 1; 1.0625 is a tie between 1.0 and 1.125 (even mantissa: 1.0), 1.1875 one to 1.25
    x = torch.tensor([[448.0, 1.0625, 1.1875, -3.3, 0.0] + [0.0] * 123])
    got = fp8_round_trip(x, 128)[0, :5].tolist()
    assert got == [448.0, 1.0, 1.25, -3.25, 0.0]
    # amax 449 -> scale 2: 449/2 = 224.5 -> 224 -> 448; 2.125/2 = 1.0625 (tie) -> 1.0 -> 2.0; 3/2 exact
    assert fp8_round_trip(torch.tensor([[449.0, 2.125, 3.0]]), 128)[0].tolist() == [448.0, 2.0, 3.0]
    # an all-zero block stays zero; tiny values use the 1e-4 amax floor
    assert fp8_round_trip(torch.zeros(1, 64), 64).abs().max() == 0


def test_fp8_round_trip_preserves_dtype_and_leading_dims() -> None:
    x = (torch.randn(2, 3, 192) * 10).to(torch.bfloat16)
    got = fp8_round_trip(x, 64)
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    assert torch.equal(got, naive_fp8(x, 64))  # naive result is exactly representable in bf16
    assert torch.equal(got.float(), fp8_round_trip(x.float(), 64))  # bf16 output loses nothing


@pytest.mark.parametrize("k", [32, 64, 256])
def test_fp4_round_trip_matches_naive_blocks(k: int) -> None:
    x = torch.randn(4, k) * torch.logspace(-4, 4, 4)[:, None]
    got = fp4_round_trip(x, 32)
    assert got.shape == x.shape and got.dtype == torch.float32
    assert torch.equal(got, naive_fp4(x, 32))
    assert _blocks_on_grid(x, got, 32, E2M1_GRID, 6.0 * 2.0**-126)
    assert torch.equal(fp4_round_trip(got, 32), got)  # idempotent


@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.floats(1e-10, 1e10))
@HYP
def test_fp4_round_trip_hypothesis(seed: int, nblocks: int, mag: float) -> None:
    x = torch.randn(3, 32 * nblocks, generator=torch.Generator().manual_seed(seed)) * mag
    got = fp4_round_trip(x)
    assert torch.equal(got, naive_fp4(x, 32))
    assert torch.equal(fp4_round_trip(got), got)


def test_fp4_round_trip_hand_values() -> None:
    # amax 6 -> scale 1: 5 ties to 4, 2.5 to 2, 0.25 to 0, 0.75 to 1
    x = torch.tensor([[6.0, 5.0, -2.5, 0.25, 0.75, 1.75, -0.0] + [0.0] * 25])
    assert fp4_round_trip(x)[0, :7].tolist() == [6.0, 4.0, -2.0, 0.0, 1.0, 2.0, 0.0]
    # amax 7 -> scale 2: 7/2 = 3.5 -> 4 -> 8; 1 -> 0.5 -> 0.5 -> 1
    y = torch.tensor([[7.0, 1.0] + [0.0] * 30])
    assert fp4_round_trip(y)[0, :2].tolist() == [8.0, 1.0]


def test_fp4_round_trip_preserves_bf16() -> None:
    x = (torch.randn(5, 64) * 3).to(torch.bfloat16)
    got = fp4_round_trip(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, naive_fp4(x, 32))
    assert torch.equal(got.float(), fp4_round_trip(x.float()))




def test_fp8_scale_just_above_a_power_of_two() -> None:
    # amax = nextafter(448 * 16) -> exact scale 2^5; 2^-5 / 2^5 = 2^-10 is a tie between 0 and 2^-9 -> 0
    x = torch.zeros(1, 128)
    x[0, 0] = torch.nextafter(torch.tensor(7168.0), torch.tensor(math.inf))
    x[0, 1] = 2.0**-5
    assert torch.equal(naive_fp8(x, 128)[0, :2], torch.tensor([7168.0, 0.0]))  # the oracle's answer
    assert fp8_round_trip(x, 128)[0, :2].tolist() == [7168.0, 0.0]  # a float32 log2 gives 2^4 here


def test_fp4_scale_just_above_a_power_of_two() -> None:
    # amax = nextafter(6 * 16) -> exact scale 2^5; 8 / 32 = 0.25 is a tie between 0 and 0.5 -> 0
    x = torch.zeros(1, 32)
    x[0, 0] = torch.nextafter(torch.tensor(96.0), torch.tensor(math.inf))
    x[0, 1] = 8.0
    assert torch.equal(naive_fp4(x, 32)[0, :2], torch.tensor([96.0, 0.0]))
    assert fp4_round_trip(x)[0, :2].tolist() == [96.0, 0.0]  # a float32 log2 gives scale 2^4 here


def test_scale_just_above_a_power_of_two_small_exponents_are_exact() -> None:
    # |k| < 4: log2(amax / max) keeps the 1.7e-7 excess in float32, so the scale is right (2^(k+1))
    for k in (-3, 0, 3):
        x = torch.zeros(1, 128)
        x[0, 0] = torch.nextafter(torch.tensor(448.0 * 2.0**k), torch.tensor(math.inf))
        x[0, 1] = 2.0 ** (k - 9)
        assert torch.equal(fp8_round_trip(x, 128), naive_fp8(x, 128))
        assert float(fp8_round_trip(x, 128)[0, 1]) == 0.0
