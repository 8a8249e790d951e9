"""Running the model over sequences: continuous batching (`Scheduler`), one step being schedule -> run ->
postprocess with typed hand-offs (`SchedulerOutput`, `RunnerOutput`); the model behind a `ModelRunner` (in this
process, `LocalRunner`; over tensor-parallel ranks, `ReplicaLeader`); `Generator`, the same scheduler driven one
request at a time on the caller's thread."""

from model_worker.engine.contracts import DecodeRow, PrefillChunk, RunnerOutput, SchedulerOutput
from model_worker.engine.generator import GenerationResult, Generator
from model_worker.engine.request import BATCH, INTERACTIVE, EngineUnavailable, Finished, Request, TextDelta
from model_worker.engine.runner import LocalRunner, ModelRunner
from model_worker.engine.scheduler import Overloaded, Scheduler
from model_worker.engine.speculative import Drafter, MtpDrafter

__all__ = ["BATCH", "INTERACTIVE", "DecodeRow", "Drafter", "EngineUnavailable", "Finished", "GenerationResult",
           "Generator", "LocalRunner", "ModelRunner", "MtpDrafter", "Overloaded", "PrefillChunk", "Request",
           "RunnerOutput", "Scheduler", "SchedulerOutput", "TextDelta"]
