"""Greedy pick: the index of each row's largest logit."""

from __future__ import annotations

import torch


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, V] -> [B] int64: per row the first index of its maximum (a NaN counts as the maximum)."""
    return logits.argmax(dim=-1)
