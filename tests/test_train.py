"""Real training runs: MiniLM backbone, real GLUE data, the real Lightning Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mole_lightning.train import train
from mole_lightning.utils.environment import KEY_PACKAGES
from tests.conftest import compose, fast_run_overrides
from tests.test_glue_data import write_mnli


def run(overrides: list[str], out: Path, cache: Path) -> dict:
    return train(compose(overrides, out, cache))


@pytest.mark.parametrize(
    "task,monitor",
    [("cola", "val/mcc"), ("sst2", "val/acc"), ("mrpc", "val/acc"), ("rte", "val/acc")],
)
def test_real_glue_run(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, task: str, monitor: str
) -> None:
    metrics = run(fast_run_overrides(glue_dir, task), tmp_path, cache_dir)
    assert monitor in metrics and f"best/{monitor}" in metrics
    assert -1.0 <= metrics[monitor] <= 1.0
    assert metrics["global_step"] == 3
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["status"] == "finished" and info["task"] == task
    packages = info["environment"]["packages"]
    assert set(packages) == set(KEY_PACKAGES) and packages["torch"].startswith("2.")
    assert isinstance(info["environment"]["lock_in_use"], bool)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved[monitor] == pytest.approx(metrics[monitor])
    assert (tmp_path / "resolved_config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    if task == "mrpc":
        assert "val/f1" in metrics


def test_regression_run_stsb(glue_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    metrics = run(fast_run_overrides(glue_dir, "stsb"), tmp_path, cache_dir)
    assert {"val/pearson", "val/spearman"} <= set(metrics)


def test_three_class_run_mnli_matched_and_mismatched(tmp_path: Path, cache_dir: Path) -> None:
    data = tmp_path / "glue"
    write_mnli(data / "MNLI")
    metrics = run(fast_run_overrides(data, "mnli"), tmp_path / "run", cache_dir)
    assert {"val/acc", "val/acc_mm"} <= set(metrics)


def test_failed_run_is_recorded(glue_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    """A data file that is there but malformed fails the run once started (a missing one
    is refused before: ``tests/test_offline.py``)."""
    from mole_lightning.errors import DataFileError

    data = tmp_path / "glue"
    (data / "RTE").mkdir(parents=True)
    for stem in ("train", "dev"):
        (data / "RTE" / f"{stem}.tsv").write_text("index\tsentence1\n0\tno second column\n")
    with pytest.raises(DataFileError):
        run(fast_run_overrides(data, "rte"), tmp_path, cache_dir)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["status"] == "failed" and "DataFileError" in info["error"]


def test_progress_log_lines(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``callbacks.progress_log_seconds=0``: one progress line per training step, with the
    step count, epoch, elapsed time, time left and the training loss."""
    overrides = [
        *fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert"),
        "callbacks.progress_log_seconds=0",
    ]
    with caplog.at_level("INFO", logger="mole_lightning.callbacks.progress"):
        run(overrides, tmp_path, cache_dir)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("callbacks.progress")]
    assert len(lines) == 3
    assert lines[0].startswith("train step 1/3 (33.3%) | epoch 1/1 | elapsed 0:")
    assert lines[2].startswith("train step 3/3 (100.0%) | epoch 1/1 | elapsed 0:")
    assert "~0:00:00 left | train/loss " in lines[2]
    assert all(" left | train/loss " in line for line in lines)


def test_progress_line_of_an_unbounded_run() -> None:
    """No max_steps and no max_epochs: ``estimated_stepping_batches`` is inf, so the line
    shows neither a fraction nor a time left."""
    from mole_lightning.callbacks.progress import progress_line

    line = progress_line(7, float("inf"), 0, -1, 65.0, 7, 0.5)
    assert line == "train step 7 | elapsed 0:01:05 | train/loss 0.5000"
    assert progress_line(5, 20, 1, 4, 10.0, 5, None) == (
        "train step 5/20 (25.0%) | epoch 2/4 | elapsed 0:00:10 | ~0:00:30 left"
    )
