"""fp4_expert_ffn for decode-sized batches on CPU: the C kernel in fp4_experts.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import check, cpu_activation, library
from kernels.ref import fp4_experts as ref

# Above this many tokens the twin wins: it groups tokens by expert and decodes each expert's weights once.
MAX_TOKENS = 16


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
    """Same contract as kernels.ref.fp4_experts.fp4_expert_ffn."""
    lib = library()
    if (lib is None or w13_scale is None or w2_scale is None or w13.dtype != torch.uint8 or not cpu_activation(x)
            or x.shape[0] > MAX_TOKENS or not all(t.is_contiguous() for t in (w13, w13_scale, w2, w2_scale))):
        return ref.fp4_expert_ffn(x, expert_ids, expert_weights, w13, w13_scale, w2, w2_scale, swiglu_limit,
                                  quantize_input)
    x = x.contiguous()
    ids = expert_ids.to(torch.int64).contiguous()
    weights = expert_weights.to(torch.float32).contiguous()
    (t, d), inter = x.shape, w2.shape[2] * 2
    out = torch.empty(t, d, dtype=torch.float32)
    check(lib.fp4_expert_ffn(x.data_ptr(), x.dtype == torch.bfloat16, t, d, ids.data_ptr(), weights.data_ptr(),
                             ids.shape[1], w13.data_ptr(), w13_scale.data_ptr(), w2.data_ptr(), w2_scale.data_ptr(),
                             inter, swiglu_limit, quantize_input, out.data_ptr()), "fp4_expert_ffn")
    return out
