"""``backbone.activation_checkpointing``: the same loss and gradients in less saved memory.

Each method is built twice on a tiny random BERT with dropout on (hidden and attention
0.1), with and without checkpointing, and trained one step on the same real RTE batch
from the same seed: the checkpoint restores the RNG state when it recomputes a layer, so
the dropout masks and therefore the loss and every gradient must be equal. MoLEx's
routing hooks must not count anything twice: they run outside the checkpoint with
transformers >= 5.23, and inside it (again in the backward pass) with older ones, which
``hooks_inside_checkpoint`` reproduces.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.bert.modeling_bert import BertLayer

from mole_lightning.core.backbone_source import load_tokenizer
from mole_lightning.errors import ConfigError
from mole_lightning.models.backbone import enable_activation_checkpointing
from mole_lightning.models.glue_module import GlueModule
from mole_lightning.train import train
from tests.conftest import compose, fast_run_overrides

MOLEX_ROUTING = [
    "method.router_init_std=1.0",  # choices that differ between layers
    "method.balance_loss=0.01",
]
METHODS = {  # name: overrides
    "lora": ["method=lora"],
    "full": ["method=full"],
    "adapter": ["method=adapter"],
    "molex-sequence": ["method=molex", *MOLEX_ROUTING],
    "molex-authors": [
        "method=molex",
        *MOLEX_ROUTING,
        "method.routing=batch_vote",
        "method.balance_loss_type=batch_winner",
        "method.rerun_own_layer_when_chosen=true",
    ],
}


def rte_batch(glue_dir: Path, rows: int = 6) -> dict:
    """The first ``rows`` RTE training pairs, tokenized by the MiniLM tokenizer."""
    with open(glue_dir / "RTE" / "train.tsv", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        pairs = [next(reader) for _ in range(rows)]
    tokenizer = load_tokenizer(compose(["backbone=tiny-bert"]).backbone)
    batch = tokenizer(
        [p["sentence1"] for p in pairs],
        [p["sentence2"] for p in pairs],
        truncation=True,
        max_length=96,
        padding=True,
        return_tensors="pt",
    )
    labels = torch.tensor([int(p["label"] != "entailment") for p in pairs])
    return {**batch, "labels": labels}


def build(method: str, checkpointing: bool, tmp_path: Path) -> GlueModule:
    cfg = compose(
        [
            "task=rte",
            "backbone=tiny-bert",
            *METHODS[method],
            f"backbone.activation_checkpointing={checkpointing}",
        ],
        tmp_path,
    )
    torch.manual_seed(0)
    module = GlueModule(cfg.task, cfg.method, cfg.backbone, cfg.optim)
    with torch.no_grad():  # LoRA B and adapter up-projections start at zero: make them matter
        for param_name, p in module.named_parameters():
            if "lora_B" in param_name or "up" in param_name.split("."):
                p.normal_(std=0.3)
    return module.train()


def train_step(
    module: GlueModule, batch: dict
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """One training step from seed 1: ``(loss, auxiliary loss, gradients by name)``; the
    loss is the task loss plus the auxiliary loss, taken before the backward pass."""
    torch.manual_seed(1)
    logits = module(batch)
    loss = module.task_loss(logits, batch["labels"])
    aux = module.encoder.aux_loss()
    if aux is not None:
        loss = loss + aux
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), None if aux is None else aux.detach(), grads


def saved_bytes(step: Callable[[], object]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``step`` runs
    (tensors a non-reentrant checkpoint holds back are not among them)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return total


def layer_calls(module: GlueModule) -> list[int]:
    """A counter of calls of the encoder's layers, as a one-item list (a pre-hook: a
    replay inside a checkpoint may stop after the last tensor it needs, before later
    forward hooks)."""
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    for layer in module.encoder.backbone.encoder.layer:
        layer.register_forward_pre_hook(count)
    return calls


def assert_same_step(plain: GlueModule, checkpointed: GlueModule, batch: dict) -> None:
    loss, aux, grads = train_step(plain, batch)
    loss_ckpt, aux_ckpt, grads_ckpt = train_step(checkpointed, batch)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(aux_ckpt, aux, atol=1e-7, rtol=0)
    assert grads_ckpt.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_checkpointing_keeps_the_step_and_saves_memory(method, glue_dir, tmp_path) -> None:
    batch = rte_batch(glue_dir)
    plain, checkpointed = build(method, False, tmp_path), build(method, True, tmp_path)
    assert all(
        layer.gradient_checkpointing for layer in checkpointed.encoder.backbone.encoder.layer
    )
    calls = layer_calls(checkpointed)
    assert_same_step(plain, checkpointed, batch)
    assert calls[0] == 2  # hooks outside the checkpoint: one call per layer, none replayed
    if "molex" in method:
        routing = checkpointed.encoder.parts["molex"]
        assert sorted(routing._balance_terms) == routing.routed_layers
        assert routing.selection_counts.sum() == 0  # training choices are not counted

    kept = saved_bytes(lambda: train_step(plain, batch))
    kept_checkpointed = saved_bytes(lambda: train_step(checkpointed, batch))
    assert kept_checkpointed < 0.5 * kept

    checkpointed.eval()  # evaluation runs the layers as usual and counts MoLEx's choices
    with torch.no_grad():
        torch.testing.assert_close(checkpointed(batch), plain.eval()(batch))
    if "molex" in method:
        counts = checkpointed.encoder.parts["molex"].selection_counts
        assert counts.sum(dim=1).tolist() == [len(batch["labels"])] * 2


@pytest.mark.parametrize("method", ["molex-sequence", "molex-authors"])
def test_molex_hooks_replayed_inside_the_checkpoint(method, glue_dir, tmp_path, monkeypatch):
    """transformers < 5.23 checkpoint ``layer.__call__``: the routing hook runs again in
    the backward pass; it must choose the same layers and add no second balance term."""

    def call_in_checkpoint(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            return checkpoint(nn.Module.__call__, self, *args, use_reentrant=False, **kwargs)
        return nn.Module.__call__(self, *args, **kwargs)

    batch = rte_batch(glue_dir)
    plain, replayed = build(method, False, tmp_path), build(method, False, tmp_path)
    loss, aux, grads = train_step(plain, batch)
    monkeypatch.setattr(BertLayer, "__call__", call_in_checkpoint)
    calls = layer_calls(replayed)
    loss_replayed, aux_replayed, grads_replayed = train_step(replayed, batch)
    assert calls[0] == 4  # 2 layers, each replayed once in the backward pass
    torch.testing.assert_close(loss_replayed, loss, atol=1e-6, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_replayed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    routing = replayed.encoder.parts["molex"]
    assert sorted(routing._balance_terms) == routing.routed_layers
    torch.testing.assert_close(routing.aux_loss(), aux_replayed)  # replaced, not added


def test_refuses_a_model_without_checkpointing() -> None:
    class NoCheckpointing(nn.Module):
        supports_gradient_checkpointing = False

    with pytest.raises(ConfigError, match="'custom'.*does not support activation checkpointing"):
        enable_activation_checkpointing(NoCheckpointing(), "custom")


def test_molex_preset_trains_with_checkpointing(glue_dir, cache_dir, tmp_path) -> None:
    """``experiment=molex_rte`` (checkpointing on) through the real Trainer: batch 32 x 512
    on the tiny BERT, the selection heatmap written."""
    overrides = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "molex", "tiny-bert")
        if not o.startswith(("data.batch_size", "data.eval_batch_size"))
    ]
    cfg = compose(["experiment=molex_rte", *overrides, "trainer.max_steps=2"], tmp_path, cache_dir)
    assert cfg.backbone.activation_checkpointing and cfg.data.batch_size == 32
    metrics = train(cfg)
    assert "val/acc" in metrics
    assert (tmp_path / "molex_selection.png").stat().st_size > 0
    saved = OmegaConf.load(tmp_path / "resolved_config.yaml")
    assert saved.backbone.activation_checkpointing is True
