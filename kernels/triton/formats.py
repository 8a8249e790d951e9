"""Stored formats as Triton device functions: decoding and rounding with integer bit operations only.

Mirrors kernels/ref/formats.py and kernels/ref/act_quant.py bit for bit: e2m1 codes and e4m3 bytes decode exactly,
ue8m0 bytes are 2^(byte - 127), and the official activation quantization rounds to e4m3 to nearest even.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def ue8m0_to_float(byte):
    """uint8/int32 exponent bytes -> float32 2^(byte - 127) (byte 0 is the subnormal 2^-127)."""
    b = byte.to(tl.int32)
    bits = tl.where(b == 0, 0x00400000, b << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def e2m1_to_float(code):
    """4-bit e2m1 codes (any int type, 0..15) -> float32: sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0."""
    c = code.to(tl.int32)
    exp = (c >> 1) & 3
    man = c & 1
    # normal: 2^(exp-1) * (1 + man/2) = float bits with exponent exp + 126 and mantissa bit 22 = man
    normal = ((exp + 126) << 23) | (man << 22)
    magnitude = tl.where(exp == 0, man.to(tl.float32) * 0.5, normal.to(tl.float32, bitcast=True))
    return tl.where((c & 8) != 0, -magnitude, magnitude)


@triton.jit
def e4m3_to_float(byte):
    """float8 e4m3fn bytes (as uint8 / int) -> float32, subnormals included (the NaN code is never stored)."""
    b = byte.to(tl.int32) & 0xFF
    exp = (b >> 3) & 0xF
    man = b & 7
    normal = ((exp + 120) << 23) | (man << 20)
    magnitude = tl.where(exp == 0, man.to(tl.float32) * 0.001953125, normal.to(tl.float32, bitcast=True))
    return tl.where((b & 0x80) != 0, -magnitude, magnitude)


@triton.jit
def pow2_scale(amax, fmt_max: tl.constexpr):
    """Smallest power of two s with amax / s <= fmt_max, from the float's exponent bits (formats.pow2_scale)."""
    r = amax / fmt_max
    bits = r.to(tl.int32, bitcast=True)
    exp = ((bits >> 23) & 0xFF) - 126  # r = m * 2^exp with m in [0.5, 1) for normal r
    exp = tl.where((bits & 0x7FFFFF) == 0, exp - 1, exp)  # m == 0.5: r is a power of two itself
    return ((exp + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def round_e4m3(v):
    """|v| <= 448 to the nearest e4m3 value, ties to even (subnormals step 2^-9)."""
    bits = v.to(tl.int32, bitcast=True)
    rounded = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)  # -1048576: 0xFFF00000
    sub = v * 512.0
    # round half to even on the subnormal grid
    floor = tl.floor(sub)
    frac = sub - floor
    even = tl.where((floor.to(tl.int32) & 1) == 0, floor, floor + 1.0)
    sub_rounded = tl.where(frac > 0.5, floor + 1.0, tl.where(frac < 0.5, floor, even)) * 0.001953125
    return tl.where(tl.abs(v) < 0.015625, sub_rounded, rounded)


@triton.jit
def fp8_round_trip(x, amax):
    """x rounded through e4m3 with the power-of-two scale of its block's amax (floored at 1e-4): act_quant."""
    scale = pow2_scale(tl.maximum(amax, 1e-4), 448.0)
    q = tl.minimum(tl.maximum(x / scale, -448.0), 448.0)
    return round_e4m3(q) * scale
