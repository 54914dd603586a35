"""`scripts/train_settings.py`: real short train.py runs per CPU setting, one table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow  # real runs of every setting: about 30 s
def test_settings_table_from_real_runs(glue_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "scripts/train_settings.py",
            "--task",
            "rte",
            "--backbone",
            "tiny-bert",
            "--data-dir",
            str(glue_dir),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--repeats",
            "1",
            "--variants",
            "fp32 / 2 threads / 2 workers,1 thread,length-grouped",
            "--out",
            str(tmp_path / "table.md"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [
        line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert [row.split("|")[1].strip() for row in rows[1:]] == [
        "fp32 / 2 threads / 2 workers",
        "1 thread",
        "length-grouped",
    ]
    assert rows[1].rstrip("| ").endswith("1.00x")
    for row in rows[1:]:
        samples_per_s, step_ms = float(row.split("|")[2]), float(row.split("|")[4])
        assert samples_per_s > 0 and abs(step_ms * samples_per_s / 8000 - 1) < 0.02


def test_unknown_setting_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/train_settings.py", "--variants", "fp16"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "unknown variant(s) ['fp16']" in out.stderr


def test_threads_option_sets_torch_threads(glue_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "task=rte",
            "method=lora",
            "backbone=tiny-bert",
            f"data.dir={glue_dir}",
            "trainer=cpu",
            "logger=none",
            "trainer.max_steps=1",
            "+trainer.limit_val_batches=1",
            "validate_best=false",
            "threads=1",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((run / "run_info.json").read_text())["machine"]["torch_threads"] == 1
