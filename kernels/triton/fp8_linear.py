"""Triton twin of kernels/ref/fp8_linear.py: y = act_quant(x) @ dequant(W)^T for FP8 block-scaled weights.

Design:
- Tiled GEMM: one program per [BLOCK_M, BLOCK_N] output tile, looping over K in steps of 128, which is both the
  weight's ue8m0 scale block and the activation quantization block, so each step needs one scale per weight row
  and one per activation row. BLOCK_M follows the token count (16 for decode's 1-16 tokens, up to 64 for prefill),
  so decode does not spend most of its dot on padding rows.
- Grouped projections tile each group separately (program column -> group, tile within the group), so a tile's
  activation slice is one contiguous range; weight scales are gathered per row, since a group's rows need not
  start on a 128-row scale block.
- Fused activation quantization: the step's [BLOCK_M, 128] activation tile is loaded once, its per-row amax taken
  in registers and rounded through e4m3 with the power-of-two scale (kernels/triton/formats.fp8_round_trip). Masked
  tail columns load as zeros, exactly like the twin's zero padding of a short last block.
- Weight decode in registers: the float8 weight arrives as its uint8 bytes and is decoded with integer bit
  operations (kernels/triton/formats), which the CPU interpreter (how CI runs this) and every GPU generation treat
  alike, unlike float8 loads and casts. Both dot operands are then bit-identical to the twin's float32 operands
  (scaling by a power of two is exact), so results differ from the twin only in summation order.
- tl.dot runs on float32 tiles with input_precision="ieee": TF32 would round the operands and break the twin's
  float32 accumulation numerics.

Dense (float / bf16, scale None) and packed FP4 (uint8) weights are delegated to the torch twin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.ref.fp8_linear import fp8_linear as _twin
from kernels.triton.formats import e4m3_to_float, fp8_round_trip, ue8m0_to_float

SCALE_BLOCK = 128  # weight scale block (both dims) and activation quantization block; the K step of the kernel
BLOCK_N = 64


@triton.jit
def _fp8_linear_kernel(
    x_ptr, w_ptr, s_ptr, out_ptr,
    M, N_GROUP, K, stride_xm, stride_sn, stride_om,
    QUANTIZE_INPUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    tiles_per_group = tl.cdiv(N_GROUP, BLOCK_N)
    group = pid_n // tiles_per_group
    n_local = (pid_n % tiles_per_group) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n_local < N_GROUP
    # int64 rows: M * N (e.g. a vocabulary-sized output) and N * K can pass 2^31 elements
    rows_w = (group * N_GROUP + n_local).to(tl.int64)
    rows_x = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    m_mask = rows_x < M
    offs_k = tl.arange(0, BLOCK_K)
    x_base = x_ptr + rows_x[:, None] * stride_xm + group * K
    w_base = w_ptr + rows_w[None, :] * K
    s_base = s_ptr + (rows_w // BLOCK_K) * stride_sn  # BLOCK_K is the scale block: step kb reads scale column kb

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        k = kb * BLOCK_K + offs_k
        k_mask = k < K
        x = tl.load(x_base + k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        if QUANTIZE_INPUT:
            amax = tl.max(tl.abs(x), axis=1)
            x = fp8_round_trip(x, amax[:, None])
        codes = tl.load(w_base + k[:, None], mask=k_mask[:, None] & n_mask[None, :], other=0)
        w_scale = ue8m0_to_float(tl.load(s_base + kb, mask=n_mask, other=127))
        w = e4m3_to_float(codes) * w_scale[None, :]
        acc = tl.dot(x, w, acc, input_precision="ieee")

    out = out_ptr + rows_x[:, None] * stride_om + rows_w[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, quantize_input: bool, out_dtype: torch.dtype,
    groups: int = 1,
) -> torch.Tensor:
    """y = act_quant(x) @ dequant(weight)^T with float32 accumulation; grouped: each group's rows see its slice of x.

    Same contract as kernels.ref.fp8_linear.fp8_linear. FP8 weights (float8_e4m3fn [N, K], ue8m0 scale bytes
    [ceil(N/128), ceil(K/128)]) run the Triton kernel; dense and packed FP4 weights call the torch twin.
    """
    if scale is None or weight.dtype != torch.float8_e4m3fn:
        return _twin(x, weight, scale, quantize_input, out_dtype, groups)
    n, k = weight.shape
    m = x.shape[0]
    if x.shape[1] != groups * k or n % groups:
        raise ValueError(f"x {tuple(x.shape)} / weight {tuple(weight.shape)} do not fit {groups} groups")
    out = torch.empty(m, n, dtype=out_dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.zero_()
    if x.stride(1) != 1:
        x = x.contiguous()
    scale = scale.contiguous()
    n_group = n // groups
    block_m = min(64, max(16, triton.next_power_of_2(m)))
    grid = (triton.cdiv(m, block_m), groups * triton.cdiv(n_group, BLOCK_N))
    _fp8_linear_kernel[grid](
        x, weight.contiguous().view(torch.uint8), scale, out,
        m, n_group, k, x.stride(0), scale.stride(0), out.stride(0),
        QUANTIZE_INPUT=bool(quantize_input), BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=SCALE_BLOCK,
    )
    return out
