"""MTP speculative decoding through the scheduler on `tiny` (official numerics), side by side in one run.

For batch sizes 1 and 8 (prompts of 512 random ids, 64 greedy tokens each, EOS ignored), three drafters:
- none: plain decoding;
- mtp: the model's own MTP layer (random weights here, so it accepts almost nothing: this shows the cost of drafting
  and verifying);
- oracle: drafts read from the plain run's replies, all kept (the upper bound a well-trained MTP head approaches).
Reported: decode passes, output tokens/s, acceptance, and whether every reply equals the plain one.

    python -m bench.speculative [--batch 1,8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from foundation.chat import load_tokenizer
from model_worker.engine import Finished, MtpDrafter, Request, Scheduler
from model_worker.engine.loading import load_model
from model_worker.sampling import SamplingParams

PROMPT = 512


class Oracle:
    def __init__(self, replies: dict[str, list[int]]) -> None:
        self.replies = replies

    def propose(self, requests):
        return [self.replies[r.request_id][len(r.output.token_ids)] if len(r.output.token_ids) <
                len(self.replies[r.request_id]) else None for r in requests]


def run(model, tokenizer, batch: int, tokens: int, drafter) -> tuple[dict[str, list[int]], float, int, int, int]:
    scheduler = Scheduler(model, tokenizer, token_budget=PROMPT * batch, drafter=drafter)
    finals: dict[str, Finished] = {}
    for i in range(batch):
        prompt = torch.randint(1, 100_000, (PROMPT,), generator=torch.Generator().manual_seed(i)).tolist()
        params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        scheduler.submit(Request(f"r{i}", model.new_state(), prompt, params,
                                 lambda event, name=f"r{i}": finals.__setitem__(name, event)
                                 if isinstance(event, Finished) else None))
    scheduler.step()  # the prefill pass (and each request's first token) is not what is measured
    steps_before = scheduler.stats.steps
    start = time.perf_counter()
    while scheduler.step():
        pass
    elapsed = time.perf_counter() - start
    drafted = sum(f.draft_tokens for f in finals.values())
    accepted = sum(f.accepted_draft_tokens for f in finals.values())
    return ({k: f.token_ids for k, f in finals.items()}, elapsed, scheduler.stats.steps - steps_before, drafted,
            accepted)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load_model(None, "tiny", numerics="official"), load_tokenizer()
    print("| batch | drafter | decode passes | output tok/s | drafts kept | replies = plain |")
    print("|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch.split(",")):
        plain, elapsed, steps, _, _ = run(model, tokenizer, batch, args.tokens, None)
        base = batch * (args.tokens - 1) / elapsed
        print(f"| {batch} | none | {steps} | {base:.1f} | - | - |", flush=True)
        for name, drafter in (("mtp", MtpDrafter(model)), ("oracle", Oracle(plain))):
            replies, elapsed, steps, drafted, accepted = run(model, tokenizer, batch, args.tokens, drafter)
            rate = batch * (args.tokens - 1) / elapsed
            print(f"| {batch} | {name} | {steps} | {rate:.1f} ({rate / base:.2f}x) | {accepted}/{drafted} | "
                  f"{'yes' if replies == plain else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
