"""MoLE's phases as the authors run them: the pruning rules against a plain reference, and
a retrain phase with its own epochs, batch size and schedule through the real Trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import Callback
from transformers import AutoModel, BertConfig

from mole_lightning.errors import ConfigError
from mole_lightning.methods.mole import MoleAdapters, MoleConfig
from mole_lightning.methods.mole.callbacks import PruneExperts, RetrainPhase
from mole_lightning.models.optim import build_optimizer
from mole_lightning.train import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    fit_model,
)
from tests.conftest import compose, fast_run_overrides
from tests.test_mole_model import tiny_backbone

EXPERTS = ["semantic", "syntactic", "sequential", "mlp"]
GRAPH = ("semantic", "syntactic", "sequential")


def reference_graph_layers(logits: list[list[float]], graph_layers: int) -> list[list[str]]:
    """``prune.rule=graph_layers_softmax`` from its description: per layer the most
    probable graph expert (softmax of the logits; ties to the earlier expert); graph experts
    in the ``graph_layers`` layers where that probability is highest (ties to the earlier
    layer), the MLP expert everywhere else."""
    best = []
    for row in logits:
        probs = [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
        name = max(
            (n for n in EXPERTS if n in GRAPH),
            key=lambda n: (probs[EXPERTS.index(n)], -EXPERTS.index(n)),
        )
        best.append((probs[EXPERTS.index(name)], name))
    order = sorted(range(len(best)), key=lambda i: (-best[i][0], i))[:graph_layers]
    return [[best[i][1]] if i in order else ["mlp"] for i in range(len(best))]


def authors_graph_layers(logits: list[list[float]], graph_layers: int) -> list[list[str]]:
    """The authors' rule (``prune.rule=graph_layers``) in numpy, from its description: a
    float32 softmax of ``logits / 0.001`` per layer; a layer's score is its best graph
    expert's value (``np.argmax``: the first on ties), the layers' scores go through
    numpy's stable ascending argsort and the LAST ``graph_layers`` layers keep their graph
    expert, the others the MLP expert."""
    table = np.asarray(logits, dtype=np.float32) / np.float32(0.001)
    exp = np.exp(table - table.max(axis=1, keepdims=True))
    probs = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    graph = [EXPERTS.index(n) for n in GRAPH]
    best = probs[:, graph].argmax(axis=1)
    scores = probs[:, graph][np.arange(len(logits)), best]
    order = np.argsort(scores, kind="stable")
    kept = set(order[len(logits) - graph_layers :].tolist()) if graph_layers else set()
    return [[GRAPH[best[i]]] if i in kept else ["mlp"] for i in range(len(logits))]


def adapters_with_logits(logits: list[list[float]]) -> MoleAdapters:
    if len(logits) == 2:
        backbone = tiny_backbone("bert")
    else:
        config = BertConfig(
            vocab_size=100,
            hidden_size=16,
            num_hidden_layers=len(logits),
            num_attention_heads=2,
            intermediate_size=20,
        )
        backbone = AutoModel.from_config(config).eval()
    adapters = MoleAdapters.attach(backbone, MoleConfig(experts=EXPERTS, bottleneck=4))
    with torch.no_grad():
        for layer, row in zip(adapters.layers, logits, strict=True):
            layer.gate.logits.copy_(torch.tensor(row))
    return adapters


@pytest.mark.parametrize(
    "logits",
    [
        [[0.1, 2.0, 0.3, 3.0], [1.5, 0.1, 0.2, 0.0]],  # layer 1's graph expert is surer
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],  # all tied: earliest expert and layer
        [[0.2, 0.9, 0.9, 0.1], [0.0, 0.0, 2.0, 5.0]],
    ],
)
@pytest.mark.parametrize("graph_layers", [0, 1, 2])
def test_graph_layers_softmax_rule_picks_the_reference_structure(logits, graph_layers) -> None:
    adapters = adapters_with_logits(logits)
    expected = reference_graph_layers(logits, graph_layers)
    assert (
        adapters.prune_to_graph_layers(graph_layers, ranking="softmax")
        == expected
        == adapters.structure
    )


AUTHORS_TABLES = {
    # graph experts win layers 0, 1 and 3 by far: all three saturate at 1.0, the later
    # layers keep them (the softmax ranking keeps layer 0, the surest)
    "saturated winners": [
        [3.0, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 2.0],
        [0.0, 0.0, 0.3, 0.0],
    ],
    # one graph winner; the MLP wins the others by so much that every graph expert
    # underflows to 0: ties at 0 go to the later layer and to its first graph expert
    "underflow ties": [
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.2, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.1, 0.0, 1.0],
    ],
    # near-ties inside a layer keep a score below 1 (0.5 for an exact graph-graph tie,
    # ~0.58 for a 0.001 margin over two rivals), so a saturated layer outranks them;
    # exact ties within a layer go to the earlier graph expert
    "unsaturated": [
        [0.0, 0.001, 0.0, -1.0],
        [0.4, 0.4, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.2, 0.0, 0.0, 0.0],
    ],
    "all tied": [[0.0, 0.0, 0.0, 0.0]] * 4,
    # ~N(0, 0.05^2) logits, the issue's small-logit regime
    "random": np.random.default_rng(3).normal(0, 0.05, (6, 4)).round(4).tolist(),
}


@pytest.mark.parametrize("name", list(AUTHORS_TABLES))
@pytest.mark.parametrize("graph_layers", [0, 1, 2, 3])
def test_graph_layers_rule_is_the_authors_ranking(name, graph_layers) -> None:
    logits = AUTHORS_TABLES[name]
    adapters = adapters_with_logits(logits)
    expected = authors_graph_layers(logits, graph_layers)
    assert adapters.prune_to_graph_layers(graph_layers) == expected == adapters.structure


def test_the_two_rankings_differ_where_the_issue_says() -> None:
    """Saturated winners: the authors keep the later layers, the softmax rule the surest."""
    logits = AUTHORS_TABLES["saturated winners"]
    authors = adapters_with_logits(logits).prune_to_graph_layers(2, ranking="authors")
    softmax = adapters_with_logits(logits).prune_to_graph_layers(2, ranking="softmax")
    assert authors == [["mlp"], ["syntactic"], ["mlp"], ["sequential"]]
    assert softmax == [["semantic"], ["syntactic"], ["mlp"], ["mlp"]]
    underflow = adapters_with_logits(AUTHORS_TABLES["underflow ties"]).prune_to_graph_layers(2)
    assert underflow == [["mlp"], ["syntactic"], ["mlp"], ["mlp"], ["semantic"]]


def test_per_layer_rule_is_the_papers_top1() -> None:
    logits = [[0.1, 2.0, 0.3, 3.0], [1.5, 0.1, 0.2, 0.0]]
    assert adapters_with_logits(logits).prune(1) == [["mlp"], ["semantic"]]


def test_graph_layers_rule_needs_mlp_and_graph_experts() -> None:
    backbone = tiny_backbone("bert")
    adapters = MoleAdapters.attach(backbone, MoleConfig(experts=["syntactic", "semantic"]))
    with pytest.raises(ConfigError, match="graph_layers needs the mlp expert"):
        adapters.prune_to_graph_layers(1)
    with pytest.raises(ConfigError, match=r"graph_layers=3 must be in \[0, 2\]"):
        adapters.prune_to_graph_layers(3)
    with pytest.raises(ConfigError, match="ranking 'best'"):
        adapters.prune_to_graph_layers(1, ranking="best")


class StepRecorder(Callback):
    """Per optimizer step: global step, epoch, learning rate, batch size."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, float, int]] = []
        self.batch_size = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_size = len(batch["labels"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        lr = optimizer.param_groups[0]["lr"]
        self.rows.append((trainer.global_step, trainer.current_epoch, lr, self.batch_size))


def test_paper_preset_runs_its_own_retrain_phase(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, caplog
) -> None:
    """Exploration: 2 steps at a constant lr, batch 8; prune (top-1, fresh model); the rest
    of that epoch is skipped; retrain: 2 full epochs of 3 batches of 4, lr decaying
    linearly from lr to 0 over those 6 steps, no warmup; then the run ends."""
    overrides = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "mole", "tiny-bert")
        if not o.startswith(("trainer.max_epochs", "data.batch_size", "method="))
    ]
    lr = 3e-4
    cfg = compose(
        [
            "experiment=mole_paper",
            *overrides,
            "parser=spacy",
            "data.max_length=64",
            "data.batch_size=8",
            f"optim.lr={lr}",
            "method.prune.after_steps=2",
            "method.prune.retrain_phase.epochs=2",
            "method.prune.retrain_phase.batch_size=4",
            "validate_best=false",
            "logger=none",
        ],
        tmp_path,
        cache_dir,
    )
    model = build_module(cfg)
    datamodule = build_datamodule(cfg, model)
    recorder = StepRecorder()
    with caplog.at_level("INFO"):
        trainer = fit_model(
            cfg,
            model,
            datamodule,
            lambda **limits: build_trainer(cfg, [*build_callbacks(cfg), recorder], [], **limits),
        )

    decay = [lr * (6 - k) / 6 for k in range(6)]
    expected = [(0, 0, lr, 8), (1, 0, lr, 8)]
    expected += [(2 + k, 1 + k // 3, decay[k], 4) for k in range(6)]
    assert [(s, e, pytest.approx(v, rel=1e-6), b) for s, e, v, b in recorder.rows] == expected
    assert trainer.global_step == 8 and trainer.current_epoch == 3
    structure = json.loads((tmp_path / "mole_structure.json").read_text())
    assert structure["pruned_at_step"] == 2 and structure["rule"] == "per_layer"
    assert all(len(layer) == 1 for layer in structure["structure"])
    log = caplog.text
    assert "MoLE exploration phase: 2 steps" in log
    assert "MoLE retrain phase from step 2 (epoch 1): 2 epochs of 3 batches of 4 = 6 steps" in log
    assert "exploration ran 2 steps; retrain ran 6 steps = 2.00 epochs" in log
    for name in ("mole_importance_at_prune.png", "mole_importance.png"):
        assert (tmp_path / name).stat().st_size > 0
    # a resumed run finds the phase in the checkpoint (its epochs, batch size, schedule)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("PruneExperts"))
    assert state == {"pruned_at": 2, "phase_start": {"epoch": 1, "step": 2}}
    assert ckpt["lr_schedule"] == {
        "start": 2,
        "fresh": True,
        "steps": 6,
        "optim": {"schedule": "linear", "warmup_ratio": 0.0, "warmup_steps": None},
    }


def test_bad_phase_and_schedule_options_name_the_option() -> None:
    with pytest.raises(ConfigError, match="prune.rule='top'"):
        PruneExperts(10, rule="top")
    with pytest.raises(ConfigError, match="prune.retrain_phase.epochs=0"):
        RetrainPhase(epochs=0)
    with pytest.raises(ConfigError, match="optim.schedule='cosine'"):
        build_optimizer(
            torch.nn.Linear(2, 2), {"lr": 1.0, "weight_decay": 0.0, "schedule": "cosine"}, 10
        )


def test_constant_schedule_keeps_the_lr_on_an_endless_run() -> None:
    """The preset's exploration runs with trainer.max_epochs=-1: no step count is known."""
    optimizer = build_optimizer(
        torch.nn.Linear(2, 2), {"lr": 0.5, "weight_decay": 0.0, "schedule": "constant"}, math.inf
    )
    scheduler = optimizer["lr_scheduler"]["scheduler"]
    for _ in range(5):
        optimizer["optimizer"].step()
        scheduler.step()
    assert scheduler.get_last_lr() == [0.5, 0.5]
