"""Training over the ids the data uses, with the loss of the shipped full-vocabulary model.

The official tokenizer's 129,280 ids stay, but synthetic data uses a few thousand: the logits of the U used ids are
computed (the head's other rows are never multiplied), and since every other row of the head is exactly zero, each
unused id's logit is exactly 0 and adds e^0 to the softmax normalizer: (V - U) * e^0 joins the log-sum-exp. The
loss is then the full-vocabulary cross-entropy of the model that ships. The unused rows of the embedding and the head
are zeroed once and stay zero: they get no gradient, so AdamW (and its decoupled decay) leaves them at 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from model_worker.model import DeepseekV4


class VocabSubset:
    def __init__(self, used_ids: Iterable[int], vocab_size: int) -> None:
        ids = sorted(set(used_ids))
        if not ids or ids[0] < 0 or ids[-1] >= vocab_size:
            raise ValueError(f"used ids must be a non-empty subset of [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.position = torch.full((vocab_size,), -1, dtype=torch.long)  # id -> its column, -1 when unused
        self.position[self.ids] = torch.arange(len(ids))
        self.unused = vocab_size - len(ids)

    def restrict(self, model: DeepseekV4) -> None:
        """Zero the embedding's and the head's rows of the unused ids (once, before training)."""
        unused = torch.ones(self.vocab_size, dtype=torch.bool)
        unused[self.ids] = False
        with torch.no_grad():
            model.embed.weight[unused] = 0
            model.head.weight[unused] = 0

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-position loss: logits [N, U] over the used ids, targets [N] token ids (each a used one)."""
        columns = self.position.to(targets.device)[targets]
        if bool((columns < 0).any()):
            raise ValueError("a target id outside the used vocabulary")
        normalizer = logits.float()
        if self.unused:
            rest = torch.full((logits.shape[0], 1), math.log(self.unused), device=logits.device)
            normalizer = torch.cat((normalizer, rest), dim=1)
        return torch.logsumexp(normalizer, dim=1) - logits.float().gather(1, columns[:, None])[:, 0]
