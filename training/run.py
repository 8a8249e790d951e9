"""A training run: deterministic from its seed, checkpointed every few minutes, resumable.

`train(settings)` starts a run in `settings.out` or resumes the one there from its last checkpoint (model,
optimizers, routers, step and log; the batch of a step is a function of (seed, step), so a resumed run feeds exactly
what an uninterrupted one would). Every step appends to `log.jsonl`; a progress line goes to stderr; every
checkpoint redraws `loss.png`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model_worker.checkpoint.loader import load_checkpoint
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.checkpoint.writer import dequantize_state_dict
from model_worker.config import load_config
from model_worker.model import DeepseekV4
from model_worker.numerics import REFERENCE
from training.batches import Batches, used_ids
from training.forward import next_token_loss, training_forward
from training.muon import optimizers
from training.plots import plot_run
from training.qat import QuantizationAware
from training.routing import Routing
from training.vocab import VocabSubset
from training.warmup import SparseWarmup

CHECKPOINT = "checkpoint.pt"


@dataclass
class Settings:
    out: Path
    config: str = "agent-small"
    seed: int = 0
    steps: int = 1000
    rows: int = 4
    # (until this step, row length): the length schedule
    lengths: list[tuple[int, int]] = field(default_factory=lambda: [(10**9, 512)])
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    mtp_weight: float = 0.3
    sparse_from: int = 0  # the sparse warm-up: dense attention and indexer distillation before this step
    distill_weight: float = 1.0
    qat: bool = True  # quantization-aware training in the served formats (qat.py); False: quantize after training
    routing_delay: int = 1  # anticipatory routing: select experts with the router of this many steps ago
    checkpoint_minutes: float = 10.0
    vocab_sample: int = 200  # traces per family that decide the vocabulary subset
    max_steps_this_call: int | None = None  # stop early (tests; a time-boxed session), to be resumed
    init: str | None = None  # start from this model directory (an exported earlier stage), not from random weights


def build(settings: Settings, weights: dict[str, torch.Tensor] | None = None) -> tuple[DeepseekV4, VocabSubset]:
    """The run's compact model (vocab.py) with `weights` (a checkpoint's full-vocabulary ones) or else its initial
    ones (random, or the `init` model's), and its vocabulary: the ids of a data sample, plus the rows the `init`
    model trained."""
    config = load_config(settings.config)
    torch.manual_seed(settings.seed)
    model = DeepseekV4(config, quantized=False, numerics=REFERENCE)
    used = used_ids(settings.seed, settings.vocab_sample)
    if settings.init is None:
        initial = random_state_dict(model, settings.seed, torch.float32)
    else:
        initial = _exported_weights(Path(settings.init), config)
        used |= set(initial["embed.weight"].abs().sum(dim=1).nonzero()[:, 0].tolist())
    model.load_state_dict(initial if weights is None else weights, assign=True, strict=True)
    vocab = VocabSubset(used, config.vocab_size)
    vocab.compact(model)
    return model, vocab


def _exported_weights(path: Path, config) -> dict[str, torch.Tensor]:
    """An exported model's weights as float32 masters: exactly the values its checkpoint holds."""
    loaded, info = load_checkpoint(path, numerics=REFERENCE, fingerprint=False)
    if info.config != config:
        raise ValueError(f"{path} holds a model of another config than the run's")
    return {name: tensor.float() if tensor.is_floating_point() else tensor
            for name, tensor in dequantize_state_dict(loaded.state_dict()).items()}


def learning_rate(settings: Settings, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def row_length(settings: Settings, step: int) -> int:
    return next(length for until, length in settings.lengths if step < until)


def train(settings: Settings) -> dict:
    """Run (or resume) to `settings.steps`; deterministic: torch's deterministic algorithms are on while it runs
    (the CPU's parallel scatter-adds, in the embedding's and the experts' backward, otherwise sum in any order)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(settings)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(settings: Settings) -> dict:
    settings.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    checkpoint = settings.out / CHECKPOINT
    saved = torch.load(checkpoint, weights_only=False) if checkpoint.exists() else None
    if saved is not None and (saved["settings"]["seed"] != settings.seed
                              or saved["settings"]["config"] != settings.config):
        raise ValueError(f"{checkpoint} belongs to another run (seed or config differ)")
    model, vocab = build(settings, None if saved is None else saved["model"])
    muon, adamw = optimizers(model, settings.lr, settings.weight_decay)
    routing = Routing(model, settings.routing_delay)
    sparse_warmup = SparseWarmup(model)
    qat = QuantizationAware(model) if settings.qat else None
    step, tokens_seen = 0, 0
    if saved is not None:
        muon.load_state_dict(saved["muon"])
        adamw.load_state_dict(saved["adamw"])
        routing.load_state_dict(saved["routing"])
        step, tokens_seen = saved["step"], saved["tokens"]
        _truncate_log(settings.out / "log.jsonl", step)
    batches = Batches(settings.seed, vocab)
    last_save, started, ran = time.monotonic(), time.monotonic(), 0
    with (settings.out / "log.jsonl").open("a") as log:
        while step < settings.steps and (settings.max_steps_this_call is None or ran < settings.max_steps_this_call):
            batch = batches.batch(step, settings.rows, row_length(settings, step))
            for optimizer in (muon, adamw):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(settings, step)
            routing.before_step()
            sparse_warmup.set_dense(step < settings.sparse_from)
            with qat.rounded() if qat is not None else nullcontext():
                columns = vocab.columns(batch.token_ids)
                logits, mtp_logits = training_forward(model, columns)
                losses = {"main": next_token_loss(logits, columns, batch.loss_mask, vocab),
                          "balance": routing.balance_loss(settings.rows)}
                if mtp_logits is not None:  # the MTP layer's next-next-token loss, weighted as DeepSeek-V3 did
                    losses["mtp"] = settings.mtp_weight * next_token_loss(mtp_logits, columns, batch.loss_mask, vocab,
                                                                          ahead=2)
                if (distill := sparse_warmup.loss()) is not None:
                    losses["indexer_kl"] = settings.distill_weight * distill
                loss = sum(losses.values())
                muon.zero_grad(set_to_none=True)
                adamw.zero_grad(set_to_none=True)
                loss.backward()
            muon.step()
            adamw.step()
            routing.after_step()
            step, ran = step + 1, ran + 1
            tokens_seen += batch.token_ids.numel()
            log.write(json.dumps({"step": step, "loss": round(float(loss.detach()), 5), "tokens": tokens_seen,
                                  "lr": learning_rate(settings, step - 1),
                                  **{k: round(float(v.detach()), 5) for k, v in losses.items()}}) + "\n")
            log.flush()
            _progress(step, settings.steps, float(loss.detach()), tokens_seen, ran, time.monotonic() - started)
            if time.monotonic() - last_save >= settings.checkpoint_minutes * 60:
                _save(checkpoint, settings, vocab, model, muon, adamw, routing, step, tokens_seen)
                plot_run(settings.out)
                last_save = time.monotonic()
    _save(checkpoint, settings, vocab, model, muon, adamw, routing, step, tokens_seen)
    plot_run(settings.out)
    return {"step": step, "tokens": tokens_seen}


def _truncate_log(log: Path, step: int) -> None:
    """Drop the lines of steps after the checkpoint (a run killed between saves logged steps it will run again)."""
    if log.exists():
        kept = [line for line in log.read_text().splitlines(keepends=True) if json.loads(line)["step"] <= step]
        log.write_text("".join(kept))


def _save(path: Path, settings: Settings, vocab: VocabSubset, model, muon, adamw, routing: Routing, step: int,
          tokens: int) -> None:
    """Atomically (a run killed while saving resumes from the previous checkpoint); the model's weights as the full
    vocabulary's, with the vocabulary it trained."""
    partial = path.with_suffix(".partial")
    torch.save({"settings": {**asdict(settings), "out": str(settings.out)}, "model": vocab.full_state_dict(model),
                "vocabulary": vocab.ids.tolist(),
                "muon": muon.state_dict(), "adamw": adamw.state_dict(), "routing": routing.state_dict(),
                "step": step, "tokens": tokens}, partial)
    os.replace(partial, path)


def _progress(step: int, steps: int, loss: float, tokens: int, ran: int, seconds: float) -> None:
    done = step / steps
    bar = "#" * int(30 * done)
    rate = ran / seconds if seconds else 0.0
    eta = (steps - step) / rate if rate else float("inf")
    print(f"\r[{bar:<30}] step {step}/{steps} loss {loss:.4f} tokens {tokens:,} "
          f"{rate:.2f} steps/s eta {eta / 60:.1f} min", end="" if step < steps else "\n", file=sys.stderr, flush=True)
