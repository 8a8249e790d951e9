"""Independent oracles for the kernel tests: e4m3 / e2m1 grids from their bit layouts, round-to-nearest-even by
table search, exact power-of-two block scales and naive per-block round trips (numpy float64, Python loops)."""

from __future__ import annotations

import math

import numpy as np
import torch


def e4m3_value(code: int) -> float:
    """float8_e4m3fn value of a byte from its sign / 4-bit exponent (bias 7) / 3-bit mantissa fields."""
    sign = -1.0 if code & 0x80 else 1.0
    exp, man = (code >> 3) & 0xF, code & 0x7
    if exp == 15 and man == 7:
        return math.nan
    if exp == 0:
        return sign * man / 8 * 2.0**-6
    return sign * (1 + man / 8) * 2.0 ** (exp - 7)


def e2m1_value(code: int) -> float:
    """e2m1 value of a 4-bit code from its sign / 2-bit exponent (bias 1) / 1-bit mantissa fields."""
    sign = -1.0 if code & 0x8 else 1.0
    exp, man = (code >> 1) & 0x3, code & 0x1
    if exp == 0:
        return sign * man * 0.5
    return sign * (1 + man / 2) * 2.0 ** (exp - 1)


E4M3_GRID = np.array([e4m3_value(c) for c in range(127)])  # non-negative finite values, increasing with the code
E2M1_GRID = np.array([e2m1_value(c) for c in range(8)])


def round_to_grid(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Nearest grid value (grid = non-negative values by code), ties to the even code; saturates at the grid max."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    for i, v in enumerate(flat):
        mag = min(abs(v), grid[-1])
        dist = np.abs(grid - mag)
        best = np.flatnonzero(dist == dist.min())
        code = best[0] if len(best) == 1 else [c for c in best if c % 2 == 0][0]
        out[i] = math.copysign(grid[code], v)
    return out.reshape(np.shape(values))


def pow2_exponent(amax: float, fmt_max: float) -> int:
    """Smallest integer e with amax / 2^e <= fmt_max, found by stepping (no log2 rounding involved)."""
    e = int(math.floor(math.log2(amax / fmt_max)))
    while amax / 2.0**e > fmt_max:
        e += 1
    while amax / 2.0 ** (e - 1) <= fmt_max:
        e -= 1
    return e


def naive_round_trip(x: torch.Tensor, block: int, grid: np.ndarray, amax_floor: float) -> torch.Tensor:
    """Per row, per block of `block` values (last block may be short): scale 2^e, clamp, round to grid, rescale."""
    fmt_max = float(grid[-1])
    rows = x.float().reshape(-1, x.shape[-1]).double().numpy()
    out = np.zeros_like(rows)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], block):
            chunk = rows[r, start : start + block]
            amax = max(float(np.abs(chunk).max()), amax_floor)
            scale = 2.0 ** pow2_exponent(amax, fmt_max)
            out[r, start : start + block] = round_to_grid(np.clip(chunk / scale, -fmt_max, fmt_max), grid) * scale
    return torch.from_numpy(out).reshape(x.shape).to(x.dtype)


def naive_fp8(x: torch.Tensor, block: int) -> torch.Tensor:
    return naive_round_trip(x, block, E4M3_GRID, 1e-4)


def naive_fp4(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    return naive_round_trip(x, block, E2M1_GRID, 6.0 * 2.0**-126)


def is_on_grid(values: np.ndarray, grid: np.ndarray) -> bool:
    """Every value's magnitude is exactly one of the grid values."""
    return bool(np.isin(np.abs(np.asarray(values, dtype=np.float64)), grid).all())


def random_e4m3(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random finite e4m3 values (float32), drawn as random bytes mapped through the bit-layout table."""
    full = np.array([e4m3_value(c) for c in range(256)])
    codes = torch.randint(0, 256, shape, generator=gen).numpy()
    codes = np.where(np.isnan(full[codes]), 0, codes)
    return torch.from_numpy(full[codes]).float()


def naive_dequant_fp4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """[..., K/2] packed bytes (element 2i low nibble) + [..., K/32] ue8m0 bytes -> float64 [..., K] via lookups."""
    table = np.array([e2m1_value(c) for c in range(16)])
    b = packed.numpy().astype(np.int64)
    codes = np.stack((b & 0xF, b >> 4), axis=-1).reshape(*b.shape[:-1], -1)
    scales = np.repeat(2.0 ** (scale.numpy().astype(np.float64) - 127), 32, axis=-1)
    return torch.from_numpy(table[codes] * scales)


def naive_dequant_fp8(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """[N, K] float8_e4m3fn + [ceil(N/128), ceil(K/128)] ue8m0 bytes -> float64 [N, K] via the bit-layout table."""
    table = np.array([e4m3_value(c) for c in range(256)])
    n, k = weight.shape
    values = table[weight.view(torch.uint8).numpy().astype(np.int64)]
    s = 2.0 ** (scale.numpy().astype(np.float64) - 127)
    return torch.from_numpy(values * np.repeat(np.repeat(s, 128, 0), 128, 1)[:n, :k])
