"""Starting one replica's ranks as processes. On one machine `start_local` spawns ranks 1..N-1 as processes of this
program and joins them as rank 0 (gloo on CPU, NCCL on GPUs, one GPU per rank). Across machines every rank is
started by the launcher with torch.distributed's env:// variables (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK,
LOCAL_RANK), and `from_env` joins the group. What a rank does once in the group (load its share of the model, then
lead or `follow`) is the caller's: `model_worker.engine.replica`. A spawned rank joins before it imports that: this
module and what it imports are light, so the group forms well inside its timeout however long the model takes to
import and load.

A rank that dies takes the replica down: collectives with it fail within the group timeout, and on one machine rank
0 also watches its children and calls `on_rank_exit` at once, so the replica reports NOT_SERVING and exits instead
of hanging."""

from __future__ import annotations

import datetime as dt
import importlib
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

from model_worker.tensor_parallel import TensorParallel

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


def join(rank: int, size: int, init_method: str, local_rank: int) -> TensorParallel:
    """Join the replica's group as `rank` (on GPUs, on the machine's GPU `local_rank`)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size, timeout=GROUP_TIMEOUT)
    return TensorParallel(rank, size)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leave_signals_to_rank_0() -> None:
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


def start_local(size: int, follower: str, args: tuple = (),
                threads_per_rank: int | None = None) -> tuple[TensorParallel, LocalRanks]:
    """Spawn ranks 1..size-1 on this machine and join as rank 0. Each spawned rank joins the group, then imports
    `follower` ("module:function") and runs follower(tp, device, *args); `args` must unpickle with no more than this
    module imported (a `ModelSpec`, plain values)."""
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    threads = threads_per_rank or max(1, torch.get_num_threads() // size)
    context = mp.get_context("spawn")
    processes = [context.Process(target=_spawned, args=(rank, size, init_method, threads, follower, args),
                                 name=f"rank-{rank}", daemon=True) for rank in range(1, size)]
    for process in processes:
        process.start()
    torch.set_num_threads(threads)
    return join(0, size, init_method, 0), LocalRanks(processes)


def _spawned(rank: int, size: int, init_method: str, threads: int, follower: str, args: tuple) -> None:
    leave_signals_to_rank_0()
    torch.set_num_threads(threads)
    tp = join(rank, size, init_method, rank)
    module, _, name = follower.partition(":")
    getattr(importlib.import_module(module), name)(tp, device_for(rank), *args)


def from_env() -> TensorParallel | None:
    """The group named by torch.distributed's env:// variables, when a launcher set them; None otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return join(rank, size, "env://", local_rank_of(rank))


def local_rank_of(rank: int) -> int:
    """The rank's GPU on its machine: LOCAL_RANK as launchers set it, else the rank modulo the machine's GPUs."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return rank % torch.cuda.device_count() if torch.cuda.is_available() else 0
