"""`python -m training train --out DIR [...]`: start a training run in DIR, or resume the one there.
`python -m training export --run DIR --out MODEL_DIR`: the run's model in the official checkpoint layout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.export import export
from training.run import Settings, train


def _lengths(text: str) -> list[tuple[int, int]]:
    """'2000:512,6000:2048,8192' -> until step 2000 rows of 512 tokens, until 6000 of 2048, then of 8192."""
    try:
        stages = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
    except ValueError:
        stages = []
    if not stages or any(len(stage) != 2 for stage in stages[:-1]) or len(stages[-1]) not in (1, 2) \
            or any(stage[-1] < 2 for stage in stages):
        raise argparse.ArgumentTypeError("stages as UNTIL_STEP:ROW_LENGTH, comma-separated, the last one ROW_LENGTH")
    return [(until, length) for until, length in stages[:-1]] + [(10**12, stages[-1][-1])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train (or resume) a run")
    run.add_argument("--out", type=Path, required=True, help="the run's folder: checkpoint.pt, log.jsonl")
    run.add_argument("--config", default="agent-small", help="agent-small, a named config or a config.json")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--steps", type=int, default=1000)
    run.add_argument("--rows", type=int, default=4, help="rows per batch")
    run.add_argument("--lengths", type=_lengths, default=[(10**12, 512)], help="UNTIL_STEP:ROW_LENGTH,...")
    run.add_argument("--lr", type=float, default=2e-3)
    run.add_argument("--warmup", type=int, default=50)
    run.add_argument("--sparse-from", type=int, default=0,
                     help="the sparse warm-up: dense attention and indexer distillation before this step")
    run.add_argument("--no-qat", dest="qat", action="store_false",
                     help="train in float (the ablation: quantize after training)")
    run.add_argument("--init", help="start from this exported model directory (a later stage), not random weights")
    run.add_argument("--checkpoint-minutes", type=float, default=10.0)
    run.add_argument("--vocab-sample", type=int, default=200, help="traces per family that decide the vocabulary")
    run.add_argument("--max-steps-this-call", type=int, default=None, help="stop after this many steps (resumable)")
    exporting = commands.add_parser("export", help="write a run's model in the official checkpoint layout")
    exporting.add_argument("--run", type=Path, required=True, help="the run's folder")
    exporting.add_argument("--out", type=Path, required=True, help="a new or empty model directory")
    args = parser.parse_args(argv)
    if args.command == "export":
        print(export(args.run, args.out))
        return 0
    settings = Settings(out=args.out, config=args.config, seed=args.seed, steps=args.steps, rows=args.rows,
                        lengths=args.lengths, lr=args.lr, warmup=args.warmup, sparse_from=args.sparse_from,
                        qat=args.qat, init=args.init,
                        checkpoint_minutes=args.checkpoint_minutes, vocab_sample=args.vocab_sample,
                        max_steps_this_call=args.max_steps_this_call)
    print(json.dumps(train(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
