"""hadamard on CPU: the C kernel in hadamard.c (a butterfly per row), else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import cpu_activation, library
from kernels.ref import hadamard as ref

# Above this many rows the twin's GEMM wins.
MAX_ROWS = 256


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Same contract as kernels.ref.hadamard.hadamard."""
    lib = library()
    d = x.shape[-1] if x.dim() else 0
    if (lib is None or not cpu_activation(x) or d < 8 or d & (d - 1) or not 0 < x.numel() // d <= MAX_ROWS):
        return ref.hadamard(x)
    x = x.contiguous()
    out = torch.empty_like(x)
    lib.hadamard_rows(x.data_ptr(), x.dtype == torch.bfloat16, x.numel() // d, d, out.data_ptr())
    return out
