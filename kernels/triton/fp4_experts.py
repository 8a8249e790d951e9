"""Routed experts over packed FP4 weights as a grouped GEMM in two Triton kernels (twin: kernels/ref/fp4_experts.py).

Grouping: the (token, slot) pairs are sorted by expert on the device (argsort + searchsorted, no host sync) and each
expert's run of sorted rows is cut into tiles of BLOCK_M rows, so one program multiplies a tile of rows by one
expert's weights and every weight byte is read once per tile, not once per token. The tile list is built for an upper
bound on the tile count (cdiv(N, BLOCK_M) + min(E, N)); programs past the real tiles get zero rows and skip their K
loop, which keeps the launch free of a device-to-host copy. BLOCK_M is 16 for decode-shaped batches (few rows per
expert) and grows to 64 for prefill-shaped ones.

Kernel 1 computes gate and up for a [BLOCK_M, 128] block of the intermediate dims, K-looping over D in 128-wide steps
(the FP8 activation block, so the x round trip is fused too), and fuses clamp + SwiGLU + routing weight + the FP8
round trip of the hidden activations: with BLOCK_I = 128 one program owns whole quantization blocks, and dims past
I load zero weights, which reproduces the twin's zero padding of a short tail block. Kernel 2 computes hidden @ w2^T
per tile and writes per-slot rows; the sum over each token's k slots is a torch sum in the twin's order.

FP4 codes are decoded in registers with the integer bit helpers of kernels/triton/formats.py instead of a table
gather or float8 casts: the same code runs on the CPU interpreter (how CI runs it) and on every GPU generation. A
packed byte holds input dims 2j (low nibble) and 2j + 1 (high nibble), so instead of interleaving the nibbles each
K step does two dots: even input columns x low nibbles, odd columns x high nibbles.

Precision: products are exact whenever both operands fit TF32's 10-bit mantissa, as FP4 x ue8m0 weights and FP8,
bf16 or fp16 activations do; those dots use TF32 tensor cores and accumulate in float32. Unquantized float32
operands use IEEE float32 dots, so results match the twin up to accumulation order either way.

Dense or FP8 weights (scales None, or non-uint8 weights) are not this kernel's format: they go to the twin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.ref import fp4_experts as ref
from kernels.triton.formats import e2m1_to_float, fp8_round_trip, ue8m0_to_float

BLOCK_K = 128  # one FP8 activation block per K step: the round trip's amax is local to the step
BLOCK_I = 128  # kernel 1 owns whole hidden quantization blocks
BLOCK_N = 64


@triton.jit
def _fp4_dot(a_even, a_odd, w_ptrs, s_ptrs, mask, acc, DOT_PRECISION: tl.constexpr):
    """acc + a @ W^T for one K step: W's packed bytes [K/2, N] and their ue8m0 scales decoded in registers."""
    packed = tl.load(w_ptrs, mask=mask, other=0).to(tl.int32)
    scale = ue8m0_to_float(tl.load(s_ptrs, mask=mask, other=127))
    acc = tl.dot(a_even, e2m1_to_float(packed & 0xF) * scale, acc, input_precision=DOT_PRECISION)
    return tl.dot(a_odd, e2m1_to_float(packed >> 4) * scale, acc, input_precision=DOT_PRECISION)


@triton.jit
def _tile(tile_expert_ptr, tile_start_ptr, tile_rows_ptr, order_ptr, BLOCK_M: tl.constexpr):
    """This program's expert, sorted row positions, their slots and the row mask."""
    tile = tl.program_id(0)
    # int64: expert * (weights per expert) exceeds 2^31 bytes for full-size models
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    nrows = tl.load(tile_rows_ptr + tile)
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < nrows
    pos = (tl.load(tile_start_ptr + tile) + offs_m).to(tl.int64)
    slot = tl.load(order_ptr + pos, mask=mask_m, other=0).to(tl.int64)
    return expert, nrows, pos, slot, mask_m


@triton.jit
def _gate_up_kernel(
    x_ptr, order_ptr, routing_ptr, tile_expert_ptr, tile_start_ptr, tile_rows_ptr, w13_ptr, s13_ptr, hidden_ptr,
    dim, inter, top_k, limit,
    QUANTIZE: tl.constexpr, CLAMP: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_K: tl.constexpr,
):
    expert, nrows, pos, slot, mask_m = _tile(tile_expert_ptr, tile_start_ptr, tile_rows_ptr, order_ptr, BLOCK_M)
    token = slot // top_k
    offs_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < inter
    offs_h = tl.arange(0, BLOCK_K // 2)
    half_d = dim // 2
    gate_rows = w13_ptr + expert * (2 * inter) * half_d + offs_i[None, :].to(tl.int64) * half_d
    up_rows = gate_rows + inter * half_d
    gate_scales = s13_ptr + expert * (2 * inter) * (dim // 32) + offs_i[None, :].to(tl.int64) * (dim // 32)
    up_scales = gate_scales + inter * (dim // 32)
    x_rows = x_ptr + token[:, None] * dim
    gate = tl.zeros((BLOCK_M, BLOCK_I), dtype=tl.float32)
    up = tl.zeros((BLOCK_M, BLOCK_I), dtype=tl.float32)
    for kb in range(0, tl.where(nrows > 0, tl.cdiv(dim, BLOCK_K), 0)):
        cols = kb * BLOCK_K + 2 * offs_h
        mask_k = cols < dim
        x_mask = mask_m[:, None] & mask_k[None, :]
        x_even = tl.load(x_rows + cols[None, :], mask=x_mask, other=0.0).to(tl.float32)
        x_odd = tl.load(x_rows + cols[None, :] + 1, mask=x_mask, other=0.0).to(tl.float32)
        if QUANTIZE:
            # masked dims load 0, the twin's zero padding of a short last block
            amax = tl.maximum(tl.max(tl.abs(x_even), axis=1), tl.max(tl.abs(x_odd), axis=1))[:, None]
            x_even = fp8_round_trip(x_even, amax)
            x_odd = fp8_round_trip(x_odd, amax)
        byte = (kb * (BLOCK_K // 2) + offs_h)[:, None]
        block = (kb * (BLOCK_K // 32) + offs_h // 16)[:, None]
        w_mask = mask_k[:, None] & mask_i[None, :]
        gate = _fp4_dot(x_even, x_odd, gate_rows + byte, gate_scales + block, w_mask, gate, DOT_PRECISION)
        up = _fp4_dot(x_even, x_odd, up_rows + byte, up_scales + block, w_mask, up, DOT_PRECISION)
    if CLAMP:
        gate = tl.minimum(gate, limit)
        up = tl.minimum(tl.maximum(up, -limit), limit)
    route = tl.load(routing_ptr + slot, mask=mask_m, other=0.0)
    # silu as gate / (1 + e^-gate): saturates to -0 instead of producing inf * 0 for very negative gates
    hidden = gate / (1.0 + tl.exp(-gate)) * up * route[:, None]
    hidden = tl.where(mask_i[None, :], hidden, 0.0)
    if QUANTIZE:
        hidden = fp8_round_trip(hidden, tl.max(tl.abs(hidden), axis=1)[:, None])
    out_mask = mask_m[:, None] & mask_i[None, :]
    tl.store(hidden_ptr + pos[:, None] * inter + offs_i[None, :], hidden, mask=out_mask)


@triton.jit
def _down_kernel(
    hidden_ptr, order_ptr, tile_expert_ptr, tile_start_ptr, tile_rows_ptr, w2_ptr, s2_ptr, out_ptr,
    dim, inter,
    DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    expert, nrows, pos, slot, mask_m = _tile(tile_expert_ptr, tile_start_ptr, tile_rows_ptr, order_ptr, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < dim
    offs_h = tl.arange(0, BLOCK_K // 2)
    half_i = inter // 2
    w_rows = w2_ptr + expert * dim * half_i + offs_n[None, :].to(tl.int64) * half_i
    s_rows = s2_ptr + expert * dim * (inter // 32) + offs_n[None, :].to(tl.int64) * (inter // 32)
    h_rows = hidden_ptr + pos[:, None] * inter
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.where(nrows > 0, tl.cdiv(inter, BLOCK_K), 0)):
        cols = kb * BLOCK_K + 2 * offs_h
        mask_k = cols < inter
        h_mask = mask_m[:, None] & mask_k[None, :]
        h_even = tl.load(h_rows + cols[None, :], mask=h_mask, other=0.0)
        h_odd = tl.load(h_rows + cols[None, :] + 1, mask=h_mask, other=0.0)
        byte = (kb * (BLOCK_K // 2) + offs_h)[:, None]
        block = (kb * (BLOCK_K // 32) + offs_h // 16)[:, None]
        w_mask = mask_k[:, None] & mask_n[None, :]
        acc = _fp4_dot(h_even, h_odd, w_rows + byte, s_rows + block, w_mask, acc, DOT_PRECISION)
    tl.store(out_ptr + slot[:, None] * dim + offs_n[None, :], acc, mask=mask_m[:, None] & mask_n[None, :])


def _block_m(num_rows: int, num_experts: int) -> int:
    """Rows per tile: small for decode so padding rows waste little, up to 64 when experts get many rows."""
    return min(64, max(16, triton.next_power_of_2(triton.cdiv(num_rows, num_experts))))


def _launch_tiles(tile_rows: torch.Tensor) -> int:
    """Programs to launch: the upper bound on a GPU (no device-to-host sync); on CPU, where reading the count costs
    nothing and the interpreter pays per program, only the real tiles (a prefix of the list)."""
    return tile_rows.numel() if tile_rows.is_cuda else int(tile_rows.count_nonzero())


def _expert_tiles(
    flat_ids: torch.Tensor, num_experts: int, block_m: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort slots by expert and cut each expert's rows into tiles, on the device without a host sync.

    Returns (order: sorted position -> slot, tile_expert, tile_start, tile_rows), the tile arrays sized for the
    upper bound cdiv(N, block_m) + min(E, N); tiles past the real ones have 0 rows.
    """
    n, device = flat_ids.numel(), flat_ids.device
    order = torch.argsort(flat_ids, stable=True)
    sorted_ids = flat_ids[order]
    bounds = torch.searchsorted(sorted_ids, torch.arange(num_experts + 1, device=device, dtype=sorted_ids.dtype))
    tiles_per_expert = (bounds[1:] - bounds[:-1] + block_m - 1) // block_m
    tile_end = torch.cumsum(tiles_per_expert, 0)
    tile = torch.arange(triton.cdiv(n, block_m) + min(num_experts, n), device=device, dtype=tile_end.dtype)
    expert = torch.searchsorted(tile_end, tile, right=True)
    valid = expert < num_experts
    expert = expert.clamp(max=num_experts - 1)
    start = bounds[expert] + (tile - (tile_end - tiles_per_expert)[expert]) * block_m
    rows = torch.where(valid, torch.clamp(bounds[expert + 1] - start, max=block_m), 0)
    return order, expert.to(torch.int32), start.to(torch.int32), rows.to(torch.int32)


def fp4_expert_ffn(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    expert_weights: torch.Tensor,
    w13: torch.Tensor,
    w13_scale: torch.Tensor | None,
    w2: torch.Tensor,
    w2_scale: torch.Tensor | None,
    swiglu_limit: float,
    quantize_input: bool,
) -> torch.Tensor:
    """Σ_k weight_k · w2_e(clamped_swiglu(w13_e · x)) over each token's selected experts; see the twin.

    Packed FP4 weights (uint8 with ue8m0 scales per 32; D and I multiples of 32) run the grouped Triton kernels;
    dense weights (scales None) and FP8 block weights run the torch twin. expert_ids must lie in [0, E).
    Returns [T, D] float32.
    """
    if w13_scale is None or w2_scale is None or w13.dtype != torch.uint8 or w2.dtype != torch.uint8:
        return ref.fp4_expert_ffn(x, expert_ids, expert_weights, w13, w13_scale, w2, w2_scale, swiglu_limit,
                                  quantize_input)
    num_tokens, top_k = expert_ids.shape
    num_experts, dim, inter = w13.shape[0], x.shape[1], w2.shape[2] * 2
    n = num_tokens * top_k
    if n == 0:
        return torch.zeros(num_tokens, dim, dtype=torch.float32, device=x.device)
    block_m = _block_m(n, num_experts)
    order, tile_expert, tile_start, tile_rows = _expert_tiles(expert_ids.reshape(-1), num_experts, block_m)
    num_tiles = _launch_tiles(tile_rows)
    hidden = torch.empty(n, inter, dtype=torch.float32, device=x.device)
    slot_out = torch.empty(n, dim, dtype=torch.float32, device=x.device)
    # TF32 is exact when every operand has <= 10 mantissa bits (FP8 round trips, bf16/fp16 inputs, FP4 weights)
    exact_x = quantize_input or x.dtype in (torch.bfloat16, torch.float16)
    warps = 8 if block_m >= 64 else 4
    _gate_up_kernel[(num_tiles, triton.cdiv(inter, BLOCK_I))](
        x.contiguous(), order, expert_weights.reshape(-1).float().contiguous(), tile_expert, tile_start, tile_rows,
        w13.contiguous(), w13_scale.contiguous(), hidden, dim, inter, top_k, float(swiglu_limit),
        QUANTIZE=bool(quantize_input), CLAMP=swiglu_limit > 0, DOT_PRECISION="tf32" if exact_x else "ieee",
        BLOCK_M=block_m, BLOCK_I=BLOCK_I, BLOCK_K=BLOCK_K, num_warps=warps,
    )
    _down_kernel[(num_tiles, triton.cdiv(dim, BLOCK_N))](
        hidden, order, tile_expert, tile_start, tile_rows, w2.contiguous(), w2_scale.contiguous(), slot_out, dim,
        inter, DOT_PRECISION="tf32" if quantize_input else "ieee", BLOCK_M=block_m, BLOCK_N=BLOCK_N,
        BLOCK_K=BLOCK_K, num_warps=warps,
    )
    # per-slot rows summed in a fixed order, like the twin
    return slot_out.view(num_tokens, top_k, dim).sum(1)
