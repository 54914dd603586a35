"""MoLE through the real Trainer: spaCy graphs of RTE, annealing, prune-then-retrain, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from mole_lightning.errors import ConfigError
from mole_lightning.methods.mole.callbacks import (
    PruneExperts,
    TemperatureAnnealing,
    annealed_temperature,
)
from mole_lightning.models.glue_module import GlueModule
from mole_lightning.train import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    fit_model,
    train,
)
from tests.conftest import compose, fast_run_overrides


def mole_overrides(
    glue_dir: Path, backbone: str, max_steps: int, after: int, *extra: str
) -> list[str]:
    base = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "mole", backbone)
        if not o.startswith(("trainer.max_epochs", "+trainer.limit_train_batches"))
    ]
    return [
        *base,
        "parser=spacy",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={max_steps}",
        "+trainer.limit_train_batches=100",
        f"method.prune.after_steps={after}",
        "validate_best=false",
        *extra,
    ]


def trainer_maker(cfg):
    """``make_trainer`` for ``fit_model``: the run's callbacks, no loggers."""
    return lambda **limits: build_trainer(cfg, build_callbacks(cfg), [], **limits)


def test_annealed_temperature_schedules() -> None:
    assert annealed_temperature(0, 1.0, 0.1, 10, "linear") == 1.0
    assert annealed_temperature(5, 1.0, 0.1, 10, "linear") == pytest.approx(0.55)
    assert annealed_temperature(5, 1.0, 0.1, 10, "exponential") == pytest.approx(math.sqrt(0.1))
    assert annealed_temperature(10, 1.0, 0.1, 10, "exponential") == pytest.approx(0.1)
    assert annealed_temperature(50, 1.0, 0.1, 10, "linear") == pytest.approx(0.1)
    assert annealed_temperature(7, 2.0, 0.1, 10, "constant") == 2.0
    with pytest.raises(ConfigError, match="valid: constant, linear, exponential"):
        TemperatureAnnealing(1.0, 0.1, 10, "cosine")
    with pytest.raises(ConfigError, match="retrain"):
        PruneExperts(10, retrain="later")


def test_prune_then_retrain_on_real_graphs(glue_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """MiniLM + spaCy graphs of RTE: prune at exactly step 3 to the argmax expert of every
    layer, keep training, export the tables, and reload to the same predictions."""
    cfg = compose(mole_overrides(glue_dir, "minilm", 6, 3, "logger=none"), tmp_path, cache_dir)
    model = build_module(cfg)
    dm = build_datamodule(cfg, model)
    assert dm.graph_kinds == ["syntactic", "semantic", "sequential"]
    before = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone_before = {k: v.clone() for k, v in model.encoder.backbone.state_dict().items()}
    trainer = fit_model(cfg, model, dm, trainer_maker(cfg))
    assert trainer.global_step == 6

    structure = json.loads((tmp_path / "mole_structure.json").read_text())
    assert structure["pruned_at_step"] == 3
    at_prune = json.loads((tmp_path / "mole_importance_at_prune.json").read_text())
    argmax = [
        at_prune["columns"][max(range(len(row)), key=lambda j: (row[j], -j))]
        for row in at_prune["values"]
    ]
    assert structure["structure"] == [[name] for name in argmax]
    assert model.encoder.parts["mole"].structure == structure["structure"]
    for stem in ("mole_importance", "mole_importance_at_prune"):
        for suffix in ("json", "csv", "png"):
            assert (tmp_path / f"{stem}.{suffix}").stat().st_size > 0
    final = json.loads((tmp_path / "mole_importance.json").read_text())
    assert all(sum(v is not None for v in row) == 1 for row in final["values"])

    # removed experts: no parameters, no optimizer state; the backbone never moved
    after = {n for n, p in model.named_parameters() if p.requires_grad}
    assert after < before and not any(".gate." in n for n in after)
    params = {id(p) for p in model.parameters() if p.requires_grad}
    optimizer = trainer.optimizers[0]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == params
    assert {id(p) for p in optimizer.state} <= params
    assert all(
        torch.equal(v, model.encoder.backbone.state_dict()[k]) for k, v in backbone_before.items()
    )

    # the checkpoint holds the pruned structure and reloads to the same predictions
    ckpt_path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["method_structure"]["mole"] == structure["structure"]
    reloaded = GlueModule.load_from_checkpoint(ckpt_path).eval()
    assert reloaded.encoder.parts["mole"].structure == structure["structure"]
    batch = next(iter(dm.val_dataloader()[0]))
    with torch.no_grad():
        assert torch.allclose(reloaded(batch), model.eval()(batch), atol=1e-5)


def test_cli_run_logs_temperature_and_resumes_without_pruning_twice(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    train(
        compose(
            mole_overrides(glue_dir, "tiny-bert", 4, 2, "method.prune.retrain=scratch"),
            first,
            cache_dir,
        )
    )
    log = pd.read_csv(first / "csv" / "metrics.csv")
    temps = log.dropna(subset=["mole/temperature"]).set_index("step")["mole/temperature"]
    for step, value in temps.items():
        assert value == pytest.approx(
            annealed_temperature(int(step), 1.0, 0.1, 2, "exponential"), rel=1e-5
        )
    assert {"mole/gate/layer0/mlp", "mole/gate_logit/layer0/mlp", "val/acc"} <= set(log.columns)
    entropy = log.dropna(subset=["mole/importance_entropy/layer0"])
    assert len(entropy) >= 1 and entropy["step"].max() <= 1  # gates are gone after the prune
    assert entropy["mole/importance_entropy/layer0"].between(0, math.log(4) + 1e-6).all()
    assert log.dropna(subset=["mole/gate/layer0/mlp"])["step"].max() <= 1
    pruned = json.loads((first / "mole_structure.json").read_text())
    assert pruned["pruned_at_step"] == 2

    resumed = tmp_path / "resumed"
    metrics = train(
        compose(
            mole_overrides(
                glue_dir, "tiny-bert", 6, 2, "method.prune.retrain=scratch", f"ckpt_path={first}"
            ),
            resumed,
            cache_dir,
        )
    )
    assert metrics["global_step"] == 6
    assert not (resumed / "mole_structure.json").exists()  # no second prune
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["method_structure"]["mole"] == pruned["structure"]
    prune_state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("PruneExperts"))
    assert prune_state["pruned_at"] == 2


def test_best_checkpoint_from_before_pruning_is_not_reloaded(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Validations at steps 2, 4 and 6, pruning at step 3, and a monitor (``step``, mode
    min) that the first validation always wins: before the fix the best checkpoint was the
    exploration model of step 2, which the pruned model cannot load, and the finished run
    was recorded as failed."""
    overrides = mole_overrides(
        glue_dir,
        "tiny-bert",
        6,
        3,
        "validate_best=true",
        "trainer.val_check_interval=2",
        "callbacks.model_checkpoint.monitor=step",
        "callbacks.model_checkpoint.mode=min",
    )
    metrics = train(compose(overrides, tmp_path, cache_dir))
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["status"] == "finished"
    assert metrics["best/val/acc"] == pytest.approx(
        json.loads((tmp_path / "metrics.json").read_text())["best/val/acc"]
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best-4.ckpt",
        "last.ckpt",
    ]


def gate_groups(optimizer: torch.optim.Optimizer, model: GlueModule) -> list[dict]:
    """The optimizer's groups that hold a gate logit."""
    logits = {id(p) for n, p in model.named_parameters() if n.endswith("gate.logits")}
    return [g for g in optimizer.param_groups if any(id(p) in logits for p in g["params"])]


def test_gate_lr_puts_the_gate_logits_in_their_own_group(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """``method.gate_lr`` / ``gate_weight_decay``: one AdamW group of exactly the gate
    logits, also after a top-2 prune replaced them; without them the logits train in the
    run's decayed group (``null``; the default is 0.05 without decay since issue 31)."""
    extra = ("logger=none", "method.prune.top_k=2", "optim.lr=1e-3", "optim.weight_decay=0.01")
    cfg = compose(
        mole_overrides(
            glue_dir, "tiny-bert", 4, 2, *extra, "method.gate_lr=0.05", "method.gate_weight_decay=0"
        ),
        tmp_path / "own",
        cache_dir,
    )
    model = build_module(cfg)
    trainer = fit_model(cfg, model, build_datamodule(cfg, model), trainer_maker(cfg))
    assert (
        model.encoder.parts["mole"].structure[0]
        and len(model.encoder.parts["mole"].structure[0]) == 2
    )
    (group,) = gate_groups(trainer.optimizers[0], model)
    logits = [p for n, p in model.named_parameters() if n.endswith("gate.logits")]
    assert len(logits) == len(model.encoder.parts["mole"].layers)
    assert {id(p) for p in group["params"]} == {id(p) for p in logits}
    assert group["initial_lr"] == 0.05 and group["weight_decay"] == 0.0

    default = compose(mole_overrides(glue_dir, "tiny-bert", 1, 2), tmp_path / "d", cache_dir)
    assert (default.method.gate_lr, default.method.gate_weight_decay) == (0.05, 0.0)
    cfg = compose(
        mole_overrides(
            glue_dir,
            "tiny-bert",
            1,
            2,
            *extra,
            "method.gate_lr=null",
            "method.gate_weight_decay=null",
        ),
        tmp_path / "run",
        cache_dir,
    )
    model = build_module(cfg)
    trainer = fit_model(cfg, model, build_datamodule(cfg, model), trainer_maker(cfg))
    (group,) = gate_groups(trainer.optimizers[0], model)
    assert group["initial_lr"] == 1e-3 and group["weight_decay"] == 0.01
    assert len(group["params"]) > len(model.encoder.parts["mole"].layers)  # shared with experts
