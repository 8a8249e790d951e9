"""sparse_attention as a Triton kernel: one streaming softmax per (query, block of heads) over gathered K=V rows.

Same contract as kernels/ref/sparse_attention.py. Design:
- One program per (query t, block of BLOCK_H heads). All heads of a query read the same rows (one shared K=V head), so
  the heads form the M dimension of tl.dot: [BLOCK_H, D] x [D, BLOCK_L] for the logits and [BLOCK_H, BLOCK_L] x
  [BLOCK_L, D] for the output. q is loaded once and stays in registers; each gathered row tile serves as both K
  (transposed) and V, so every row is read once per program.
- The query's entries stream through in blocks of BLOCK_L, window ids first, then compressed ids, each row gathered by
  its index (-1 = no entry: masked load, logit -inf, weight 0). An online softmax (running max m, running sum l,
  accumulator rescaled by exp(m_old - m_new)) handles any number of entries in one pass: 128 window + 512 selected
  entries for CSA, up to N/128 for HCA, one query in decode or thousands in chunked prefill.
- The sink enters the denominator only: the running max starts at the sink logit and the running sum at
  exp(sink - sink) = 1, while the accumulator starts at 0. So the final max is the twin's max(logits, sink) and a
  query with no entries at all gets acc = 0, i.e. output 0, as the twin does.
- Rows are float rows, or stored entries (kv_codec: FP8 e4m3 nope dims with a ue8m0 scale per 64, then bf16 rope dims)
  decoded in registers with integer bit operations as they are gathered; the pages are read in place.
- Math is float32 like the twin (q / rows of any float dtype are widened on load). The dots use tf32x3 (three tf32
  tensor-core products, ~float32 accuracy) instead of the float32 FMA path; _DOT_PRECISION is the one switch.
- Heads are padded to at least 16 (tl.dot's minimum M), D to a power of two; both are masked, so any H and D work.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton.formats import e4m3_to_float, ue8m0_to_float

_DOT_PRECISION = "tf32x3"  # "ieee" for bit-closer float32 on GPU at several times the cost; the interpreter ignores it
# float32 elements of the [BLOCK_H, D] q and accumulator tiles (the gathered [BLOCK_L, D] tile gets twice that): at
# D = 512, 16 heads and 32 entries a block, which keeps q, acc and the row tile in registers / shared memory
_TILE_ELEMS = 8192


@triton.jit
def _gather(kv_ptr, kv_stride, rows, valid, offs_d, d_mask, D: tl.constexpr, ROPE: tl.constexpr,
            STORED: tl.constexpr):
    """[BLOCK_L, BLOCK_D] float32 rows kv[rows] (0 where not valid), decoding stored entries."""
    base = kv_ptr + rows[:, None] * kv_stride
    mask = valid[:, None] & d_mask[None, :]
    if STORED:
        nope: tl.constexpr = D - ROPE
        is_nope = offs_d < nope
        code = tl.load(base + offs_d[None, :], mask=mask & is_nope[None, :], other=0)
        scale = tl.load(base + nope + 2 * ROPE + offs_d[None, :] // 64, mask=mask & is_nope[None, :], other=127)
        rope_at = nope + 2 * (offs_d - nope)
        lo = tl.load(base + rope_at[None, :], mask=mask & ~is_nope[None, :], other=0).to(tl.int32)
        hi = tl.load(base + rope_at[None, :] + 1, mask=mask & ~is_nope[None, :], other=0).to(tl.int32)
        rope = ((hi << 24) | (lo << 16)).to(tl.float32, bitcast=True)
        return tl.where(is_nope[None, :], e4m3_to_float(code) * ue8m0_to_float(scale), rope)
    return tl.load(base + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _stream(q, peak, denom, acc, kv_ptr, kv_stride, idx_ptr, n_idx, scale, offs_d, d_mask,
            BLOCK_L: tl.constexpr, PRECISION: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr,
            STORED: tl.constexpr):
    """Folds the rows kv[idx[0:n_idx]] (-1 = skip) into the running (max, sum, accumulator) of every head."""
    for start in range(0, n_idx, BLOCK_L):
        offs_l = start + tl.arange(0, BLOCK_L)
        rows = tl.load(idx_ptr + offs_l, mask=offs_l < n_idx, other=-1).to(tl.int64)
        valid = rows >= 0
        kv = _gather(kv_ptr, kv_stride, rows, valid, offs_d, d_mask, D, ROPE, STORED)
        s = tl.dot(q, tl.trans(kv), input_precision=PRECISION) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        # peak starts at the (finite) sink, so new_peak is finite: all-masked blocks give p = 0, alpha = 1, never NaN
        new_peak = tl.maximum(peak, tl.max(s, axis=1))
        alpha = tl.exp(peak - new_peak)
        p = tl.exp(s - new_peak[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, kv, input_precision=PRECISION)
        peak = new_peak
    return peak, denom, acc


@triton.jit
def _sparse_attention_kernel(q_ptr, out_ptr, sinks_ptr, wkv_ptr, wkv_stride, widx_ptr, n_window,
                             ckv_ptr, ckv_stride, cidx_ptr, n_comp, H, scale, D: tl.constexpr,
                             ROPE: tl.constexpr, STORED: tl.constexpr, BLOCK_H: tl.constexpr,
                             BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    h_mask = offs_h < H
    d_mask = offs_d < D
    qo_offs = (t * H + offs_h[:, None]) * D + offs_d[None, :]
    qo_mask = h_mask[:, None] & d_mask[None, :]
    q = tl.load(q_ptr + qo_offs, mask=qo_mask, other=0.0).to(tl.float32)  # padded heads: q = 0, logits 0, harmless

    peak = tl.load(sinks_ptr + offs_h, mask=h_mask, other=0.0)
    denom = tl.full([BLOCK_H], 1.0, tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    peak, denom, acc = _stream(q, peak, denom, acc, wkv_ptr, wkv_stride, widx_ptr + t * n_window, n_window, scale,
                               offs_d, d_mask, BLOCK_L, PRECISION, D, ROPE, STORED)
    peak, denom, acc = _stream(q, peak, denom, acc, ckv_ptr, ckv_stride, cidx_ptr + t * n_comp, n_comp, scale,
                               offs_d, d_mask, BLOCK_L, PRECISION, D, ROPE, STORED)
    tl.store(out_ptr + qo_offs, acc / denom[:, None], mask=qo_mask)


def _rows(kv: torch.Tensor) -> torch.Tensor:
    """Row-gatherable view: any row stride is fine (cache slices are not copied), the channels must be contiguous."""
    return kv if kv.stride(-1) == 1 or kv.shape[0] == 0 else kv.contiguous()


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
    """Same contract as kernels.ref.sparse_attention.sparse_attention: q [T, H, D] -> [T, H, D] float32."""
    t_count, heads, dim = q.shape
    out = torch.empty((t_count, heads, dim), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out
    q = q.contiguous()
    stored = window_kv.dtype == torch.uint8
    if stored != (comp_kv.dtype == torch.uint8):
        raise ValueError("window and compressed entries must both be float rows or both stored entries")
    window_kv, comp_kv = _rows(window_kv), _rows(comp_kv)
    window_idx, comp_idx = window_idx.contiguous(), comp_idx.contiguous()
    sinks = sinks.to(device=q.device, dtype=torch.float32).contiguous()
    block_d = max(16, triton.next_power_of_2(dim))
    block_h = min(max(16, triton.next_power_of_2(heads)), max(16, _TILE_ELEMS // block_d))
    block_l = min(64, max(16, 2 * _TILE_ELEMS // block_d))
    grid = (t_count, triton.cdiv(heads, block_h))
    _sparse_attention_kernel[grid](
        q, out, sinks, window_kv, window_kv.stride(0), window_idx, window_idx.shape[1],
        comp_kv, comp_kv.stride(0), comp_idx, comp_idx.shape[1], heads, float(softmax_scale),
        D=dim, ROPE=rope_dim if stored else 0, STORED=stored, BLOCK_H=block_h, BLOCK_D=block_d, BLOCK_L=block_l,
        PRECISION=_DOT_PRECISION,
        num_warps=8 if block_d >= 256 else 4,
    )
    return out
