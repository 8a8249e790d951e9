"""`python -m model_worker <command>`: chat, logits, init-checkpoint, checkpoint-split, render, parse, sessions,
serve."""

from __future__ import annotations

import argparse
import sys

from foundation.chat.cli import add_parse_parser, add_render_parser
from model_worker.checkpoint.cli import add_checkpoint_split_parser, add_init_checkpoint_parser
from model_worker.cli_chat import add_chat_parser
from model_worker.cli_logits import add_logits_parser
from model_worker.server.serve import add_serve_parser
from model_worker.sessions.cli import add_sessions_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_chat_parser(commands)
    add_logits_parser(commands)
    add_init_checkpoint_parser(commands)
    add_checkpoint_split_parser(commands)
    add_render_parser(commands)
    add_parse_parser(commands)
    add_sessions_parser(commands)
    add_serve_parser(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
