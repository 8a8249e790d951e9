"""Page pools and page tables: entries read back as written whatever the interleaving, pages shared by reference
(a share or an adoption copies nothing; a shared partial page is copied before it is written), held until their
last holder lets go, and storage given back when it empties."""

from __future__ import annotations

import gc
import threading

import torch

from model_worker.state.pages import PagePool
from model_worker.state.rows import PagedRows

PAGE = 4


def _rows(first: int, count: int, width: int = 3) -> torch.Tensor:
    return torch.arange(first * width, (first + count) * width, dtype=torch.float32).view(count, width)


def test_interleaved_sequences_read_back_their_own_entries() -> None:
    pool = PagePool(3, torch.float32, PAGE, "cpu")
    a, b = PagedRows(pool), PagedRows(pool)
    for step in range(7):  # the two sequences' pages interleave in the storage
        a.append(_rows(100 + 3 * step, 3))
        b.append(_rows(500 + 2 * step, 2))
    assert torch.equal(a.view(), _rows(100, 21)) and torch.equal(b.view(), _rows(500, 14))
    storage, rows = a.storage_rows()
    assert torch.equal(storage[rows], _rows(100, 21))
    assert torch.equal(torch.cat([a.page(i) for i in range(a.num_pages)]), _rows(100, 21))
    assert pool.pages_in_use == a.num_pages + b.num_pages == 6 + 4


def test_shares_hold_full_pages_once_and_copy_a_shared_partial_page_before_writing() -> None:
    pool = PagePool(3, torch.float32, PAGE, "cpu")
    source = PagedRows(pool)
    source.append(_rows(0, 10))  # two full pages and a partial one
    checkpoint = source.share()
    assert pool.pages_in_use == 3  # nothing copied
    readers = []
    for i in range(8):
        reader = PagedRows(pool)
        reader.adopt(checkpoint)
        reader.append(_rows(1000 + 10 * i, 1))  # writes into the shared partial page: a private copy first
        readers.append(reader)
    assert pool.pages_in_use == 3 + 8  # the two full pages once; one partial page each
    for i, reader in enumerate(readers):
        assert reader.pages[:2] == source.pages[:2]
        assert torch.equal(reader.view(), torch.cat((_rows(0, 10), _rows(1000 + 10 * i, 1))))
    source.append(_rows(10, 1))  # the checkpoint still holds the source's partial page: copied too
    assert torch.equal(source.view(), _rows(0, 11))
    assert torch.equal(pool.storage[checkpoint.pages[2] * PAGE : checkpoint.pages[2] * PAGE + 2], _rows(8, 2))


def test_pages_return_with_their_last_holder_and_the_storage_shrinks() -> None:
    pool = PagePool(3, torch.float32, PAGE, "cpu")
    a = PagedRows(pool)
    a.append(_rows(0, 64))
    checkpoint = a.share()
    grown = pool.capacity
    a.truncate(6)  # the checkpoint still holds every page
    assert pool.pages_in_use == 16
    del checkpoint
    gc.collect()
    assert pool.pages_in_use == 2 and pool.capacity < grown
    assert torch.equal(a.view(), _rows(0, 6))
    del a
    gc.collect()
    assert pool.pages_in_use == 0 and pool.capacity <= 4


def test_growth_on_another_thread_loses_no_write() -> None:
    pool = PagePool(3, torch.float32, PAGE, "cpu")
    sequences = [PagedRows(pool) for _ in range(4)]

    def fill(index: int) -> None:
        for step in range(50):
            sequences[index].append(_rows(10_000 * index + 3 * step, 3))

    threads = [threading.Thread(target=fill, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, sequence in enumerate(sequences):
        assert torch.equal(sequence.view(), _rows(10_000 * i, 150))
