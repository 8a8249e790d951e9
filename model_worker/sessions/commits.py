"""A commit in two halves, so the engine never waits on storage: `prepare` (on the engine thread, cheap) takes what
the commit needs from the state: the page groups completed since the last commit (views: a full page never changes
again), the token pages and a copy of the tail (it changes with the next token); and it advances the open session's
bookkeeping, so the next commit can be prepared at once. `write` (anywhere) seals the values, checks the tenant's byte
cap, writes them and then the record that makes them visible. `CommitWriter` runs writes on one thread in order, so
a session's commits land in sequence, and holds at most a bounded number of bytes waiting to be written."""

from __future__ import annotations

import base64
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from foundation.blobs.stores import BlobStore
from model_worker.sessions.chain import TOKEN_PAGE_BLOCKS, page_address, tail_address, token_page_address
from model_worker.sessions.codec import BlobCodec
from model_worker.sessions.errors import InvalidSessionRequest, StoreBehind
from model_worker.sessions.manifest import Commit, blob_key, pack_tokens, tenant_key
from model_worker.sessions.session import OpenSession
from model_worker.sessions.state_io import full_pages, page_group, tail_tensors

# What `prepare` advances in an OpenSession (restored when a synchronous commit fails); the token log is extended in
# place (it may hold millions), so its length is what is kept.
_BOOKKEEPING = ("replay", "repair", "chain", "seq", "stored_pages", "token_pages", "last_token_page", "sampling")


@dataclass
class CommitResult:
    seq: int
    num_tokens: int
    bytes_written: int
    values_written: int


@dataclass
class PreparedCommit:
    tk: str
    session_id: str
    values: list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]  # (key, tensors, metadata), sealed on write
    record: Commit
    repair: bool  # replaying a lost state, or after an unfinished commit: overwrite what is there (it may be damaged)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, tensors, _ in self.values for t in tensors.values())


class CommitStore(Protocol):
    """What a commit needs of the session store (store.SessionStore, which commits through this module): its
    identity and geometry to prepare, its values, quota and records to write."""

    fingerprint: str
    layout_id: str
    spans: dict[int, int]  # compression ratio -> tokens per page group
    blobs: BlobStore
    codec: BlobCodec

    def check_quota(self, tk: str, new_bytes: int) -> None: ...

    def count_written(self, tk: str, nbytes: int) -> None: ...

    def write_commit(self, tk: str, record: Commit) -> int: ...

    def prune(self, tk: str, session_id: str) -> None: ...


def bookkeeping(session: OpenSession) -> dict[str, Any]:
    return {"num_token_ids": len(session.token_ids), **{name: getattr(session, name) for name in _BOOKKEEPING}}


def restore_bookkeeping(session: OpenSession, saved: dict[str, Any]) -> None:
    del session.token_ids[saved["num_token_ids"] :]
    for name in _BOOKKEEPING:
        setattr(session, name, saved[name])


def prepare(store: CommitStore, session: OpenSession, new_token_ids: Sequence[int],
            checkpoint: bool = False) -> PreparedCommit:
    """Everything the commit after `new_token_ids` (the tokens fed since the last commit) writes; the session moves on
    to that commit in memory."""
    state, tk = session.state, tenant_key(session.tenant)
    if state.num_tokens != len(session.token_ids) + len(new_token_ids):
        raise InvalidSessionRequest(f"the state holds {state.num_tokens} tokens, the session "
                                    f"{len(session.token_ids)} + {len(new_token_ids)} new")
    state.commit()
    # Only the tokens since the last full token page matter here; the log is not copied (it may hold millions).
    token_page = session.chain.block * TOKEN_PAGE_BLOCKS
    base = session.token_pages * token_page
    recent = session.token_ids[base:] + list(new_token_ids)
    total = base + len(recent)
    chain = session.chain.copy()
    chain.extend(new_token_ids)
    values: list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]] = []
    for ratio, span in store.spans.items():
        for index in range(session.stored_pages.get(ratio, 0), full_pages(state, ratio)):
            values.append((blob_key(tk, page_address(chain, ratio, index, span)), page_group(state, ratio, index),
                           {"page": index}))
    last_token_page = session.last_token_page
    for index in range(session.token_pages, total // token_page):
        address = token_page_address(chain, index)
        page = torch.tensor(recent[index * token_page - base : (index + 1) * token_page - base], dtype=torch.int32)
        values.append((blob_key(tk, address), {"tokens": page}, {"index": index, "previous": last_token_page}))
        last_token_page = address
    tail = tail_address(chain, total, recent, offset=base)
    tensors, metadata = tail_tensors(state)
    values.append((blob_key(tk, tail), {name: t.clone() for name, t in tensors.items()}, metadata))
    full_token_pages = total // token_page
    record = Commit(session.session_id, session.seq + 1, store.fingerprint, store.layout_id, total,
                    full_token_pages, last_token_page, pack_tokens(recent[full_token_pages * token_page - base :]),
                    tail, session.head, time.time(), checkpoint=checkpoint,
                    sampling=None if state.sampling is None else base64.b64encode(state.sampling).decode(),
                    chat=session.chat)
    prepared = PreparedCommit(tk, session.session_id, values, record, repair=bool(session.replay) or session.repair)
    session.token_ids.extend(new_token_ids)
    session.replay, session.repair = [], False
    session.chain, session.seq = chain, record.seq
    session.stored_pages = {r: full_pages(state, r) for r in store.spans}
    session.token_pages, session.last_token_page, session.sampling = full_token_pages, last_token_page, state.sampling
    return prepared


def write(store: CommitStore, prepared: PreparedCommit) -> CommitResult:
    """Seal and write the values, then the record. All or nothing: over the tenant's byte cap, nothing is written."""
    tk, repair = prepared.tk, prepared.repair
    values = [(key, tensors, metadata) for key, tensors, metadata in prepared.values
              if repair or not store.blobs.exists(key)]  # values are written once, except when repairing
    sealed = [(key, store.codec.seal_tensors(key, tensors, metadata)) for key, tensors, metadata in values]
    store.check_quota(tk, sum(len(v) for _, v in sealed))
    for key, value in sealed:
        if repair:
            store.blobs.put(key, value)
        elif store.blobs.put_if_absent(key, value):
            store.count_written(tk, len(value))
    written = store.write_commit(tk, prepared.record)
    store.prune(tk, prepared.session_id)
    return CommitResult(prepared.record.seq, prepared.record.num_tokens, sum(len(v) for _, v in sealed) + written,
                        len(sealed) + 1)


class CommitWriter:
    """Writes prepared commits on one thread, in the order they were submitted; each submit returns a Future of
    its CommitResult (or of the error that kept it from being written).

    A commit builds on the one before it (it writes only the values added since), so once one fails (a byte cap, a
    full disk) the later commits already prepared for that session fail with it, even if the store could take
    them by then: the session's owner reopens it at its last written commit, whose next commits are numbered from
    there, and those are written again.

    At most `max_pending_bytes` of prepared values wait (one commit at a time may exceed it): a store slower than the
    engine makes `submit` wait for room, which slows the engine to the store's pace instead of growing its memory
    without end. A commit that finds no room within `wait_s` (a stalled store) fails with StoreBehind."""

    _REMEMBERED_FAILURES = 10_000

    def __init__(self, store: CommitStore, max_pending_bytes: int = 1 << 30, wait_s: float = 60.0) -> None:
        self.store, self.max_pending_bytes, self.wait_s = store, max_pending_bytes, wait_s
        self.pending_bytes = 0
        self._room = threading.Condition()
        self._failed: OrderedDict[tuple[str, str], tuple[int, BaseException]] = OrderedDict()
        self._queue: queue.Queue[tuple[PreparedCommit, Future, int, BaseException | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="commit-writer", daemon=True)
        self._thread.start()

    def submit(self, prepared: PreparedCommit) -> Future:
        future: Future = Future()
        size, refused = prepared.nbytes, None
        with self._room:
            if self._room.wait_for(lambda: self._has_room(size), timeout=self.wait_s):
                self.pending_bytes += size
            else:
                # Still queued, valueless: the writer thread fails it in order, so the session's later commits fail too.
                refused = StoreBehind(f"the session store has taken no commit for {self.wait_s:.0f} s "
                                      f"({self.pending_bytes:,} bytes waiting)")
                prepared, size = PreparedCommit(prepared.tk, prepared.session_id, [], prepared.record, False), 0
        self._queue.put((prepared, future, size, refused))
        return future

    def try_submit(self, prepared: PreparedCommit) -> Future | None:
        """`submit` when there is room now, else None: for writes not worth the engine's time (prefix checkpoints)."""
        with self._room:
            if not self._has_room(prepared.nbytes):
                return None
        return self.submit(prepared)

    def _has_room(self, size: int) -> bool:
        return not self.pending_bytes or self.pending_bytes + size <= self.max_pending_bytes

    def close(self) -> None:
        """Write everything submitted so far, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            prepared, future, size, refused = item
            try:
                self._write(prepared, future, refused)
            finally:
                with self._room:
                    self.pending_bytes -= size
                    self._room.notify_all()

    def _write(self, prepared: PreparedCommit, future: Future, refused: BaseException | None) -> None:
        key, seq = (prepared.tk, prepared.session_id), prepared.record.seq
        failed = self._failed.pop(key, None)
        if failed is not None and seq > failed[0]:  # built on the commit that failed
            self._failed[key] = failed
            future.set_exception(failed[1])
            return
        try:
            if refused is not None:
                raise refused
            future.set_result(write(self.store, prepared))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the commit
            self._failed[key] = (seq, exc)
            while len(self._failed) > self._REMEMBERED_FAILURES:
                self._failed.popitem(last=False)
            future.set_exception(exc)
