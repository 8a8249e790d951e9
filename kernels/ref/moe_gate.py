"""MoE router: score every routed expert, pick each token's experts, weight them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """Expert ids and mixing weights per token.

    Args:
        x: [T, D] activations.
        weight: [E, D] router weight; logits = x @ weight^T in float32.
        bias: [E] balancing bias added to the scores for selection only, or None.
        tid2eid: [vocab, k] expert ids per token id (hash routing), with token_ids [T]; None for score-based
            selection: the `topk` largest of scores + bias, largest first.
        score_func: "sqrtsoftplus" (sqrt(softplus(logits))), "sigmoid", or softmax over the experts otherwise.
    Returns:
        (ids [T, k] int64, weights [T, k] float32): the chosen experts' unbiased scores, normalized to sum 1 (not for
        softmax, whose scores already do over all experts), times route_scale.
    """
    scores = router_scores(x.float() @ weight.float().T, score_func)
    if tid2eid is not None:
        ids = tid2eid[token_ids].long()
    else:
        biased = scores if bias is None else scores + bias.float()
        ids = biased.topk(topk, dim=-1).indices
    weights = scores.gather(1, ids)
    if score_func != "softmax":
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return ids, weights * route_scale


def router_scores(logits: torch.Tensor, score_func: str) -> torch.Tensor:
    """Every expert's score from the router logits [T, E] (float32)."""
    if score_func == "sqrtsoftplus":
        # The floor keeps the gradient finite where softplus underflows (logits below about -69): sqrt's slope at 0
        # is infinite. Such experts score ~0 either way.
        return F.softplus(logits).clamp_min(1e-30).sqrt()
    if score_func == "sigmoid":
        return logits.sigmoid()
    return logits.softmax(dim=-1)
