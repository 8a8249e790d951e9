"""`python -m model_worker logits`: float32 logits [positions, vocab] for a list of token ids, written as a
memory-mapped .npy, computed in one pass or in prefill chunks (both give the same logits)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model_worker.engine.loading import load_model
from model_worker.model import ForwardBatch


def add_logits_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("logits", help="write float32 logits for token ids to a .npy file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input-ids", required=True, help="JSON list of ints")
    p.add_argument("--out", required=True, help="output .npy (float32 [positions, vocab], memory-mapped)")
    p.add_argument("--prefill-chunk", type=int, default=0, help="chunk size; 0 = one full pass")
    p.add_argument("--numerics", default="official", choices=["official", "reference"])
    p.add_argument("--positions", default="all", help="all | last | A:B (half-open)")
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
    model = load_model(args.checkpoint, numerics=args.numerics)
    if max(ids) >= model.config.vocab_size or min(ids) < 0:
        raise ValueError(f"token ids must lie in [0, {model.config.vocab_size})")
    selected = parse_positions(args.positions, len(ids))
    out = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.float32,
                                    shape=(len(selected), model.config.vocab_size))
    chunk = args.prefill_chunk or len(ids)
    state = model.new_state()
    for start in range(0, selected.stop, chunk):
        stop = min(start + chunk, selected.stop)
        wanted = [p for p in range(start, stop) if p in selected]
        logits = model(ForwardBatch.single(ids[start:stop], state, logits="all" if wanted else "none")).logits
        state.commit()
        if wanted:
            rows = torch.tensor(wanted) - start
            out[wanted[0] - selected.start : wanted[-1] - selected.start + 1] = logits[rows].numpy()
    out.flush()
    return 0
