"""mHC's per-site math: collapse the hc_mult residual streams into a sublayer input (hc_pre), expand the sublayer output
back into them (hc_post), and the final collapse before the head (hc_head). See model_worker/model/mhc.py."""

from __future__ import annotations

import torch

from kernels.ref.sinkhorn import sinkhorn


def _mixes(streams: torch.Tensor, fn: torch.Tensor, norm_eps: float) -> torch.Tensor:
    flat = streams.flatten(1).float()
    flat = flat * torch.rsqrt(flat.square().mean(-1, keepdim=True) + norm_eps)
    return flat @ fn.float().T


def hc_pre(
    streams: torch.Tensor, fn: torch.Tensor, base: torch.Tensor, scale: torch.Tensor,
    norm_eps: float, hc_eps: float, sinkhorn_iters: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """streams [T, n, D] -> (sublayer input [T, D] in streams' dtype, post [T, n], comb [T, n, n]) in float32."""
    n = streams.shape[1]
    mixes = _mixes(streams, fn, norm_eps)
    base, scale = base.float(), scale.float()
    pre = torch.sigmoid(mixes[:, :n] * scale[0] + base[:n]) + hc_eps
    post = 2 * torch.sigmoid(mixes[:, n : 2 * n] * scale[1] + base[n : 2 * n])
    comb_logits = (mixes[:, 2 * n :] * scale[2] + base[2 * n :]).view(-1, n, n)
    comb = sinkhorn(comb_logits, sinkhorn_iters, hc_eps)
    collapsed = (pre.unsqueeze(-1) * streams.float()).sum(1).to(streams.dtype)
    return collapsed, post, comb


def hc_post(output: torch.Tensor, streams: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """output [T, D], streams [T, n, D] -> new streams [T, n, D] (comb applied transposed: direction matters)."""
    mixed = post.unsqueeze(-1) * output.float().unsqueeze(1) + comb.transpose(1, 2) @ streams.float()
    return mixed.to(streams.dtype)


def hc_head(
    streams: torch.Tensor, fn: torch.Tensor, base: torch.Tensor, scale: torch.Tensor, norm_eps: float, hc_eps: float
) -> torch.Tensor:
    """Final collapse of the streams [T, n, D] -> [T, D] in streams' dtype."""
    pre = torch.sigmoid(_mixes(streams, fn, norm_eps) * scale.float() + base.float()) + hc_eps
    return (pre.unsqueeze(-1) * streams.float()).sum(1).to(streams.dtype)
