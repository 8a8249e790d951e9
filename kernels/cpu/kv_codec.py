"""KV entry encode / decode and index key encode on CPU: the C kernels in kv_codec.c, else the torch twins."""

from __future__ import annotations

import torch

from kernels.cpu.build import cpu_activation, library
from kernels.ref import kv_codec as ref
from kernels.ref.kv_codec import INDEX_KEY_BLOCK, KV_NOPE_BLOCK, index_key_bytes, kv_entry_bytes


def encode_kv(x: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """Same contract as kernels.ref.kv_codec.encode_kv."""
    lib = library()
    if lib is None or not cpu_activation(x) or x.dim() != 2 or (x.shape[1] - rope_dim) % KV_NOPE_BLOCK:
        return ref.encode_kv(x, rope_dim)
    x = x.contiguous()
    (n, dim), width = x.shape, kv_entry_bytes(x.shape[1], rope_dim)
    out = torch.empty(n, width, dtype=torch.uint8)
    lib.encode_kv(x.data_ptr(), x.dtype == torch.bfloat16, n, dim, rope_dim, width, out.data_ptr())
    return out


def decode_kv(stored: torch.Tensor, dim: int, rope_dim: int) -> torch.Tensor:
    """Same contract as kernels.ref.kv_codec.decode_kv."""
    lib = library()
    if (lib is None or stored.device.type != "cpu" or stored.dim() != 2 or stored.stride(1) != 1
            or (dim - rope_dim) % KV_NOPE_BLOCK):
        return ref.decode_kv(stored, dim, rope_dim)
    out = torch.empty(stored.shape[0], dim, dtype=torch.float32)
    if stored.shape[0]:
        lib.decode_kv(stored.data_ptr(), stored.shape[0], dim, rope_dim, stored.stride(0), out.data_ptr())
    return out


def encode_index_keys(x: torch.Tensor) -> torch.Tensor:
    """Same contract as kernels.ref.kv_codec.encode_index_keys."""
    lib = library()
    if lib is None or not cpu_activation(x) or x.dim() != 2 or x.shape[1] % INDEX_KEY_BLOCK:
        return ref.encode_index_keys(x)
    x = x.contiguous()
    out = torch.empty(x.shape[0], index_key_bytes(x.shape[1]), dtype=torch.uint8)
    lib.encode_index_keys(x.data_ptr(), x.dtype == torch.bfloat16, x.shape[0], x.shape[1], out.data_ptr())
    return out
