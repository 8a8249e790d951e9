"""compressor_project for decode-sized batches on CPU: the C kernel in compressor_project.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.bf16_linear import MAX_TOKENS
from kernels.cpu.build import check, cpu_activation, library
from kernels.ref import compressor_project as ref


def compressor_project(
    x: torch.Tensor, wkv: torch.Tensor, wgate: torch.Tensor, ape: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Same contract as kernels.ref.compressor_project.compressor_project."""
    lib = library()
    if (lib is None or not cpu_activation(x) or x.dim() != 2 or not 0 < x.shape[0] <= MAX_TOKENS or x.shape[1] % 32
            or wkv.dtype != torch.bfloat16 or wgate.dtype != torch.bfloat16 or wkv.shape != wgate.shape
            or wkv.shape[1] != x.shape[1] or not wkv.is_contiguous() or not wgate.is_contiguous()
            or ape.dtype != torch.float32 or ape.shape[1] != wkv.shape[0] or not ape.is_contiguous()
            or positions.dtype != torch.int64):
        return ref.compressor_project(x, wkv, wgate, ape, positions)
    x, positions = x.contiguous(), positions.contiguous()
    (t, d), f = x.shape, wkv.shape[0]
    out = torch.empty(t, 2 * f, dtype=torch.float32)
    check(lib.compressor_project(x.data_ptr(), x.dtype == torch.bfloat16, t, d, wkv.data_ptr(), wgate.data_ptr(), f,
                                 ape.data_ptr(), ape.shape[0], positions.data_ptr(), out.data_ptr()),
          "compressor_project")
    return out
