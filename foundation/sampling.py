"""Per-request sampling parameters and their validation.

Ranges follow vLLM/OpenAI so requests accepted by those APIs are accepted here; defaults follow
DeepSeek's generation_config (temperature 1.0, top_p 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NoReturn

# Below this, temperature scaling overflows float32 logits; vLLM uses the same epsilon.
GREEDY_TEMPERATURE_EPS = 1e-5
MAX_ABS_LOGIT_BIAS = 100.0  # OpenAI's bound
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
_SEED_RANGE = (-(1 << 63), 1 << 64)


class InvalidSamplingParams(ValueError):
    """A sampling parameter is out of range or of the wrong type (maps to INVALID_ARGUMENT)."""


INTERACTIVE, BATCH = 0, 1  # a request's priority class: the engine serves INTERACTIVE requests first


@dataclass(frozen=True)
class SamplingParams:
    """How one request turns logits into tokens and when it stops.

    Attributes:
        temperature: 0 means greedy (argmax); otherwise logits are divided by it.
        top_p: nucleus mass kept, in (0, 1]; 1 disables it.
        top_k: number of highest logits kept; 0 or -1 disables it.
        min_p: drop tokens whose probability is below min_p * max probability; 0 disables it.
        repetition_penalty: HF-style, over prompt and output tokens: positive logits are divided
            by it, negative ones multiplied. 1 disables it.
        frequency_penalty: OpenAI-style, subtracted once per occurrence in the output.
        presence_penalty: OpenAI-style, subtracted once if the token occurs in the output.
        logit_bias: token id -> value added to its logit (treat as read-only).
        seed: makes sampling reproducible; None draws a random seed per request.
        stop_token_ids: tokens that finish the request (in addition to EOS).
        stop: strings that finish the request; they may span several tokens.
        max_tokens: cap on generated tokens; None leaves the cap to the engine's context limit.
        include_stop_str_in_output: keep the matched stop string / stop token text in the output.
        ignore_eos: keep generating after EOS (benchmarks); needs max_tokens.
        top_logprobs: how many of the most likely alternatives to report with each token's logprob (0 to 20).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # Excluded from hashing: a dict is unhashable, and params are hashed rarely if ever.
    logit_bias: Mapping[int, float] = field(default_factory=dict, hash=False)
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        # NOTE: normalising a frozen dataclass needs object.__setattr__; done once, before
        # validation, so callers may pass lists (JSON) and the stored dict never aliases theirs.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, (list, tuple)):
            object.__setattr__(self, "stop", tuple(self.stop))
        if isinstance(self.stop_token_ids, (list, tuple)):
            object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if isinstance(self.logit_bias, Mapping):
            object.__setattr__(self, "logit_bias", dict(self.logit_bias))
        self.validate()

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE_EPS

    @property
    def top_k_enabled(self) -> bool:
        return self.top_k > 0

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise InvalidSamplingParams on the first bad field.

        Runs on construction; call again with `vocab_size` at admission to also check token ids.
        """
        _check_number("temperature", self.temperature)
        if self.temperature < 0:
            _fail(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        _check_number("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            _fail(f"top_p must be in (0, 1], got {self.top_p}")
        _check_int("top_k", self.top_k)
        if self.top_k < -1:
            _fail(f"top_k must be -1 or 0 (disabled) or a positive int, got {self.top_k}")
        _check_number("min_p", self.min_p)
        if not 0.0 <= self.min_p <= 1.0:
            _fail(f"min_p must be in [0, 1], got {self.min_p}")
        _check_number("repetition_penalty", self.repetition_penalty)
        if not 0.0 < self.repetition_penalty <= 2.0:
            _fail(f"repetition_penalty must be in (0, 2] (1 = off), got {self.repetition_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            _check_number(name, value)
            if not -2.0 <= value <= 2.0:
                _fail(f"{name} must be in [-2, 2], got {value}")
        self._validate_logit_bias(vocab_size)
        if self.seed is not None:
            _check_int("seed", self.seed)
            if not _SEED_RANGE[0] <= self.seed < _SEED_RANGE[1]:
                _fail(f"seed must fit in 64 bits, got {self.seed}")
        if not isinstance(self.stop_token_ids, tuple):
            kind = type(self.stop_token_ids).__name__
            _fail(f"stop_token_ids must be a sequence of ints, got {kind}")
        for token_id in self.stop_token_ids:
            _check_token_id("stop_token_ids", token_id, vocab_size)
        if not isinstance(self.stop, tuple):
            _fail(f"stop must be a string or a sequence of strings, got {type(self.stop).__name__}")
        for stop_str in self.stop:
            if not isinstance(stop_str, str) or not stop_str:
                _fail(f"stop strings must be non-empty strings, got {stop_str!r}")
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens)
            if self.max_tokens < 1:
                _fail(f"max_tokens must be >= 1, got {self.max_tokens}")
        _check_int("top_logprobs", self.top_logprobs)
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            _fail(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        for name in ("include_stop_str_in_output", "ignore_eos"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.ignore_eos and self.max_tokens is None:
            _fail("ignore_eos needs max_tokens: without EOS only the model's context would end the output")

    def _validate_logit_bias(self, vocab_size: int | None) -> None:
        if not isinstance(self.logit_bias, Mapping):
            kind = type(self.logit_bias).__name__
            _fail(f"logit_bias must be a mapping of token id to bias, got {kind}")
        for token_id, bias in self.logit_bias.items():
            _check_token_id("logit_bias", token_id, vocab_size)
            _check_number(f"logit_bias[{token_id}]", bias)
            if not -MAX_ABS_LOGIT_BIAS <= bias <= MAX_ABS_LOGIT_BIAS:
                _fail(f"logit_bias[{token_id}] must be in [-100, 100], got {bias}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; logit_bias becomes sorted [token, bias] pairs (JSON keys are str)."""
        out = asdict(self)
        out["logit_bias"] = [[t, b] for t, b in sorted(self.logit_bias.items())]
        out["stop_token_ids"] = list(self.stop_token_ids)
        out["stop"] = list(self.stop)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingParams:
        """Inverse of to_dict; unknown keys are rejected rather than silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            _fail(f"unknown sampling parameters: {', '.join(unknown)}")
        kwargs = dict(data)
        bias = kwargs.get("logit_bias")
        if isinstance(bias, list):
            try:
                kwargs["logit_bias"] = {token: value for token, value in bias}
            except (TypeError, ValueError):
                _fail("logit_bias pairs must be [token_id, bias]")
        return cls(**kwargs)


def _fail(message: str) -> NoReturn:
    raise InvalidSamplingParams(message)


def _check_number(name: str, value: object) -> None:
    # bool is an int subclass; True as a temperature is almost certainly a client bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        _fail(f"{name} must be finite, got {value}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{name} must be an int, got {value!r}")


def _check_token_id(name: str, token_id: object, vocab_size: int | None) -> None:
    _check_int(f"{name} token id", token_id)
    if token_id < 0:  # type: ignore[operator]
        _fail(f"{name} token ids must be >= 0, got {token_id}")
    if vocab_size is not None and token_id >= vocab_size:  # type: ignore[operator]
        _fail(f"{name} token id {token_id} is outside the vocabulary (size {vocab_size})")
