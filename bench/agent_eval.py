"""The trained agent model's evaluations, through a real gRPC worker (official numerics, constrained decoding off):

- tool use, per reasoning mode, on held-out seeds and on held-out phrasings (templates training never saw): calls
  valid (parsed, arguments fit the schema), right tool and arguments, right final answer (training/evaluation.py);
- recall of a fact planted at growing distances back in a log history, and how much of the fact's compressed entries
  each CSA layer's Lightning Indexer puts in the top k of the query that answers (the engine run directly, with the
  indexer's selection recorded);
- MTP: drafts accepted and the speculative speed-up at batch 1 (a second worker with speculative decoding, the same
  greedy replies side by side);
- whole conversations through the agent service (`--service`): a worker process and an agent service process as
  deployed (constrained decoding on); each user message is one agent turn in which the runtime runs the real
  calculator and memory tools; right when the turn makes the reference's calls and the last one reports the answer.
Every evaluation trace is checked absent from the run's training data by fingerprint (the run's record in the model
directory says which batches it drew).

    python -m bench.agent_eval --model models/agent-small [--per-cell 8] [--recall 1000,4000,8000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from foundation.blobs import open_blobs
from foundation.chat import load_tokenizer
from foundation.clients.agent import AgentClient, ToolStarted, TurnDone, TurnFailed
from foundation.clients.worker import WorkerClient
from foundation.clients.worker.types import Sampling
from model_worker.config import CSA, load_config
from model_worker.engine.loading import load_model
from model_worker.model import ForwardBatch
from model_worker.server.serve import serve_in_process
from services.embedded.launcher import free_port, service
from training.batches import Batches
from training.data import held_out, render
from training.data.traces import EVAL_SEED_BASE, MODES, generate
from training.evaluation import answers, cases, eval_traces, request_args, same_calls, score, summarize
from training.export import stages
from training.run import Settings, row_length
from training.vocab import VocabSubset

LINE_TOKENS = 30  # a log line of the needle family, in tokens (its distance unit)


def training_fingerprints(model_dir: Path) -> set[str]:
    """Every trace each stage of the run drew (replayed from the record: batches are a function of seed, step and
    vocabulary)."""
    drawn: set[str] = set()
    for stage in stages(model_dir):
        settings = Settings(**{**stage["settings"], "out": Path(stage["settings"]["out"]),
                               "lengths": [tuple(x) for x in stage["settings"]["lengths"]]})
        batches = Batches(settings.seed, VocabSubset(stage["vocabulary"], load_config(settings.config).vocab_size))
        batches.drawn = drawn
        for step in range(stage["step"]):
            batches.batch(step, settings.rows, row_length(settings, step))
    return drawn


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


def service_turns(trace) -> list[tuple[str, list[tuple[str, dict]]]]:
    """The trace's user messages, each with the calls its agent turn should make over all its steps."""
    turns: list[tuple[str, list]] = []
    for turn, calls in zip(trace.turns, trace.calls, strict=True):
        users = [m["content"] for m in turn.inputs if m["role"] == "user"]
        if users:
            turns.append((users[-1], []))
        turns[-1][1].extend(calls)
    return turns


def through_agent_service(model_dir: Path, traces, max_tokens: int) -> dict:
    """Each trace as a conversation with an agent session: per mode, user turns with the right calls, and
    conversations whose last turn reports the answer."""
    tally = {mode: {"turns": 0, "right_calls": 0, "conversations": 0, "right_answers": 0, "failed": 0,
                    "examples": []} for mode in MODES}
    python = sys.executable
    with tempfile.TemporaryDirectory() as root:
        ports = {name: free_port("127.0.0.1") for name in ("worker", "agent")}
        worker = service("worker", [python, "-m", "model_worker", "serve"], "DSV4_WORKER_", {
            "CHECKPOINT": str(model_dir.resolve()), "PORT": str(ports["worker"]), "SESSION_STORE": f"{root}/sessions"},
            r"model worker serving \S+ on ", Path(root) / "worker.log")
        agent = service("agent", [python, "-m", "agent_runtime", "serve"], "DSV4_AGENT_", {
            "DATABASE_URL": f"sqlite:///{root}/agent.db", "WORKERS": f"127.0.0.1:{ports['worker']}",
            "PORT": str(ports["agent"])}, r"agent service on ", Path(root) / "agent.log")
        try:
            worker.start().wait_ready(300)
            agent.start().wait_ready(120)
            with AgentClient(f"127.0.0.1:{ports['agent']}", timeout=600) as client:
                for number, trace in enumerate(traces):
                    counts = tally[trace.mode]
                    session_id = f"eval-{number}"
                    client.create_session(session_id, system_prompt=trace.system, think_max=trace.mode == "think-max",
                                          tools=[tool["function"]["name"] for tool in trace.tools])
                    content = ""
                    for text, expected in service_turns(trace):
                        calls, content = _agent_turn(client, session_id, text, trace.mode, max_tokens)
                        counts["turns"] += 1
                        counts["failed"] += calls is None
                        counts["right_calls"] += calls is not None and same_calls(calls, expected)
                        if len(counts["examples"]) < 4:  # what it did, for the model card
                            counts["examples"].append({"user": text, "calls": calls, "reply": content})
                    counts["conversations"] += 1
                    counts["right_answers"] += answers(trace, content)
        finally:
            agent.stop()
            worker.stop()
    for counts in tally.values():
        counts["right_call_share"] = counts["right_calls"] / counts["turns"] if counts["turns"] else math.nan
        counts["right_answer_share"] = counts["right_answers"] / counts["conversations"] \
            if counts["conversations"] else math.nan
    return tally


def _agent_turn(client: AgentClient, session_id: str, text: str, mode: str, max_tokens: int):
    """(the calls the turn made, or None if it failed; its final content)."""
    calls, content = [], ""
    for event in client.run_turn(session_id, text, mode=mode, max_steps=4,
                                 sampling=Sampling(temperature=0.0, max_tokens=max_tokens)):
        match event:
            case ToolStarted(name=name, arguments=arguments):
                calls.append((name, arguments))
            case TurnDone():
                content = event.content
            case TurnFailed():
                return None, ""
    return calls, content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_eval")
    parser.add_argument("--model", type=Path, required=True, help="a model directory written by training export")
    parser.add_argument("--per-cell", type=int, default=8, help="traces per (family, mode) and phrasing set")
    parser.add_argument("--recall", default="1000,4000,8000", help="needle distances in tokens")
    parser.add_argument("--recall-per-distance", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--service", type=int, default=0, metavar="N",
                        help="also N conversations per (family, mode) through the agent service (calculator, memory)")
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
    if args.service:
        for phrasing in ("train", "held_out"):
            traces, _ = unseen(eval_traces(args.service, phrasing, ("calculator", "memory")), seen)
            results[f"agent_service_{phrasing}"] = through_agent_service(args.model, traces, args.max_tokens)
    text = json.dumps(results, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
