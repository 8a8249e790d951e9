"""Running the model over sequences: chunked prefill, decode with sampling and stopping."""

from model_worker.engine.generator import GenerationResult, Generator

__all__ = ["GenerationResult", "Generator"]
