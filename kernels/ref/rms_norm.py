"""RMSNorm as DeepSeek-V4 computes it: the weighted norms in float32, returned in the input's dtype; the query
heads' unweighted norm with its factor rounded to the input's dtype and multiplied there."""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x [..., d] float32 or bf16, weight [d] or None -> x / rms(x) (* weight), in x's dtype."""
    xf = x.float()
    factor = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is None:
        return x * factor.to(x.dtype)
    return (weight.float() * (xf * factor)).to(x.dtype)
