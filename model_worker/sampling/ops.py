"""Pure, device-agnostic tensor ops of the sampling pipeline, vectorised over the batch.

Every op takes float32 logits [B, V] and per-row parameter tensors on the same device; the ones
named apply_* modify the logits in place. Disabled rows carry neutral values (temperature 1,
top_k = V, top_p = 1, min_p = 0), so a mixed batch needs no per-row branching.
"""

from __future__ import annotations

import math

import torch


def apply_logit_bias(
    logits: torch.Tensor, rows: torch.Tensor, token_ids: torch.Tensor, bias: torch.Tensor
) -> None:
    """Add `bias[i]` to logits[rows[i], token_ids[i]]; (row, token) pairs must be unique."""
    logits[rows, token_ids] += bias


def apply_repetition_penalty(
    logits: torch.Tensor, rows: torch.Tensor, token_ids: torch.Tensor, penalty: torch.Tensor
) -> None:
    """HF-style: divide positive logits, multiply negative ones, for each listed (row, token).

    Duplicate pairs are allowed (prompt and output overlap): every duplicate is computed from the
    same original value, so whichever write lands, the penalty applies once.
    """
    values = logits[rows, token_ids]
    logits[rows, token_ids] = torch.where(values > 0, values / penalty, values * penalty)


def apply_additive_penalty(
    logits: torch.Tensor, rows: torch.Tensor, token_ids: torch.Tensor, amount: torch.Tensor
) -> None:
    """Subtract `amount[i]` (frequency * count + presence) from each unique (row, token) pair."""
    logits[rows, token_ids] -= amount


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> None:
    """Divide each row by its temperature [B]; greedy rows must carry 1.0."""
    logits.div_(temperature.unsqueeze(1))


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> None:
    """Mask tokens with p < min_p * p_max, i.e. logit < max_logit + log(min_p).

    Logit space skips a softmax; min_p = 0 gives a threshold of -inf, which masks nothing.
    """
    threshold = logits.amax(dim=-1, keepdim=True) + torch.log(min_p).unsqueeze(1)
    logits.masked_fill_(logits < threshold, -math.inf)


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> None:
    """Keep each row's top_k [B] highest logits, then the smallest prefix with mass >= top_p [B].

    Top-k keeps ties with the k-th value (so it may keep more than k tokens); top-p is computed on
    the distribution renormalised after top-k. Rows with top_p >= 1 skip top-p entirely, because a
    float32 cumsum can reach 1.0 before the tail and would otherwise cut tiny-probability tokens.
    """
    vocab_size = logits.shape[-1]
    # Stable sort makes tie order (and so top-p's boundary) identical on every run and device.
    sorted_logits, sorted_ids = torch.sort(logits, dim=-1, descending=True, stable=True)
    kth_index = (top_k.clamp(1, vocab_size) - 1).unsqueeze(1)
    kth_value = sorted_logits.gather(1, kth_index)
    remove_sorted = sorted_logits < kth_value
    sorted_logits.masked_fill_(remove_sorted, -math.inf)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    p = top_p.unsqueeze(1)
    remove_sorted |= (mass_before >= p) & (p < 1.0)
    remove_sorted[:, 0] = False  # the most likely token always survives
    remove = torch.zeros_like(remove_sorted).scatter_(1, sorted_ids, remove_sorted)
    logits.masked_fill_(remove, -math.inf)


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Pick, per row, the first token whose cumulative probability exceeds u * total.

    Args:
        probs: [B, V] non-negative, each row with positive mass (need not sum to exactly 1).
        uniforms: [B] float64 in [0, 1).

    Returns:
        [B] int64 token ids, never a zero-probability token.
    """
    # float64 cumsum: in float32 a running sum near 1 rounds away tokens with p < ~6e-8.
    cdf = probs.to(torch.float64).cumsum(dim=-1)
    target = (uniforms.to(torch.float64) * cdf[:, -1]).unsqueeze(1)
    chosen = (cdf <= target).sum(dim=-1)
    # u * total may round up to total; fall back to the last token that has mass.
    positions = torch.arange(probs.shape[-1], device=probs.device).expand_as(probs)
    last_positive = torch.where(probs > 0, positions, -1).amax(dim=-1)
    return torch.minimum(chosen, last_positive)
