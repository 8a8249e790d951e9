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


def training_logits(model: DeepseekV4, token_ids: torch.Tensor) -> torch.Tensor:
    """token_ids [B, T] -> logits [B, T, V] float32 (position t predicts token t + 1), differentiable (V: the rows of
    the model's head; U for a compact model, whose token ids are a `VocabSubset`'s columns)."""
    return training_forward(model, token_ids, mtp=False)[0]


def training_forward(model: DeepseekV4, token_ids: torch.Tensor, mtp: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The main logits [B, T, V] and, with `mtp` (and an MTP layer), the MTP layer's [B, T - 1, V]: pair t (the
    main streams at t, token t + 1) predicts token t + 2."""
    batch, length = token_ids.shape
    device = model.embed.weight.device
    states = [SequenceState(model.layout, device, PagePools()) for _ in range(batch)]
    mtp = mtp and len(model.mtp) > 0 and length > 1
    with kernels.use("reference"):
        out = model(ForwardBatch(token_ids.reshape(-1).to(device), [length] * batch, states, logits="all",
                                 mtp_every_pair=mtp))
    logits = out.logits.float().view(batch, length, -1)
    return logits, out.mtp_logits.float().view(batch, length - 1, -1) if mtp else None


def next_token_loss(logits: torch.Tensor, token_ids: torch.Tensor, loss_mask: torch.Tensor | None = None,
                    vocab: VocabSubset | None = None, ahead: int = 1) -> torch.Tensor:
    """Mean cross-entropy of each row's prediction of the token `ahead` after it (1: the main logits; 2: the MTP
    layer's, whose row t stands for pair t), over the predicted tokens in the loss (`loss_mask` [B, T]; all by
    default); with `vocab`, a compact model's logits and columns, and the loss of the full-vocabulary model."""
    targets = token_ids[:, ahead:].to(logits.device).flatten()
    predictions = logits[:, : token_ids.shape[1] - ahead].flatten(0, 1)
    losses = torch.nn.functional.cross_entropy(predictions, targets, reduction="none") if vocab is None else \
        vocab.cross_entropy(predictions, targets)
    if loss_mask is None:
        return losses.mean()
    weights = loss_mask[:, ahead:].flatten().to(torch.float32).to(logits.device)
    return (losses * weights).sum() / weights.sum().clamp(min=1)
