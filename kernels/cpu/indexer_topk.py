"""indexer_topk over stored FP4 keys for a few queries (decode) on CPU: the C kernel in indexer_topk.c, else the
torch twin. Long key ranges are split across threads (ctypes releases the GIL) and the partial top-ks merged."""

from __future__ import annotations

import torch

from kernels.cpu.build import check, library
from kernels.cpu.parallel import run_parts, split
from kernels.ref import indexer_topk as ref

# Above this many queries the twin's GEMM scoring wins.
MAX_QUERIES = 8
# Keys per thread below which another thread costs more than it saves.
KEYS_PER_THREAD = 32768


def indexer_topk(
    q: torch.Tensor,
    head_weights: torch.Tensor,
    keys: torch.Tensor,
    num_visible: torch.Tensor,
    topk: int,
    score_dtype: torch.dtype,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as kernels.ref.indexer_topk.indexer_topk."""
    lib = library()
    n, dim = keys.shape[0] if rows is None else rows.shape[0], q.shape[-1]
    k = min(topk, n)
    if (lib is None or keys.dtype != torch.uint8 or q.device.type != "cpu" or not 0 < q.shape[0] <= MAX_QUERIES
            or k == 0 or dim % 64 or q.shape[1] % 8 or score_dtype not in (torch.float32, torch.bfloat16)
            or keys.stride(1) != 1):
        return ref.indexer_topk(q, head_weights, keys, num_visible, topk, score_dtype, rows)
    q = q.float().contiguous()
    row_index = None if rows is None else rows.to(torch.int64).contiguous()
    weights = head_weights.float().contiguous()
    visible = num_visible.to(torch.int64).contiguous()
    last = min(n, int(visible.max()))
    ranges = split(last, KEYS_PER_THREAD)
    scores = torch.empty(len(ranges), q.shape[0], k, dtype=torch.float32)
    ids = torch.empty(len(ranges), q.shape[0], k, dtype=torch.int64)

    def scan(part: int, first: int, end: int) -> None:
        check(lib.indexer_topk_fp4(q.data_ptr(), weights.data_ptr(), q.shape[0], q.shape[1], dim, keys.data_ptr(),
                                   keys.stride(0), None if row_index is None else row_index.data_ptr(), first, end,
                                   visible.data_ptr(), k, score_dtype == torch.bfloat16, scores[part].data_ptr(),
                                   ids[part].data_ptr()), "indexer_topk")

    run_parts(ranges, scan)
    if len(ranges) == 1:
        return ids[0]
    # The twin's rank keys merge the parts' picks by (score, lower id); a part's -1 padding has score -inf.
    merged = ref.rank_keys(scores.permute(1, 0, 2).flatten(1), ids.permute(1, 0, 2).flatten(1).clamp(min=0))
    return ref.ranked_ids(merged.topk(k, dim=1).values)
