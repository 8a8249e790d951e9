"""Two growable row stores: `RowLog` (a sliding range of rows keyed by absolute position) and `PagedRows` (an
append-only sequence of entries in fixed-size pages of a shared pool; a full page never changes)."""

from __future__ import annotations

import weakref

import torch

from model_worker.state.pages import PagePool


class RowLog:
    """Rows for absolute positions [start, end). Appends at the end, truncates the end, trims the front.

    Trimming only moves an offset; live rows move to the buffer's front when an append runs out of room, so a log
    trimmed by one row per token (every commit) copies each row O(1) times instead of all rows per commit.
    """

    def __init__(self, width: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.buffer = torch.empty(0, width, dtype=dtype, device=device)
        self.start = 0
        self.length = 0
        self.offset = 0  # buffer row of position `start`

    @property
    def end(self) -> int:
        return self.start + self.length

    def rows(self, first: int, last: int) -> torch.Tensor:
        """View of rows for positions [first, last); the range must be held."""
        assert self.start <= first <= last <= self.end, f"rows [{first}, {last}) not in [{self.start}, {self.end})"
        return self.buffer[self.offset + first - self.start : self.offset + last - self.start]

    def append(self, rows: torch.Tensor) -> None:
        needed = self.length + rows.shape[0]
        if self.offset + needed > self.buffer.shape[0]:
            live = self.buffer[self.offset : self.offset + self.length]
            if 2 * needed <= self.buffer.shape[0]:  # room enough once compacted
                self.buffer[: self.length] = live.clone()
            else:
                grown = torch.empty(max(needed, 2 * self.buffer.shape[0], 16), self.buffer.shape[1],
                                    dtype=self.buffer.dtype, device=self.buffer.device)
                grown[: self.length] = live
                self.buffer = grown
            self.offset = 0
        self.buffer[self.offset + self.length : self.offset + needed] = rows
        self.length = needed

    def truncate(self, end: int) -> None:
        assert self.start <= end <= self.end, f"cannot truncate to {end} outside [{self.start}, {self.end}]"
        self.length = end - self.start

    def trim_front(self, first: int) -> None:
        """Forget rows before `first` (clamped to the held range)."""
        first = min(max(first, self.start), self.end)
        drop = first - self.start
        self.offset, self.start, self.length = self.offset + drop, first, self.length - drop

    def reset(self, start: int, rows: torch.Tensor) -> None:
        self.buffer = rows.clone()
        self.start, self.length, self.offset = start, rows.shape[0], 0

    def clear(self, start: int) -> None:
        """Hold no rows; the next append is position `start`."""
        self.start, self.length, self.offset = start, 0, 0

    def nbytes(self) -> int:
        return self.length * self.buffer.shape[1] * self.buffer.element_size()


class PagedRows:
    """Entries [0, count) of one sequence's stream, in pages of a shared `PagePool` named by `pages` (its page table).

    Sharing is by reference: `share()` names the same pages for a checkpoint or another sequence; each holder frees
    its own hold (truncation, reset, or when it is garbage), and a page goes back to the pool with its last holder.
    """

    def __init__(self, pool: PagePool) -> None:
        self.pool = pool
        self.pages: list[int] = []  # changed in place only: the finalizer releases whatever it names at the end
        self.count = 0
        # Storage rows of the first `_indexed` pages, kept as pages are added (a new entry every few tokens must
        # not rebuild the index of a million-token sequence).
        self._index = torch.empty(0, dtype=torch.long, device=pool.storage.device)
        self._indexed = 0
        weakref.finalize(self, pool.release, self.pages)

    @property
    def page_size(self) -> int:
        return self.pool.page_size

    @property
    def buffer(self) -> torch.Tensor:
        """The pool's storage: the width, dtype and device every entry has."""
        return self.pool.storage

    @property
    def num_full_pages(self) -> int:
        return self.count // self.page_size

    @property
    def num_pages(self) -> int:
        return len(self.pages)

    def storage_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(storage, row index): entry s of this sequence is storage row index[s], for kernels that read entries
        where they lie."""
        size = self.page_size
        if self._indexed < len(self.pages):
            new = torch.tensor(self.pages[self._indexed :], dtype=torch.long, device=self._index.device)
            rows = (new[:, None] * size + torch.arange(size, device=new.device)).flatten()
            end = len(self.pages) * size
            if end > self._index.shape[0]:
                grown = torch.empty(max(end, 2 * self._index.shape[0]), dtype=torch.long, device=new.device)
                grown[: self._indexed * size] = self._index[: self._indexed * size]
                self._index = grown
            self._index[self._indexed * size : end] = rows
            self._indexed = len(self.pages)
        return self.pool.storage, self._index[: self.count]

    def view(self) -> torch.Tensor:
        """Entries [0, count) as one tensor: a view of the storage when the pages lie in order, else a copy."""
        storage = self.pool.storage
        first = self.pages[0] if self.pages else 0
        if self.pages == list(range(first, first + len(self.pages))):
            return storage[first * self.page_size : first * self.page_size + self.count]
        return storage[self.storage_rows()[1]]

    def page(self, index: int) -> torch.Tensor:
        """Entries of page `index` (the last one may be partial): a view of the storage."""
        first = index * self.page_size
        rows = min(first + self.page_size, self.count) - first
        if rows <= 0:
            return self.pool.storage[:0]
        start = self.pages[index] * self.page_size
        return self.pool.storage[start : start + rows]

    def append(self, rows: torch.Tensor) -> None:
        if rows.shape[0]:
            had = len(self.pages)
            last = self.pages[-1] if had else None
            self.pool.append(self.pages, self.count, rows)
            if had and self.pages[had - 1] != last:  # the shared partial page was copied: index it anew
                self._indexed = min(self._indexed, had - 1)
            self.count += rows.shape[0]

    def truncate(self, count: int) -> None:
        assert 0 <= count <= self.count, f"cannot truncate {self.count} entries to {count}"
        keep = -(-count // self.page_size)
        dropped = self.pages[keep:]
        del self.pages[keep:]
        self.count = count
        self._indexed = min(self._indexed, keep)
        self.pool.release(dropped)

    def reset(self, rows: torch.Tensor) -> None:
        self.truncate(0)
        self.append(rows)

    def share(self) -> SharedPages:
        """A hold on the same pages (no copy): what a checkpoint keeps of this stream."""
        self.pool.retain(self.pages)
        return SharedPages(self.pool, list(self.pages), self.count)

    def adopt(self, shared: SharedPages) -> None:
        """Hold `shared`'s pages in place of this stream's own (no copy; the partial page is copied when written)."""
        if shared.pool is not self.pool:
            raise ValueError("pages of another pool")
        self.pool.retain(shared.pages)
        self.truncate(0)
        self.pages.extend(shared.pages)
        self.count = shared.count
        self._indexed = 0

    def nbytes(self) -> int:
        """Bytes of whole pages in use (the partial page counts in full: that is what gets allocated and stored)."""
        return self.num_pages * self.pool.page_bytes

    def shared_nbytes(self) -> int:
        """Bytes of the pages it holds that others hold too (a checkpoint, requests resumed from it)."""
        holders = self.pool.holders
        return sum(holders[page] > 1 for page in self.pages) * self.pool.page_bytes


class SharedPages:
    """A hold on some pages of a pool (a checkpoint's copy of a stream, by reference); released when garbage."""

    def __init__(self, pool: PagePool, pages: list[int], count: int) -> None:
        self.pool, self.pages, self.count = pool, pages, count
        weakref.finalize(self, pool.release, pages)
