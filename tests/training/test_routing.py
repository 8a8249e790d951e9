"""Router training: anticipatory routing chooses with the older router and still trains the current one; the
selection biases move toward balance; the sequence-wise balance loss reaches the router."""

from __future__ import annotations

import torch
from test_forward import CONFIG, trainable_model

from training.forward import next_token_loss, training_logits
from training.muon import optimizers
from training.routing import Routing


def test_experts_are_chosen_with_the_older_router_and_the_current_one_learns() -> None:
    model = trainable_model(6)
    optimizers(model, lr=1e-3)
    routing = Routing(model, delay=1)
    gate = routing.gates[0]
    tokens = torch.randint(3, CONFIG.vocab_size, (2, 40), generator=torch.Generator().manual_seed(5))
    routing.before_step()
    old = gate.weight.detach().clone()
    with torch.no_grad():
        gate.weight.add_(torch.randn_like(gate.weight) * 5)  # the current router now prefers other experts
    routing.before_step()  # step 2: selects with the weights of step 1
    loss = next_token_loss(training_logits(model, tokens), tokens) + routing.balance_loss(2)
    loss.backward()
    (x, ids), = routing._records[0]
    gate.selection_weight = None
    with torch.no_grad():
        current, _ = gate(x, torch.zeros(x.shape[0], dtype=torch.long))
    gate.weight.data, kept = old, gate.weight.data
    with torch.no_grad():
        older, _ = gate(x, torch.zeros(x.shape[0], dtype=torch.long))
    gate.weight.data = kept
    assert torch.equal(ids, older) and not torch.equal(ids, current)
    assert gate.weight.grad is not None and float(gate.weight.grad.abs().sum()) > 0


def test_selection_biases_move_toward_balance() -> None:
    model = trainable_model(7)
    routing = Routing(model, delay=0, bias_rate=0.01)
    tokens = torch.randint(3, CONFIG.vocab_size, (2, 64), generator=torch.Generator().manual_seed(6))
    routing.before_step()
    with torch.no_grad():
        training_logits(model, tokens)
    before = [gate.bias.clone() for gate in routing.gates]
    loads = routing.after_step()
    for gate, load, bias in zip(routing.gates, loads, before, strict=True):
        moved = gate.bias - bias
        torch.testing.assert_close(moved, 0.01 * torch.sign(load.mean() - load))
        assert bool((moved[load > load.mean()] < 0).all()) and bool((moved[load < load.mean()] > 0).all())
    routing.detach()
    assert all(gate.record is None and gate.selection_weight is None for gate in routing.gates)
