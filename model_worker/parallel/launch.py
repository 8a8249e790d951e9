"""Starting one replica's ranks. On one machine `start_local` spawns ranks 1..N-1 as processes of this program and
joins them as rank 0 (gloo on CPU, NCCL on GPUs, one GPU per rank). Across machines every rank is started by the
launcher with torch.distributed's env:// variables (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK), and
`from_env` joins the group. Ranks other than 0 load their share of the model and `follow` rank 0.

A rank that dies takes the replica down: collectives with it fail within the group timeout, and on one machine rank
0 also watches its children and calls `on_rank_exit` at once, so the replica reports NOT_SERVING and exits instead
of hanging."""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from model_worker.parallel.group import TensorParallel

log = logging.getLogger(__name__)
# Long enough for ranks to finish loading at different speeds; a rank that dies shows much sooner (its connections
# close, local ranks are watched, and rank 0 pings the others while idle).
GROUP_TIMEOUT = dt.timedelta(seconds=float(os.environ.get("DSV4_GROUP_TIMEOUT_S", 600)))
KEEPALIVE_S = min(10.0, GROUP_TIMEOUT.total_seconds() / 4)


@dataclass(frozen=True)
class ModelSpec:
    """What every rank loads (picklable: it crosses into the spawned ranks)."""

    checkpoint: str | None
    config: str
    seed: int
    numerics: str


def device_for(local_rank: int) -> str:
    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def _join(rank: int, size: int, init_method: str, local_rank: int) -> TensorParallel:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size, timeout=GROUP_TIMEOUT)
    return TensorParallel(rank, size)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _follower(rank: int, size: int, init_method: str, spec: ModelSpec, threads: int) -> None:
    from model_worker.engine.loading import load_model
    from model_worker.parallel.replica import follow

    _leave_signals_to_rank_0()
    torch.set_num_threads(threads)
    tp = _join(rank, size, init_method, rank)
    model = load_model(spec.checkpoint, spec.config, spec.seed, spec.numerics, device_for(rank), tp)
    dist.barrier()  # rank 0 serves once every rank has loaded
    try:
        follow(model, tp)
    finally:
        dist.destroy_process_group()


def _leave_signals_to_rank_0() -> None:
    """Rank 0 ends the other ranks (by telling them to stop) after draining; a signal meant for the whole replica
    (its process group, a pod group's rolling update) is rank 0's to act on."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalRanks:
    """Ranks 1..N-1 of a replica as child processes of rank 0."""

    def __init__(self, processes: list[mp.Process]) -> None:
        self.processes = processes
        self._watching = threading.Event()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def watch(self, on_rank_exit: Callable[[int, int | None], None], every_s: float = 0.2) -> None:
        """Call on_rank_exit(rank, exit code) once, from a daemon thread, when a rank's process ends."""
        def run() -> None:
            while not self._watching.wait(every_s):
                for rank, process in enumerate(self.processes, start=1):
                    if not process.is_alive():
                        self._watching.set()
                        on_rank_exit(rank, process.exitcode)
                        return

        threading.Thread(target=run, name="rank-watch", daemon=True).start()

    def stop_watching(self) -> None:
        self._watching.set()

    def join(self, timeout: float = 30.0) -> None:
        self._watching.set()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()


def start_local(size: int, spec: ModelSpec, threads_per_rank: int | None = None) -> tuple[TensorParallel, LocalRanks]:
    """Spawn ranks 1..size-1 on this machine and join as rank 0."""
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    threads = threads_per_rank or max(1, torch.get_num_threads() // size)
    context = mp.get_context("spawn")
    processes = [context.Process(target=_follower, args=(rank, size, init_method, spec, threads),
                                 name=f"rank-{rank}", daemon=True) for rank in range(1, size)]
    for process in processes:
        process.start()
    torch.set_num_threads(threads)
    return _join(0, size, init_method, 0), LocalRanks(processes)


def from_env() -> TensorParallel | None:
    """The group named by torch.distributed's env:// variables, when a launcher set them; None otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return _join(rank, size, "env://", _local_rank(rank))


def _local_rank(rank: int) -> int:
    """The rank's GPU on its machine: LOCAL_RANK as launchers set it, else the rank modulo the machine's GPUs."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return rank % torch.cuda.device_count() if torch.cuda.is_available() else 0


def follow_from_env(tp: TensorParallel, spec: ModelSpec) -> int:
    """A non-zero rank started by a launcher: load, follow rank 0 until it stops, leave the group."""
    from model_worker.engine.loading import load_model
    from model_worker.parallel.replica import follow

    _leave_signals_to_rank_0()
    model = load_model(spec.checkpoint, spec.config, spec.seed, spec.numerics, device_for(_local_rank(tp.rank)), tp)
    dist.barrier()
    try:
        follow(model, tp)
    finally:
        dist.destroy_process_group()
    return 0


class Replica:
    """What a command gets from `open_replica`: the model to call (rank 0's view of all ranks) and how to end."""

    def __init__(self, model, tp: TensorParallel, ranks: LocalRanks | None) -> None:
        self.model, self.tp, self.ranks = model, tp, ranks

    def close(self) -> None:
        """Stop the other ranks and leave the group."""
        if self.tp.size == 1:
            return
        if self.ranks is not None:
            self.ranks.stop_watching()  # they are about to exit, as told
        self.model.stop()
        dist.destroy_process_group()
        if self.ranks is not None:
            self.ranks.join()


def open_replica(spec: ModelSpec, tensor_parallel: int = 1) -> Replica | None:
    """The model on `tensor_parallel` local ranks, or on the group a launcher's env:// variables name. Returns None
    on a non-zero launcher-started rank, after it has followed rank 0 to the end."""
    from model_worker.engine.loading import load_model
    from model_worker.parallel.group import SINGLE
    from model_worker.parallel.replica import ReplicaLeader

    tp, ranks = from_env(), None
    if tp is not None and tp.rank != 0:
        follow_from_env(tp, spec)
        return None
    if tp is None and tensor_parallel > 1:
        tp, ranks = start_local(tensor_parallel, spec)
    tp = tp or SINGLE
    model = load_model(spec.checkpoint, spec.config, spec.seed, spec.numerics, device_for(0), tp)
    if tp.size == 1:
        return Replica(model, tp, None)
    dist.barrier()  # every rank has loaded its share
    return Replica(ReplicaLeader(model, tp), tp, ranks)
