"""sparse_attention for few queries (decode) on CPU: the C kernel in sparse_attention.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import check, cpu_activation, library
from kernels.ref import sparse_attention as ref

# Above this many queries the twin's batched einsums win.
MAX_QUERIES = 8


def sparse_attention(
    q: torch.Tensor,
    window_kv: torch.Tensor,
    window_idx: torch.Tensor,
    comp_kv: torch.Tensor,
    comp_idx: torch.Tensor,
    sinks: torch.Tensor,
    softmax_scale: float,
) -> torch.Tensor:
    """Same contract as kernels.ref.sparse_attention.sparse_attention."""
    lib = library()
    if lib is None or not cpu_activation(q) or not 0 < q.shape[0] <= MAX_QUERIES or q.shape[-1] % 16:
        return ref.sparse_attention(q, window_kv, window_idx, comp_kv, comp_idx, sinks, softmax_scale)
    q = q.contiguous()
    window_kv, comp_kv = window_kv.float().contiguous(), comp_kv.float().contiguous()
    window_idx, comp_idx = window_idx.to(torch.int64).contiguous(), comp_idx.to(torch.int64).contiguous()
    (t, heads, d), out = q.shape, torch.empty(q.shape, dtype=torch.float32)
    check(lib.sparse_attention(q.data_ptr(), q.dtype == torch.bfloat16, t, heads, d, window_kv.data_ptr(),
                               window_idx.data_ptr(), window_idx.shape[1], comp_kv.data_ptr(), comp_idx.data_ptr(),
                               comp_idx.shape[1], sinks.float().contiguous().data_ptr(), softmax_scale,
                               out.data_ptr()), "sparse_attention")
    return out
