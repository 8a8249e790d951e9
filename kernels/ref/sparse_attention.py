"""Core attention of every DeepSeek-V4 layer: one softmax over a query's window entries and its compressed entries,
with a per-head sink logit in the denominator. The single K=V head is shared by all query heads.

Entries are read where they live: float rows, or the stored form of the official numerics (kv_codec: FP8 nope dims
with ue8m0 scales, bf16 rope dims), decoded as they are read, so callers pass a sequence's window log and its pages
as they are instead of decoding copies.
"""

from __future__ import annotations

import torch

from kernels.ref.kv_codec import decode_kv

_QUERY_BLOCK = 256  # bounds the gathered [block, L, D] temporaries in long chunked prefills


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
    """Attention over indexed entries.

    Args:
        q: [T, H, D] queries.
        window_kv: [Nw, D] raw (uncompressed) K=V rows, float or stored (uint8 [Nw, kv_entry_bytes(D, rope_dim)]);
            window_idx [T, W] rows per query, -1 = none.
        comp_kv: [Nc, D] compressed K=V entries, float or stored (any rows: a page pool's storage); comp_idx [T, C]
            rows of comp_kv per query, -1 = none.
        sinks: [H] float32 sink logits (denominator only).
        rope_dim: trailing rope dims of a stored entry (unused for float rows).
    Returns:
        [T, H, D] float32.
    """
    if window_idx.shape[1] + comp_idx.shape[1] == 0:  # nothing to attend to: the sink takes all the weight
        return torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dim = q.shape[-1]
    if torch.is_grad_enabled() and (q.requires_grad or window_kv.requires_grad or comp_kv.requires_grad):
        return _by_slices(q, _float_rows(window_kv, dim, rope_dim), window_idx, _float_rows(comp_kv, dim, rope_dim),
                          comp_idx, sinks, softmax_scale)
    return _gathered(q, window_kv, window_idx, comp_kv, comp_idx, sinks, softmax_scale, rope_dim)


def _gathered(q: torch.Tensor, window_kv: torch.Tensor, window_idx: torch.Tensor, comp_kv: torch.Tensor,
              comp_idx: torch.Tensor, sinks: torch.Tensor, softmax_scale: float, rope_dim: int) -> torch.Tensor:
    """Inference: each query's rows gathered ([t, L, D] per block of queries), stored rows decoded once."""
    dim = q.shape[-1]
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    if comp_kv.shape[0]:
        # Entries are read where they lie (a pool's pages hold every sequence's) and top-k picks a few of them:
        # decode each entry a query reads once, however many queries read it, and no other.
        used = torch.zeros(comp_kv.shape[0], dtype=torch.bool, device=comp_kv.device)
        used[comp_idx[comp_idx >= 0]] = True
        if not bool(used.all()):
            remap = torch.cumsum(used, 0) - 1
            comp_kv = comp_kv[used]
            comp_idx = torch.where(comp_idx >= 0, remap[comp_idx.clamp(min=0)], -1)
    kv_all = torch.cat((_float_rows(window_kv, dim, rope_dim), _float_rows(comp_kv, dim, rope_dim)))
    idx_all = torch.cat((window_idx, torch.where(comp_idx >= 0, comp_idx + window_kv.shape[0], comp_idx)), dim=1)
    for start in range(0, q.shape[0], _QUERY_BLOCK):
        stop = min(start + _QUERY_BLOCK, q.shape[0])
        idx = idx_all[start:stop]
        valid = idx >= 0
        kv = kv_all[idx.clamp(min=0)]  # [t, L, D]
        logits = torch.einsum("thd,tld->thl", q[start:stop].float(), kv) * softmax_scale
        logits.masked_fill_(~valid[:, None, :], float("-inf"))
        sink = sinks.float()[None, :, None].expand(logits.shape[0], -1, 1)
        peak = torch.maximum(logits.amax(-1, keepdim=True), sink)
        weights = torch.exp(logits - peak)
        denom = weights.sum(-1, keepdim=True) + torch.exp(sink - peak)
        out[start:stop] = torch.einsum("thl,tld->thd", weights / denom, kv)
    return out


def _float_rows(kv: torch.Tensor, dim: int, rope_dim: int) -> torch.Tensor:
    return decode_kv(kv, dim, rope_dim) if kv.dtype == torch.uint8 else kv.float()


def _by_slices(q: torch.Tensor, window_kv: torch.Tensor, window_idx: torch.Tensor, comp_kv: torch.Tensor,
               comp_idx: torch.Tensor, sinks: torch.Tensor, softmax_scale: float) -> torch.Tensor:
    """The same attention for training (whole sequences, with gradients): per block of queries, the contiguous
    slice of rows its indices span (the window's band, the entries visible to it) is attended as a matrix product
    under a mask of the indexed rows, instead of gathering [t, L, D] rows per query, whose backward is a scatter of
    the same size. The same softmax (sink in the denominator); float32 sums in another order."""
    outputs = []
    sink = sinks.float()
    for start in range(0, q.shape[0], _QUERY_BLOCK):
        stop = min(start + _QUERY_BLOCK, q.shape[0])
        queries = q[start:stop].float()
        parts = []
        for rows, idx in ((window_kv, window_idx[start:stop]), (comp_kv, comp_idx[start:stop])):
            valid = idx >= 0
            if idx.shape[1] == 0 or not bool(valid.any()):
                continue
            first, last = int(idx[valid].min()), int(idx[valid].max()) + 1
            # a column past the slice takes the -1s, so they cannot unmark a real row
            columns = torch.where(valid, idx - first, last - first)
            mask = torch.zeros(stop - start, last - first + 1, dtype=torch.bool, device=q.device)
            mask.scatter_(1, columns, True)
            kv = rows[first:last]
            logits = torch.einsum("thd,nd->thn", queries, kv) * softmax_scale
            parts.append((logits.masked_fill(~mask[:, None, :-1], float("-inf")), kv))
        if not parts:
            outputs.append(torch.zeros(queries.shape, dtype=torch.float32, device=q.device))
            continue
        sinks_here = sink[None, :, None].expand(stop - start, -1, 1)
        peak = sinks_here
        for logits, _ in parts:
            peak = torch.maximum(peak, logits.amax(-1, keepdim=True))
        weights = [torch.exp(logits - peak) for logits, _ in parts]
        denom = sum(w.sum(-1, keepdim=True) for w in weights) + torch.exp(sinks_here - peak)
        outputs.append(sum(torch.einsum("thn,nd->thd", w / denom, kv) for w, (_, kv) in zip(weights, parts)))
    return torch.cat(outputs)
