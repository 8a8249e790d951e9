"""Sampling for the inference engine: params, per-request RNG and state, batch sampler, stopping."""

from foundation.sampling import InvalidSamplingParams, SamplingParams
from model_worker.sampling.rng import RequestRng
from model_worker.sampling.sampler import Sampler, SamplerOutput
from model_worker.sampling.state import InvalidSnapshot, SamplingState, TokenConstraint
from model_worker.sampling.stopping import FinishReason, StopChecker, StopCheckResult

__all__ = [
    "FinishReason",
    "InvalidSamplingParams",
    "InvalidSnapshot",
    "RequestRng",
    "Sampler",
    "SamplerOutput",
    "SamplingParams",
    "SamplingState",
    "TokenConstraint",
    "StopCheckResult",
    "StopChecker",
]
