"""One model replica over tensor-parallel ranks. Rank 0 runs everything that is not the model (scheduler, sessions,
gRPC) and calls the model through `ReplicaLeader`, which has the model's interface: each forward or draft is first
sent to the other ranks as a small message (which sequences, what happened to them since they were last seen, the
token ids), then run on rank 0; the collectives inside keep the ranks in step. The other ranks run `follow`: they
keep a mirror of every sequence's state (the states are the same on every rank, the K=V head and compressors being
replicated) and run the same forward on it.

A mirror is sent whole (a snapshot) the first time its sequence takes part, typically a session resumed from the
store; after that, only rollbacks and commits made on rank 0 between passes (`trim`), and the ids of sequences
dropped."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

from model_worker.engine.request import EngineUnavailable
from model_worker.model import DeepseekV4
from model_worker.model.batch import ForwardBatch, ForwardOutput
from model_worker.parallel.group import TensorParallel
from model_worker.state import SequenceState


@dataclass(frozen=True)
class _Seen:
    num_tokens: int
    committed: int
    mtp_pairs: int

    @classmethod
    def of(cls, state: SequenceState) -> _Seen:
        return cls(state.num_tokens, state.committed, state.mtp_pairs)


class ReplicaBroken(EngineUnavailable):
    """A collective failed: a rank is gone, and this replica cannot run another pass (UNAVAILABLE)."""


class ReplicaLeader:
    def __init__(self, model: DeepseekV4, tp: TensorParallel) -> None:
        self.model, self.tp = model, tp
        self._ids: weakref.WeakKeyDictionary[SequenceState, int] = weakref.WeakKeyDictionary()
        self._seen: dict[int, _Seen] = {}
        self._dropped: list[int] = []  # appended by finalizers, on whatever thread collects the state
        self._next_id = 0
        self._lock = threading.Lock()  # one message and its pass at a time, in the order the ranks receive them
        self._last_message = time.monotonic()
        self._broken: str | None = None
        self._on_broken: Callable[[str], None] | None = None

    def keep_alive(self, on_broken: Callable[[str], None], every_s: float = 10.0) -> None:
        """While idle, ping the other ranks every `every_s` (their wait for the next pass stays well inside the
        group's timeout, and a rank that is gone shows at once); call on_broken(reason) once when a collective
        fails, here or in a pass."""
        self._on_broken = on_broken

        def run() -> None:
            while self._broken is None:
                time.sleep(every_s / 4)
                if time.monotonic() - self._last_message >= every_s:
                    with self._lock, self._guard():
                        self.tp.broadcast(("ping",))

        threading.Thread(target=run, name="replica-keepalive", daemon=True).start()

    def __getattr__(self, name: str) -> Any:  # config, layout, numerics, fingerprint, new_state, mtp...
        return getattr(self.model, name)

    def __call__(self, batch: ForwardBatch) -> ForwardOutput:
        return self.forward(batch)

    def forward(self, batch: ForwardBatch) -> ForwardOutput:
        shape = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name != "states"}
        with self._lock, self._guard():
            self.tp.broadcast(("forward", self._sync(batch.states), shape, self._take_dropped()))
            out = self.model(batch)
            self._saw(batch.states)
        return out

    def draft(self, states: list[SequenceState], next_tokens: list[int]) -> torch.Tensor:
        with self._lock, self._guard():
            self.tp.broadcast(("draft", self._sync(states), next_tokens, self._take_dropped()))
            logits = self.model.draft(states, next_tokens)
            self._saw(states)
        return logits

    def stop(self) -> None:
        """The other ranks leave `follow`."""
        with self._lock, self._guard():
            self.tp.broadcast(("stop",))
        self._broken = "stopped"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Collectives either all succeed or the replica is broken for good: every later call fails fast."""
        if self._broken is not None:
            raise ReplicaBroken(f"the replica's ranks are not all there ({self._broken})")
        try:
            yield
        except RuntimeError as error:  # gloo / NCCL report a lost peer or a timeout as RuntimeError
            self._broken = f"{type(error).__name__}: {error}"
            if self._on_broken is not None:
                self._on_broken(self._broken)
            raise ReplicaBroken(self._broken) from error
        finally:
            self._last_message = time.monotonic()

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

    def _saw(self, states: list[SequenceState]) -> None:
        for state in states:
            self._seen[self._ids[state]] = _Seen.of(state)

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
