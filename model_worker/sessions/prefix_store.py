"""The prefix cache's cold tier: checkpoints in the session store, where this worker after an eviction or a restart,
and any other worker of the store, finds them.

A request without a session writes its checkpoints as the commits of a prefix record: a session of its tenant under a
reserved ID (`prefix.` + 32 hex digits), each checkpoint a commit kept as a checkpoint (never pruned), written by the
worker's commit writer off the engine thread, only when it has room (a cache write never makes the engine wait) and
within the tenant's byte quota (past it the checkpoint is simply not stored). To the store's upkeep records are
sessions: they expire after the session TTL unless used (a hit touches its record), and collection keeps exactly the
values their commits name. Their pages are content-addressed like every session's, so checkpoints that share a prefix
share its pages, across records and sessions.

A marker per checkpoint, `t/{tenant}/px/{chain value of its block}/{position}` holding the record's ID, lets a lookup
find positions without reading records: it lists the markers of the chain blocks of the request's tokens from the
end, and the first position whose state is stored is the longest stored prefix. A marker whose record is gone is
deleted when a lookup meets it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future

from foundation.chat import SessionHead
from model_worker.sessions.chain import Chain
from model_worker.sessions.commits import CommitWriter, prepare
from model_worker.sessions.manifest import meta_key, session_prefix, tenant_key
from model_worker.sessions.session import OpenSession
from model_worker.sessions.store import SessionStore
from model_worker.state import SequenceState

log = logging.getLogger(__name__)


def marker_folder(tk: str, block_value: bytes) -> str:
    return f"t/{tk}/px/{block_value.hex()}/"


class StoredPrefixes:
    def __init__(self, store: SessionStore, writer: CommitWriter) -> None:
        self.store, self.writer = store, writer

    def write(self, tenant: str, token_ids: Sequence[int], state: SequenceState,
              record: OpenSession | None) -> OpenSession | None:
        """Store `state` (after `token_ids[:state.num_tokens]`, committed) as the next checkpoint of `record` (a new
        record for the first); returns the record to pass next time (None once it cannot take more)."""
        tokens = state.num_tokens
        try:
            if record is None:
                record = self.store.create_record(tenant)
                record.state = state
            elif record.state is not state or tokens < len(record.token_ids):
                return record  # not this request's state any more: nothing to add to its record
            prepared = prepare(self.store, record, list(token_ids[len(record.token_ids) : tokens]), checkpoint=True)
        except Exception as error:  # noqa: BLE001 - a cache write fails alone, never the request
            log.warning("prefix checkpoint not stored: %s: %s", type(error).__name__, error)
            return None
        future = self.writer.try_submit(prepared)
        if future is None:
            return None  # the store is behind: this record stops here (its next commit would need this one)
        marker = marker_folder(tenant_key(tenant), record.chain.values[tokens // record.chain.block]) + str(tokens)
        future.add_done_callback(lambda done: self._mark(done, marker, record.session_id))
        return record

    def _mark(self, done: Future, marker: str, record_id: str) -> None:
        if done.exception() is None:  # else over the quota, or the store failed: nothing to find there
            self.store.blobs.put(marker, record_id.encode())

    def find(self, tenant: str, chain: Chain, token_ids: Sequence[int], above: int,
             limit: int) -> tuple[int, SequenceState] | None:
        """The longest stored checkpoint of `tenant` that `token_ids` (chained as `chain`) extends, past `above`
        tokens and at most `limit`."""
        tk = tenant_key(tenant)
        probe = OpenSession(tenant, "", self.store.new_state(), [], chain, SessionHead())
        for block in range(limit // chain.block, above // chain.block - 1, -1):
            folder = marker_folder(tk, chain.values[block])
            positions = sorted((int(key[len(folder) :]) for key in self.store.blobs.list(folder)
                                if key[len(folder) :].isdigit()), reverse=True)
            for position in (p for p in positions if above < p <= limit):
                through = chain.copy()
                through.truncate(position, token_ids)  # the chain in hand, not hashed again
                found = self.store.state_at(probe, token_ids[:position], through)
                record_id = (self.store.blobs.get(folder + str(position)) or b"").decode()
                if found is not None:
                    if record_id:
                        self.store.blobs.put(session_prefix(tk, record_id) + "touch", b"")  # used: not expired
                    return position, found.state
                if not record_id or not self.store.blobs.exists(meta_key(tk, record_id)):
                    self.store.blobs.delete(folder + str(position))  # its record expired
        return None
