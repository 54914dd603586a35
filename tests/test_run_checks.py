"""Small checks a run makes on its inputs (issue 15, smaller items): ``data.max_length``
bounds, tiny random backbones rebuilt identically, warnings for a MoLE run that never
prunes and for more CPU processes than cores."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mole_lightning.core.tasks import task_spec
from mole_lightning.errors import ConfigError
from mole_lightning.methods.mole.callbacks import PruneExperts
from mole_lightning.models.backbone import load_backbone
from mole_lightning.train import build_datamodule, check_cpu_devices
from tests.conftest import compose, fast_run_overrides


def test_random_init_backbone_is_the_same_whatever_the_global_seed() -> None:
    cfg = compose(["backbone=tiny-bert"]).backbone
    torch.manual_seed(1)
    first = load_backbone(cfg).state_dict()
    torch.manual_seed(2)
    second = load_backbone(cfg).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("max_length", [0, 1, 513])
def test_max_length_outside_the_backbone_positions_is_refused(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, max_length: int
) -> None:
    overrides = [*fast_run_overrides(glue_dir, "rte"), f"data.max_length={max_length}"]
    cfg = compose(overrides, tmp_path, cache_dir)
    model = SimpleNamespace(needs_graphs=False, spec=task_spec(cfg.task))
    with pytest.raises(ConfigError, match=rf"data.max_length={max_length}: .* from 2 .* to 512"):
        build_datamodule(cfg, model)


def test_mole_run_shorter_than_exploration_warns() -> None:
    prune = PruneExperts(after_steps=1000)
    trainer = SimpleNamespace(
        estimated_stepping_batches=780,
        num_training_batches=78,
        datamodule=SimpleNamespace(train_batch_size=32),
    )
    module = SimpleNamespace(hparams=SimpleNamespace(optim={"schedule": "linear"}))
    with pytest.warns(UserWarning, match="trains 780 optimizer steps.*never prune"):
        prune.on_train_start(trainer, module)
    prune.pruned_at = 1000  # a resumed run that already pruned: nothing to say
    prune.on_train_start(trainer, None)


def test_more_cpu_processes_than_cores_warns() -> None:
    with pytest.warns(UserWarning, match="trainer.devices=4096 on CPU"):
        check_cpu_devices({"accelerator": "cpu", "devices": 4096})
