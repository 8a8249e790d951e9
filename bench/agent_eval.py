"""The trained agent model's evaluations, through a real gRPC worker (official numerics, constrained decoding off):

- tool use, per reasoning mode, on held-out seeds and on held-out phrasings (templates training never saw): calls
  valid (parsed, arguments fit the schema), right tool and arguments, right final answer (training/evaluation.py);
- recall of a fact planted at growing distances back in a log history, and how much of the fact's compressed entries
  each CSA layer's Lightning Indexer puts in the top k of the query that answers (the engine run directly, with the
  indexer's selection recorded);
- MTP: drafts accepted and the speculative speed-up at batch 1 (a second worker with speculative decoding, the same
  greedy replies side by side).
Every evaluation trace is checked absent from the run's training data by fingerprint (the run's record in the model
directory says which batches it drew).

    python -m bench.agent_eval --model models/agent-small [--per-cell 8] [--recall 1000,4000,8000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from pathlib import Path

import torch

from foundation.blobs import open_blobs
from foundation.chat import load_tokenizer
from foundation.clients.worker import WorkerClient
from foundation.clients.worker.types import Sampling
from model_worker.config import CSA
from model_worker.engine.loading import load_model
from model_worker.model import ForwardBatch
from model_worker.server.serve import serve_in_process
from training.batches import Batches
from training.data import held_out, render
from training.data.traces import EVAL_SEED_BASE, MODES, generate
from training.evaluation import cases, eval_traces, request_args, score, summarize
from training.export import TRAINING_RECORD
from training.run import Settings, row_length

LINE_TOKENS = 30  # a log line of the needle family, in tokens (its distance unit)


def training_fingerprints(model_dir: Path) -> set[str]:
    """Every trace the run drew (replayed from its record: batches are a function of seed and step)."""
    record = json.loads((model_dir / TRAINING_RECORD).read_text())
    settings = Settings(**{**record["settings"], "out": Path(record["settings"]["out"]),
                           "lengths": [tuple(x) for x in record["settings"]["lengths"]]})
    batches = Batches(settings.seed)
    batches.drawn = set()
    for step in range(record["step"]):
        batches.batch(step, settings.rows, row_length(settings, step))
    return batches.drawn


def unseen(traces, seen: set[str]):
    """The traces whose tokens training never saw (each once), and how many were dropped."""
    kept = [rendered.trace for rendered in held_out([render(t) for t in traces], seen)]
    return kept, len(traces) - len(kept)


def ask(client: WorkerClient, case, max_tokens: int):
    final, _ = client.generate_text(messages=case.messages, sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
                                    **request_args(case.trace))
    return final


def tool_use(client: WorkerClient, traces, max_tokens: int) -> dict:
    by_mode = {mode: [] for mode in MODES}
    for trace in traces:
        for case in cases(trace):
            by_mode[trace.mode].append(score(case, ask(client, case, max_tokens)))
    table = {mode: summarize(scores) for mode, scores in by_mode.items()}
    table["all"] = summarize([s for scores in by_mode.values() for s in scores])
    return table


def recall(client: WorkerClient, model, distances: list[int], per_distance: int, seen: set[str], max_tokens: int
           ) -> dict:
    out = {}
    for distance in distances:
        traces, dropped = needle_traces(distance, per_distance, seen)
        right = sum(trace.answer in ask(client, list(cases(trace))[-1], max_tokens).content for trace in traces)
        out[distance] = {"traces": len(traces), "recall": right / len(traces) if traces else math.nan,
                         "dropped_as_seen": dropped,
                         "prompt_tokens": len(render(traces[0]).token_ids) if traces else 0,
                         "indexer_top_k_share_of_needle_entries": indexer_recall(model, traces)}
    return out


def needle_traces(distance: int, count: int, seen: set[str]):
    traces = [generate("needle", EVAL_SEED_BASE + 10_000 + i, mode="non-think",
                       needle_lines=max(8, distance // LINE_TOKENS)) for i in range(count)]
    return unseen(traces, seen)


def indexer_recall(model, traces, chunk: int = 2048) -> dict[str, float]:
    """Per CSA layer: the share of the needle line's compressed entries in the indexer's top k for the last prompt
    position (the one whose logits give the answer's first token)."""
    tokenizer, ratio = load_tokenizer(), model.config.csa_ratio
    layers = [block.attn for block in model.layers if block.attn.kind == CSA]
    shares: dict[int, list[float]] = {layer.layer_id: [] for layer in layers}
    for trace in traces:
        rendered = render(trace)
        mask = rendered.loss_mask
        answer_start = max(i for i in range(1, len(mask)) if mask[i] and not mask[i - 1])
        prompt = rendered.token_ids[:answer_start]
        line = re.search(r"NOTE deploy token of \S+ is \S+", trace.turns[0].inputs[0]["content"]).group(0)
        pattern = tokenizer.encode(line)[1:]  # its first token may merge with the newline before it
        start = next(i for i in range(len(prompt)) if prompt[i : i + len(pattern)] == pattern)
        needle = {p // ratio for p in range(start, start + len(pattern))}
        chosen: dict[int, torch.Tensor] = {}
        originals = {}
        for layer in layers:
            originals[layer.layer_id] = select = layer.indexer.select

            def recording(*args, select=select, layer_id=layer.layer_id):
                ids = select(*args)
                chosen[layer_id] = ids[-1]
                return ids
            layer.indexer.select = recording
        try:
            state = model.new_state()
            with torch.no_grad():
                for first in range(0, len(prompt), chunk):
                    model(ForwardBatch.single(prompt[first : first + chunk], state))
                    state.commit()
        finally:
            for layer in layers:
                layer.indexer.select = originals[layer.layer_id]
        for layer_id, ids in chosen.items():
            shares[layer_id].append(len(needle & set(ids.tolist())) / len(needle))
    return {f"layer {layer_id}": sum(v) / len(v) for layer_id, v in shares.items() if v}


def speculative(plain: WorkerClient, drafting: WorkerClient, traces, max_tokens: int) -> dict:
    """Batch 1: the same greedy final answers with and without MTP drafts; tokens per second over all of them."""
    totals = {"plain_s": 0.0, "spec_s": 0.0, "tokens": 0, "drafts": 0, "accepted": 0, "same": 0, "replies": 0}
    for trace in traces:
        last = list(cases(trace))[-1]
        start = time.perf_counter()
        expected = ask(plain, last, max_tokens)
        totals["plain_s"] += time.perf_counter() - start
        start = time.perf_counter()
        got = ask(drafting, last, max_tokens)
        totals["spec_s"] += time.perf_counter() - start
        totals["tokens"] += got.usage.completion_tokens
        totals["drafts"] += got.usage.draft_tokens
        totals["accepted"] += got.usage.accepted_draft_tokens
        totals["same"] += (got.content, got.reasoning_content) == (expected.content, expected.reasoning_content)
        totals["replies"] += 1
    totals["acceptance"] = totals["accepted"] / totals["drafts"] if totals["drafts"] else math.nan
    totals["speedup"] = totals["plain_s"] / totals["spec_s"] if totals["spec_s"] else math.nan
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_eval")
    parser.add_argument("--model", type=Path, required=True, help="a model directory written by training export")
    parser.add_argument("--per-cell", type=int, default=8, help="traces per (family, mode) and phrasing set")
    parser.add_argument("--recall", default="1000,4000,8000", help="needle distances in tokens")
    parser.add_argument("--recall-per-distance", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)

    seen = training_fingerprints(args.model)
    model = load_model(str(args.model), "tiny", numerics="official")
    results: dict = {"model": str(args.model), "training_traces": len(seen)}
    with tempfile.TemporaryDirectory() as root:
        plain = serve_in_process(model, open_blobs(f"{root}/plain"), constrained_decoding=False)
        drafting = serve_in_process(model, open_blobs(f"{root}/spec"), constrained_decoding=False, speculative=True)
        try:
            with WorkerClient(plain.address, timeout=600) as client, \
                    WorkerClient(drafting.address, timeout=600) as spec_client:
                for phrasing in ("train", "held_out"):
                    traces, dropped = unseen(eval_traces(args.per_cell, phrasing), seen)
                    results[f"tool_use_{phrasing}"] = tool_use(client, traces, args.max_tokens)
                    results[f"tool_use_{phrasing}"]["dropped_as_seen"] = dropped
                results["recall"] = recall(client, model, [int(d) for d in args.recall.split(",") if d],
                                           args.recall_per_distance, seen, args.max_tokens)
                results["speculative"] = speculative(client, spec_client,
                                                     eval_traces(2, "train", ("calculator", "json")), args.max_tokens)
        finally:
            plain.stop()
            drafting.stop()
    text = json.dumps(results, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
