"""Walsh-Hadamard rotation (Sylvester order, scaled by d^-0.5) of the indexer's queries and keys."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=8)
def _matrix(d: int, device: torch.device) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < d:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return (h * d**-0.5).to(device)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """x [..., d] (d a power of two) -> x @ H_d, computed in float32, returned in x's dtype."""
    return (x.float() @ _matrix(x.shape[-1], x.device)).to(x.dtype)
