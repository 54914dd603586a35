"""Final metrics and checkpoints belong to the last step (issue 15, defect 4).

tiny-bert on real RTE through the real Trainer: validation every 4 steps, training ended
by ``max_steps`` between two validations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from pytorch_lightning.callbacks import Callback

from mole_lightning.train import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    train,
)
from tests.conftest import compose, fast_run_overrides


def overrides(glue_dir: Path, *extra: str) -> list[str]:
    base = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")
        if not o.startswith(("trainer.max_epochs", "+trainer.limit_train_batches"))
    ]
    return [
        *base,
        "trainer.max_epochs=-1",
        "+trainer.limit_train_batches=100",
        "trainer.val_check_interval=4",
        *extra,
    ]


def test_max_steps_between_validations_validates_and_saves_the_last_step(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = compose(
        overrides(glue_dir, "trainer.max_steps=6", "validate_best=false"), tmp_path, cache_dir
    )
    metrics = train(cfg)
    assert metrics["global_step"] == 6
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    validated = logged.dropna(subset=["val/acc"])
    assert validated["step"].tolist() == [3, 5]  # CSV steps are 0-based: global steps 4 and 6
    assert metrics["val/acc"] == validated["val/acc"].iloc[-1]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6
    best = json.loads((tmp_path / "metrics.json").read_text())
    assert best["val/acc"] == metrics["val/acc"]


def test_step_checkpoints_carry_no_score_and_start_before_the_first_validation(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """``every_n_train_steps=3``: ``last.ckpt`` exists after step 3 (before the first
    validation, at step 4: step 3 needed no validation, so its save became ``last.ckpt``
    when step 4 began), and the best checkpoint is one of the validated steps, never
    step 3 (whose weights were not scored)."""
    cfg = compose(
        overrides(
            glue_dir,
            "trainer.max_steps=6",
            "callbacks.model_checkpoint.every_n_train_steps=3",
            "callbacks.model_checkpoint.save_top_k=-1",
            "logger=none",
        ),
        tmp_path,
        cache_dir,
    )

    class Probe(Callback):
        seen: dict[int, list[str]] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            folder = tmp_path / "checkpoints"
            names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            self.seen[trainer.global_step] = names

    model = build_module(cfg)
    trainer = build_trainer(cfg, [*build_callbacks(cfg), Probe()], [])
    trainer.fit(model, datamodule=build_datamodule(cfg, model))
    assert Probe.seen[3] == [] and Probe.seen[4] == ["last.ckpt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best-4.ckpt",
        "best-6.ckpt",
        "last.ckpt",
    ]
    assert (
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    )


def test_last_checkpoint_names_the_best_checkpoint_that_exists(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Epoch-end validations, each better than the last (``monitor=step, mode=max``): the
    best checkpoint moves from step 2 to step 4 and the step-2 file is deleted. The
    ``last.ckpt`` written at step 4 must record the new best, or a run resumed from it
    would later reload a file that no longer exists."""
    base = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")
        if not o.startswith(("trainer.max_epochs", "+trainer.limit_train_batches"))
    ]
    cfg = compose(
        [
            *base,
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            "callbacks.model_checkpoint.monitor=step",
            "callbacks.model_checkpoint.mode=max",
            "validate_best=false",
        ],
        tmp_path,
        cache_dir,
    )
    train(cfg)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-4.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert Path(state["best_model_path"]) == folder / "best-4.ckpt"
    assert all(Path(path).is_file() for path in state["best_k_models"])
