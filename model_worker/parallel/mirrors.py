"""The other ranks' mirrors of rank 0's sequence states, and the messages that keep them in step.

Before each forward or draft, rank 0 (the engine's `ReplicaLeader`) broadcasts a small message: which sequences take
part, what happened to each since the other ranks last saw it, and the pass's arguments (token ids, segment lengths).
The other ranks run `follow`: they keep a mirror of every sequence's state (the states are the same on every rank,
the K=V head and compressors being replicated) and run the same pass on it, the collectives inside keeping the ranks
in step.

A mirror is sent whole (a snapshot) the first time its sequence takes part, typically a session resumed from the
store; after that, only rollbacks and commits made on rank 0 between passes (`trim`), and the ids of sequences
dropped.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.state import SequenceState
from model_worker.tensor_parallel import TensorParallel


@dataclass(frozen=True)
class _Seen:
    num_tokens: int
    committed: int
    mtp_pairs: int

    @classmethod
    def of(cls, state: SequenceState) -> _Seen:
        return cls(state.num_tokens, state.committed, state.mtp_pairs)


class Mirrors:
    """Rank 0's record of what the other ranks' mirrors hold, and the ops that bring them up to date."""

    def __init__(self) -> None:
        self._ids: weakref.WeakKeyDictionary[SequenceState, int] = weakref.WeakKeyDictionary()
        self._seen: dict[int, _Seen] = {}
        self._dropped: list[int] = []  # appended by finalizers, on whatever thread collects the state
        self._next_id = 0

    def message(self, kind: str, states: list[SequenceState], arguments: object) -> tuple:
        """What the other ranks need to run pass `kind` ("forward" or "draft") with `arguments` over `states`."""
        return kind, self._sync(states), arguments, self._take_dropped()

    def saw(self, states: list[SequenceState]) -> None:
        """The pass ran: the mirrors now hold what `states` hold."""
        for state in states:
            self._seen[self._ids[state]] = _Seen.of(state)

    def _sync(self, states: list[SequenceState]) -> list[tuple]:
        """For each state, what its mirror needs first: nothing, a trim (rolled back and/or committed on rank 0
        since the last pass) or the whole snapshot (new to the other ranks, or changed some other way)."""
        ops = []
        for state in states:
            mirror = self._ids.get(state)
            if mirror is None:
                mirror = self._next_id
                self._next_id += 1
                self._ids[state] = mirror
                weakref.finalize(state, self._drop, mirror)
                ops.append(("load", mirror, state.snapshot()))
                continue
            seen, now = self._seen[mirror], _Seen.of(state)
            if now == seen:
                ops.append(("keep", mirror))
            elif _trimmed(seen, now):
                ops.append(("trim", mirror, now.num_tokens, now.committed > seen.committed))
            else:
                ops.append(("load", mirror, state.snapshot()))
        return ops

    def _drop(self, mirror: int) -> None:
        # Through the attribute at call time: `_take_dropped` swaps the list, and an append bound to the old one
        # would be lost (the other ranks would keep that mirror for ever).
        self._dropped.append(mirror)

    def _take_dropped(self) -> list[int]:
        dropped, self._dropped = self._dropped, []
        for mirror in dropped:
            self._seen.pop(mirror, None)
        return dropped


def _trimmed(seen: _Seen, now: _Seen) -> bool:
    """Whether `now` is `seen` rolled back to now.num_tokens and/or committed there, and nothing else: the mirror
    can then follow with truncate and commit instead of a snapshot."""
    if now.num_tokens > seen.num_tokens or now.committed < seen.committed:
        return False
    if now.committed > seen.committed and now.committed != now.num_tokens:
        return False
    return now.mtp_pairs == min(seen.mtp_pairs, max(now.num_tokens - 1, 0))


def follow(model: DeepseekV4, tp: TensorParallel) -> None:
    """A non-zero rank's life: run every pass rank 0 announces, on mirrors of its states, until told to stop."""
    mirrors: dict[int, SequenceState] = {}
    while True:
        message = tp.broadcast()
        if message[0] == "stop":
            return
        if message[0] == "ping":
            continue
        kind, ops, arguments, dropped = message
        for mirror in dropped:
            mirrors.pop(mirror, None)
        states = [_apply(model, mirrors, op) for op in ops]
        with torch.no_grad():  # inference, as on rank 0
            if kind == "forward":
                model(ForwardBatch(states=states, **arguments))
            else:
                model.draft(states, arguments)


def _apply(model: DeepseekV4, mirrors: dict[int, SequenceState], op: tuple) -> SequenceState:
    if op[0] == "load":
        state = mirrors.get(op[1]) or model.new_state()
        state.restore(op[2])
        mirrors[op[1]] = state
        return state
    state = mirrors[op[1]]
    if op[0] == "trim":
        _, _, num_tokens, commit = op
        if num_tokens < state.num_tokens:
            state.truncate(num_tokens)
        if commit:
            state.commit()
    return state
