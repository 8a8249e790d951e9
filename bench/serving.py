"""Serving benchmark of the gRPC model worker on `tiny` (official numerics), bench_serving-style.

At concurrency 1, 8 and 32 (one client thread each), two workloads through the typed client:
- stateless: a prompt of 512 random token ids, 32 generated tokens (EOS ignored);
- sessions: each client creates a session and runs 4 turns, each appending a 300-token tool result (raw ids) and
  generating 32 tokens: a growing agent session, which must prefill only its new tokens.
Reported per run: TTFT, TPOT (per request: (last - first token) / (tokens - 1)) and ITL (mean, p50, p99), output
tokens/s, and for sessions the prefilled tokens per turn. The same stateless workload straight through the engine's
scheduler (no gRPC) gives the overhead of the service: gRPC + serialization per token (the median TPOT of
`--repeats` runs of each, alternated).

    python -m bench.serving [--concurrency 1,8,32] [--requests 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import torch

from foundation.chat import load_tokenizer
from foundation.clients.worker import Final, Sampling, WorkerClient
from model_worker.engine import Finished, Request, TextDelta
from model_worker.engine.loading import load_model
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.serve import build_server
from model_worker.sessions import SessionStore, open_blobs

PROMPT, OUTPUT, TOOL_RESULT, TURNS = 512, 32, 300, 4


def percentiles(values: list[float]) -> str:
    if not values:
        return "- / - / -"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.mean(ordered) * 1e3:.1f} / {statistics.median(ordered) * 1e3:.1f} / {p99 * 1e3:.1f}"


class Stats:
    def __init__(self) -> None:
        self.ttft, self.tpot, self.itl, self.prefilled = [], [], [], []
        self.tokens, self.lock = 0, threading.Lock()

    def stream(self, start: float, stamps: list[float]) -> None:
        with self.lock:
            self.tokens += len(stamps)
            if stamps:
                self.ttft.append(stamps[0] - start)
                self.itl += [b - a for a, b in zip(stamps, stamps[1:])]
                if len(stamps) > 1:
                    self.tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))


def timed_generate(client: WorkerClient, stats: Stats, **kwargs) -> Final:
    start, stamps, final = time.perf_counter(), [], None
    for event in client.generate(**kwargs):
        if isinstance(event, Final):
            final = event
        elif getattr(event, "token_ids", None):
            stamps += [time.perf_counter()] * len(event.token_ids)
    stats.stream(start, stamps)
    return final


def prompt_ids(seed: int, length: int, vocab: int) -> list[int]:
    return torch.randint(1000, vocab - 1000, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def run_clients(concurrency: int, work) -> float:
    threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def grpc_rows(target: str, vocab: int, concurrency: int, requests: int) -> tuple[str, str]:
    sampling = Sampling(temperature=0.0, max_tokens=OUTPUT, ignore_eos=True)
    stateless = Stats()

    def stateless_client(i: int) -> None:
        with WorkerClient(target, timeout=600) as client:
            for r in range(requests):
                timed_generate(client, stateless, token_ids=prompt_ids(1000 * i + r, PROMPT, vocab), sampling=sampling)

    elapsed = run_clients(concurrency, stateless_client)
    row1 = (f"| stateless | {concurrency} | {percentiles(stateless.ttft)} | {percentiles(stateless.tpot)} | "
            f"{percentiles(stateless.itl)} | {stateless.tokens / elapsed:.1f} | {PROMPT} |")
    sessions = Stats()

    def session_client(i: int) -> None:
        with WorkerClient(target, timeout=600) as client:
            session = client.create_session(system_prompt="You are an agent.")
            for turn in range(TURNS):
                final = timed_generate(client, sessions, session_id=session.session_id,
                                       token_ids=prompt_ids(7000 * i + turn, TOOL_RESULT, vocab), sampling=sampling)
                with sessions.lock:
                    sessions.prefilled.append(final.usage.prefilled_tokens)

    elapsed = run_clients(concurrency, session_client)
    prefilled = f"{min(sessions.prefilled)}-{max(sessions.prefilled)}"
    row2 = (f"| sessions, {TURNS} turns | {concurrency} | {percentiles(sessions.ttft)} | "
            f"{percentiles(sessions.tpot)} | {percentiles(sessions.itl)} | {sessions.tokens / elapsed:.1f} | "
            f"{prefilled} |")
    return row1, row2


def engine_tpot(runtime: WorkerRuntime, vocab: int, concurrency: int) -> float:
    """Median TPOT of the stateless workload through the scheduler alone (no gRPC)."""
    model, stats, done = runtime.model, Stats(), threading.Semaphore(0)
    from model_worker.sampling import SamplingParams

    for i in range(concurrency):
        stamps, start = [], time.perf_counter()

        def on_event(event, stamps=stamps, start=start) -> None:
            if isinstance(event, TextDelta) and event.token_ids:
                stamps.append(time.perf_counter())
            elif isinstance(event, Finished):
                stats.stream(start, stamps)
                done.release()

        runtime.scheduler.submit(Request(f"engine-{concurrency}-{i}", model.new_state(),
                                         prompt_ids(1000 * i, PROMPT, vocab),
                                         SamplingParams(temperature=0.0, max_tokens=OUTPUT, ignore_eos=True),
                                         on_event))
    for _ in range(concurrency):
        done.acquire()
    return statistics.median(stats.tpot)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2, help="stateless requests per client")
    parser.add_argument("--repeats", type=int, default=5, help="alternating engine / served runs for the overhead")
    args = parser.parse_args()
    model = load_model(None, "tiny", numerics="official")
    vocab = model.config.vocab_size
    with tempfile.TemporaryDirectory() as root:
        store = SessionStore(open_blobs(root), model.fingerprint, model.layout)
        runtime = WorkerRuntime(model, load_tokenizer(), store, max_running=64)
        server, port, _ = build_server(runtime, "127.0.0.1", 0)
        runtime.start()
        server.start()
        target = f"127.0.0.1:{port}"
        print("| workload | concurrency | TTFT ms mean / p50 / p99 | TPOT ms | ITL ms | output tok/s | "
              "prefilled tokens per request |")
        print("|---|---|---|---|---|---|---|")
        overhead = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for row in grpc_rows(target, vocab, concurrency, args.requests):
                print(row, flush=True)
            engine, served = [], []
            for _ in range(args.repeats):  # alternated, so drifts of the machine hit both alike
                engine.append(engine_tpot(runtime, vocab, concurrency))
                probed = Stats()

                def probe(i: int, probed=probed) -> None:
                    with WorkerClient(target, timeout=600) as client:
                        timed_generate(client, probed, token_ids=prompt_ids(1000 * i, PROMPT, vocab),
                                       sampling=Sampling(temperature=0.0, max_tokens=OUTPUT, ignore_eos=True))

                run_clients(concurrency, probe)
                served.append(statistics.median(probed.tpot))
            overhead.append((concurrency, statistics.median(engine), statistics.median(served)))
        print("\n| concurrency | engine TPOT ms (no gRPC) | served TPOT ms | gRPC + serialization overhead |")
        print("|---|---|---|---|")
        for concurrency, engine, served in overhead:
            print(f"| {concurrency} | {engine * 1e3:.1f} | {served * 1e3:.1f} | {(served - engine) / engine:+.0%} |")
        server.stop(grace=5).wait()
        runtime.stop()


if __name__ == "__main__":
    main()
