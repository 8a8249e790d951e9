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
    rope_dim: int = 0,
) -> torch.Tensor:
    """Same contract as kernels.ref.sparse_attention.sparse_attention."""
    lib = library()
    stored = window_kv.dtype == torch.uint8
    if (lib is None or not cpu_activation(q) or not 0 < q.shape[0] <= MAX_QUERIES or q.shape[-1] % 16
            or stored != (comp_kv.dtype == torch.uint8)):
        return ref.sparse_attention(q, window_kv, window_idx, comp_kv, comp_idx, sinks, softmax_scale, rope_dim)
    window_kv, comp_kv = _rows(window_kv, stored), _rows(comp_kv, stored)
    window_idx, comp_idx = window_idx.to(torch.int64).contiguous(), comp_idx.to(torch.int64).contiguous()
    q = q.contiguous()
    (t, heads, d), out = q.shape, torch.empty(q.shape, dtype=torch.float32)
    check(lib.sparse_attention(q.data_ptr(), q.dtype == torch.bfloat16, t, heads, d, stored, rope_dim,
                               window_kv.data_ptr(), _row_bytes(window_kv), window_idx.data_ptr(), window_idx.shape[1],
                               comp_kv.data_ptr(), _row_bytes(comp_kv), comp_idx.data_ptr(), comp_idx.shape[1],
                               sinks.float().contiguous().data_ptr(), softmax_scale, out.data_ptr()),
          "sparse_attention")
    return out


def _rows(kv: torch.Tensor, stored: bool) -> torch.Tensor:
    """Rows the kernel can index with a byte stride: any row stride (cache views are not copied), dense columns."""
    kv = kv if stored else kv.float()
    return kv if kv.stride(-1) == 1 or kv.shape[0] == 0 else kv.contiguous()


def _row_bytes(kv: torch.Tensor) -> int:
    return kv.stride(0) * kv.element_size()
