"""rms_norm on CPU: the C kernel in rms_norm.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import cpu_activation, library
from kernels.ref import rms_norm as ref


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Same contract as kernels.ref.rms_norm.rms_norm."""
    lib = library()
    if lib is None or not cpu_activation(x) or (weight is not None and weight.dtype != torch.bfloat16) or not x.numel():
        return ref.rms_norm(x, weight, eps)
    x = x.contiguous()
    out = torch.empty_like(x)
    lib.rms_norm(x.data_ptr(), x.dtype == torch.bfloat16, x.numel() // x.shape[-1], x.shape[-1],
                 None if weight is None else weight.contiguous().data_ptr(), eps, out.data_ptr())
    return out
