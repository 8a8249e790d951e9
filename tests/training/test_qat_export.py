"""Quantization-aware training: the exported official checkpoint, loaded by the engine, gives the QAT forward's
logits; the sparse warm-up trains the indexer (and only it) to follow the attention."""

from __future__ import annotations

import json

import torch
from test_run import SMALL_AGENT

from model_worker.checkpoint.loader import load_checkpoint
from model_worker.config import CSA
from model_worker.model import ForwardBatch
from model_worker.numerics import REFERENCE
from training.__main__ import main
from training.export import stages
from training.forward import training_logits
from training.muon import optimizers
from training.qat import QuantizationAware
from training.run import CHECKPOINT, Settings, build
from training.warmup import SparseWarmup


def test_the_exported_checkpoint_gives_the_qat_forwards_logits(tmp_path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_AGENT.to_official_dict()))
    assert main(["train", "--out", str(tmp_path / "run"), "--config", str(config), "--steps", "2", "--rows", "1",
                 "--lengths", "256", "--vocab-sample", "8", "--warmup", "1", "--sparse-from", "1"]) == 0
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    model, vocab = build(Settings(out=tmp_path, config=str(config), vocab_sample=8), saved["model"])
    assert saved["vocabulary"] == vocab.ids.tolist()
    qat = QuantizationAware(model)  # also rounds the indexer's QK path through FP4
    tokens = vocab.ids[torch.randint(0, len(vocab.ids), (1, 80), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad(), qat.rounded():
        trained = training_logits(model, vocab.columns(tokens))[0]

    loaded, info = load_checkpoint(tmp_path / "model", numerics=REFERENCE)
    assert info.layout == "official" and loaded.layers[0].ffn.experts.w13.dtype == torch.uint8
    for layer in loaded.layers:
        if layer.attn.kind == CSA:
            layer.attn.indexer.fp4_qk = True  # the served QK rounding, in reference numerics
    state, streamed = loaded.new_state(), []
    with torch.no_grad():
        for first in range(0, 80, 32):
            streamed.append(loaded(ForwardBatch.single(tokens[0, first : first + 32], state, "all")).logits)
            state.commit()
    streamed = torch.cat(streamed).float()
    others = torch.ones(streamed.shape[1], dtype=torch.bool)
    others[vocab.ids] = False
    assert float(streamed[:, others].abs().max()) == 0.0  # the ids the run never used: exactly 0
    streamed = streamed[:, vocab.ids]
    torch.testing.assert_close(trained, streamed, rtol=1e-5, atol=1e-5 * float(streamed.abs().max()))
    # Rounding is not a no-op: the float masters give other logits.
    with torch.no_grad():
        assert not torch.allclose(training_logits(model, vocab.columns(tokens))[0], streamed, atol=1e-3)
    # A later stage starts from the export: its masters are the checkpoint's values, its vocabulary the same rows.
    later, later_vocab = build(Settings(out=tmp_path, config=str(config), vocab_sample=8, init=str(tmp_path / "model")))
    for name, param in later.named_parameters():
        expected = qat.round_trip(name, model.get_parameter(name).data) if name in qat.quantized else \
            model.get_parameter(name).data
        assert torch.equal(param.data, expected), name
    assert torch.equal(later_vocab.ids, build(Settings(out=tmp_path, config=str(config), vocab_sample=8))[1].ids)
    # The model's record holds what replays its batches: each stage's settings, steps and vocabulary.
    [stage] = stages(tmp_path / "model")
    assert stage["step"] == 2 and stage["vocabulary"] == vocab.ids.tolist() and stage["settings"]["rows"] == 1


def test_the_sparse_warmup_trains_the_indexer_alone_toward_the_attention(tmp_path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_AGENT.to_official_dict()))
    model, vocab = build(Settings(out=tmp_path, config=str(config), vocab_sample=8))
    optimizers(model, 1e-3)
    warmup = SparseWarmup(model)
    warmup.set_dense(True)
    indexer_params = [p for name, p in model.named_parameters() if ".indexer." in name]
    optimizer = torch.optim.Adam(indexer_params, lr=1e-2)
    tokens = torch.randint(0, len(vocab.ids), (2, 96), generator=torch.Generator().manual_seed(1))  # as columns
    losses = []
    for _ in range(8):
        training_logits(model, tokens)
        loss = warmup.loss()
        optimizer.zero_grad()
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert {n for n, p in model.named_parameters() if p.grad is not None} == \
            {n for n, p in model.named_parameters() if ".indexer." in n and p.requires_grad}
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    warmup.set_dense(False)
    training_logits(model, tokens)
    assert warmup.loss() is None  # top-k selection again: nothing recorded
