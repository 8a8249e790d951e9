"""The DeepSeek-V4 model as an executable spec: `deepseek_v4.py` composes one module per concern."""

from model_worker.model.batch import ForwardBatch, ForwardOutput
from model_worker.model.deepseek_v4 import DeepseekV4

__all__ = ["DeepseekV4", "ForwardBatch", "ForwardOutput"]
