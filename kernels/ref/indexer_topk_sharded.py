"""The Lightning Indexer's top-k when its heads are split over tensor-parallel ranks: each rank scores every visible
entry with its own heads, the partial scores of each key block are summed over ranks (`all_reduce`), and the top k
is taken from the sums, the same on every rank. Same blocks, rounding and tie-breaking as `indexer_topk`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.ref.indexer_topk import _NONE, KEY_BLOCK, fp4_key_logits, rank_keys, ranked_ids


def indexer_topk_sharded(
    q: torch.Tensor,
    head_weights: torch.Tensor,
    keys: torch.Tensor,
    num_visible: torch.Tensor,
    topk: int,
    score_dtype: torch.dtype,
    all_reduce: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """As `indexer_topk`, with q [T, H_local, c] and head_weights [T, H_local] this rank's heads; `all_reduce` sums a
    float32 tensor over the ranks in place. Every rank must call it with the same keys and visibility."""
    n, dim = keys.shape[0], q.shape[-1]
    k = min(topk, n)
    if k == 0 or q.shape[0] == 0:
        return torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
    best = torch.full((q.shape[0], 0), _NONE, dtype=torch.long, device=q.device)
    qf, wf = q.float(), head_weights.float()
    for first in range(0, n, KEY_BLOCK):
        block = keys[first : first + KEY_BLOCK]
        if block.dtype == torch.uint8:
            logits = fp4_key_logits(qf, block, dim).relu_()
        else:
            logits = torch.einsum("thc,nc->thn", qf, block.float()).relu_()
        partial = torch.einsum("thn,th->tn", logits, wf).contiguous()
        scores = all_reduce(partial).to(score_dtype).float().add_(0.0)  # + 0.0: -0.0 and 0.0 rank as one
        ids = torch.arange(first, first + block.shape[0], device=q.device)
        scores.masked_fill_(ids[None, :] >= num_visible[:, None], float("-inf"))
        merged = torch.cat((best, rank_keys(scores, ids)), dim=1)
        best = merged.topk(min(k, merged.shape[1]), dim=-1).values
    return ranked_ids(best)
