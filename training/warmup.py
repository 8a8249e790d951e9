"""The sparse warm-up: attention starts dense over the compressed entries while the Lightning Indexer learns to
predict where that attention goes; top-k selection is switched on afterwards (DeepSeek's sparse-attention warm-up).

While on, every CSA layer attends all visible entries and hands over, per sequence chunk, its queries, its entries
and the indexer's scores of them. The target is the attention's distribution over the entries (each head's softmax
over the entries, summed over heads and renormalized, no gradient); the loss is KL(target || softmax(scores)) per
query that sees an entry. The indexer's inputs are detached (indexer.py), so this loss trains the indexer only, and
the main loss never reaches it.
"""

from __future__ import annotations

import torch

from model_worker.config import CSA
from model_worker.model import DeepseekV4


class SparseWarmup:
    def __init__(self, model: DeepseekV4) -> None:
        self.indexers = [layer.attn.indexer for layer in model.layers if layer.attn.kind == CSA]
        self.scale = model.config.head_dim**-0.5
        self._losses: list[torch.Tensor] = []
        self._queries = 0

    def set_dense(self, dense: bool) -> None:
        """Dense attention with distillation (True) or the serving path, top-k selection (False)."""
        for indexer in self.indexers:
            indexer.distill = self._record if dense else None

    def _record(self, q: torch.Tensor, entries: torch.Tensor, scores: torch.Tensor) -> None:
        """q [n, H, D], entries [N, D], scores [n, N] (-inf where not visible)."""
        seen = torch.isfinite(scores).any(dim=1)
        if not bool(seen.any()):
            return
        q, scores, hidden = q[seen], scores[seen], ~torch.isfinite(scores[seen])
        with torch.no_grad():
            logits = torch.einsum("nhd,md->nhm", q.float(), entries.float()) * self.scale
            target = logits.masked_fill(hidden[:, None], float("-inf")).softmax(dim=-1).sum(dim=1)
            target = target / target.sum(dim=-1, keepdim=True)
        log_predicted = scores.log_softmax(dim=-1).masked_fill(hidden, 0.0)
        kl = (target * (target.clamp(min=1e-30).log() - log_predicted)).sum(dim=-1)
        self._losses.append(kl.sum())
        self._queries += kl.shape[0]

    def loss(self) -> torch.Tensor | None:
        """The mean KL over the queries recorded since the last call (None if none were)."""
        if not self._losses:
            return None
        total = torch.stack(self._losses).sum() / self._queries
        self._losses, self._queries = [], 0
        return total
