"""hc_pre / hc_post / hc_head on CPU: the C kernels in mhc.c, else the torch twins."""

from __future__ import annotations

import torch

from kernels.cpu.build import check, cpu_activation, library
from kernels.ref import mhc as ref


def hc_pre(
    streams: torch.Tensor, fn: torch.Tensor, base: torch.Tensor, scale: torch.Tensor,
    norm_eps: float, hc_eps: float, sinkhorn_iters: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as kernels.ref.mhc.hc_pre."""
    lib = library()
    t, n, d = streams.shape
    if lib is None or not cpu_activation(streams) or t == 0 or d % 8 or fn.shape[0] != (2 + n) * n:
        return ref.hc_pre(streams, fn, base, scale, norm_eps, hc_eps, sinkhorn_iters)
    streams = streams.contiguous()
    fn, base, scale = fn.float().contiguous(), base.float().contiguous(), scale.float().contiguous()
    collapsed = torch.empty(t, d, dtype=streams.dtype)
    post, comb = torch.empty(t, n, dtype=torch.float32), torch.empty(t, n, n, dtype=torch.float32)
    check(lib.hc_pre(streams.data_ptr(), streams.dtype == torch.bfloat16, t, n, d, fn.data_ptr(), base.data_ptr(),
                     scale.data_ptr(), norm_eps, hc_eps, sinkhorn_iters, collapsed.data_ptr(), post.data_ptr(),
                     comb.data_ptr()), "hc_pre")
    return collapsed, post, comb


def hc_post(output: torch.Tensor, streams: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """Same contract as kernels.ref.mhc.hc_post."""
    lib = library()
    if lib is None or not cpu_activation(streams, output):
        return ref.hc_post(output, streams, post, comb)
    output, streams = output.contiguous(), streams.contiguous()
    post, comb = post.float().contiguous(), comb.float().contiguous()
    t, n, d = streams.shape
    out = torch.empty_like(streams)
    check(lib.hc_post(output.data_ptr(), output.dtype == torch.bfloat16, streams.data_ptr(),
                      streams.dtype == torch.bfloat16, t, n, d, post.data_ptr(), comb.data_ptr(), out.data_ptr()),
          "hc_post")
    return out


def hc_head(
    streams: torch.Tensor, fn: torch.Tensor, base: torch.Tensor, scale: torch.Tensor, norm_eps: float, hc_eps: float
) -> torch.Tensor:
    """Same contract as kernels.ref.mhc.hc_head."""
    lib = library()
    t, n, d = streams.shape
    if lib is None or not cpu_activation(streams) or t == 0 or d % 8 or fn.shape[0] != n:
        return ref.hc_head(streams, fn, base, scale, norm_eps, hc_eps)
    streams = streams.contiguous()
    fn, base, scale = fn.float().contiguous(), base.float().contiguous(), scale.float().contiguous()
    collapsed = torch.empty(t, d, dtype=streams.dtype)
    check(lib.hc_head(streams.data_ptr(), streams.dtype == torch.bfloat16, t, n, d, fn.data_ptr(), base.data_ptr(),
                      scale.data_ptr(), norm_eps, hc_eps, collapsed.data_ptr()), "hc_head")
    return collapsed
