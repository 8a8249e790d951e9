"""Per-request sampling state: params, RNG, prompt and output tokens, and its byte snapshot.

The snapshot is canonical JSON (sorted keys) with token arrays as base64 little-endian uint32, so
the same state always encodes to the same bytes and never goes through pickle.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from foundation.sampling import InvalidSamplingParams, SamplingParams
from model_worker.sampling.rng import RequestRng

SNAPSHOT_FORMAT = "sampling-state/1"
_MAX_TOKEN_ID = (1 << 32) - 1


class TokenConstraint(Protocol):
    """What the sampler needs of a grammar (model_worker.structured.OutputConstraint): the allowed next tokens, and
    its state kept in step with the output."""

    def allowed(self) -> torch.Tensor:
        """[vocab] bool."""
        ...

    def accept(self, token_id: int) -> None: ...

    def rollback(self, num_tokens: int) -> None: ...


class InvalidSnapshot(ValueError):
    """Snapshot bytes are malformed, from another format version, or hold invalid params."""


@dataclass
class SamplingState:
    """Mutable sampling state of one request; owned by the engine process, not thread-safe.

    `output_token_counts` is derived from `output_token_ids` and kept in sync by append/rollback;
    the penalties read it every step. A `constraint` follows the output too; it is per request, not part of the
    snapshot.
    """

    params: SamplingParams
    prompt_token_ids: Sequence[int] = ()  # stored as a tuple
    rng: RequestRng | None = None
    output_token_ids: list[int] = field(default_factory=list)
    output_token_counts: dict[int, int] = field(init=False, repr=False)
    constraint: TokenConstraint | None = field(default=None, compare=False, repr=False)
    _prompt_ids_unique: torch.Tensor | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.prompt_token_ids = tuple(self.prompt_token_ids)
        self.output_token_ids = list(self.output_token_ids)
        if self.rng is None:
            self.rng = RequestRng(self.params.seed)
        self.output_token_counts = {}
        for token_id in self.output_token_ids:
            self.output_token_counts[token_id] = self.output_token_counts.get(token_id, 0) + 1

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def next_uniform(self) -> float:
        """The uniform draw for the next output position; pure, so calling it twice is harmless."""
        assert self.rng is not None, "rng is set in __post_init__"
        return self.rng.uniform(len(self.output_token_ids))

    def append(self, token_id: int) -> None:
        if self.constraint is not None:
            self.constraint.accept(token_id)
        self.output_token_ids.append(token_id)
        self.output_token_counts[token_id] = self.output_token_counts.get(token_id, 0) + 1

    def extend(self, token_ids: Sequence[int]) -> None:
        for token_id in token_ids:
            self.append(token_id)

    def rollback(self, num_tokens: int) -> None:
        """Drop the last `num_tokens` outputs; the RNG rolls back too (draws are per position)."""
        if not 0 <= num_tokens <= len(self.output_token_ids):
            raise ValueError(
                f"cannot roll back {num_tokens} of {len(self.output_token_ids)} output tokens"
            )
        if self.constraint is not None:
            self.constraint.rollback(num_tokens)
        for _ in range(num_tokens):
            token_id = self.output_token_ids.pop()
            remaining = self.output_token_counts[token_id] - 1
            if remaining:
                self.output_token_counts[token_id] = remaining
            else:
                del self.output_token_counts[token_id]

    def prompt_ids_unique(self) -> torch.Tensor:
        """Distinct prompt token ids, CPU int64, computed once (prompts can be ~100k tokens)."""
        if self._prompt_ids_unique is None:
            ids = torch.tensor(self.prompt_token_ids, dtype=torch.int64)
            self._prompt_ids_unique = torch.unique(ids)
        return self._prompt_ids_unique

    def snapshot(self) -> bytes:
        """Encode params, RNG and tokens; `restore` of the result continues the identical stream."""
        assert self.rng is not None, "rng is set in __post_init__"
        doc = {
            "format": SNAPSHOT_FORMAT,
            "params": self.params.to_dict(),
            "rng": _b64(self.rng.get_state()),
            "prompt_token_ids": _b64(_pack_ids(self.prompt_token_ids)),
            "output_token_ids": _b64(_pack_ids(self.output_token_ids)),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def restore(cls, data: bytes) -> SamplingState:
        """Rebuild a state from `snapshot()` bytes; raises InvalidSnapshot on malformed input."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidSnapshot(f"snapshot is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise InvalidSnapshot(f"expected snapshot format {SNAPSHOT_FORMAT!r}, got {found!r}")
        try:
            params = SamplingParams.from_dict(doc["params"])
            rng = RequestRng.from_state(_unb64(doc["rng"]))
            prompt = _unpack_ids(_unb64(doc["prompt_token_ids"]))
            output = _unpack_ids(_unb64(doc["output_token_ids"]))
        except InvalidSamplingParams as exc:
            raise InvalidSnapshot(f"snapshot holds invalid params: {exc}") from exc
        except (KeyError, TypeError, ValueError, binascii.Error, struct.error) as exc:
            raise InvalidSnapshot(f"malformed snapshot field: {exc!r}") from exc
        return cls(params=params, prompt_token_ids=prompt, rng=rng, output_token_ids=list(output))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)


def _pack_ids(token_ids: Sequence[int]) -> bytes:
    for token_id in token_ids:
        if not 0 <= token_id <= _MAX_TOKEN_ID:
            raise ValueError(f"token id {token_id} does not fit in uint32")
    return struct.pack(f"<{len(token_ids)}I", *token_ids)


def _unpack_ids(raw: bytes) -> tuple[int, ...]:
    if len(raw) % 4:
        raise ValueError(f"token array length {len(raw)} is not a multiple of 4")
    return struct.unpack(f"<{len(raw) // 4}I", raw)
