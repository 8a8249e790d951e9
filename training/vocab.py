"""Training over the ids the data uses, with the loss of the shipped full-vocabulary model.

The official tokenizer's 129,280 ids stay, but synthetic data uses a couple of thousand. The shipped model's embedding
and head rows of every other id are exactly zero, so each unused id's logit is exactly 0 and adds e^0 to the softmax
normalizer. Training therefore runs a compact model: its embedding and head hold only the U used rows ([U, dim]), its
hash-routing tables only the used ids' rows, and token ids are renumbered to their rows (`columns`); the loss adds
(V - U) * e^0 to the log-sum-exp (`cross_entropy`), which makes it the full-vocabulary cross-entropy of the model that
ships. `full_state_dict` scatters the rows back (zeros elsewhere): the unused rows never exist, so they stay zero, and
no step pays for a [V, dim] gradient, optimizer state or rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from model_worker.model import DeepseekV4

VOCAB_ROWS = ("embed.weight", "head.weight")


class VocabSubset:
    def __init__(self, used_ids: Iterable[int], vocab_size: int) -> None:
        ids = sorted(set(used_ids))
        if not ids or ids[0] < 0 or ids[-1] >= vocab_size:
            raise ValueError(f"used ids must be a non-empty subset of [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.position = torch.full((vocab_size,), -1, dtype=torch.long)  # id -> its row, -1 when unused
        self.position[self.ids] = torch.arange(len(ids))
        self.unused = vocab_size - len(ids)
        self._hash_tables: dict[str, torch.Tensor] = {}  # the full tables of the hash-routed layers

    def knows(self, token_ids: list[int]) -> bool:
        return bool((self.position[torch.as_tensor(token_ids, dtype=torch.long)] >= 0).all())

    def columns(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> the compact model's ids (their rows)."""
        rows = self.position[token_ids]
        if bool((rows < 0).any()):
            raise ValueError("a token id outside the used vocabulary")
        return rows

    @torch.no_grad()
    def compact(self, model: DeepseekV4) -> None:
        """Keep only the used rows of the embedding, the head and the hash-routing tables (before training)."""
        for name, param in model.named_parameters():
            if name in VOCAB_ROWS or name.endswith("tid2eid"):
                if name.endswith("tid2eid"):
                    self._hash_tables[name] = param.data
                module, attribute = _owner(model, name)
                rows = nn.Parameter(param.data[self.ids].clone(), requires_grad=param.requires_grad)
                setattr(module, attribute, rows)

    def full_state_dict(self, model: DeepseekV4) -> dict[str, torch.Tensor]:
        """The compact model's weights as the full-vocabulary model's: used rows in place, zeros elsewhere."""
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        for name in VOCAB_ROWS:
            full = state[name].new_zeros(self.vocab_size, state[name].shape[1])
            full[self.ids] = state[name]
            state[name] = full
        state.update({name: table.clone() for name, table in self._hash_tables.items()})
        return state

    def cross_entropy(self, logits: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Per-position full-vocabulary loss: logits [N, U] of the compact model, targets [N] as columns."""
        normalizer = logits.float()
        if self.unused:
            rest = torch.full((logits.shape[0], 1), math.log(self.unused), device=logits.device)
            normalizer = torch.cat((normalizer, rest), dim=1)
        return torch.logsumexp(normalizer, dim=1) - logits.float().gather(1, columns[:, None])[:, 0]


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attribute = name.rpartition(".")
    return model.get_submodule(path), attribute
