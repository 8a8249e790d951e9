"""A model worker killed in the middle of an agent turn: how long until the turn streams again from another worker,
and what that worker computed, next to re-prefilling the same history there.

Two `tiny` worker processes share one on-disk session store; the agent loop routes through a WorkerPool over both
(the embedded registry: the configured addresses). Per history size: a session whose first turn holds a user message
of that many tokens, then a second turn killed (SIGKILL of its worker) at its first streamed token. Measured: kill ->
first token of the step run again on the survivor, the tokens it prefilled and reused, and, on the survivor, the time
to first token of a stateless request with the same history (what a platform without stored sessions pays).

    python -m bench.failover [--history 4096,16384,32768]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent_runtime.events import StepStarted, TextDelta, TurnDone
from agent_runtime.loop import AgentLoop
from agent_runtime.store.transcript import TranscriptStore, upgrade
from agent_runtime.tools import ToolRegistry
from foundation.chat import load_tokenizer
from foundation.clients.worker import Final, Sampling, WorkerClient
from foundation.registry import WorkerPool
from foundation.sql import make_engine, sessions

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a research assistant."


def start_worker(store: str, log: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port",
                                str(port), "--session-store", store], cwd=ROOT, stdout=open(log, "w"),
                               stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    while "model worker serving" not in log.read_text():
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.2)
    return f"127.0.0.1:{port}", process


def history_text(tokens: int, seed: int) -> str:
    """About `tokens` tokens of text (checked with the tokenizer)."""
    tokenizer, rng = load_tokenizer(), random.Random(seed)
    words = "agent tool result memory session context window page commit worker resume token step".split()
    text = " ".join(rng.choice(words) for _ in range(tokens))
    while len(tokenizer.encode(text)) > tokens:
        text = text[: int(len(text) * 0.95)]
    return text


def measure(loop: AgentLoop, workers: dict, history: int) -> dict:
    session_id = f"failover-{history}"
    loop.create_session("bench", session_id, system_prompt=SYSTEM, tools=[])
    text = history_text(history, history)
    for _ in loop.run_turn("bench", session_id, [{"role": "user", "content": text}], mode="non-think",
                           sampling=Sampling(temperature=0.0, max_tokens=1)):
        pass
    holder = loop.store.get("bench", session_id).worker_address
    killed_at, again, first_after, done = None, 0, None, None
    for event in loop.run_turn("bench", session_id, [{"role": "user", "content": "Go on."}], mode="non-think",
                               sampling=Sampling(temperature=0.0, max_tokens=32)):
        if isinstance(event, TextDelta) and killed_at is None:
            workers[holder].send_signal(signal.SIGKILL)
            workers[holder].wait()
            killed_at = time.perf_counter()
        elif isinstance(event, StepStarted):
            again += 1
        elif isinstance(event, TextDelta) and again == 2 and first_after is None:
            first_after = time.perf_counter()
        elif isinstance(event, TurnDone):
            done = event
    survivor = loop.store.get("bench", session_id).worker_address
    client = loop.workers.client(survivor)
    started = time.perf_counter()
    for event in client.generate(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                                 mode="non-think", sampling=Sampling(temperature=0.0, max_tokens=1)):
        if isinstance(event, Final):
            reprefill = time.perf_counter() - started
    return {"history": history, "holder": holder, "survivor": survivor, "resume_s": first_after - killed_at,
            "prefilled": done.usage.prefilled_tokens, "reused": done.usage.reused_tokens,
            "reprefill_s": reprefill}


def warm_up(client: WorkerClient) -> None:
    for _ in client.generate(messages=[{"role": "user", "content": "warm up"}], sampling=Sampling(max_tokens=4)):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", default="4096,16384,32768")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    store = str(root / "sessions")
    workers = dict(start_worker(store, root / f"w{i}.log") for i in range(2))
    url = f"sqlite:///{root / 'agent.db'}"
    upgrade(url)
    pool = WorkerPool.open(None, list(workers), lambda address: WorkerClient(address, timeout=600))
    loop = AgentLoop(TranscriptStore(sessions(make_engine(url))), pool, ToolRegistry())
    for address in workers:  # one-time costs (kernels, channels) paid before any timing
        warm_up(pool.client(address))
    print("| history tokens | kill -> first token on the survivor s | prefilled | reused | re-prefill on the "
          "survivor s | speed-up |")
    print("|---|---|---|---|---|---|")
    try:
        for history in (int(h) for h in args.history.split(",")):
            row = measure(loop, workers, history)
            print(f"| {row['history']:,} | {row['resume_s']:.2f} | {row['prefilled']} | {row['reused']:,} | "
                  f"{row['reprefill_s']:.2f} | {row['reprefill_s'] / row['resume_s']:.0f}x |", flush=True)
            address, process = start_worker(store, root / f"restart-{history}.log")  # two workers again
            workers.pop(row["holder"])
            workers[address] = process
            warm_up(pool.client(address))
            pool.registry = type(pool.registry)(list(workers))
    finally:
        for process in workers.values():
            process.terminate()
        pool.close()


if __name__ == "__main__":
    main()
