"""Splitting one long CPU kernel call across threads: ctypes releases the GIL, so Python threads run the C code
in parallel without touching torch's intra-op pool (which decode passes keep at one thread)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_CORES = os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None


def split(total: int, min_per_part: int) -> list[tuple[int, int]]:
    """[0, total) cut into up to one range per core, each at least min_per_part long (one range when short)."""
    if total < 2 * min_per_part:
        return [(0, total)]
    parts = min(_CORES, total // min_per_part)
    bounds = [total * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_parts(ranges: list[tuple[int, int]], work: Callable[[int, int, int], None]) -> None:
    """work(part, first, last) for every range; the first on the calling thread, the others on the pool."""
    global _pool
    if len(ranges) > 1 and _pool is None:
        _pool = ThreadPoolExecutor(_CORES, thread_name_prefix="cpu-kernels")
    others = [_pool.submit(work, part, *ranges[part]) for part in range(1, len(ranges))]
    work(0, *ranges[0])
    for future in others:
        future.result()
