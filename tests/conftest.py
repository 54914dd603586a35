"""Shared fixtures: offline environment, real data paths, Hydra composition of the real conf/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs one pytest worker per core (pytest-xdist): one torch thread each
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"
CLI_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
"""A command line's environment in tests: offline, one thread."""


def run_cli(args: list[str], cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``python <args>`` as a user would (a real process, offline), output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SHARED_DATA = Path(os.environ.get("MOLE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder {SHARED_DATA} missing (set MOLE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def glue_dir(shared_data: Path) -> Path:
    return shared_data / "glue_data"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenized/graph cache for the whole session (runs share it, as users' runs do)."""
    return tmp_path_factory.mktemp("cache")


def compose(overrides: list[str], output_dir: Path | None = None, cache: Path | None = None):
    """Composes conf/train.yaml with Hydra exactly as train.py does, plus test paths."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mole_lightning.models.config_store import register_conf

    register_conf()
    paths = []
    if output_dir is not None:
        paths += [f"paths.output_dir={output_dir}", f"paths.log_dir={output_dir}/logs"]
    if cache is not None:
        paths.append(f"paths.cache_dir={cache}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="train.yaml", overrides=[*overrides, *paths])


def fast_run_overrides(
    glue_dir: Path, task: str, method: str = "lora", backbone: str = "minilm"
) -> list[str]:
    """A short real run: a few train batches, a few dev batches, CSV logger, CPU."""
    return [
        f"task={task}",
        f"method={method}",
        f"backbone={backbone}",
        f"data.dir={glue_dir}",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "data.num_workers=0",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    ]
