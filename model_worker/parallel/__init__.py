"""Tensor and expert parallelism over torch.distributed: the split (`shard.py`), the ranks of a replica as processes
(`launch.py`) and the other ranks' mirrors of rank 0's sequence states (`mirrors.py`). The group a model's
collectives run on (`model_worker.tensor_parallel`, below the model) is re-exported here; rank 0's runner, which
drives the other ranks, is the engine's (`model_worker.engine.replica`)."""

from model_worker.tensor_parallel import SINGLE, TensorParallel

__all__ = ["SINGLE", "TensorParallel"]
