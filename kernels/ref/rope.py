"""Partial interleaved RoPE: rotate pairs (2i, 2i+1) of each vector's last dims by position-dependent angles."""

from __future__ import annotations

import torch


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of x's last `2 * len(freqs)` dims by position * freq (conjugate if inverse).

    Args:
        x: [T, ..., D]; positions: [T] int64; freqs: [R/2] float32.
    """
    rope_dim = 2 * freqs.shape[0]
    angles = positions.to(torch.float32)[:, None] * freqs.to(x.device)[None, :]
    angles = angles.view(angles.shape[0], *([1] * (x.dim() - 2)), freqs.shape[0])
    cos, sin = torch.cos(angles), torch.sin(angles)
    if inverse:
        sin = -sin
    rope = x[..., -rope_dim:].float().unflatten(-1, (-1, 2))
    even, odd = rope[..., 0], rope[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return torch.cat((x[..., :-rope_dim], rotated.to(x.dtype)), dim=-1)
