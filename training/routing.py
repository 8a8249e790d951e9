"""The MoE routers' training: anticipatory routing, auxiliary-loss-free balancing and the sequence-wise balance loss.

- Anticipatory routing: at step t the experts are chosen with the router as it was `delay` steps earlier, while the
  mixing weights (and so the gradient) come from the current router: bad routing can no longer feed on itself.
- Auxiliary-loss-free balancing (DeepSeek-V3): each score-routed layer's per-expert bias, used for selection only,
  moves by `bias_rate` after every step, up for experts that got fewer tokens than the mean, down for the others.
- A small sequence-wise balance loss: per sequence, alpha * sum_i f_i * P_i, f_i the fraction of the sequence's
  choices that went to expert i (times E / k) and P_i its mean normalized score.
Hash-routed layers have none of the three.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F

from kernels.ref.moe_gate import router_scores
from model_worker.model import DeepseekV4


class Routing:
    def __init__(self, model: DeepseekV4, delay: int = 1, bias_rate: float = 1e-3, balance_alpha: float = 1e-4
                 ) -> None:
        self.model, self.delay, self.bias_rate, self.alpha = model, delay, bias_rate, balance_alpha
        self.gates = [block.ffn.gate for block in model.layers if not block.ffn.gate.hashed]
        self._history = [deque(maxlen=delay + 1) for _ in self.gates]
        self._records: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.gates]
        for index, gate in enumerate(self.gates):
            gate.record = lambda x, ids, index=index: self._records[index].append((x, ids))

    def before_step(self) -> None:
        """Set each router's selection weights to those of `delay` steps ago (the oldest kept)."""
        for gate, history in zip(self.gates, self._history, strict=True):
            history.append(gate.weight.detach().clone())
            gate.selection_weight = history[0] if self.delay else None
        for records in self._records:
            records.clear()

    def balance_loss(self, sequences: int) -> torch.Tensor:
        """The sequence-wise balance loss of the passes since `before_step` (each of `sequences` rows of equal
        length)."""
        config = self.model.config
        experts, k = config.n_routed_experts, config.n_activated_experts
        total = torch.zeros(())
        for gate, records in zip(self.gates, self._records, strict=True):
            for x, ids in records:
                scores = router_scores(x.float() @ gate.weight.float().T, config.score_func)
                normalized = (scores / scores.sum(-1, keepdim=True)).view(sequences, -1, experts)
                chosen = F.one_hot(ids, experts).sum(1).view(sequences, -1, experts).float()
                fraction = chosen.mean(1) * experts / k  # [B, E]
                total = total + (fraction * normalized.mean(1)).sum(-1).mean()
        return self.alpha * total

    @torch.no_grad()
    def after_step(self) -> list[torch.Tensor]:
        """Move each selection bias towards balance from the loads of the pass just run; returns the loads."""
        loads = []
        for gate, records in zip(self.gates, self._records, strict=True):
            if not records:
                continue
            ids = torch.cat([ids.flatten() for _, ids in records])
            load = torch.bincount(ids, minlength=gate.bias.shape[0]).float()
            gate.bias.add_(self.bias_rate * torch.sign(load.mean() - load))
            loads.append(load)
        return loads

    def state_dict(self) -> dict:
        """The older router weights kept (a resumed run selects as an uninterrupted one would)."""
        return {"history": [list(history) for history in self._history]}

    def load_state_dict(self, state: dict) -> None:
        for history, saved in zip(self._history, state["history"], strict=True):
            history.clear()
            history.extend(saved)

    def detach(self) -> None:
        """Back to inference routing (the current router, nothing recorded)."""
        for gate in self.gates:
            gate.selection_weight, gate.record = None, None
