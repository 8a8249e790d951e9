"""One model replica over tensor-parallel ranks, as the engine runs it. Rank 0 runs everything that is not the model
(scheduler, sessions, gRPC) and runs its passes through `ReplicaLeader`, a model runner that first sends each
forward or draft to the other ranks as a small message (parallel/mirrors.py: which sequences, what happened to them
since they were last seen, the token ids), then runs it on its own share of the model; the collectives inside keep
the ranks in step. The other ranks load their share and `follow`.

`open_replica` starts a replica (local ranks as processes of this one, or the ranks a launcher started) and gives
rank 0 its runner: a `LocalRunner` at one rank, a `ReplicaLeader` at more."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields

import torch
import torch.distributed as dist

from model_worker.engine.loading import load_model
from model_worker.engine.request import EngineUnavailable
from model_worker.engine.runner import LocalRunner, ModelRunner
from model_worker.model import DeepseekV4, ForwardBatch, ForwardOutput
from model_worker.parallel.launch import (
    KEEPALIVE_S,
    LocalRanks,
    ModelSpec,
    device_for,
    from_env,
    leave_signals_to_rank_0,
    local_rank_of,
    start_local,
)
from model_worker.parallel.mirrors import Mirrors, follow
from model_worker.state import SequenceState
from model_worker.tensor_parallel import SINGLE, TensorParallel

__all__ = ["KEEPALIVE_S", "ModelSpec", "Replica", "ReplicaBroken", "ReplicaLeader", "follow_rank", "open_replica"]


class ReplicaBroken(EngineUnavailable):
    """A collective failed: a rank is gone, and this replica cannot run another pass (UNAVAILABLE)."""


class ReplicaLeader(LocalRunner):
    """Rank 0's runner: every pass is announced to the other ranks, then run here on rank 0's share."""

    def __init__(self, model: DeepseekV4, tp: TensorParallel) -> None:
        super().__init__(model)
        self.tp = tp
        self._mirrors = Mirrors()
        self._lock = threading.Lock()  # one message and its pass at a time, in the order the ranks receive them
        self._last_message = time.monotonic()
        self._broken: str | None = None
        self._on_broken: Callable[[str], None] | None = None

    def keep_alive(self, on_broken: Callable[[str], None], every_s: float = KEEPALIVE_S) -> None:
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

    def forward(self, batch: ForwardBatch) -> ForwardOutput:
        shape = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name != "states"}
        with self._lock, self._guard():
            self.tp.broadcast(self._mirrors.message("forward", batch.states, shape))
            out = super().forward(batch)
            self._mirrors.saw(batch.states)
        return out

    def draft(self, states: Sequence[SequenceState], next_tokens: Sequence[int]) -> torch.Tensor:
        states, next_tokens = list(states), list(next_tokens)
        with self._lock, self._guard():
            self.tp.broadcast(self._mirrors.message("draft", states, next_tokens))
            logits = super().draft(states, next_tokens)
            self._mirrors.saw(states)
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


class Replica:
    """What a command gets from `open_replica`: the runner of rank 0 (its view of all ranks) and how to end."""

    def __init__(self, runner: ModelRunner, tp: TensorParallel, ranks: LocalRanks | None) -> None:
        self.runner, self.tp, self.ranks = runner, tp, ranks

    def close(self) -> None:
        """Stop the other ranks and leave the group."""
        if self.tp.size == 1:
            return
        if self.ranks is not None:
            self.ranks.stop_watching()  # they are about to exit, as told
        if isinstance(self.runner, ReplicaLeader):
            self.runner.stop()
        dist.destroy_process_group()
        if self.ranks is not None:
            self.ranks.join()


def open_replica(spec: ModelSpec, tensor_parallel: int = 1) -> Replica | None:
    """The model on `tensor_parallel` local ranks, or on the group a launcher's env:// variables name. Returns None
    on a non-zero launcher-started rank, after it has followed rank 0 to the end."""
    tp, ranks = from_env(), None
    if tp is not None and tp.rank != 0:
        follow_rank(tp, device_for(local_rank_of(tp.rank)), spec)
        return None
    if tp is None and tensor_parallel > 1:
        tp, ranks = start_local(tensor_parallel, f"{__name__}:follow_rank", (spec,))
    tp = tp or SINGLE
    model = load_model(spec.checkpoint, spec.config, spec.seed, spec.numerics, device_for(0), tp)
    if tp.size == 1:
        return Replica(LocalRunner(model), tp, None)
    dist.barrier()  # every rank has loaded its share
    return Replica(ReplicaLeader(model, tp), tp, ranks)


def follow_rank(tp: TensorParallel, device: str, spec: ModelSpec) -> None:
    """A non-zero rank, in its group: load its share, follow rank 0 until it stops, leave the group."""
    leave_signals_to_rank_0()
    model = load_model(spec.checkpoint, spec.config, spec.seed, spec.numerics, device, tp)
    dist.barrier()  # rank 0 serves once every rank has loaded
    try:
        follow(model, tp)
    finally:
        dist.destroy_process_group()
