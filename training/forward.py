"""The training forward: the engine's own model run over whole sequences, with gradients.

No second model: each sequence gets a fresh `SequenceState` whose pages come from pools of its own (not the process's
shared pools, whose storage other sequences write: the entries here carry gradients), the whole sequence is one
chunk, and every op runs its torch twin (the C and Triton kernels have no backward). The twins are out of place where
autograd needs it. What gets no gradient, by design: the Lightning Indexer (its top-k selection is not
differentiable; it learns by distillation in the sparse warm-up) and the routers' selection biases (updated from
expert load, not by gradient).
"""

from __future__ import annotations

import torch

import kernels
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.state import SequenceState
from model_worker.state.pages import PagePools
from training.vocab import VocabSubset


def training_logits(model: DeepseekV4, token_ids: torch.Tensor, vocab: VocabSubset | None = None) -> torch.Tensor:
    """token_ids [B, T] -> logits [B, T, V] float32 (position t predicts token t + 1), differentiable; with `vocab`,
    [B, T, U] over its used ids only."""
    batch, length = token_ids.shape
    device = model.embed.weight.device
    states = [SequenceState(model.layout, device, PagePools()) for _ in range(batch)]
    rows = None if vocab is None else vocab.ids.to(device)
    with kernels.use("reference"):
        out = model(ForwardBatch(token_ids.reshape(-1).to(device), [length] * batch, states, logits="all",
                                 vocab_rows=rows))
    return out.logits.float().view(batch, length, -1)


def next_token_loss(logits: torch.Tensor, token_ids: torch.Tensor, loss_mask: torch.Tensor | None = None,
                    vocab: VocabSubset | None = None) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the next token, over the positions whose next token is
    in the loss (`loss_mask` [B, T] on the predicted tokens; all of them by default); with `vocab`, the logits are
    over its used ids and the loss is still the full vocabulary's."""
    targets = token_ids[:, 1:].to(logits.device)
    weights = torch.ones(targets.numel(), device=logits.device) if loss_mask is None else \
        loss_mask[:, 1:].flatten().to(torch.float32).to(logits.device)
    if vocab is None:
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="none")
    else:  # a target the vocabulary sample missed is left out of the loss (its rows stay zero)
        known = vocab.position.to(targets.device)[targets.flatten()] >= 0
        weights = weights * known
        losses = vocab.cross_entropy(logits[:, :-1].flatten(0, 1), torch.where(known, targets.flatten(),
                                                                                 vocab.ids[0].to(targets.device)))
    return (losses * weights).sum() / weights.sum().clamp(min=1)
