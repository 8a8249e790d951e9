"""`python -m model_worker logits`: float32 logits [positions, vocab] for a list of token ids, written as a
memory-mapped .npy, computed in one pass or in prefill chunks (both give the same logits). With --session-store and
--session the ids are appended to a stored session (its history is resumed, not prefilled) and committed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model_worker.engine.replica import ModelSpec, open_replica
from model_worker.engine.runner import ModelRunner
from model_worker.model import ForwardBatch
from model_worker.sessions import SessionNotFound
from model_worker.sessions.cli import add_store_arguments, open_store


def add_logits_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("logits", help="write float32 logits for token ids to a .npy file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input-ids", required=True, help="JSON list of ints")
    p.add_argument("--out", required=True, help="output .npy (float32 [positions, vocab], memory-mapped)")
    p.add_argument("--prefill-chunk", type=int, default=0, help="chunk size; 0 = one full pass")
    p.add_argument("--numerics", default="official", choices=["official", "reference"])
    p.add_argument("--positions", default="all", help="all | last | A:B (half-open), of the ids given")
    add_store_arguments(p, required=False)
    p.add_argument("--session", help="append the ids to this stored session (created if absent), then commit")
    p.add_argument("--tensor-parallel", type=int, default=1, help="split the model over N local ranks (the logits are "
                   "the same as one rank's, within float rounding)")
    p.set_defaults(func=run_logits)


def parse_positions(spec: str, length: int) -> range:
    if spec == "all":
        return range(length)
    if spec == "last":
        return range(length - 1, length)
    first, _, last = spec.partition(":")
    if not _:
        raise ValueError(f"--positions must be all, last or A:B, not {spec!r}")
    selected = range(length)[slice(int(first) if first else None, int(last) if last else None)]
    if not selected:
        raise ValueError(f"--positions {spec} selects nothing from {length} tokens")
    return selected


def run_logits(args: argparse.Namespace) -> int:
    ids = json.loads(Path(args.input_ids).read_text())
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError("--input-ids must hold a non-empty JSON list of ints")
    replica = open_replica(ModelSpec(args.checkpoint, "tiny", 0, args.numerics), args.tensor_parallel)
    if replica is None:
        return 0  # a rank other than 0 of a launcher-started replica: it followed rank 0 to the end
    try:
        return _write_logits(args, ids, replica.runner)
    finally:
        replica.close()


def _write_logits(args: argparse.Namespace, ids: list[int], runner: ModelRunner) -> int:
    if max(ids) >= runner.config.vocab_size or min(ids) < 0:
        raise ValueError(f"token ids must lie in [0, {runner.config.vocab_size})")
    selected = parse_positions(args.positions, len(ids))
    out = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.float32,
                                    shape=(len(selected), runner.config.vocab_size))
    chunk = args.prefill_chunk or len(ids)
    store, session = _open_session(args, runner, chunk)
    state = session.state if session else runner.new_state()
    # A session must take every id before it commits; without one, positions past the selection are not computed.
    end = len(ids) if session else selected.stop
    for start in range(0, end, chunk):
        stop = min(start + chunk, end)
        wanted = [p for p in range(start, stop) if p in selected]
        logits = runner.forward(ForwardBatch.single(ids[start:stop], state, logits="all" if wanted else "none")).logits
        state.commit()
        if wanted:
            rows = torch.tensor(wanted) - start
            out[wanted[0] - selected.start : wanted[-1] - selected.start + 1] = logits[rows].numpy()
    out.flush()
    if session:
        result = store.commit(session, ids)
        print(f"session {session.session_id}: {result.num_tokens} tokens after commit {result.seq}"
              + (" (rebuilt from its token log)" if session.rebuilt else ""))
    return 0


def _open_session(args: argparse.Namespace, runner: ModelRunner, chunk: int):
    """(store, open session) for --session-store/--session, re-prefilling a session whose stored state was lost."""
    if not args.session_store and not args.session:
        return None, None
    if not (args.session_store and args.session):
        raise ValueError("--session-store and --session go together")
    store = open_store(args.session_store, runner.config, runner.fingerprint, args.numerics)
    try:
        session = store.open(args.tenant, args.session)
    except SessionNotFound:
        return store, store.create(args.tenant, session_id=args.session)
    if session.rebuilt:
        for start in range(0, len(session.replay), chunk):
            runner.forward(ForwardBatch.single(session.replay[start : start + chunk], session.state, logits="none"))
        store.commit(session, session.replay)
    return store, session
