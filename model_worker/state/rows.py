"""Two growable row stores: `RowLog` (a sliding range of rows keyed by absolute position) and `PagedRows` (an
append-only sequence of entries in fixed-size pages; a full page never changes)."""

from __future__ import annotations

import torch


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
    """Entries [0, count) stored contiguously, accounted in pages of `page_size` entries."""

    def __init__(self, width: int, dtype: torch.dtype, page_size: int, device: torch.device | str = "cpu") -> None:
        self.page_size = page_size
        self.buffer = torch.empty(0, width, dtype=dtype, device=device)
        self.count = 0

    def view(self) -> torch.Tensor:
        return self.buffer[: self.count]

    @property
    def num_full_pages(self) -> int:
        return self.count // self.page_size

    @property
    def num_pages(self) -> int:
        return -(-self.count // self.page_size)

    def page(self, index: int) -> torch.Tensor:
        """Entries of page `index` (the last one may be partial)."""
        first = index * self.page_size
        return self.buffer[first : min(first + self.page_size, self.count)]

    def append(self, rows: torch.Tensor) -> None:
        needed = self.count + rows.shape[0]
        if needed > self.buffer.shape[0]:
            pages = max(-(-needed // self.page_size), 2 * (self.buffer.shape[0] // self.page_size), 1)
            grown = torch.empty(pages * self.page_size, self.buffer.shape[1], dtype=self.buffer.dtype,
                                device=self.buffer.device)
            grown[: self.count] = self.buffer[: self.count]
            self.buffer = grown
        self.buffer[self.count : needed] = rows
        self.count = needed

    def truncate(self, count: int) -> None:
        assert 0 <= count <= self.count, f"cannot truncate {self.count} entries to {count}"
        self.count = count

    def reset(self, rows: torch.Tensor) -> None:
        self.buffer = torch.empty(0, rows.shape[1], dtype=rows.dtype, device=rows.device)
        self.count = 0
        self.append(rows)

    def nbytes(self) -> int:
        """Bytes of whole pages in use (the partial page counts in full: that is what gets allocated and stored)."""
        return self.num_pages * self.page_size * self.buffer.shape[1] * self.buffer.element_size()
