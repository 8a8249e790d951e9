"""Lightning Indexer: score every visible compressed entry for each query and keep the top k.

Keys are read in blocks of `KEY_BLOCK` entries with a running top-k, so memory stays bounded at a million-token
context and FP4 keys are decoded one block at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.ref.formats import FP4_NIBBLE_SCALE, e8m0_to_float, fp4_nibbles
from kernels.ref.kv_codec import INDEX_KEY_BLOCK

KEY_BLOCK = 16384


def indexer_topk(
    q: torch.Tensor,
    head_weights: torch.Tensor,
    keys: torch.Tensor,
    num_visible: torch.Tensor,
    topk: int,
    score_dtype: torch.dtype,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """I[t, s] = Σ_h w[t, h] · ReLU(q[t, h] · K[s]); top-k over the entries s < num_visible[t].

    Args:
        q: [T, H, c] indexer queries (already rotated/quantized as the numerics require).
        head_weights: [T, H] float32 per-head weights, all scales folded in.
        keys: [N, c] float keys, or their stored FP4 form uint8 [N, c/2 + c/32] (kv_codec.encode_index_keys).
        num_visible: [T] int64 number of entries visible to each query.
        topk: k; the result has min(k, N) columns.
        score_dtype: dtype the scores are rounded to before selection (bf16 in the official numerics).
        rows: [N] int64, the row of `keys` holding entry s (entries in the pages of a shared pool); None: row s.
            With it, `keys` may hold any rows and N = rows.shape[0].
    Returns:
        [T, min(k, N)] int64 entry indices, best first (equal scores: lower index first), -1 where fewer than k
        entries are visible.
    """
    return blockwise_topk(q, head_weights, keys, num_visible, topk, score_dtype, lambda scores: scores, rows)


def blockwise_topk(q: torch.Tensor, head_weights: torch.Tensor, keys: torch.Tensor, num_visible: torch.Tensor,
                   topk: int, score_dtype: torch.dtype, combine: Callable[[torch.Tensor], torch.Tensor],
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """The selection loop: each key block's float32 scores over q's heads go through `combine` (identity, or a sum
    over the ranks holding the other heads), are rounded to score_dtype and merged into a running top k."""
    n, dim = keys.shape[0] if rows is None else rows.shape[0], q.shape[-1]
    k = min(topk, n)
    if k == 0 or q.shape[0] == 0:
        return torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
    best = torch.full((q.shape[0], 0), _NONE, dtype=torch.long, device=q.device)
    qf, wf = q.float(), head_weights.float()
    for first in range(0, n, KEY_BLOCK):
        block = keys[first : first + KEY_BLOCK] if rows is None else keys[rows[first : first + KEY_BLOCK]]
        if block.dtype == torch.uint8:
            scores = torch.einsum("thn,th->tn", fp4_key_logits(qf, block, dim).relu_(), wf)
        else:
            scores = index_scores(qf, wf, block)
        # + 0.0 turns -0.0 into 0.0: the two must rank as one score.
        scores = combine(scores).to(score_dtype).float().add_(0.0)
        ids = torch.arange(first, first + block.shape[0], device=q.device)
        scores.masked_fill_(ids[None, :] >= num_visible[:, None], float("-inf"))
        merged = torch.cat((best, rank_keys(scores, ids)), dim=1)
        best = merged.topk(min(k, merged.shape[1]), dim=-1).values
    return ranked_ids(best)


def index_scores(q: torch.Tensor, head_weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """I[t, s] = Σ_h w[t, h] · ReLU(q[t, h] · K[s]) for float keys [N, c] -> [T, N] float32; differentiable (the
    ReLU works in place on the product, which autograd does not keep)."""
    logits = torch.einsum("thc,nc->thn", q.float(), keys.float()).relu_()
    return torch.einsum("thn,th->tn", logits, head_weights.float())


_ID_MASK = 0xFFFFFFFF
_NONE = -(0x7F800000 << 32)  # above every rank key of score -inf, below every finite one


def rank_keys(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Unique int64 keys ordered like (score, -id): a float's bits made monotonic, then the inverted id (< 2^32).

    Ranking by them picks the best scores and, among equal scores, the lowest ids, so the selection does not depend
    on how keys are blocked or scanned (the CPU kernel breaks ties the same way).
    """
    bits = scores.view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)
    return (ordered << 32) | (_ID_MASK - ids)


def ranked_ids(best: torch.Tensor) -> torch.Tensor:
    """The entry ids of rank keys (best first), -1 for keys of score -inf."""
    return torch.where(best <= _NONE, -1, _ID_MASK - (best & _ID_MASK))


def fp4_key_logits(q: torch.Tensor, stored: torch.Tensor, dim: int) -> torch.Tensor:
    """q [T, H, c] against stored FP4 keys [N, c/2 + c/32] -> [T, H, N] float32.

    A byte holds dims 2i (low nibble) and 2i+1 (high nibble): the even and the odd dims are decoded separately and
    dotted with the matching query dims, which skips interleaving them back (a full copy on CPU); the nibbles'
    2^14 factor joins each block's scale.
    """
    even, odd = fp4_nibbles(stored[:, : dim // 2])
    scale = (e8m0_to_float(stored[:, dim // 2 :]) * FP4_NIBBLE_SCALE).unsqueeze(-1)  # [N, blocks, 1]
    pairs = INDEX_KEY_BLOCK // 2
    even = (even.view(-1, dim // INDEX_KEY_BLOCK, pairs) * scale).flatten(1)
    odd = (odd.view(-1, dim // INDEX_KEY_BLOCK, pairs) * scale).flatten(1)
    return torch.einsum("thc,nc->thn", q[..., 0::2], even) + torch.einsum("thc,nc->thn", q[..., 1::2], odd)
