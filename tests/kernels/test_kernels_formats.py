"""kernels.ref.formats: e2m1 codes and rounding, FP4 nibble packing, FP4 / FP8 block quantization, ue8m0 bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_oracles import E2M1_GRID, e2m1_value, naive_dequant_fp8, pow2_exponent, random_e4m3, round_to_grid

from kernels import dequantize_weight
from kernels.ref.formats import (
    decode_fp4_bytes,
    dequantize_fp4,
    dequantize_fp8_blocks,
    e2m1_decode,
    e2m1_encode,
    e8m0_to_float,
    float_to_e8m0,
    pack_fp4,
    pow2_scale,
    quantize_fp4,
    quantize_fp8_blocks,
    unpack_fp4,
)

HYP = settings(max_examples=30, derandomize=True, deadline=None)
E2M1_BY_CODE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def test_e2m1_decode_all_16_codes() -> None:
    got = e2m1_decode(torch.arange(16, dtype=torch.uint8))
    assert got.dtype == torch.float32
    assert got.tolist() == E2M1_BY_CODE
    assert [e2m1_value(c) for c in range(16)] == E2M1_BY_CODE  # the oracle's bit layout agrees
    assert torch.signbit(got).tolist() == [c >= 8 for c in range(16)]


def test_e2m1_encode_of_every_code_value_gives_back_the_code() -> None:
    values = torch.tensor(E2M1_BY_CODE[:8] + [-v for v in E2M1_BY_CODE[1:8]])
    assert e2m1_encode(values).tolist() == list(range(8)) + list(range(9, 16))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.25, 0.0), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0),  # ties to even
        (0.26, 0.5), (0.74, 0.5), (1.26, 1.5), (2.49, 2.0), (2.51, 3.0), (3.49, 3.0), (4.99, 4.0), (5.01, 6.0),
        (6.0, 6.0), (6.5, 6.0), (100.0, 6.0), (math.inf, 6.0),  # saturation
        (0.1, 0.0), (1e-30, 0.0),
    ],
)
def test_e2m1_encode_rounds_to_nearest_even_and_saturates(value: float, expected: float) -> None:
    codes = e2m1_encode(torch.tensor([value, -value]))
    assert codes.dtype == torch.uint8
    assert e2m1_decode(codes).tolist() == [expected, -expected]
    if expected != 0.0:
        assert int(codes[1]) == int(codes[0]) + 8  # negative = positive code with the sign bit


def test_e2m1_encode_zeros() -> None:
    got = e2m1_decode(e2m1_encode(torch.tensor([0.0, -0.0, -0.1])))
    assert got.tolist() == [0.0, 0.0, 0.0]  # -0 and tiny negatives decode to a zero (either sign)


@given(st.lists(st.floats(-8.0, 8.0, width=32), min_size=1, max_size=40))
@HYP
def test_e2m1_encode_matches_table_search(values: list[float]) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    expected = round_to_grid(x.double().numpy(), E2M1_GRID)
    assert np.array_equal(e2m1_decode(e2m1_encode(x)).double().numpy(), expected)


def test_pack_fp4_puts_element_2i_in_the_low_nibble() -> None:
    codes = torch.tensor([[0x1, 0x2, 0xF, 0x0, 0x7, 0x8]], dtype=torch.uint8)
    packed = pack_fp4(codes)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x21, 0x0F, 0x87]]
    assert unpack_fp4(packed).tolist() == codes.tolist()
    assert decode_fp4_bytes(torch.tensor([0x21, 0x0F, 0x87], dtype=torch.uint8)).tolist() == [
        0.5, 1.0, -6.0, 0.0, 6.0, -0.0]


def test_unpack_and_decode_every_byte() -> None:
    byte = torch.arange(256, dtype=torch.uint8)
    unpacked = unpack_fp4(byte[None])[0]
    assert unpacked.tolist() == [v for b in range(256) for v in (b & 0xF, b >> 4)]
    assert pack_fp4(unpacked[None])[0].tolist() == list(range(256))
    decoded = decode_fp4_bytes(byte.reshape(4, 64))
    assert decoded.shape == (4, 128)
    assert torch.equal(decoded, e2m1_decode(unpack_fp4(byte.reshape(4, 64))))
    assert decoded.flatten().tolist() == [e2m1_value(c) for b in range(256) for c in (b & 0xF, b >> 4)]


def test_e8m0_bytes() -> None:
    powers = torch.tensor([2.0**-127, 2.0**-126, 2.0**-10, 0.5, 1.0, 2.0, 2.0**20, 2.0**127])
    byte = float_to_e8m0(powers)
    assert byte.dtype == torch.uint8
    assert byte.tolist() == [0, 1, 117, 126, 127, 128, 147, 254]
    assert e8m0_to_float(byte).tolist() == powers.tolist()
    assert e8m0_to_float(torch.tensor([127, 130, 120], dtype=torch.uint8)).tolist() == [1.0, 8.0, 2.0**-7]


def _fp4_representable(rows: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, list[list[int]]]:
    """e2m1 value x 2^e per block of 32, each block holding a +-6 (so the block scale is exactly 2^e)."""
    codes = torch.randint(0, 16, (rows, k), generator=gen)
    values = torch.tensor(E2M1_BY_CODE)[codes]
    values[:, ::32] = 6.0 * torch.where(torch.rand(rows, k // 32, generator=gen) < 0.5, -1.0, 1.0)
    exps = torch.randint(-20, 20, (rows, k // 32), generator=gen)
    return values * torch.exp2(exps.float()).repeat_interleave(32, 1), exps.tolist()


@pytest.mark.parametrize(("rows", "k"), [(1, 32), (3, 64), (5, 256)])
def test_quantize_fp4_exact_for_representable(rows: int, k: int) -> None:
    w, exps = _fp4_representable(rows, k, torch.Generator().manual_seed(rows * k))
    packed, scale = quantize_fp4(w)
    assert packed.shape == (rows, k // 2) and packed.dtype == torch.uint8
    assert scale.shape == (rows, k // 32) and scale.dtype == torch.uint8
    assert scale.tolist() == [[127 + e for e in row] for row in exps]
    assert torch.equal(dequantize_fp4(packed, scale), w)
    assert torch.equal(dequantize_weight(packed, scale), w)


@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from([32, 64, 96]), st.floats(1e-6, 1e6))
@HYP
def test_quantize_fp4_matches_naive_blocks_and_error_bound(seed: int, rows: int, k: int, mag: float) -> None:
    w = torch.randn(rows, k, generator=torch.Generator().manual_seed(seed)) * mag
    got = dequantize_fp4(*quantize_fp4(w))
    wd = w.double().numpy()
    for r in range(rows):
        for b in range(0, k, 32):
            chunk = wd[r, b : b + 32]
            scale = 2.0 ** pow2_exponent(float(np.abs(chunk).max()), 6.0)
            assert np.array_equal(got[r, b : b + 32].double().numpy(), round_to_grid(chunk / scale, E2M1_GRID) * scale)
            # nearest e2m1 point: error <= half the widest gap (2 at the top) times the scale
            assert np.abs(got[r, b : b + 32].double().numpy() - chunk).max() <= 1.0 * scale


def test_quantize_fp4_zero_block() -> None:
    packed, scale = quantize_fp4(torch.zeros(2, 64))
    assert torch.equal(dequantize_fp4(packed, scale), torch.zeros(2, 64))


def _fp8_representable(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 values times a power of two per 128x128 tile, each tile holding an entry of magnitude 448."""
    nb, kb = -(-n // 128), -(-k // 128)
    w = random_e4m3((n, k), gen)
    exps = torch.randint(-12, 12, (nb, kb), generator=gen)
    for i in range(nb):
        for j in range(kb):
            w[i * 128, j * 128] = 448.0 if (i + j) % 2 else -448.0
    scale = torch.exp2(exps.float()).repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :k]
    return w * scale, exps


@pytest.mark.parametrize(("n", "k"), [(128, 128), (256, 384), (130, 200), (1, 5), (129, 129)])
def test_quantize_fp8_blocks_exact_for_representable(n: int, k: int) -> None:
    w, exps = _fp8_representable(n, k, torch.Generator().manual_seed(n + 1000 * k))
    q, scale = quantize_fp8_blocks(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (n, k)
    assert scale.dtype == torch.uint8 and scale.shape == (-(-n // 128), -(-k // 128))
    assert torch.equal(scale.long(), exps + 127)
    assert torch.equal(dequantize_fp8_blocks(q, scale), w)
    assert torch.equal(dequantize_weight(q, scale), w)


def test_dequantize_fp8_blocks_vs_bit_layout_table() -> None:
    gen = torch.Generator().manual_seed(7)
    q = random_e4m3((130, 200), gen).to(torch.float8_e4m3fn)
    scale = torch.randint(110, 140, (2, 2), generator=gen, dtype=torch.uint8)
    assert torch.equal(dequantize_fp8_blocks(q, scale).double(), naive_dequant_fp8(q, scale))
    # spot checks by hand: element (i, j) uses tile (i // 128, j // 128)
    got = dequantize_fp8_blocks(q, scale)
    for i, j in [(0, 0), (127, 128), (128, 127), (129, 199)]:
        assert float(got[i, j]) == float(q[i, j].float()) * 2.0 ** (int(scale[i // 128, j // 128]) - 127)


@pytest.mark.parametrize(("n", "k"), [(130, 200), (128, 256)])
def test_quantize_fp8_blocks_scale_and_error(n: int, k: int) -> None:
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(3)) * 5
    q, scale = quantize_fp8_blocks(w)
    wd = w.double()
    for i in range(0, n, 128):
        for j in range(0, k, 128):
            tile = wd[i : i + 128, j : j + 128]
            e = pow2_exponent(float(tile.abs().max()), 448.0)
            assert int(scale[i // 128, j // 128]) == 127 + e
            err = (dequantize_fp8_blocks(q, scale).double()[i : i + 128, j : j + 128] - tile).abs()
            assert (err <= tile.abs() * 2.0**-4 + 2.0 ** (e - 10)).all()  # half an ulp (3 mantissa bits) or subnormal


def test_dequantize_dense_passthrough() -> None:
    w = torch.randn(3, 4, dtype=torch.bfloat16)
    got = dequantize_weight(w, None)
    assert got.dtype == torch.float32 and torch.equal(got, w.float())


@pytest.mark.parametrize("fmt_max", [448.0, 6.0])
def test_pow2_scale_is_the_smallest_power_of_two(fmt_max: float) -> None:
    amax = torch.tensor([fmt_max * 2.0**k * f for k in range(-30, 30, 3) for f in (0.51, 0.75, 1.0, 1.3)])
    got = pow2_scale(amax, fmt_max)
    for a, s in zip(amax.tolist(), got.tolist()):
        assert s == 2.0 ** pow2_exponent(a, fmt_max), (a, s)


def test_block_scale_bytes_just_above_a_power_of_two() -> None:
    up = torch.tensor(math.inf)
    w4 = torch.zeros(1, 32)
    w4[0, 0] = torch.nextafter(torch.tensor(6.0 * 2.0**4), up)
    w8 = torch.zeros(128, 128)
    w8[0, 0] = torch.nextafter(torch.tensor(448.0 * 2.0**-10), up)
    assert pow2_exponent(float(w4[0, 0]), 6.0) == 5 and pow2_exponent(float(w8[0, 0]), 448.0) == -9
    assert int(quantize_fp4(w4)[1][0, 0]) == 127 + 5  # got 131 (2^4)
    assert int(quantize_fp8_blocks(w8)[1][0, 0]) == 127 - 9  # got 117 (2^-10)
