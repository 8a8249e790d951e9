"""`python -m model_worker chat`: an interactive chat on the embedded default (tiny model, random weights) or on a
real checkpoint, streaming to the terminal. The conversation is one append-only session: each turn prefills only
its new tokens. Turns run through the gRPC worker's own scheduler and step (`Generator` drives it one request at a
time on this thread), so the chat samples, stops and commits exactly as the server does."""

from __future__ import annotations

import argparse
import sys
import time

from foundation.chat import ChatSession, DSMLParseError, SessionHead, StreamingParser, load_tokenizer
from foundation.chat.parsing import ContentDelta, ReasoningDelta, ToolCallEvent
from model_worker.engine import Generator
from model_worker.engine.loading import load_model
from model_worker.sampling import SamplingParams

REAL_WEIGHTS_HINT = (
    "Random weights: replies are noise. To chat with DeepSeek-V4, download the official checkpoint directory "
    "(config.json, model.safetensors.index.json, shards) and run: python -m model_worker chat --checkpoint DIR"
)


def add_chat_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chat", help="chat in the terminal (tiny random model by default)")
    p.add_argument("--checkpoint", help="checkpoint directory (official or transformers layout)")
    p.add_argument("--config", default="tiny", help="named config for random weights when no --checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--numerics", default="official", choices=["official", "reference"])
    p.add_argument("--mode", default="non-think", choices=["non-think", "think-high", "think-max"])
    p.add_argument("--system", default="You are a helpful assistant.")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--prompt", action="append", help="non-interactive: send these turns and exit")
    p.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    model = load_model(args.checkpoint, args.config, args.seed, args.numerics)
    if not args.checkpoint:
        print(REAL_WEIGHTS_HINT, file=sys.stderr)
    tokenizer = load_tokenizer()
    print(f"[{model.config.n_layers}-layer model ready in {time.perf_counter() - started:.1f}s; "
          f"mode {args.mode}, numerics {args.numerics}; Ctrl-D to quit]", file=sys.stderr)
    session = ChatSession(SessionHead(think_max=args.mode == "think-max", system_prompt=args.system), tokenizer)
    generator, state = Generator(model, tokenizer), model.new_state()
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    turn_mode = "think-high" if args.mode == "think-max" else args.mode
    for user_text in _turns(args.prompt):
        session.render_turn([{"role": "user", "content": user_text}], turn_mode)
        new_ids = session.token_ids[state.num_tokens :]
        view, t0 = _StreamView(turn_mode), time.perf_counter()
        result = generator.generate(state, new_ids, params, on_text=view.feed)
        view.finish()
        elapsed = time.perf_counter() - t0
        session.append_completion(result.token_ids)
        print(f"\n[{result.finish_reason}; prefilled {result.num_prefilled} new tokens, generated "
              f"{len(result.token_ids)} in {elapsed:.2f}s; session holds {state.num_tokens} tokens, "
              f"{state.nbytes()['total'] / 1024:.0f} KiB of state]", file=sys.stderr)
    return 0


def _turns(prompts: list[str] | None):
    if prompts:
        for prompt in prompts:
            print(f"> {prompt}")
            yield prompt
        return
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return
        if line.strip():
            yield line


class _StreamView:
    """Shows reasoning dimmed, content plain and tool calls as calls; text that is not valid DSML shows raw."""

    def __init__(self, mode: str) -> None:
        self.parser: StreamingParser | None = StreamingParser(mode)

    def feed(self, text: str) -> None:
        self._guard(lambda parser: parser.feed(text), text)

    def finish(self) -> None:
        self._guard(lambda parser: parser.finish(), "")

    def _guard(self, step, text: str) -> None:
        if self.parser is None:
            print(text, end="", flush=True)
            return
        try:
            _show(step(self.parser))
        except DSMLParseError as exc:
            self.parser = None
            print(exc.unparsed_text, end="", flush=True)


def _show(events) -> None:
    for event in events:
        if isinstance(event, ReasoningDelta):
            print(f"\033[2m{event.text}\033[0m", end="", flush=True)
        elif isinstance(event, ContentDelta):
            print(event.text, end="", flush=True)
        elif isinstance(event, ToolCallEvent):
            print(f"\n[tool call {event.name}({event.arguments})]", flush=True)
