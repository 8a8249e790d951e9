"""Lightning Indexer: score every visible compressed entry for each query and keep the top k."""

from __future__ import annotations

import torch


def indexer_topk(
    q: torch.Tensor,
    head_weights: torch.Tensor,
    keys: torch.Tensor,
    num_visible: torch.Tensor,
    topk: int,
    score_dtype: torch.dtype,
) -> torch.Tensor:
    """I[t, s] = Σ_h w[t, h] · ReLU(q[t, h] · K[s]); top-k over the entries s < num_visible[t].

    Args:
        q: [T, H, c] indexer queries (already rotated/quantized as the numerics require).
        head_weights: [T, H] float32 per-head weights, all scales folded in.
        keys: [N, c] indexer keys of the sequence's compressed entries.
        num_visible: [T] int64 number of entries visible to each query.
        topk: k; the result has min(k, N) columns.
        score_dtype: dtype the scores are rounded to before selection (bf16 in the official numerics).
    Returns:
        [T, min(k, N)] int64 entry indices, -1 where fewer than k entries are visible.
    """
    n = keys.shape[0]
    k = min(topk, n)
    if k == 0 or q.shape[0] == 0:
        return torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
    logits = torch.einsum("thc,nc->thn", q.float(), keys.float()).relu_()
    scores = torch.einsum("thn,th->tn", logits, head_weights.float()).to(score_dtype).float()
    future = torch.arange(n, device=q.device)[None, :] >= num_visible[:, None]
    scores.masked_fill_(future, float("-inf"))
    top = scores.topk(k, dim=-1)
    return torch.where(torch.isinf(top.values), torch.full_like(top.indices, -1), top.indices)
