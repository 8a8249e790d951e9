"""Running the model over sequences: chunked prefill, decode with sampling and stopping, one sequence at a time
(`Generator`) or many batched continuously (`Scheduler`)."""

from model_worker.engine.generator import GenerationResult, Generator
from model_worker.engine.request import BATCH, INTERACTIVE, EngineUnavailable, Finished, Request, TextDelta
from model_worker.engine.scheduler import Overloaded, Scheduler
from model_worker.engine.speculative import Drafter, MtpDrafter

__all__ = ["BATCH", "INTERACTIVE", "Drafter", "EngineUnavailable", "Finished", "GenerationResult", "Generator",
           "MtpDrafter", "Overloaded", "Request", "Scheduler", "TextDelta"]
