"""Routed experts as one grouped op: SwiGLU FFN per expert over packed FP4 (or FP8 / dense) weights.

Only the experts a batch routes to are dequantized, one at a time, so memory holds packed weights plus one expert's
float copy at most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.ref.act_quant import fp8_round_trip
from kernels.ref.formats import FP8_BLOCK, dequantize


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
    """Σ_k weight_k · w2_e(clamped_swiglu(w13_e · x)) over each token's selected experts.

    Args:
        x: [T, D] activations.
        expert_ids: [T, k] int expert index per slot.
        expert_weights: [T, k] float32 routing weights (applied before w2, as the official runtime does).
        w13: [E, 2I, D/2] packed FP4 (gate rows then up rows) with w13_scale [E, 2I, D/32]; or [E, 2I, D] dense.
        w2: [E, D, I/2] packed FP4 with w2_scale [E, D, I/32]; or [E, D, I] dense.
        quantize_input: FP8 round trip of x and of the hidden activations (official numerics).
    Returns:
        [T, D] float32.
    """
    num_tokens, top_k = expert_ids.shape
    slot_out = torch.zeros(num_tokens * top_k, w2.shape[1], dtype=torch.float32, device=x.device)
    if num_tokens == 0:
        return slot_out
    xq = fp8_round_trip(x, FP8_BLOCK) if quantize_input else x
    flat_ids = expert_ids.reshape(-1)
    order = torch.argsort(flat_ids, stable=True)
    counts = torch.bincount(flat_ids, minlength=w13.shape[0]).tolist()
    token_of_slot = order // top_k
    start = 0
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        slots = order[start : start + count]
        tokens = token_of_slot[start : start + count]
        start += count
        gate_up = xq[tokens].float() @ dequantize(w13[expert], _at(w13_scale, expert)).T
        gate, up = gate_up.chunk(2, dim=-1)
        if swiglu_limit > 0:
            gate = gate.clamp(max=swiglu_limit)
            up = up.clamp(min=-swiglu_limit, max=swiglu_limit)
        hidden = F.silu(gate) * up * expert_weights.reshape(-1)[slots, None]
        if quantize_input:
            hidden = fp8_round_trip(hidden, FP8_BLOCK)
        slot_out[slots] = hidden @ dequantize(w2[expert], _at(w2_scale, expert)).T
    # Summing per-slot rows (instead of index_add_ into tokens) keeps the reduction order fixed and is much faster
    # on CPU for decode-sized batches.
    return slot_out.view(num_tokens, top_k, -1).sum(1)


def _at(scale: torch.Tensor | None, expert: int) -> torch.Tensor | None:
    return None if scale is None else scale[expert]
