"""Hydra composition of the real conf/ tree, CLI overrides and clear errors for bad names."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from mole_lightning.core.tasks import GLUE_TASKS
from tests.conftest import CONF_DIR, REPO, compose

TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))


def test_config_groups_cover_the_design() -> None:
    assert set(GLUE_TASKS) <= set(TASKS)
    assert {"full", "lora", "adapter"} <= set(METHODS)
    assert {
        "roberta-base",
        "roberta-large",
        "bert-base-uncased",
        "deberta-v3-base",
        "minilm",
    } <= set(BACKBONES)
    for group in ("trainer", "logger", "callbacks", "paths", "parser"):
        assert list((CONF_DIR / group).glob("*.yaml")), group


@pytest.mark.parametrize("task,method", list(itertools.product(TASKS, METHODS)))
def test_every_task_method_backbone_composes(task: str, method: str, tmp_path) -> None:
    for backbone in BACKBONES:
        cfg = compose([f"task={task}", f"method={method}", f"backbone={backbone}"], tmp_path)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved["task"]["name"] == task
        assert resolved["method"]["name"] == method
        assert resolved["optim"]["lr"] == resolved["method"]["lr"]
        assert resolved["backbone"]["lora_target_modules"]
        assert resolved["callbacks"]["model_checkpoint"]["monitor"] == resolved["task"]["monitor"]


def test_cli_overrides_reach_the_config(tmp_path) -> None:
    cfg = compose(
        [
            "task=rte",
            "method=lora",
            "method.r=4",
            "optim.lr=1e-4",
            "data.max_length=256",
            "seed=0",
            "trainer=ddp",
        ],
        tmp_path,
    )
    assert cfg.method.r == 4 and cfg.optim.lr == 1e-4 and cfg.data.max_length == 256
    assert cfg.seed == 0
    assert cfg.trainer.strategy == "ddp"


def test_unknown_group_option_lists_valid_ones(tmp_path) -> None:
    with pytest.raises(MissingConfigException, match="Available options") as err:
        compose(["method=lorax"], tmp_path)
    assert "lora" in str(err.value)


def test_cfg_job_prints_composed_config() -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "task=sst2", "method=lora", "--cfg", "job"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = OmegaConf.create(out.stdout)
    assert printed.task.name == "sst2" and printed.method.name == "lora"
