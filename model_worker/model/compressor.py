"""Compressor: pools every m tokens into one entry with per-channel softmax gating.

CSA (m = 4, overlap): each token has 2c features; [:c] feeds the next group, [c:] its own, so entry j pools 2m
slots (group j-1's first halves and group j's second halves; for j = 0 the missing slots weigh 0). HCA (m' = 128):
c features, entry j pools its own m' tokens. Then RMSNorm and RoPE at the group's first position j*m.
A query at t sees entry j once (j+1)*m <= t+1.
"""

from __future__ import annotations

import torch
from torch import nn

import kernels
from model_worker.model.layers import Linear, RMSNorm, frozen_param
from model_worker.numerics import Numerics
from model_worker.state.rows import RowLog


class Compressor(nn.Module):
    def __init__(self, dim: int, width: int, ratio: int, overlap: bool, norm_eps: float) -> None:
        super().__init__()
        self.width, self.ratio, self.overlap = width, ratio, overlap
        features = 2 * width if overlap else width
        self.wkv = Linear(dim, features, role="fp32")
        self.wgate = Linear(dim, features, role="fp32")
        self.ape = frozen_param(ratio, features)
        self.norm = RMSNorm(width, norm_eps)

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Every token's features at once (all sequences of a batch): [T, dim] -> [T, 2 * features] float32, its kv
        then its gating score (position bias added)."""
        return kernels.compressor_project(x, self.wkv.weight, self.wgate.weight, self.ape, positions)

    def forward(
        self, features: torch.Tensor, start: int, log: RowLog, freqs: torch.Tensor, numerics: Numerics
    ) -> torch.Tensor:
        """Feed one sequence's chunk (its rows of `project`, [n, 2 * features]) starting at position `start`; log
        holds the pending rows.

        Returns the entries completed by this chunk, [G, width] in the activation dtype (normed and rotated).
        """
        n, m = features.shape[0], self.ratio
        log.append(features)
        first_group, end_group = start // m, (start + n) // m
        groups = end_group - first_group
        if groups == 0:
            return features.new_zeros(0, self.width, dtype=numerics.act_dtype)
        rows = log.rows(first_group * m, end_group * m).view(groups, m, 2, -1)
        kv_rows, score_rows = rows[:, :, 0], rows[:, :, 1]
        if self.overlap:
            c = self.width
            prev_kv, prev_score = self._previous_halves(log, first_group, kv_rows, score_rows)
            kv_slots = torch.cat((prev_kv, kv_rows[..., c:]), dim=1)
            score_slots = torch.cat((prev_score, score_rows[..., c:]), dim=1)
        else:
            kv_slots, score_slots = kv_rows, score_rows
        pooled = kernels.compressor_pool(kv_slots, score_slots).to(numerics.act_dtype)
        entries = self.norm(pooled)
        group_starts = torch.arange(first_group, end_group, device=features.device) * m
        return kernels.apply_rope(entries, group_starts, freqs)

    def _previous_halves(
        self, log: RowLog, first_group: int, kv_rows: torch.Tensor, score_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First halves of each group's predecessor: [G, m, c] kv and scores (-inf for the group before 0)."""
        c, m = self.width, self.ratio
        if first_group > 0:
            before = log.rows((first_group - 1) * m, first_group * m).view(1, m, 2, -1)
            first_kv, first_score = before[:, :, 0, :c], before[:, :, 1, :c]
        else:
            first_kv = kv_rows.new_zeros(1, m, c)
            first_score = torch.full_like(first_kv, float("-inf"))
        prev_kv = torch.cat((first_kv, kv_rows[:-1, :, :c]), dim=0)
        prev_score = torch.cat((first_score, score_rows[:-1, :, :c]), dim=0)
        return prev_kv, prev_score
