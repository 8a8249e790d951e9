"""What one forward pass consumes and produces.

A batch is a flat run of tokens from several sequences, each a contiguous segment: a prefill chunk of any length
or a single decode token, mixed freely. Each sequence's state is extended in place by exactly its segment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model_worker.state import SequenceState


@dataclass
class ForwardBatch:
    """token_ids [T] int64 = the segments concatenated; states[i] receives segment i of length seq_lens[i]."""

    token_ids: torch.Tensor
    seq_lens: list[int]
    states: list[SequenceState]
    logits: str = "last"  # "last": the last row(s) of each segment; "all": every token; "none"
    draft_logits: bool = False  # advance the MTP layer and return its draft logits at each segment's last pair
    last_rows: list[int] | None = None  # with "last": how many trailing rows of each segment (default one each)
    mtp_every_pair: bool = False  # training: the MTP layer over every pair of the segments, logits at each

    def __post_init__(self) -> None:
        if len(self.seq_lens) != len(self.states):
            raise ValueError("one state per segment")
        if sum(self.seq_lens) != self.token_ids.shape[0] or any(n <= 0 for n in self.seq_lens):
            raise ValueError("segment lengths must be positive and sum to the number of tokens")
        if len({id(s) for s in self.states}) != len(self.states):
            raise ValueError("a sequence may appear once per batch")
        if self.logits not in ("last", "all", "none"):
            raise ValueError(f"logits must be last, all or none, not {self.logits!r}")
        if self.last_rows is not None and (len(self.last_rows) != len(self.seq_lens) or any(
                not 1 <= k <= n for k, n in zip(self.last_rows, self.seq_lens))):
            raise ValueError("last_rows: between 1 and the segment's length, one per segment")

    @classmethod
    def single(cls, token_ids: list[int] | torch.Tensor, state: SequenceState, logits: str = "last",
               draft_logits: bool = False) -> "ForwardBatch":
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        return cls(ids, [int(ids.shape[0])], [state], logits, draft_logits)


@dataclass
class Segment:
    """One sequence's slice of the batch as the layers see it."""

    first_row: int
    length: int
    start_position: int
    state: SequenceState
    positions: torch.Tensor | None = None  # [length] int64 on the batch's device, set by the model
    _per_pass: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def rows(self) -> slice:
        return slice(self.first_row, self.first_row + self.length)

    def visible_entries(self, ratio: int) -> torch.Tensor:
        """[length] how many entries of a ratio-m compressor each query sees: entry j once (j+1)*m <= t+1."""
        return self.shared(("visible", ratio), lambda: (self.positions + 1) // ratio)

    def shared(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A tensor that depends only on this segment and `key` (window indices, visible entry counts), made by the
        first layer that asks and reused by the others: in decode, op overhead, not arithmetic, is the cost."""
        value = self._per_pass.get(key)
        if value is None:
            value = self._per_pass[key] = make()
        return value


@dataclass
class ForwardOutput:
    """logits [R, V] float32 in the order asked for; mtp_logits [S', V] when drafts were asked for: the draft
    distribution of the token after the next one, for the segments named by mtp_segments (with `mtp_every_pair`,
    one row per pair, segment after segment)."""

    logits: torch.Tensor
    mtp_logits: torch.Tensor | None
    mtp_segments: list[int]
