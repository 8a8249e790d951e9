"""Lightning Indexer scoring and top-k on Triton, with kernels.ref.indexer_topk's contract and its exact picks.

Two passes per column block of keys:
1. `_rank_tile` scores a [BLOCK_T queries x BLOCK_S keys] tile. It decodes the key tile once (packed FP4 codes and
   ue8m0 scales with integer bit operations, or plain float loads) and reuses it for every head: one tl.dot per head
   with float32 accumulation, ReLU, the head-weighted sum, bf16 rounding when asked (round to nearest even on the
   float bits) and the causal mask (-inf for s >= num_visible[t]). Instead of the score it stores the
   twin's int64 rank key, (monotonic score bits) << 32 | (2^32 - 1 - id). Tiles no query of the block can see skip
   the dots (the causal corner of a prefill chunk).
2. torch.topk over [running best k | this block's rank keys]. The keys are unique, so the selection is exact,
   deterministic and breaks equal scores by the lower id, like the twin, however the keys are tiled.

A column block holds at least KEY_BLOCK keys, more when there are few queries (decode is a single pass), so the rank
keys stay near SCORES_PER_PASS int64 (128 MiB) even for a 2K-query prefill chunk over 256K entries.

Tensor cores: FP4 keys (and bf16 keys) are exact in bf16, so their dots take bf16 operands: a bf16 query as it is, a
float32 query as three bf16 pieces (each carries the next 8 bits of its remainder, so together they hold all 24).
Every product is then exact and summed in float32, as in the twin's float32 einsum. Other float keys take float32
dots (input_precision="ieee"). The CPU interpreter cannot run bf16 dots, so there the same pieces are widened back
to float32: the same exact products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.ref import indexer_topk as ref
from kernels.ref.kv_codec import INDEX_KEY_BLOCK
from kernels.triton.formats import e2m1_to_float, ue8m0_to_float

KEY_BLOCK = 16384
SCORES_PER_PASS = 1 << 24
_FLOOR = -(1 << 63)  # below every rank key: fills the running best while it holds fewer than k keys


@triton.jit
def _key_tile(k_ptr, rows_ptr, s, s_ok, sk_n, sk_c, C: tl.constexpr, STORED: tl.constexpr, PAIRS: tl.constexpr,
              HAS_ROWS: tl.constexpr):
    """Keys s split into their even and their odd dims, each [C/2, BLOCK_S] float32 (transposed for the dot); key s
    is row rows[s] of k when HAS_ROWS (keys in a shared page pool), else row s.

    A packed byte holds dims 2i (low nibble) and 2i + 1, so splitting the dims avoids re-interleaving the nibbles;
    the query is split the same way.
    """
    i = tl.arange(0, C // 2)[:, None]
    if HAS_ROWS:
        row = k_ptr + tl.load(rows_ptr + s, mask=s_ok, other=0)[None, :] * sk_n
    else:
        row = k_ptr + s[None, :] * sk_n
    ok = s_ok[None, :]
    if STORED:
        packed = tl.load(row + i * sk_c, mask=ok, other=0).to(tl.int32)
        scale = ue8m0_to_float(tl.load(row + (C // 2 + i // PAIRS) * sk_c, mask=ok, other=127))
        even = e2m1_to_float(packed & 15) * scale
        odd = e2m1_to_float(packed >> 4) * scale
    else:
        even = tl.load(row + 2 * i * sk_c, mask=ok, other=0.0).to(tl.float32)
        odd = tl.load(row + (2 * i + 1) * sk_c, mask=ok, other=0.0).to(tl.float32)
    return even, odd


@triton.jit
def _rank_tile(
    q_ptr, w_ptr, k_ptr, rows_ptr, vis_ptr, out_ptr, T, H, first, cols,
    sq_t, sq_h, sq_c, sw_t, sw_h, sk_n, sk_c, so_t,
    C: tl.constexpr, STORED: tl.constexpr, PAIRS: tl.constexpr, PIECES: tl.constexpr, BF16_DOT: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, HAS_ROWS: tl.constexpr,
):
    """Rank keys of queries [BLOCK_T] x keys first + [BLOCK_S] into out[t, s - first] (PIECES 0: float32 dots)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    col = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    s = first + col
    t_ok = t < T
    s_ok = col < cols
    visible = tl.load(vis_ptr + t, mask=t_ok, other=0)
    # The head sum starts at +0.0 and +0.0 + -0.0 is +0.0, so no score is -0.0 (it would rank below 0.0).
    scores = tl.zeros([BLOCK_T, BLOCK_S], dtype=tl.float32)
    if first + tl.program_id(1) * BLOCK_S < tl.max(visible, axis=0):
        key_even, key_odd = _key_tile(k_ptr, rows_ptr, s, s_ok, sk_n, sk_c, C, STORED, PAIRS, HAS_ROWS)
        if BF16_DOT:
            key_even = key_even.to(tl.bfloat16)
            key_odd = key_odd.to(tl.bfloat16)
        i = tl.arange(0, C // 2)[None, :]
        for h in range(H):
            q_row = q_ptr + t[:, None] * sq_t + h * sq_h
            q_even = tl.load(q_row + 2 * i * sq_c, mask=t_ok[:, None], other=0.0).to(tl.float32)
            q_odd = tl.load(q_row + (2 * i + 1) * sq_c, mask=t_ok[:, None], other=0.0).to(tl.float32)
            logits = tl.zeros([BLOCK_T, BLOCK_S], dtype=tl.float32)
            if PIECES == 0:
                logits = tl.dot(q_even, key_even, logits, input_precision="ieee")
                logits = tl.dot(q_odd, key_odd, logits, input_precision="ieee")
            else:
                for _ in tl.static_range(PIECES):
                    even_piece = q_even.to(tl.bfloat16)
                    odd_piece = q_odd.to(tl.bfloat16)
                    q_even -= even_piece.to(tl.float32)
                    q_odd -= odd_piece.to(tl.float32)
                    if BF16_DOT:
                        logits = tl.dot(even_piece, key_even, logits)
                        logits = tl.dot(odd_piece, key_odd, logits)
                    else:
                        logits = tl.dot(even_piece.to(tl.float32), key_even, logits)
                        logits = tl.dot(odd_piece.to(tl.float32), key_odd, logits)
            weight = tl.load(w_ptr + t * sw_t + h * sw_h, mask=t_ok, other=0.0)
            scores += weight[:, None] * tl.maximum(logits, 0.0)
    if ROUND_BF16:
        bits = scores.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536  # -65536: 0xFFFF0000
        scores = bits.to(tl.float32, bitcast=True)
    scores = tl.where(s[None, :] < visible[:, None], scores, float("-inf"))
    bits = scores.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    inverted_id = (~s).to(tl.uint32, bitcast=True).to(tl.int64)  # 2^32 - 1 - s, zero-extended
    rank = (ordered.to(tl.int64) << 32) | inverted_id[None, :]
    tl.store(out_ptr + t[:, None] * so_t + col[None, :], rank, mask=t_ok[:, None] & s_ok[None, :])


def indexer_topk(
    q: torch.Tensor,
    head_weights: torch.Tensor,
    keys: torch.Tensor,
    num_visible: torch.Tensor,
    topk: int,
    score_dtype: torch.dtype,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as kernels.ref.indexer_topk.indexer_topk (head dims: a power of two >= 32, else the twin)."""
    n, dim = keys.shape[0] if rows is None else rows.shape[0], q.shape[-1]
    t, k = q.shape[0], min(topk, n)
    stored = keys.dtype == torch.uint8
    if (dim < 32 or dim & (dim - 1) or score_dtype not in (torch.float32, torch.bfloat16)
            or not (stored or keys.dtype.is_floating_point)):
        return ref.indexer_topk(q, head_weights, keys, num_visible, topk, score_dtype, rows)
    if k == 0 or t == 0:
        return torch.full((t, k), -1, dtype=torch.long, device=q.device)
    pieces = 0  # float32 dots unless the keys are exact in bf16
    if stored or keys.dtype == torch.bfloat16:
        pieces = 1 if q.dtype == torch.bfloat16 else 3
    weights = head_weights.float()
    visible = num_visible.to(device=q.device, dtype=torch.int64).contiguous()
    row_index = visible if rows is None else rows.to(device=q.device, dtype=torch.int64).contiguous()
    width = min(n, max(KEY_BLOCK, SCORES_PER_PASS // t))
    ranks = torch.empty((t, k + width), dtype=torch.int64, device=q.device)
    ranks[:, :k] = _FLOOR  # the kernel fills the rest
    # Decode: a 16-query tile (the dot's minimum) and wide key tiles; prefill: square tiles.
    block_t, block_s = (16, 128) if t <= 16 else (64, 64)
    for first in range(0, n, width):
        cols = min(width, n - first)
        _rank_tile[(triton.cdiv(t, block_t), triton.cdiv(cols, block_s))](
            q, weights, keys, row_index, visible, ranks[:, k:], t, q.shape[1], first, cols,
            *q.stride(), *weights.stride(), *keys.stride(), ranks.stride(0),
            C=dim, STORED=stored, PAIRS=INDEX_KEY_BLOCK // 2, PIECES=pieces, BF16_DOT=pieces > 0 and q.is_cuda,
            ROUND_BF16=score_dtype == torch.bfloat16, BLOCK_T=block_t, BLOCK_S=block_s, HAS_ROWS=rows is not None,
            num_warps=4,
        )
        # the first block has no running best yet: rank its keys alone
        candidates = ranks[:, k if first == 0 else 0 : k + cols]
        best = candidates.topk(min(k, candidates.shape[1]), dim=1).values
        ranks[:, : best.shape[1]] = best
    best = ranks[:, :k]
    return ref.ranked_ids(best)
