"""sinkhorn on CPU: the C kernel in sinkhorn.c (a handful of tiny matrices per token), else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import library
from kernels.ref import sinkhorn as ref


def sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """Same contract as kernels.ref.sinkhorn.sinkhorn."""
    lib = library()
    if lib is None or logits.device.type != "cpu" or logits.dtype != torch.float32:
        return ref.sinkhorn(logits, iters, eps)
    logits = logits.contiguous()
    n = logits.shape[-1]
    comb = torch.empty_like(logits)
    lib.sinkhorn(logits.data_ptr(), logits.numel() // (n * n), n, iters, eps, comb.data_ptr())
    return comb
