"""Gumbel-Softmax gate and the per-layer mixture of experts."""

from __future__ import annotations

import pytest
import torch

from mole_lightning.methods.mole import ExpertGate, MoleConfig, MoleContext, MoleLayer, build_expert
from mole_lightning.methods.mole.synthetic import random_word_graphs


def make_gate(num_experts=4, temperature=1.0, hard=False, eval_mode="softmax") -> ExpertGate:
    return ExpertGate(num_experts, temperature, hard, eval_mode)


def test_low_temperature_is_near_one_hot_and_high_temperature_near_uniform():
    torch.manual_seed(0)
    gate = make_gate(temperature=0.01).train()
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0.5, -0.3, 0.0, 0.2]))
    weights = gate(2000)
    assert weights.shape == (2000, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2000))
    top = weights.max(-1).values
    assert top.mean() > 0.98 and top.median() > 0.9999
    gate.temperature.fill_(100.0)
    weights = gate(2000)
    assert (weights - 0.25).abs().max() < 0.03
    assert not torch.allclose(weights[0], weights[1]), "samples must differ per example"


def test_gumbel_argmax_frequencies_follow_softmax_of_logits():
    torch.manual_seed(1)
    gate = make_gate(hard=True).train()
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([1.0, 0.0, -1.0, 0.5]))
    weights = gate(40000)
    assert torch.equal(weights.detach().sum(-1), torch.ones(40000))
    assert set(weights.detach().unique().tolist()) == {0.0, 1.0}
    frequencies = weights.detach().mean(0)
    torch.testing.assert_close(
        frequencies, torch.softmax(gate.logits.detach(), -1), atol=0.01, rtol=0
    )


def test_hard_gate_passes_the_soft_gradient():
    gate = make_gate(hard=True).train()
    target = torch.tensor([0.1, -2.0, 0.7, 1.3])
    torch.manual_seed(2)
    (gate(16) * target).sum().backward()
    hard_grad = gate.logits.grad.clone()
    gate.hard = False
    gate.logits.grad = None
    torch.manual_seed(2)
    (gate(16) * target).sum().backward()
    assert hard_grad.abs().sum() > 0
    torch.testing.assert_close(hard_grad, gate.logits.grad)


@pytest.mark.parametrize("eval_mode", ["softmax", "argmax"])
def test_eval_weights_are_deterministic(eval_mode):
    gate = make_gate(eval_mode=eval_mode).eval()
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0.3, 1.2, -0.4, 1.1]))
    first, second = gate(3), gate(3)
    assert torch.equal(first, second)
    expected = torch.softmax(gate.logits.detach(), -1)
    if eval_mode == "argmax":
        expected = torch.tensor([0.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(first, expected.expand(3, 4))
    torch.testing.assert_close(gate.importance(), torch.softmax(gate.logits, -1))


def randomised_layer(
    cfg: MoleConfig, context: MoleContext, temperature: float = 1.0, hidden: int = 12
) -> MoleLayer:
    experts = {name: build_expert(name, hidden, cfg, context) for name in cfg.experts}
    layer = MoleLayer(experts, ExpertGate(len(experts), temperature, cfg.hard, cfg.eval_mode))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    return layer


@pytest.mark.parametrize("eval_mode", ["softmax", "argmax"])
def test_layer_eval_mixes_experts_by_softmax_of_logits(eval_mode):
    cfg = MoleConfig(bottleneck=6, dropout=0.0, eval_mode=eval_mode)
    context = MoleContext("mean", "dense", 2)
    context.set_graphs(random_word_graphs(3, 11, 6, generator=torch.Generator().manual_seed(4)))
    layer = randomised_layer(cfg, context).eval()
    h = torch.randn(3, 11, 12)
    out = layer(h)
    assert torch.equal(out, layer(h))
    weights = torch.softmax(layer.gate.logits.detach(), -1)
    if eval_mode == "argmax":
        weights = torch.nn.functional.one_hot(weights.argmax(), 4).float()
    expected = sum(w * expert(h) for w, expert in zip(weights, layer.experts.values(), strict=True))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out, list(layer.experts.values())[0](h))


def test_layer_training_mixes_per_example_and_records_mean_weights():
    cfg = MoleConfig(bottleneck=6, dropout=0.0)
    context = MoleContext("first", "pyg", 2)
    context.set_graphs(
        random_word_graphs(4, 9, 5, min_words=2, generator=torch.Generator().manual_seed(5))
    )
    layer = randomised_layer(cfg, context, temperature=0.5).train()
    h = torch.randn(4, 9, 12)
    torch.manual_seed(6)
    out = layer(h)
    torch.manual_seed(6)
    weights = layer.gate(4)
    outputs = torch.stack([expert(h) for expert in layer.experts.values()], dim=1)
    torch.testing.assert_close(
        out, (weights[:, :, None, None] * outputs).sum(1), atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(layer.last_weights_mean, weights.mean(0).detach())


def test_restrict_keeps_the_chosen_logits():
    gate = make_gate()
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    gate.restrict([1, 3])
    assert torch.equal(gate.logits.detach(), torch.tensor([0.2, 0.4]))
    assert gate.logits.requires_grad


def test_per_batch_sampling_shares_one_draw_and_none_is_the_tempered_softmax():
    logits = torch.tensor([0.4, -0.2, 0.1, 0.0])
    per_batch = make_gate(temperature=0.5).train()
    per_batch.sampling = "per_batch"
    noiseless = ExpertGate(4, 0.5, False, "softmax", sampling="none").train()
    per_example = make_gate(temperature=0.5).train()
    for gate in (per_batch, noiseless, per_example):
        with torch.no_grad():
            gate.logits.copy_(logits)
    torch.manual_seed(3)
    shared = per_batch(8)
    assert torch.equal(shared, shared[:1].expand(8, -1))
    assert not torch.allclose(shared[0], torch.softmax(logits / 0.5, -1))
    torch.testing.assert_close(noiseless(8), torch.softmax(logits / 0.5, -1).expand(8, -1))
    drawn = per_example(8)
    assert not torch.allclose(drawn[0], drawn[1])
    with pytest.raises(ValueError, match="per_example, per_batch, none"):
        ExpertGate(4, 1.0, False, "softmax", sampling="per_token")


def test_gate_settings_are_checked():
    with pytest.raises(Exception, match="gate_lr=0"):
        MoleConfig(gate_lr=0.0)
    with pytest.raises(Exception, match="gate_weight_decay=-0.1"):
        MoleConfig(gate_weight_decay=-0.1)
    with pytest.raises(Exception, match="gate_sampling"):
        MoleConfig(gate_sampling="per_token")
