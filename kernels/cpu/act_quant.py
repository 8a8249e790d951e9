"""fp4_round_trip on CPU: the C kernel in act_quant.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import cpu_activation, library
from kernels.ref import act_quant as ref


def fp4_round_trip(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Same contract as kernels.ref.act_quant.fp4_round_trip."""
    lib = library()
    if lib is None or block != 32 or not cpu_activation(x) or x.dim() == 0 or x.shape[-1] % 32:
        return ref.fp4_round_trip(x, block)
    x = x.contiguous()
    out = torch.empty_like(x)
    lib.fp4_round_trip(x.data_ptr(), x.dtype == torch.bfloat16, x.numel() // x.shape[-1], x.shape[-1], out.data_ptr())
    return out
