"""Running the model over sequences: chunked prefill, decode with sampling and stopping, one sequence at a time
(`Generator`) or many batched continuously (`Scheduler`)."""

from model_worker.engine.generator import GenerationResult, Generator
from model_worker.engine.scheduler import BATCH, INTERACTIVE, Finished, Overloaded, Request, Scheduler, TextDelta

__all__ = ["BATCH", "INTERACTIVE", "Finished", "GenerationResult", "Generator", "Overloaded", "Request", "Scheduler",
           "TextDelta"]
