"""apply_rope on CPU: the C kernel in rope.c (one pass instead of a dozen elementwise ops), else the torch twin."""

from __future__ import annotations

import math

import torch

from kernels.cpu.build import cpu_activation, library
from kernels.ref import rope as ref


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Same contract as kernels.ref.rope.apply_rope."""
    lib = library()
    if lib is None or not cpu_activation(x) or x.dim() < 2 or x.shape[0] == 0 or freqs.dtype != torch.float32:
        return ref.apply_rope(x, positions, freqs, inverse)
    x = x.contiguous()
    out = torch.empty_like(x)
    if positions.dtype != torch.int64 or not positions.is_contiguous():  # a no-op .to() still costs ~1 us
        positions = positions.to(torch.int64).contiguous()
    lib.apply_rope(x.data_ptr(), x.dtype == torch.bfloat16, x.shape[0], math.prod(x.shape[1:-1]), x.shape[-1],
                   positions.data_ptr(), freqs.contiguous().data_ptr(), freqs.shape[0], inverse, out.data_ptr())
    return out
