"""Tensor and expert parallelism over torch.distributed: the split (`shard.py`), the group a model's collectives run
on (`group.py`), one replica's ranks stepping together (`replica.py`) and their launch (`launch.py`)."""

from model_worker.parallel.group import SINGLE, TensorParallel

__all__ = ["SINGLE", "TensorParallel"]
