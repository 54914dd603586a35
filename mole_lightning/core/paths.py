"""Where things are: the checkout, its Hydra config folder, and a run's output folder."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout's root (where ``conf/`` and ``tests/`` live)."""

CONFIG_DIR = str(REPO_ROOT / "conf")
"""The Hydra config folder every entry point composes from."""


def run_dir(trainer) -> Path:
    """The output folder of the run a Lightning ``trainer`` trains (checkpoints' parent,
    logs, exported tables)."""
    return Path(trainer.default_root_dir)
