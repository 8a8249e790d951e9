"""Stored forms of KV entries and indexer keys in the official numerics (what the official runtime keeps).

KV entry of D dims with R rope dims: (D-R) FP8 e4m3 bytes | R bf16 dims | (D-R)/64 ue8m0 scale bytes | zero pad to a
multiple of 8 bytes (Flash/Pro: 448 + 128 + 7 + 1 = 584 B). Indexer key of c dims: c/2 bytes of packed FP4 codes |
c/32 ue8m0 scale bytes (c = 128: 68 B). Encoding quantizes; decode(encode(x)) is the official round trip.
"""

from __future__ import annotations

import torch

from kernels.ref.formats import (
    FP4_MAX,
    FP8_MAX,
    decode_fp4_bytes,
    e2m1_encode,
    e8m0_to_float,
    float_to_e8m0,
    fp8_bytes_to_float,
    pack_fp4,
    pow2_scale,
)

KV_NOPE_BLOCK = 64
INDEX_KEY_BLOCK = 32


def kv_entry_bytes(dim: int, rope_dim: int) -> int:
    nope = dim - rope_dim
    raw = nope + 2 * rope_dim + nope // KV_NOPE_BLOCK
    return -(-raw // 8) * 8


def index_key_bytes(dim: int) -> int:
    return dim // 2 + dim // INDEX_KEY_BLOCK


def encode_kv(x: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """[N, D] float -> [N, kv_entry_bytes] uint8."""
    n, dim = x.shape
    nope = dim - rope_dim
    blocks = x[:, :nope].float().unflatten(-1, (-1, KV_NOPE_BLOCK))
    scale = pow2_scale(blocks.abs().amax(-1, keepdim=True).clamp_min(1e-4), FP8_MAX)
    codes = (blocks / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).flatten(-2).view(torch.uint8)
    rope = x[:, nope:].to(torch.bfloat16).contiguous().view(torch.uint8)
    out = torch.zeros(n, kv_entry_bytes(dim, rope_dim), dtype=torch.uint8, device=x.device)
    out[:, :nope] = codes
    out[:, nope : nope + 2 * rope_dim] = rope
    out[:, nope + 2 * rope_dim : nope + 2 * rope_dim + nope // KV_NOPE_BLOCK] = float_to_e8m0(scale.squeeze(-1))
    return out


def decode_kv(stored: torch.Tensor, dim: int, rope_dim: int) -> torch.Tensor:
    """[N, kv_entry_bytes] uint8 -> [N, D] float32."""
    nope = dim - rope_dim
    codes = fp8_bytes_to_float(stored[:, :nope]).unflatten(-1, (-1, KV_NOPE_BLOCK))
    scale = e8m0_to_float(stored[:, nope + 2 * rope_dim : nope + 2 * rope_dim + nope // KV_NOPE_BLOCK])
    rope = stored[:, nope : nope + 2 * rope_dim].contiguous().view(torch.bfloat16).float()
    return torch.cat(((codes * scale.unsqueeze(-1)).flatten(-2), rope), dim=-1)


def encode_index_keys(x: torch.Tensor) -> torch.Tensor:
    """[N, c] float (already Hadamard-rotated) -> [N, index_key_bytes] uint8 (FP4 e2m1, ue8m0 per 32)."""
    blocks = x.float().unflatten(-1, (-1, INDEX_KEY_BLOCK))
    scale = pow2_scale(blocks.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126), FP4_MAX)
    packed = pack_fp4(e2m1_encode(blocks / scale).flatten(-2))
    return torch.cat((packed, float_to_e8m0(scale.squeeze(-1))), dim=-1)


def decode_index_keys(stored: torch.Tensor, dim: int) -> torch.Tensor:
    """[N, index_key_bytes] uint8 -> [N, c] float32."""
    values = decode_fp4_bytes(stored[:, : dim // 2]).unflatten(-1, (-1, INDEX_KEY_BLOCK))
    return (values * e8m0_to_float(stored[:, dim // 2 :]).unsqueeze(-1)).flatten(-2)
