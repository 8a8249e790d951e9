"""Session operations beyond commit/open: fork, rewind, delete, list, stats, leases and expiry, collection of
unreferenced values, and export/import of a session as one file.

Fork and rewind write one commit record and nothing else (every value is shared by address). A session's last use is
the newest write under its prefix (a commit, or the touch record `open` leaves); leases keep it from expiring.
Deleting removes the records; the values go when `collect` finds no retained commit of the tenant naming them (mark
and sweep, sparing values written within a grace period, which a commit in progress may be about to name). Expiry
and collection run by tenant key too, for the worker's scheduled upkeep (upkeep.py), which walks every tenant.
Reading an export back is archive.py's (untrusted input, read as a bounded stream).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time
from collections.abc import Collection
from dataclasses import replace

from model_worker.sessions.archive import EXPORT_FORMAT, Export, ImportLimits, read_export, restore
from model_worker.sessions.chain import Chain, page_address, token_page_address
from model_worker.sessions.errors import CorruptSession, InvalidSessionRequest, SessionExists, SessionNotFound
from model_worker.sessions.manifest import (
    FORMAT,
    PREFIX_RECORD,
    Commit,
    blob_key,
    check_new_session_id,
    check_session_id,
    head_record,
    meta_key,
    session_prefix,
    tenant_key,
)
from model_worker.sessions.store import SessionStore


def fork(store: SessionStore, tenant: str, session_id: str, seq: int | None = None,
         new_id: str | None = None) -> str:
    """A new session sharing every value of `session_id` at commit `seq` (default: its newest)."""
    tk = tenant_key(tenant)
    source = store.read_commit(tk, check_session_id(session_id), seq)
    new_id = check_new_session_id(new_id) if new_id is not None else os.urandom(16).hex()
    if not store.blobs.put_if_absent(meta_key(tk, new_id), store.codec.seal_json(
            meta_key(tk, new_id), {"created_at": time.time(), "fingerprint": store.fingerprint})):
        raise SessionExists(f"session {new_id} already exists")
    store.write_commit(tk, replace(source, session_id=new_id, seq=0, parent=f"{session_id}@{source.seq}",
                                    created_at=time.time(), checkpoint=False))
    return new_id


def rewind(store: SessionStore, tenant: str, session_id: str, seq: int) -> int:
    """Make retained commit `seq` current again (as a new commit, so history stays append-only); returns its seq."""
    tk = tenant_key(tenant)
    target = store.read_commit(tk, check_session_id(session_id), seq)
    newest = store.commit_seqs(tk, session_id)[-1]
    record = replace(target, seq=newest + 1, parent=f"{session_id}@{seq}", created_at=time.time(), checkpoint=False)
    store.write_commit(tk, record)
    store.prune(tk, session_id)
    return record.seq


def delete(store: SessionStore, tenant: str, session_id: str) -> None:
    _delete(store, tenant_key(tenant), check_session_id(session_id))


def _delete(store: SessionStore, tk: str, session_id: str) -> None:
    keys = list(store.blobs.list(session_prefix(tk, session_id)))
    if not keys:
        raise SessionNotFound(f"no session {session_id}")
    for key in sorted(keys, key=lambda k: k.endswith("/meta")):  # the ID is released last
        store.blobs.delete(key)


def list_sessions(store: SessionStore, tenant: str, limit: int = 100, after: str = "") -> list[str]:
    """IDs of the tenant's sessions in order, `limit` of them after `after` (a page token)."""
    return [i for i in _session_ids(store, tenant_key(tenant)) if i > after and not i.startswith(PREFIX_RECORD)][:limit]


def _session_ids(store: SessionStore, tk: str) -> list[str]:
    prefix = session_prefix(tk)
    return sorted({key[len(prefix) :].split("/", 1)[0] for key in store.blobs.list(prefix)})


def tenant_keys(store: SessionStore) -> list[str]:
    """Every tenant key with anything stored (and perhaps some whose values are all gone)."""
    return sorted(store.blobs.folders("t/"))


def stats(store: SessionStore, tenant: str, session_id: str) -> dict[str, object]:
    """Tokens, values and bytes (per tier), last use, retained commits, head and lineage of a session."""
    tk = tenant_key(tenant)
    commit = store.read_commit(tk, check_session_id(session_id), None)
    keys = [blob_key(tk, a) for a in referenced(store, tk, commit)]
    tiers = [store.blobs.warm, store.blobs.cold] if hasattr(store.blobs, "warm") else [store.blobs]
    prefix = session_prefix(tk, session_id)
    last_use = max((store.blobs.written_at(k) or 0.0 for k in store.blobs.list(prefix)), default=None)
    return {"session_id": session_id, "tokens": commit.num_tokens, "seq": commit.seq,
            "commits_retained": store.commit_seqs(tk, session_id), "values": len(keys),
            "bytes_by_tier": {tier.url: sum(tier.size(k) or 0 for k in keys) for tier in tiers},
            "head": head_record(commit.head), "parent": commit.parent, "last_used_at": last_use}


def _page_groups(store: SessionStore, tk: str, commit: Commit) -> tuple[list[int], Chain, dict[str, str]]:
    """(token log, its chain, {"ratio/index": address} of every page group) of a commit."""
    token_ids = store.read_tokens(tk, commit)
    chain = store.tenant_chain(tk)
    chain.extend(token_ids)
    groups = {f"{ratio}/{j}": page_address(chain, ratio, j, span)
              for ratio, span in store.spans.items() for j in range(commit.num_tokens // span)}
    return token_ids, chain, groups


def referenced(store: SessionStore, tk: str, commit: Commit) -> set[str]:
    """Addresses of every value `commit` needs: its tail, token pages and page groups."""
    _, chain, groups = _page_groups(store, tk, commit)
    return {commit.tail, *groups.values(), *(token_page_address(chain, i) for i in range(commit.token_pages))}


def collect(store: SessionStore, tenant: str, grace_seconds: float = 600.0) -> int:
    """Delete the tenant's values that no retained commit names; returns how many went."""
    return collect_tenant(store, tenant_key(tenant), grace_seconds)


def collect_tenant(store: SessionStore, tk: str, grace_seconds: float = 600.0) -> int:
    live: set[str] = set()
    for session_id in _session_ids(store, tk):
        for seq in store.commit_seqs(tk, session_id):
            try:
                live |= referenced(store, tk, store.read_commit(tk, session_id, seq))
            except CorruptSession:
                continue
    deleted, now, prefix = 0, time.time(), f"t/{tk}/b/"
    for key in list(store.blobs.list(prefix)):
        written = store.blobs.written_at(key)
        if key[len(prefix) :] not in live and (written is None or now - written > grace_seconds):
            store.blobs.delete(key)
            deleted += 1
    store.forget_usage(tk)
    return deleted


def hold(store: SessionStore, tenant: str, session_id: str, holder: str, seconds: float) -> None:
    """Keep the session from expiring while `holder` (a running request, a queued job) has it, for up to `seconds`
    (renew to extend)."""
    tk = tenant_key(tenant)
    store.read_commit(tk, check_session_id(session_id), None)
    key = _lease_key(tk, session_id, holder)
    store.blobs.put(key, store.codec.seal_json(key, {"until": time.time() + seconds}))


def release(store: SessionStore, tenant: str, session_id: str, holder: str) -> None:
    store.blobs.delete(_lease_key(tenant_key(tenant), session_id, holder))


def _lease_key(tk: str, session_id: str, holder: str) -> str:
    return session_prefix(tk, check_session_id(session_id)) + f"lease/{check_session_id(holder, 'holder')}"


def expire(store: SessionStore, tenant: str, ttl_seconds: float, now: float | None = None) -> list[str]:
    """Delete the tenant's sessions unused for ttl_seconds (no open or commit) that no live lease holds."""
    return expire_tenant(store, tenant_key(tenant), ttl_seconds, now)


def expire_tenant(store: SessionStore, tk: str, ttl_seconds: float, now: float | None = None,
                  spare: Collection[str] = ()) -> list[str]:
    """`expire` by tenant key; the sessions in `spare` (in use in this process) stay whatever their age."""
    now = time.time() if now is None else now
    expired = []
    for session_id in _session_ids(store, tk):
        if session_id in spare:
            continue
        last, held = 0.0, False
        for key in store.blobs.list(session_prefix(tk, session_id)):
            if "/lease/" in key:
                blob = store.blobs.get(key)
                try:
                    held |= blob is not None and store.codec.open_json(key, blob).get("until", 0) > now
                except CorruptSession:
                    continue
            else:
                last = max(last, store.blobs.written_at(key) or 0.0)
        if not held and now - last > ttl_seconds:
            try:
                _delete(store, tk, session_id)
            except SessionNotFound:  # another collector (or a DeleteSession) was first
                continue
            expired.append(session_id)
    return expired


def export_session(store: SessionStore, tenant: str, session_id: str, path: str) -> None:
    """One tar file: export.json (the commit and the token log) and the tail and page groups by role, their bodies
    opened (checked, decrypted) so another store, tenant or program can take them."""
    tk = tenant_key(tenant)
    commit = store.read_commit(tk, check_session_id(session_id), None)
    token_ids, _, groups = _page_groups(store, tk, commit)
    members = {"tail.safetensors": commit.tail, **{f"pages/{g}.safetensors": a for g, a in groups.items()}}
    header = {"format": EXPORT_FORMAT, "session_format": FORMAT, "commit": commit.to_record(), "tokens": token_ids}
    with tarfile.open(path, "w") as tar:
        _add(tar, "export.json", json.dumps(header).encode())
        for name, address in members.items():
            key = blob_key(tk, address)
            blob = store.blobs.get(key)
            if blob is None:
                raise CorruptSession(f"missing stored value {key}")
            _add(tar, name, store.codec.open(key, blob))


def import_session(store: SessionStore, tenant: str, path: str, session_id: str | None = None,
                   limits: ImportLimits = ImportLimits()) -> str:
    """Store the export at `path` under `tenant` (addresses are recomputed with this tenant's salt)."""
    with open(path, "rb") as f:
        exported = read_export(f, limits)
    return store_export(store, tenant, exported, session_id)


def store_export(store: SessionStore, tenant: str, exported: Export, session_id: str | None = None) -> str:
    """Store a read export as a new session of `tenant`; if that fails, the claimed ID is released again."""
    commit = exported.commit
    if commit.fingerprint != store.fingerprint or commit.layout != store.layout_id:
        raise InvalidSessionRequest("the export holds a session for other weights or numerics")
    state = store.new_state()
    restore(state, exported)
    session = store.create(tenant, commit.head, session_id)
    session.state, session.chat = state, commit.chat
    try:
        store.commit(session, exported.token_ids)  # writes the pages, token log and tail under this tenant
    except BaseException:
        with contextlib.suppress(Exception):  # the commit's own error is the one to report
            delete(store, tenant, session.session_id)
        raise
    return session.session_id


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))
