"""Sessions stored by ID: create, commit, open (resume without re-prefill), shared prefixes.

A commit writes the page groups completed since the previous commit, the token pages completed since then, one tail
and the commit record, in that order: the bytes it writes depend on the tokens added, not on the session's length.
Values are content-addressed (chain.py) and written only when absent, so forks and sessions sharing a prefix share
them. Opening reads the newest valid record, walks the token pages back from the last one, derives every page group's
address from the chain and loads them eagerly (a resumed decode step reads every HCA entry and any CSA page).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch

from foundation.blobs.stores import BlobStore
from foundation.chat import SessionHead
from model_worker.sessions.chain import (
    Chain,
    layout_id,
    page_address,
    page_spans,
    tail_address,
)
from model_worker.sessions.codec import BlobCodec
from model_worker.sessions.commits import CommitResult, bookkeeping, prepare, restore_bookkeeping, write
from model_worker.sessions.errors import (
    CorruptSession,
    IncompatibleSession,
    QuotaExceeded,
    SessionExists,
    SessionNotFound,
)
from model_worker.sessions.manifest import (
    PREFIX_RECORD,
    Commit,
    blob_key,
    check_new_session_id,
    check_session_id,
    commit_key,
    meta_key,
    salt_key,
    session_prefix,
    tenant_key,
)
from model_worker.sessions.session import OpenSession
from model_worker.sessions.state_io import full_pages, restore_state
from model_worker.state import SequenceState, StateLayout

log = logging.getLogger(__name__)


class SessionStore:
    def __init__(self, blobs: BlobStore, fingerprint: str, layout: StateLayout, *, codec: BlobCodec | None = None,
                 retain_commits: int = 8, tenant_quota_bytes: int | None = None, device: str = "cpu") -> None:
        self.blobs, self.fingerprint, self.layout = blobs, fingerprint, layout
        self.codec = codec or BlobCodec()
        self.retain_commits, self.tenant_quota_bytes, self.device = retain_commits, tenant_quota_bytes, device
        self.layout_id = layout_id(layout)
        self.spans = page_spans(layout)
        self._usage: dict[str, int] = {}  # tenant -> stored bytes, counted on first need, then kept up to date
        self._salts: dict[str, bytes] = {}

    # -- creating and opening ----------------------------------------------------------------------------------

    def create(self, tenant: str, head: SessionHead | None = None, session_id: str | None = None,
               prefix: Sequence[int] = (), reuse_at: Sequence[int] = ()) -> OpenSession:
        """Claim an ID (random 128-bit unless given; a taken one is refused). If a leading part of `prefix` (the
        rendered head, then its first turns) was committed by any session of this tenant, start from that state
        instead of empty: the longest of `reuse_at` (positions to try, e.g. the head's end and turn boundaries,
        where sessions commit; default: all of `prefix`)."""
        session_id = check_new_session_id(session_id) if session_id is not None else os.urandom(16).hex()
        return self._claim(tenant, head, session_id, prefix, reuse_at)

    def create_record(self, tenant: str) -> OpenSession:
        """A prefix cache's record (prefix_store.py): an empty session under a reserved ID."""
        return self._claim(tenant, None, PREFIX_RECORD + os.urandom(16).hex())

    def _claim(self, tenant: str, head: SessionHead | None, session_id: str, prefix: Sequence[int] = (),
               reuse_at: Sequence[int] = ()) -> OpenSession:
        tk = tenant_key(tenant)
        if not self.blobs.put_if_absent(meta_key(tk, session_id), self.codec.seal_json(
                meta_key(tk, session_id), {"created_at": time.time(), "fingerprint": self.fingerprint})):
            raise SessionExists(f"session {session_id} already exists")
        session = OpenSession(tenant, session_id, self.new_state(), [], self.tenant_chain(tk), head or SessionHead())
        for length in sorted({p for p in (reuse_at or [len(prefix)]) if 0 < p <= len(prefix)}, reverse=True):
            if self._reuse_prefix(session, list(prefix[:length])):
                break
        return session

    def open(self, tenant: str, session_id: str, seq: int | None = None) -> OpenSession:
        """The session at its newest complete commit (or at retained commit `seq`).

        A newest commit whose values are absent or damaged (its writer died before they were durable, on a store
        without atomic writes) gives way to the previous commit when that one is complete: the unfinished record is
        dropped, so the next commit takes its number. A damaged value that older commits share is history lost, not
        an unfinished commit: the session is rebuilt from the newest token log instead (`replay`)."""
        tk = tenant_key(tenant)
        commits = self.valid_commits(tk, check_session_id(session_id), seq)
        newest = next(commits)
        session = self._try_open(tenant, newest)
        if isinstance(session, OpenSession):
            return session
        if seq is None:
            previous = next(commits, None)
            complete = self._try_open(tenant, previous) if previous is not None else None
            if isinstance(complete, OpenSession):
                log.warning("session %s: commit %d is unfinished (%s); opened commit %d", session_id, newest.seq,
                            session, previous.seq)
                self.blobs.delete(commit_key(tk, session_id, newest.seq))
                complete.repair = True
                return complete
        # Start over from nothing (the commit that follows the replay rewrites what was lost).
        token_ids = self.read_tokens(tk, newest)
        return OpenSession(tenant, session_id, self.new_state(), [], self.tenant_chain(tk), newest.head, newest.seq,
                           chat=newest.chat, rebuilt=True, replay=token_ids)

    def _try_open(self, tenant: str, commit: Commit) -> OpenSession | CorruptSession:
        """The session at `commit`, or what keeps its state from loading."""
        tk = tenant_key(tenant)
        try:
            token_ids = self.read_tokens(tk, commit)
        except CorruptSession as problem:
            return problem
        chain = self.tenant_chain(tk)
        chain.extend(token_ids)
        self.blobs.put(session_prefix(tk, commit.session_id) + "touch", b"")  # a read refreshes the TTL too
        session = OpenSession(tenant, commit.session_id, self.new_state(), token_ids, chain, commit.head, commit.seq,
                              token_pages=commit.token_pages, last_token_page=commit.last_token_page,
                              sampling=None if commit.sampling is None else base64.b64decode(commit.sampling),
                              chat=commit.chat)
        try:
            self._load_state(tk, session, commit.tail)
        except CorruptSession as problem:
            return problem
        except ValueError as problem:
            return CorruptSession(str(problem))
        return session

    def _load_state(self, tk: str, session: OpenSession, tail: str) -> None:
        tensors, metadata = self._get_tensors(tk, tail)
        if int(metadata["num_tokens"]) != len(session.token_ids):
            raise ValueError("tail and token log disagree")

        def load_page(ratio: int, index: int) -> dict[str, torch.Tensor]:
            return self._get_tensors(tk, page_address(session.chain, ratio, index, self.spans[ratio]))[0]

        restore_state(session.state, tensors, metadata, load_page)
        session.state.sampling = session.sampling
        session.stored_pages = {r: full_pages(session.state, r) for r in self.spans}

    def _reuse_prefix(self, session: OpenSession, prefix: list[int]) -> bool:
        found = self.state_at(session, prefix)
        if found is None:
            return False
        session.state, session.token_ids, session.chain = found.state, found.token_ids, found.chain
        session.stored_pages, session.reused_prefix_tokens = found.stored_pages, len(prefix)
        return True

    def state_at(self, session: OpenSession, prefix: Sequence[int],
                 chain: Chain | None = None) -> OpenSession | None:
        """`session` (of its tenant) as it would be after exactly `prefix`, if any session of the tenant committed
        there; None when nothing is stored there or it is damaged (not an error: the caller prefills it itself).
        `chain`: the tenant's chain over exactly `prefix`, when the caller has it."""
        tk = tenant_key(session.tenant)
        if chain is None:
            chain = self.tenant_chain(tk)
            chain.extend(prefix)
        address = tail_address(chain, len(prefix), prefix)
        if not self.blobs.exists(blob_key(tk, address)):
            return None
        candidate = replace(session, state=self.new_state(), token_ids=list(prefix), chain=chain)
        try:
            self._load_state(tk, candidate, address)
        except (CorruptSession, ValueError):
            return None
        return candidate

    # -- committing --------------------------------------------------------------------------------------------

    def commit(self, session: OpenSession, new_token_ids: Sequence[int], checkpoint: bool = False) -> CommitResult:
        """Persist the state after `new_token_ids` (the tokens fed since the last commit). All or nothing: over the
        tenant's byte cap, nothing is written, and the stored session and this open one stay at the previous
        commit. (`commits.prepare` + `commits.write`, in one call; the worker writes on a writer thread instead.)"""
        before = bookkeeping(session)
        prepared = prepare(self, session, new_token_ids, checkpoint)
        try:
            return write(self, prepared)
        except BaseException:
            restore_bookkeeping(session, before)
            raise

    def write_commit(self, tk: str, record: Commit) -> int:
        key = commit_key(tk, record.session_id, record.seq)
        blob = self.codec.seal_json(key, record.to_record())
        if not self.blobs.put_if_absent(key, blob):
            raise SessionExists(f"session {record.session_id} was committed concurrently (seq {record.seq})")
        return len(blob)

    def check_quota(self, tk: str, new_bytes: int) -> None:
        if self.tenant_quota_bytes is None or not new_bytes:
            return
        used = self._used(tk)
        if used + new_bytes > self.tenant_quota_bytes:
            raise QuotaExceeded(f"commit needs {new_bytes:,} new bytes; the tenant holds {used:,} of its "
                                f"{self.tenant_quota_bytes:,}")

    def quota_left(self, tenant: str) -> int | None:
        """Bytes the tenant may still store (None: no cap)."""
        if self.tenant_quota_bytes is None:
            return None
        return max(0, self.tenant_quota_bytes - self._used(tenant_key(tenant)))

    def _used(self, tk: str) -> int:
        # Read once: the upkeep thread may forget the count between a check and a read.
        used = self._usage.get(tk)
        if used is None:
            used = self._usage[tk] = sum(self.blobs.size(key) or 0 for key in self.blobs.list(f"t/{tk}/b/"))
        return used

    def count_written(self, tk: str, nbytes: int) -> None:
        """Add newly stored bytes to the tenant's count, when it is kept."""
        used = self._usage.get(tk)
        if used is not None:
            self._usage[tk] = used + nbytes

    # -- reading stored values ---------------------------------------------------------------------------------

    def commit_seqs(self, tk: str, session_id: str) -> list[int]:
        prefix = session_prefix(tk, session_id) + "c/"
        return sorted(int(key[len(prefix) :]) for key in self.blobs.list(prefix) if key[len(prefix) :].isdigit())

    def read_commit(self, tk: str, session_id: str, seq: int | None) -> Commit:
        return next(self.valid_commits(tk, session_id, seq))

    def valid_commits(self, tk: str, session_id: str, seq: int | None = None) -> Iterator[Commit]:
        """The session's readable commit records, newest first (only `seq`, when given); NOT_FOUND when there is
        none. A record cut short by a crash is skipped: the one before it is current."""
        seqs = self.commit_seqs(tk, session_id)
        if seq is not None:
            if seq not in seqs:
                raise SessionNotFound(f"session {session_id} has no retained commit {seq}")
            seqs = [seq]
        found = False
        for candidate in reversed(seqs):
            key = commit_key(tk, session_id, candidate)
            blob = self.blobs.get(key)
            try:
                commit = Commit.from_record(self.codec.open_json(key, blob)) if blob is not None else None
            except CorruptSession:
                continue
            if commit is None:
                continue
            if commit.fingerprint != self.fingerprint or commit.layout != self.layout_id:
                raise IncompatibleSession(f"session {session_id} was stored for other weights or numerics "
                                          f"({commit.fingerprint[:12]}, {commit.layout})")
            found = True
            yield commit
        if found:
            return
        if not self.blobs.exists(meta_key(tk, session_id)):
            raise SessionNotFound(f"no session {session_id}")
        raise SessionNotFound(f"session {session_id} has no commit yet")

    def read_tokens(self, tk: str, commit: Commit) -> list[int]:
        pages, address = [], commit.last_token_page
        for index in reversed(range(commit.token_pages)):
            tensors, metadata = self._get_tensors(tk, address)
            if metadata.get("index") != index:
                raise CorruptSession(f"token page {address} is page {metadata.get('index')}, expected {index}")
            pages.append(tensors["tokens"].tolist())
            address = metadata.get("previous")
        token_ids = [t for page in reversed(pages) for t in page] + commit.partial_token_ids()
        if len(token_ids) != commit.num_tokens:
            raise CorruptSession(f"token log holds {len(token_ids)} tokens, the commit {commit.num_tokens}")
        return token_ids

    def _get_tensors(self, tk: str, address: str | None) -> tuple[dict[str, torch.Tensor], dict]:
        """A value's tensors from the first tier whose copy passes its checksum."""
        key = blob_key(tk, address or "")
        copies = getattr(self.blobs, "copies", None)
        candidates = copies(key) if copies and address else ([self.blobs.get(key)] if address else [])
        problem = CorruptSession(f"missing stored value {key}")
        for blob in candidates:
            if blob is None:
                continue
            try:
                return self.codec.open_tensors(key, blob)
            except CorruptSession as exc:
                problem = exc
        raise problem

    def tenant_chain(self, tk: str) -> Chain:
        """An empty chain rooted in the tenant's salt (created on first use), the weights and the layout."""
        salt = self._salts.get(tk)
        if salt is None:
            key = salt_key(tk)
            blob = self.blobs.get(key)
            if blob is None:  # the tenant's first session: claim a salt (another worker may win the race)
                self.blobs.put_if_absent(key, self.codec.seal(key, os.urandom(32)))
                blob = self.blobs.get(key)
            salt = self._salts[tk] = self.codec.open(key, blob)
        return Chain.rooted(salt, self.fingerprint, self.layout)

    def forget_usage(self, tk: str) -> None:
        """Recount the tenant's stored bytes on next need (after values were deleted)."""
        self._usage.pop(tk, None)

    def new_state(self) -> SequenceState:
        return SequenceState(self.layout, self.device)

    def prune(self, tk: str, session_id: str) -> None:
        """Keep the newest `retain_commits` commits and every checkpoint."""
        seqs = self.commit_seqs(tk, session_id)
        for seq in seqs[: max(0, len(seqs) - self.retain_commits)]:
            key = commit_key(tk, session_id, seq)
            blob = self.blobs.get(key)
            try:
                keep = blob is not None and self.codec.open_json(key, blob).get("checkpoint", False)
            except CorruptSession:
                keep = False
            if not keep:
                self.blobs.delete(key)

