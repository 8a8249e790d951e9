"""Low-precision storage formats: FP8 e4m3 with 128x128 ue8m0 block scales, packed FP4 e2m1 with ue8m0 scales per 32.

ue8m0 scales are kept as raw uint8 exponent bytes (value = 2^(byte-127)) so every torch version and device can hold
them; FP4 codes are packed two per byte along K, element 2i in the low nibble (the official checkpoint layout).
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0
FP4_MAX = 6.0
FP8_BLOCK = 128
FP4_BLOCK = 32
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_tables: dict[torch.device, torch.Tensor] = {}


def e8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """uint8 exponent bytes -> float32 powers of two."""
    return torch.exp2(scale.to(torch.float32) - 127.0)


def float_to_e8m0(power_of_two: torch.Tensor) -> torch.Tensor:
    """float32 powers of two -> uint8 exponent bytes."""
    return (torch.log2(power_of_two).round() + 127).clamp(0, 254).to(torch.uint8)


def pow2_scale(amax: torch.Tensor, fmt_max: float) -> torch.Tensor:
    """Smallest power of two s with amax / s <= fmt_max (the official `fast_round_scale`).

    Exact from the float's exponent bits: amax / fmt_max = m * 2^e with m in [0.5, 1), so the ceiling of its log2 is
    e, or e - 1 when m is exactly 0.5. (float32 log2 rounds values just above a power of two down onto it.)
    """
    mantissa, exponent = torch.frexp(amax.float() / fmt_max)
    return torch.ldexp(torch.ones_like(mantissa), exponent - (mantissa == 0.5).to(exponent.dtype))


def _e2m1_table(device: torch.device) -> torch.Tensor:
    if device not in _tables:
        _tables[device] = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=device)
    return _tables[device]


def e2m1_encode(values: torch.Tensor) -> torch.Tensor:
    """Round float values already scaled into [-6, 6] to 4-bit e2m1 codes (nearest, ties to even), uint8."""
    mag = values.abs().clamp(max=FP4_MAX)
    mid = torch.tensor(_E2M1_MIDPOINTS, dtype=mag.dtype, device=mag.device)
    idx = torch.bucketize(mag, mid)
    tie = (idx < len(_E2M1_MIDPOINTS)) & (mag == mid[idx.clamp(max=len(_E2M1_MIDPOINTS) - 1)])
    idx = torch.where(tie & (idx % 2 == 1), idx + 1, idx)
    return (idx + 8 * (values < 0).to(idx.dtype)).to(torch.uint8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes (uint8, one per element) -> float32."""
    return _e2m1_table(codes.device)[codes.long()]


FP4_NIBBLE_SCALE = 2.0**14  # fp4_nibbles gives value / FP4_NIBBLE_SCALE


def fp4_nibbles(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., K/2] packed bytes -> (even dims, odd dims), each [..., K/2] float32 worth value / 2^14.

    Vectorized bit move instead of a table lookup (gathers are slow on CPU): a code's 3 exponent/mantissa bits placed
    at float16 bits 11..9 give exactly value * 2^-14, subnormals included; callers fold the 2^14 into a scale.
    """
    wide = packed.to(torch.int16)
    low = ((wide & 0x8) << 12) | ((wide & 0x7) << 9)
    high = ((wide & 0x80) << 8) | ((wide & 0x70) << 5)
    return low.view(torch.float16).float(), high.view(torch.float16).float()


def decode_fp4_bytes(packed: torch.Tensor) -> torch.Tensor:
    """[..., K/2] packed bytes -> [..., K] float32 e2m1 values (element 2i from the low nibble)."""
    even, odd = fp4_nibbles(packed)
    return torch.stack((even, odd), dim=-1).flatten(-2) * FP4_NIBBLE_SCALE


def fp8_bytes_to_float(codes: torch.Tensor) -> torch.Tensor:
    """float8_e4m3fn (or its uint8 bytes) -> float32, exactly (the NaN code is never stored).

    e4m3's 7 exponent/mantissa bits moved to float16 bits 13..7 give value * 2^-8, subnormals included: shifting
    the sign-extended byte left by 7 lands them there and the sign at bit 15; the mask clears bit 14, which sign
    extension set for negatives. torch's own float8 cast is unvectorized on CPU and ~5x slower.
    """
    bits = (codes.view(torch.int8).to(torch.int16) << 7) & -16385  # -16385 == 0xBFFF
    return bits.view(torch.float16).float() * 256.0


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """[..., K] codes -> [..., K/2] bytes, element 2i in the low nibble."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """[..., K/2] bytes -> [..., K] codes."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


def quantize_fp4(weight: torch.Tensor, block: int = FP4_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (packed uint8 [N, K/2], ue8m0 scales uint8 [N, K/block])."""
    blocks = weight.float().unflatten(-1, (-1, block))
    amax = blocks.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126)
    scale = pow2_scale(amax, FP4_MAX)
    codes = e2m1_encode(blocks / scale).flatten(-2)
    return pack_fp4(codes), float_to_e8m0(scale.squeeze(-1))


def dequantize_fp4(packed: torch.Tensor, scale: torch.Tensor, block: int = FP4_BLOCK) -> torch.Tensor:
    """Inverse of `quantize_fp4`, float32 [..., K]."""
    values = decode_fp4_bytes(packed).unflatten(-1, (-1, block))
    return (values * e8m0_to_float(scale).unsqueeze(-1)).flatten(-2)


def quantize_fp8_blocks(weight: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (float8_e4m3fn [N, K], ue8m0 uint8 [ceil(N/block), ceil(K/block)])."""
    n, k = weight.shape
    padded = torch.zeros(-(-n // block) * block, -(-k // block) * block, dtype=torch.float32, device=weight.device)
    padded[:n, :k] = weight.float()
    tiles = padded.unflatten(0, (-1, block)).unflatten(2, (-1, block))  # [Nb, block, Kb, block]
    amax = tiles.abs().amax(dim=(1, 3), keepdim=True).clamp_min(1e-4)
    scale = pow2_scale(amax, FP8_MAX)
    q = (tiles / scale).clamp(-FP8_MAX, FP8_MAX).flatten(0, 1).flatten(1, 2)[:n, :k].to(torch.float8_e4m3fn)
    return q, float_to_e8m0(scale[:, 0, :, 0])


def dequantize_fp8_blocks(weight: torch.Tensor, scale: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """Inverse of `quantize_fp8_blocks`, float32 [N, K]."""
    n, k = weight.shape
    if n % block == 0 and k % block == 0:
        tiles = fp8_bytes_to_float(weight).view(n // block, block, k // block, block)
        return (tiles * e8m0_to_float(scale)[:, None, :, None]).view(n, k)
    s = e8m0_to_float(scale).repeat_interleave(block, 0).repeat_interleave(block, 1)[:n, :k]
    return fp8_bytes_to_float(weight) * s


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Any stored linear weight (dense, FP8 blocks, packed FP4) as float32 [N, K]."""
    if scale is None:
        return weight.to(torch.float32)
    if weight.dtype == torch.uint8:
        return dequantize_fp4(weight, scale)
    return dequantize_fp8_blocks(weight, scale)
