"""Checkpoint subcommands of `python -m model_worker`:

init-checkpoint --config NAME_OR_JSON --format official|hf --seed S --out DIR [--num-shards N]
                [--dtype float32|bfloat16]   (--dtype: hf only)
checkpoint-split SRC DST --tensor-parallel N   (official checkpoint -> convert.py's model{rank}-mp{N} files)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from model_worker.checkpoint.fingerprint import model_fingerprint
from model_worker.checkpoint.layouts import LAYOUTS, OFFICIAL
from model_worker.checkpoint.split_writer import split_checkpoint
from model_worker.checkpoint.writer import write_random_checkpoint
from model_worker.config import load_config

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def init_checkpoint_command(config: str, fmt: str, seed: int, out: str | Path, num_shards: int = 2,
                            dtype: str | None = None) -> str:
    """Write a random-weight checkpoint and return its fingerprint (also printed with the directory)."""
    if fmt == OFFICIAL and dtype is not None:
        raise ValueError("--dtype applies to --format hf only (the official layout fixes every dtype)")
    path = write_random_checkpoint(load_config(config), fmt, seed, out, num_shards=num_shards,
                                   float_dtype=_DTYPES[dtype] if dtype else None)
    fingerprint = model_fingerprint(path)
    print(f"wrote {fmt} checkpoint to {path} (fingerprint {fingerprint})")
    return fingerprint


def add_init_checkpoint_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `init-checkpoint`; the parsed namespace's `func(args)` runs it."""
    p = subparsers.add_parser("init-checkpoint", help="write a random-weight checkpoint (official or hf layout)")
    p.add_argument("--config", required=True, help="named config (flash, pro, tiny) or a config.json path")
    p.add_argument("--format", required=True, choices=list(LAYOUTS), dest="fmt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="float dtype of an hf checkpoint")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    init_checkpoint_command(args.config, args.fmt, args.seed, args.out, args.num_shards, args.dtype)
    return 0


def add_checkpoint_split_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `checkpoint-split`; the parsed namespace's `func(args)` runs it."""
    p = subparsers.add_parser("checkpoint-split", help="split an official checkpoint into per-rank files "
                              "(model{rank}-mp{N}.safetensors, as DeepSeek's convert.py writes them)")
    p.add_argument("src", help="official-layout checkpoint directory")
    p.add_argument("dst", help="output directory (new or empty)")
    p.add_argument("--tensor-parallel", type=int, required=True, help="number of ranks (one file each)")
    p.set_defaults(func=_run_split)
    return p


def _run_split(args: argparse.Namespace) -> int:
    out = split_checkpoint(args.src, args.dst, args.tensor_parallel)
    print(f"wrote {args.tensor_parallel} per-rank files to {out} (fingerprint {model_fingerprint(out)}, the source's)")
    return 0
