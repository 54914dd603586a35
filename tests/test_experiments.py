"""Paper presets compose and carry the authors' settings (DESIGN.md)."""

from __future__ import annotations

import pytest

from tests.conftest import CONF_DIR, compose

MOLEX_TABLE = {  # task: (batch per GPU, lr, epochs, router, proj, mix, balance)
    "mnli": (16, 5e-4, 30, "cosine", 416, "learned", 0.005),
    "sst2": (16, 5e-4, 60, "cosine", 128, 0.5, 0.01),
    "mrpc": (16, 4e-4, 30, "linear", None, "learned", 0.0),
    "cola": (32, 4e-4, 80, "linear", None, 0.95, 0.01),
    "qnli": (32, 4e-4, 25, "cosine", 96, "learned", 0.0),
    "qqp": (16, 5e-4, 25, "cosine", 384, "learned", 0.001),
    "rte": (32, 5e-4, 80, "linear", None, 0.5, 0.001),
    "stsb": (16, 4e-4, 40, "linear", None, 0.5, 0.001),
}


def test_every_preset_composes(tmp_path) -> None:
    presets = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert {"mole_paper", "mole_ours", *(f"molex_{t}" for t in MOLEX_TABLE)} <= set(presets)
    for name in presets:
        cfg = compose([f"experiment={name}"], tmp_path)
        assert cfg.task_name == name


@pytest.mark.parametrize("task", sorted(MOLEX_TABLE))
def test_molex_presets_match_the_authors_table(task: str, tmp_path) -> None:
    batch, lr, epochs, router, proj, mix, balance = MOLEX_TABLE[task]
    cfg = compose([f"experiment=molex_{task}"], tmp_path)
    assert (cfg.task.name, cfg.method.name, cfg.backbone.name) == (task, "molex", "roberta-base")
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.trainer.max_epochs) == (batch, lr, epochs)
    assert (cfg.method.router, cfg.method.balance_loss, cfg.method.routing) == (
        router,
        balance,
        "batch_vote",
    )
    assert (cfg.method.r, cfg.method.lora_alpha) == (8, 16)
    if proj is not None:
        assert cfg.method.router_proj_dim == proj
    assert cfg.method.learned_alpha == (mix == "learned")
    if mix != "learned":
        assert cfg.method.alpha == mix


def test_mole_paper_preset(tmp_path) -> None:
    cfg = compose(["experiment=mole_paper", "task=rte"], tmp_path)
    m = cfg.method
    assert m.name == "mole" and sorted(m.experts) == ["mlp", "semantic", "sequential", "syntactic"]
    assert (m.bottleneck, m.rgcn_layers, m.num_relations, m.mlp_scaling) == (50, 2, 2, 4.0)
    assert (m.graph_expert, m.wordless_tokens, m.message_weights) == ("direct", "identity", "label")
    assert m.later_convs_single_relation and not m.zero_init_up
    assert m.temperature.schedule == "constant" and m.temperature.start == 0.1
    assert (m.prune.after_steps, m.prune.rule, m.prune.top_k, m.prune.retrain) == (
        1000,
        "per_layer",
        1,
        "scratch",
    )
    assert dict(m.prune.retrain_phase) == {"epochs": 30, "batch_size": 16, "warmup_ratio": 0.0}
    assert m.eval_mode == "argmax"
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.weight_decay) == (1e-4, "constant", 0.0)
    assert (cfg.data.batch_size, cfg.data.max_length) == (32, 256)
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == (
        "val/loss",
        "min",
    )
