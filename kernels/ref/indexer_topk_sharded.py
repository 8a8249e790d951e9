"""The Lightning Indexer's top-k when its heads are split over tensor-parallel ranks: each rank scores every visible
entry with its own heads, the partial scores of each key block are summed over ranks (`all_reduce`), and the top k
is taken from the sums, the same on every rank. Same blocks, rounding and tie-breaking as `indexer_topk`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.ref.indexer_topk import blockwise_topk


def indexer_topk_sharded(
    q: torch.Tensor,
    head_weights: torch.Tensor,
    keys: torch.Tensor,
    num_visible: torch.Tensor,
    topk: int,
    score_dtype: torch.dtype,
    all_reduce: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """As `indexer_topk`, with q [T, H_local, c] and head_weights [T, H_local] this rank's heads; `all_reduce` sums a
    float32 tensor over the ranks in place. Every rank must call it with the same keys and visibility."""
    return blockwise_topk(q, head_weights, keys, num_visible, topk, score_dtype,
                          lambda partial: all_reduce(partial.contiguous()), rows)
