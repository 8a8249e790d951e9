"""Automatic prefix caching, side by side: the same agent conversation replayed through the gateway's
`/v1/chat/completions` on two embedded platforms, one whose worker keeps prefix checkpoints and one without
(`DSV4_WORKER_PREFIX_CACHE_GB=0`), calls alternated between them.

The client keeps no session: each call resends the whole conversation with the replies it actually received
(text replies of a fixed length, end of sequence banned by `logit_bias`; every fourth call a forced tool call, which
the client answers with a tool result). Per call: input tokens, tokens prefilled and seconds on each side, and the
re-tokenization drift: the reply's tokens that the resent conversation renders to other ids (the cache then reuses
only up to the end of the last input, and the reply is computed again). Then a second case: a prompt that parts from
a cached document in its middle reuses the checkpoint before the edit, so it prefills at most C tokens more than its
suffix.

    .venv/bin/python bench/prefix_cache.py --turns 40 [--json out.json]
    .venv/bin/python bench/prefix_cache.py --batch --document-lines 1600 --lines 32
    .venv/bin/python bench/prefix_cache.py --checkpoint-bytes
    .venv/bin/python bench/prefix_cache.py --concurrent-hits 8 [--document-tokens 16384]

The batch case: lines that share a long document, as a batch through the jobs service (Celery, 4 lines at a time),
once with the cache and once without: how many times the document was computed, and the batch's wall time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform as host
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from openai import OpenAI  # noqa: E402

from bench.kv_bytes import MODELS, computed_state_bytes, growth_per_token  # noqa: E402
from foundation.chat.protocol import EOS_ID  # noqa: E402
from foundation.clients.jobs import JobsClient  # noqa: E402
from model_worker.engine.loading import load_model  # noqa: E402
from model_worker.model import ForwardBatch  # noqa: E402
from model_worker.numerics import OFFICIAL  # noqa: E402
from model_worker.sessions import SessionStore, open_blobs  # noqa: E402
from model_worker.sessions.prefix_cache import PrefixCache  # noqa: E402
from model_worker.state import StateLayout  # noqa: E402
from model_worker.state.pages import pools_for  # noqa: E402
from services.embedded.launcher import Platform  # noqa: E402
from services.embedded.settings import EmbeddedSettings  # noqa: E402

PICK = {"type": "function", "function": {"name": "lookup", "description": "Look a record up.", "parameters": {
    "type": "object", "properties": {"table": {"type": "string", "enum": ["orders", "users", "events"]}},
    "required": ["table"], "additionalProperties": False}}}
SYSTEM = "You are an operations agent. Answer briefly; use the lookup tool when a record is needed."


def start(root: Path, cache_gb: str, celery_concurrency: int = 1) -> Platform:
    os.environ["DSV4_WORKER_PREFIX_CACHE_GB"] = cache_gb  # the worker child inherits it
    settings = EmbeddedSettings(data_dir=str(root), worker_port=0, jobs_port=0, agent_port=0, gateway_port=0,
                                demo=False, celery_concurrency=celery_concurrency)
    return Platform(settings).start()


def client_of(platform: Platform) -> OpenAI:
    return OpenAI(base_url=platform.endpoints["gateway (OpenAI HTTP)"], api_key="unused", timeout=600)


def call(client: OpenAI, messages: list[dict], tool_turn: bool, reply_tokens: int) -> tuple[dict, float]:
    started = time.perf_counter()
    # The tools ride on every call, as an agent framework sends them (they are rendered at the prompt's start).
    if tool_turn:
        reply = client.chat.completions.create(model="tiny", messages=messages, tools=[PICK], tool_choice="required",
                                               temperature=0, max_tokens=80)
    else:
        reply = client.chat.completions.create(model="tiny", messages=messages, tools=[PICK], tool_choice="none",
                                               temperature=0, max_tokens=reply_tokens,
                                               logit_bias={str(EOS_ID): -100})
    return reply.model_dump(), time.perf_counter() - started


def conversation(clients: dict[str, OpenAI], turns: int, reply_tokens: int) -> list[dict]:
    histories = {name: [{"role": "system", "content": SYSTEM}] for name in clients}
    rows, last = [], {}
    for turn in range(1, turns + 1):
        tool_turn = turn % 4 == 0
        row = {"turn": turn, "tool": tool_turn}
        for name, client in clients.items():
            histories[name].append({"role": "user", "content": f"Step {turn}: check the queue and report."})
            reply, seconds = call(client, histories[name], tool_turn, reply_tokens)
            usage = reply["usage"]
            cached = usage["prompt_tokens_details"]["cached_tokens"]
            row[name] = {"prompt": usage["prompt_tokens"], "prefilled": usage["prompt_tokens"] - cached,
                         "cached": cached, "seconds": round(seconds, 3)}
            if name == "cache" and name in last:
                # What the end-of-output checkpoint holds: the last input and every reply token but the last.
                reusable = last[name]["prompt"] + last[name]["completion"] - 1
                row["drift"] = max(0, reusable - cached)
            last[name] = {"prompt": usage["prompt_tokens"], "completion": usage["completion_tokens"]}
            message = reply["choices"][0]["message"]
            histories[name].append({"role": "assistant", "content": message["content"] or "",
                                    "tool_calls": message.get("tool_calls")})
            for tool_call in message.get("tool_calls") or []:
                histories[name].append({"role": "tool", "tool_call_id": tool_call["id"],
                                        "content": json.dumps({"rows": 3, "status": "ok"})})
            if not message.get("tool_calls"):
                histories[name][-1].pop("tool_calls")
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def parted_document(client: OpenAI, every: int) -> dict:
    document = " ".join(f"record {i}: shipped, 3 items, paid." for i in range(500))
    first, _ = call(client, [{"role": "user", "content": document + " Summarize."}], False, 4)
    edited = document[: len(document) // 2] + " (amended) " + document[len(document) // 2 :]
    second, _ = call(client, [{"role": "user", "content": edited + " Summarize."}], False, 4)
    usage = second["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return {"document_tokens": first["usage"]["prompt_tokens"], "edited_prompt_tokens": usage["prompt_tokens"],
            "cached": cached, "prefilled": usage["prompt_tokens"] - cached, "checkpoint_every": every}


def shared_document_batch(root: Path, cache_gb: str, document_lines: int, lines: int) -> dict:
    """`lines` batch lines over one document, through the jobs service and Celery (4 at a time): tokens computed and
    the batch's wall time."""
    platform = start(root, cache_gb, celery_concurrency=4)
    try:
        jobs = JobsClient(platform.endpoints["jobs (gRPC)"], timeout=600)
        document = " ".join(f"record {i}: shipped, 3 items, paid." for i in range(document_lines))
        requests = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": "tiny", "reasoning_effort": "none", "max_tokens": 4,
            "messages": [{"role": "user", "content": f"{document}\nQuestion {i}: which records were paid?"}]}}
            for i in range(lines)]
        started = time.perf_counter()
        batch = jobs.submit_jsonl("\n".join(json.dumps(r) for r in requests))
        results = list(jobs.results(batch.id, follow=True, timeout=3600))
        seconds = time.perf_counter() - started
    finally:
        platform.stop()
    prompt = max(line.usage.prompt_tokens for line in results)
    # A line without a session: its usage's prompt is its whole input, of which `reused` came from the cache.
    prefilled = sum(line.usage.prompt_tokens - line.usage.reused_tokens for line in results)
    return {"lines": len(results), "completed": sum(line.status == "completed" for line in results),
            "prompt_tokens": prompt, "prefilled_tokens": prefilled,
            "reused_tokens": sum(line.usage.reused_tokens for line in results),
            "document_computed_times": round(prefilled / prompt, 2), "seconds": round(seconds, 1)}


def checkpoint_bytes(every: int = 2048) -> list[dict]:
    """Flash and Pro in official numerics, from the engine's own StateLayout (bench/kv_bytes.py, nothing allocated):
    a hot checkpoint alone keeps the whole state alive (its pages by reference, its tail copied); a stored one adds
    the page groups completed since the last (shared, content-addressed) and a tail (window, compressor tails, MTP
    inputs)."""
    rows = []
    for name, config in MODELS.items():
        layout = StateLayout(config, OFFICIAL)
        growth = growth_per_token(layout)["total"]
        for tokens in (131072, 1048576):
            state = computed_state_bytes(layout, tokens)
            tail = state["total"] - state["kv_pages"] - state["index_pages"]
            rows.append({"model": name, "position": tokens, "kv_bytes_per_token": round(growth),
                         "hot_checkpoint_bytes": state["total"],
                         "hot_bytes_per_cached_token": round(state["total"] / tokens),
                         "stored_tail_bytes": tail,
                         "stored_bytes_per_cached_token": round(growth + tail / every)})
    return rows


def concurrent_hits(document_tokens: int, hits: int, steps: int) -> dict:
    """`hits` requests resume from one checkpoint of a long document and decode `steps` tokens together (one batch),
    in this process on `tiny` (official numerics): the page pool's bytes in use after the checkpoint, after the hits
    adopt it and after they decode, against what each holding a copy would take; and the decode step's time with the
    pages shared and with private copies (deep snapshots), alternated."""
    model = load_model(None, "tiny", numerics="official")
    pools = pools_for(model.layout, "cpu")
    tokens = [3 + i % 120000 for i in range(document_tokens + 1)]
    with tempfile.TemporaryDirectory(prefix="prefix-hits-") as scratch:
        cache = PrefixCache(SessionStore(open_blobs(scratch), model.fingerprint, model.layout), 1 << 34)
        state = model.new_state()
        with torch.no_grad():
            for first in range(0, document_tokens, 2048):
                model(ForwardBatch.single(tokens[first : min(first + 2048, document_tokens)], state))
                state.commit()
        cache.put("bench", tokens, state)
        pages = sum(paged.nbytes() for layer in state.layers for paged in layer.paged())
        snapshot = state.snapshot()
        del state
        gc.collect()
        checkpoint = pools.nbytes_in_use()
        shared = [cache.lookup("bench", tokens).state for _ in range(hits)]
        adopted = pools.nbytes_in_use()
        private = [model.new_state() for _ in range(hits)]
        for copy in private:
            copy.restore(snapshot)
        timings = {"shared": [], "private": []}
        with torch.no_grad():
            for step in range(steps):
                for name, states in (("shared", shared), ("private", private))[:: 1 if step % 2 else -1]:
                    start = time.perf_counter()
                    model(ForwardBatch(torch.full((hits,), 7), [1] * hits, states))
                    timings[name].append(time.perf_counter() - start)
                    for one in states:
                        one.commit()
        private_pages = sum(paged.nbytes() for copy in private for layer in copy.layers for paged in layer.paged())
        decoded = pools.nbytes_in_use() - private_pages  # the copies' pages are theirs alone
    return {"document_tokens": document_tokens, "hits": hits, "steps": steps,
            "checkpoint_page_bytes": pages, "pool_bytes_after_checkpoint": checkpoint,
            "pool_bytes_after_hits_adopt": adopted, "pool_bytes_after_hits_decode": decoded,
            "copies_would_hold": private_pages,
            "median_step_ms": {name: round(1000 * statistics.median(t), 2) for name, t in timings.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--reply-tokens", type=int, default=16)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--batch", action="store_true", help="only the batch case: lines over one document")
    parser.add_argument("--document-lines", type=int, default=1600, help="batch case: ~10 tokens a line")
    parser.add_argument("--lines", type=int, default=32)
    parser.add_argument("--checkpoint-bytes", action="store_true", help="only Flash's and Pro's checkpoint bytes")
    parser.add_argument("--concurrent-hits", type=int, default=0,
                        help="only the shared-pages case: this many requests resume from one checkpoint")
    parser.add_argument("--document-tokens", type=int, default=16384, help="shared-pages case")
    args = parser.parse_args()
    if args.concurrent_hits:
        print(json.dumps(concurrent_hits(args.document_tokens, args.concurrent_hits, 32), indent=2))
        return 0
    if args.checkpoint_bytes:
        print(json.dumps(checkpoint_bytes(), indent=2))
        return 0
    if args.batch:
        with tempfile.TemporaryDirectory(prefix="prefix-cache-") as scratch:
            sides = {name: shared_document_batch(Path(scratch) / name, gb, args.document_lines, args.lines)
                     for name, gb in (("cache", "1"), ("plain", "0"))}
        print(json.dumps(sides, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(sides, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="prefix-cache-") as scratch:
        platforms = {"plain": start(Path(scratch) / "plain", "0"), "cache": start(Path(scratch) / "cache", "1")}
        try:
            clients = {name: client_of(p) for name, p in platforms.items()}
            rows = conversation(clients, args.turns, args.reply_tokens)
            parted = parted_document(clients["cache"], 2048)
        finally:
            for p in platforms.values():
                p.stop()
    text_rows = [r for r in rows if r["turn"] > 1]
    tool_rows = [r for r in text_rows if r["tool"]]
    summary = {
        "machine": f"{host.processor() or host.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "turn_2_seconds": {n: rows[1][n]["seconds"] for n in ("plain", "cache")},
        "turn_last_seconds": {n: rows[-1][n]["seconds"] for n in ("plain", "cache")},
        "median_prefilled": {n: statistics.median(r[n]["prefilled"] for r in text_rows) for n in ("plain", "cache")},
        "median_seconds": {n: statistics.median(r[n]["seconds"] for r in text_rows) for n in ("plain", "cache")},
        "median_seconds_tool_calls": {n: statistics.median(r[n]["seconds"] for r in tool_rows)
                                      for n in ("plain", "cache")},
        "calls_with_drift": sum(1 for r in text_rows if r.get("drift")),
        "drift_tokens": sum(r.get("drift", 0) for r in text_rows),
        "parted_document": parted,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
