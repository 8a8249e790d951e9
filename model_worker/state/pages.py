"""Page pools: the compressed entries of every sequence of one layer stream live in fixed-size pages of one storage
tensor, so that sequences and prefix checkpoints with a common prefix hold its full pages once.

A page is held by the sequences and checkpoints whose page tables name it (a count per page). Full pages never change
and are shared freely; a holder that writes into a partial page others also hold first copies it (copy on write).
Kernels read entries where they lie, through the sequence's row index (entry -> storage row).

Every write and every change of the storage happens under the pool's lock, because sessions are restored on request
threads while the engine thread appends: a kernel that took the storage before it grew still reads correct rows
(entries are never moved within a storage, only copied into a new one).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence

import torch


class PagePool:
    """Pages of `page_size` rows of `width` values of `dtype`; page p is storage rows [p * page_size, (p + 1) *
    page_size)."""

    def __init__(self, width: int, dtype: torch.dtype, page_size: int, device: torch.device | str) -> None:
        self.page_size = page_size
        self.storage = torch.empty(0, width, dtype=dtype, device=device)
        self.holders: list[int] = []  # per page: how many page tables name it (0 = free)
        self._free: list[int] = []  # a heap: the lowest free page is reused first, so the storage stays packed
        self._used = 0
        self.lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return len(self.holders)

    @property
    def pages_in_use(self) -> int:
        return self._used

    @property
    def page_bytes(self) -> int:
        return self.page_size * self.storage.shape[1] * self.storage.element_size()

    def nbytes_in_use(self) -> int:
        return self._used * self.page_bytes

    # -- under the lock ------------------------------------------------------------------------------------------

    def _allocate(self) -> int:
        if not self._free:
            self._grow(max(2 * self.capacity, 4))
        page = heapq.heappop(self._free)
        self.holders[page] = 1
        self._used += 1
        return page

    def _grow(self, pages: int) -> None:
        grown = torch.empty(pages * self.page_size, self.storage.shape[1], dtype=self.storage.dtype,
                            device=self.storage.device)
        grown[: self.storage.shape[0]] = self.storage
        for page in range(self.capacity, pages):
            heapq.heappush(self._free, page)
        self.holders.extend([0] * (pages - self.capacity))
        self.storage = grown

    def _shrink(self) -> None:
        """Give the top half of the storage back while at most a quarter is in use and none of it in the top half."""
        while self.capacity > 4 and 4 * self._used <= self.capacity:
            half = self.capacity // 2
            if any(self.holders[half:]):
                return
            self.storage = self.storage[: half * self.page_size].clone()
            del self.holders[half:]
            self._free = [page for page in self._free if page < half]
            heapq.heapify(self._free)

    # -- page tables -----------------------------------------------------------------------------------------------

    def append(self, table: list[int], count: int, rows: torch.Tensor) -> None:
        """Write `rows` after the first `count` entries of the page table `table` (extended in place)."""
        size = self.page_size
        with self.lock:
            done = 0
            while done < rows.shape[0]:
                slot = (count + done) % size
                if slot == 0:
                    table.append(self._allocate())
                elif self.holders[table[-1]] > 1:  # a partial page another holder reads too: copy it first
                    table[-1] = self._copy(table[-1], slot)
                take = min(size - slot, rows.shape[0] - done)
                first = table[-1] * size + slot
                self.storage[first : first + take] = rows[done : done + take]
                done += take

    def _copy(self, page: int, rows: int) -> int:
        copy = self._allocate()
        self.storage[copy * self.page_size : copy * self.page_size + rows] = \
            self.storage[page * self.page_size : page * self.page_size + rows]
        self.holders[page] -= 1
        return copy

    def retain(self, pages: Sequence[int]) -> None:
        with self.lock:
            for page in pages:
                self.holders[page] += 1

    def release(self, pages: Sequence[int]) -> None:
        with self.lock:
            for page in pages:
                self.holders[page] -= 1
                if self.holders[page] == 0:
                    heapq.heappush(self._free, page)
                    self._used -= 1
            self._shrink()


class PagePools:
    """The pools of one state layout on one device: one per (layer, stream), created on first use."""

    def __init__(self) -> None:
        self._pools: dict[tuple, PagePool] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, width: int, dtype: torch.dtype, page_size: int, device: torch.device | str) -> PagePool:
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = PagePool(width, dtype, page_size, device)
            return pool

    def nbytes_in_use(self) -> int:
        with self._lock:
            pools = list(self._pools.values())
        return sum(pool.nbytes_in_use() for pool in pools)


_REGISTRY: dict[tuple, PagePools] = {}
_REGISTRY_LOCK = threading.Lock()


def pools_for(layout, device: torch.device | str) -> PagePools:
    """The process's pools for states of `layout` on `device`: every state of a layout shares them (the model's,
    the session store's, the prefix cache's), which is what lets them share pages."""
    key = (layout, str(torch.device(device)))
    with _REGISTRY_LOCK:
        pools = _REGISTRY.get(key)
        if pools is None:
            pools = _REGISTRY[key] = PagePools()
        return pools
