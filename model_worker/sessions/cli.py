"""`python -m model_worker sessions --store URL [--checkpoint DIR | --config NAME --seed S] [--numerics N]
[--tenant T] list | show ID | verify [ID] | export ID FILE | import FILE [--id ID] | delete ID | collect |
expire --ttl SECONDS | reindex`.

A worker's `serve` expires and collects on its own (sessions/upkeep.py); `expire` and `collect` run the same for one
tenant now.

The weights are named (not loaded) because stored state is tied to them: the page geometry comes from the config, and
sessions of other weights are reported as such.
"""

from __future__ import annotations

import argparse
import json

from model_worker.numerics import get_numerics
from model_worker.sessions import admin
from model_worker.sessions.codec import MAGIC, BlobCodec
from model_worker.sessions.errors import CorruptSession, SessionError
from model_worker.sessions.manifest import blob_key, tenant_key
from model_worker.sessions.store import SessionStore
from model_worker.state import StateLayout

DEFAULT_TENANT = "default"


def add_store_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--session-store" if not required else "--store", dest="session_store", required=required,
                   help="file://DIR, a directory, redis://HOST:PORT/DB or any fsspec URL")
    p.add_argument("--tenant", default=DEFAULT_TENANT)


def open_store(url: str, config, fingerprint: str, numerics: str) -> SessionStore:
    from foundation.blobs.stores import open_blobs

    return SessionStore(open_blobs(url), fingerprint, StateLayout(config, get_numerics(numerics)),
                        codec=BlobCodec.from_env())


def add_sessions_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sessions", help="list, inspect, verify, export, import and delete stored sessions")
    add_store_arguments(p, required=True)
    p.add_argument("--checkpoint", help="the weights the sessions belong to (default: random --config/--seed)")
    p.add_argument("--config", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--numerics", default="official", choices=["official", "reference"])
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    actions.add_parser("show").add_argument("id")
    actions.add_parser("verify").add_argument("id", nargs="?")
    export = actions.add_parser("export")
    export.add_argument("id")
    export.add_argument("file")
    imported = actions.add_parser("import")
    imported.add_argument("file")
    imported.add_argument("--id")
    actions.add_parser("delete").add_argument("id")
    actions.add_parser("collect", help="delete stored values no retained commit names")
    actions.add_parser("expire", help="delete sessions unused for --ttl seconds that no lease holds").add_argument(
        "--ttl", type=float, required=True)
    actions.add_parser("reindex", help="a Redis store: index every value (after workers of a version before the "
                                       "indexes wrote to it)")
    actions.add_parser("rekey", help="seal every stored value (all tenants) with the current DSV4_SESSION_KEY: "
                                     "after a rotation, before a key leaves DSV4_SESSION_PREVIOUS_KEYS; also "
                                     "encrypts a store written unencrypted")
    p.set_defaults(func=run_sessions)


def run_sessions(args: argparse.Namespace) -> int:
    from model_worker.engine.loading import model_identity

    config, fingerprint = model_identity(args.checkpoint, args.config, args.seed)
    store = open_store(args.session_store, config, fingerprint, args.numerics)
    try:
        return _ACTIONS[args.action](store, args)
    except SessionError as exc:
        print(f"error: {type(exc).__name__}: {exc}")
        return 1


def _list(store: SessionStore, args: argparse.Namespace) -> int:
    after = ""
    while page := admin.list_sessions(store, args.tenant, limit=1000, after=after):
        for session_id in page:
            print(session_id)
        after = page[-1]
    return 0


def _show(store: SessionStore, args: argparse.Namespace) -> int:
    print(json.dumps(admin.stats(store, args.tenant, args.id), indent=2))
    return 0


def _verify(store: SessionStore, args: argparse.Namespace) -> int:
    """Open every value each retained commit names and check it; print one line per session."""
    ids = [args.id] if args.id else admin.list_sessions(store, args.tenant, limit=1 << 62)
    tk, failures = tenant_key(args.tenant), 0
    for session_id in ids:
        problems = []
        for seq in store.commit_seqs(tk, session_id):
            try:
                commit = store.read_commit(tk, session_id, seq)
                for address in sorted(admin.referenced(store, tk, commit)):
                    key = blob_key(tk, address)
                    blob = store.blobs.get(key)
                    if blob is None:
                        raise CorruptSession(f"missing {key}")
                    store.codec.open(key, blob)
            except SessionError as exc:
                problems.append(f"commit {seq}: {exc}")
        failures += bool(problems)
        print(f"{session_id}: " + ("ok" if not problems else "; ".join(problems)))
    return 1 if failures else 0


def _export(store: SessionStore, args: argparse.Namespace) -> int:
    admin.export_session(store, args.tenant, args.id, args.file)
    print(f"exported {args.id} to {args.file}")
    return 0


def _import(store: SessionStore, args: argparse.Namespace) -> int:
    print(admin.import_session(store, args.tenant, args.file, args.id))
    return 0


def _delete(store: SessionStore, args: argparse.Namespace) -> int:
    admin.delete(store, args.tenant, args.id)
    print(f"deleted {args.id}")
    return 0


def _collect(store: SessionStore, args: argparse.Namespace) -> int:
    print(f"collected {admin.collect(store, args.tenant)} unreferenced values")
    return 0


def _expire(store: SessionStore, args: argparse.Namespace) -> int:
    for session_id in admin.expire(store, args.tenant, args.ttl):
        print(f"expired {session_id}")
    return 0


def _reindex(store: SessionStore, args: argparse.Namespace) -> int:
    reindex = getattr(store.blobs, "reindex", None)
    if reindex is None:
        print("error: only a Redis store has indexes (redis://)")
        return 1
    print(f"indexed {reindex()} values")
    return 0


def _rekey(store: SessionStore, args: argparse.Namespace) -> int:
    resealed = 0
    for key in list(store.blobs.list("t/")):
        blob = store.blobs.get(key)
        if not blob or not blob.startswith(MAGIC):  # markers (a session's "touch") hold no value
            continue
        again = store.codec.reseal(key, blob)
        if again is not None:
            store.blobs.put(key, again)
            resealed += 1
    print(f"resealed {resealed} values with the current key")
    return 0


_ACTIONS = {"list": _list, "show": _show, "verify": _verify, "export": _export, "import": _import,
            "delete": _delete, "collect": _collect, "expire": _expire, "reindex": _reindex,
            "rekey": _rekey}
