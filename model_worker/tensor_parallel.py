"""The tensor-parallel group a model's collectives run on. One process is `SINGLE` (every collective is the
identity), so the model code is the same at any size. It sits beside `config.py` and `numerics.py`, below the model
that calls it, and imports nothing but torch: a spawned rank joins its group before it imports the model. Starting
and driving a replica's ranks is `model_worker.parallel`'s (which re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TensorParallel:
    rank: int = 0
    size: int = 1

    def split(self, total: int, what: str) -> tuple[int, int]:
        """This rank's [start, end) of `total` items split evenly."""
        if total % self.size:
            raise ValueError(f"{what}: {total} does not split over {self.size} ranks")
        part = total // self.size
        return self.rank * part, (self.rank + 1) * part

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, in place (float32 on the wire: bf16 sums would round per hop)."""
        if self.size == 1:
            return x
        if x.dtype in (torch.float32, torch.float64):
            dist.all_reduce(x)
            return x
        wide = x.float()
        dist.all_reduce(wide)
        return x.copy_(wide)

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Every rank's `x` concatenated along `dim`, in rank order."""
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=dim)

    def broadcast(self, value: Any = None) -> Any:
        """Rank 0's picklable `value` on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = TensorParallel()
