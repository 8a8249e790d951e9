"""moe_gate for decode-sized batches on CPU: the C kernel in moe_gate.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import check, cpu_activation, library
from kernels.ref import moe_gate as ref

# The kernel streams the router weight once per group of 8 tokens; above this the twin's GEMM reuses it better.
MAX_TOKENS = 16
SCORE_FUNCS = {"sqrtsoftplus": 0, "sigmoid": 1, "softmax": 2}


def moe_gate(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tid2eid: torch.Tensor | None,
    token_ids: torch.Tensor | None,
    score_func: str,
    topk: int,
    route_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as kernels.ref.moe_gate.moe_gate."""
    lib = library()
    if lib is None or not _covered(x, weight, tid2eid, token_ids, score_func, topk):
        return ref.moe_gate(x, weight, bias, tid2eid, token_ids, score_func, topk, route_scale)
    (t, d), e = x.shape, weight.shape[0]
    k = topk if tid2eid is None else tid2eid.shape[1]
    x = x.contiguous()
    ids = torch.empty(t, k, dtype=torch.int64)
    weights = torch.empty(t, k, dtype=torch.float32)
    if tid2eid is None:
        bias = None if bias is None else bias.float().contiguous()
        route = (None if bias is None else bias.data_ptr(), None, 0, None)
    else:
        route = (None, tid2eid.data_ptr(), tid2eid.shape[0], token_ids.contiguous().data_ptr())
    status = lib.moe_gate(x.data_ptr(), x.dtype == torch.bfloat16, t, d, weight.data_ptr(), e, *route,
                          SCORE_FUNCS[score_func], k, route_scale, ids.data_ptr(), weights.data_ptr())
    if status == -2:
        raise IndexError("moe_gate: a token id outside tid2eid, or an expert id outside the router")
    check(status, "moe_gate")
    return ids, weights


def _covered(x: torch.Tensor, weight: torch.Tensor, tid2eid: torch.Tensor | None, token_ids: torch.Tensor | None,
             score_func: str, topk: int) -> bool:
    """Whether the C kernel takes these inputs: decode-sized CPU activations, a contiguous bf16 router, int64 tables."""
    if (not cpu_activation(x) or x.dim() != 2 or weight.dtype != torch.bfloat16 or score_func not in SCORE_FUNCS
            or (tid2eid is not None and tid2eid.dim() != 2)):
        return False
    (t, d), (e, weight_d) = x.shape, weight.shape
    k = topk if tid2eid is None else tid2eid.shape[1]
    return (0 < t <= MAX_TOKENS and not d % 32 and weight_d == d and 0 < k <= e and weight.is_contiguous()
            and (tid2eid is None or (tid2eid.dtype == token_ids.dtype == torch.int64 and token_ids.shape == (t,)
                                     and tid2eid.is_contiguous())))
