"""What a researcher sees in a run's output: the run folder at the start and the end,
progress lines instead of progress-bar frames when stdout is not a terminal, the real
epoch count of a step-limited run, none of Lightning's and torch's non-error noise (the
litlogger tip, the LeafSpec deprecation, "Total FLOPs: 0"), real warnings kept, and
evaluate.py saying when a recorded metric came from a cut-short validation."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from mole_lightning.callbacks.progress import run_epochs
from mole_lightning.evaluation.cli import evaluate
from mole_lightning.train import train
from mole_lightning.utils.console import LIGHTNING_RANK_ZERO_LOGGER, silence_known_noise
from tests.conftest import REPO, compose, fast_run_overrides, run_cli
from tests.test_evaluate import compose_eval


def test_cli_run_to_a_file_prints_progress_lines_without_noise(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A 3-step run of a 10-epoch config (312 batches an epoch) with its output piped:
    "epoch 1/1" progress lines, the run folder twice, the model summary without FLOPs,
    and no bar frames, litlogger tip or LeafSpec warning, in the output or train.log."""
    run = run_cli(
        [
            "train.py",
            "task=rte",
            "method=lora",
            "backbone=tiny-bert",
            f"data.dir={glue_dir}",
            "data.batch_size=8",
            "data.num_workers=0",
            "trainer=cpu",
            "trainer.max_steps=3",
            "+trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0",
            "callbacks.progress_log_seconds=0",
            "logger=csv",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.cache_dir={cache_dir}",
        ],
        cwd=REPO,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    output = run.stdout + run.stderr
    log = (run_dir / "train.log").read_text()
    assert output.count(f"run folder: {run_dir}") == 2
    assert "train step 1/3 (33.3%) | epoch 1/1 | " in log
    assert "train step 3/3 (100.0%) | epoch 1/1 | " in log
    assert "stdout is not a terminal: no progress bar" in log
    assert "Trainable params" in log and "Total params" in log
    for text in (output, log):
        for noise in ("litlogger", "LeafSpec", "FLOPs", "Flops", "it/s", "━", "%|", "\r"):
            assert noise not in text, noise


def test_known_noise_is_filtered_and_real_warnings_are_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, "
            "TreeSpec) and treespec.is_leaf()` instead.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("a real deprecation", FutureWarning, stacklevel=1)
        warnings.warn("LeafSpec mentioned in a user warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "a real deprecation",
        "LeafSpec mentioned in a user warning",
    ]
    lightning = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    with caplog.at_level("INFO", logger=LIGHTNING_RANK_ZERO_LOGGER):
        lightning.info("💡 Tip: For seamless cloud logging, try installing [litlogger](x)")
        lightning.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


@pytest.mark.parametrize(
    "max_epochs,total,batches,accumulate,epoch,expected",
    [
        (10, 20, 78, 1, 0, 1),  # 20 steps of a 78-batch epoch: 1 epoch, not 10
        (10, 200, 78, 1, 1, 3),
        (10, 780, 78, 1, 4, 10),  # epoch-limited
        (10, 21, 78, 4, 0, 2),  # 21 steps, 20 optimizer steps an epoch (78 / 4, rounded up)
        (-1, 500, 100, 1, 0, 5),  # max_epochs=-1: by steps
        (3, float("inf"), float("inf"), 1, 0, 3),  # an iterable loader of unknown length
        (-1, float("inf"), 100, 1, 0, None),  # unbounded
        (10, 20, 78, 1, 2, 3),  # never below the current epoch (a longer retrain phase)
    ],
)
def test_epoch_count_of_the_progress_line(
    max_epochs, total, batches, accumulate, epoch, expected
) -> None:
    trainer = SimpleNamespace(
        max_epochs=max_epochs,
        estimated_stepping_batches=total,
        num_training_batches=batches,
        accumulate_grad_batches=accumulate,
        current_epoch=epoch,
    )
    assert run_epochs(trainer) == expected


def test_evaluate_says_when_the_recorded_metric_came_from_a_limited_validation(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The run validated 2 batches of 16 (32 of RTE's 277 dev examples); evaluate.py reads
    all 277 and says why its value is not the recorded one."""
    run_dir = tmp_path / "run"
    overrides = [*fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert"), "validate_best=false"]
    train(compose(overrides, run_dir, cache_dir))
    capsys.readouterr()
    (result,) = evaluate(
        compose_eval([f"ckpt_path={run_dir}/checkpoints/last.ckpt", "eval=[dev]", "device=cpu"])
    )
    part = "2 batch(es) of 16 = 32 of 277 examples (trainer.limit_val_batches=2)"
    assert all(row["recorded_on"] == part for row in result.rows)
    printed = capsys.readouterr().out
    assert f"note: validation: the run recorded its dev metrics on part of the split, {part}" in (
        printed
    )
    assert "'equal' is not expected to hold" in printed
    saved = json.loads((run_dir / "eval_dev.json").read_text())
    assert saved["settings"]["notes"] == result.notes


def test_evaluate_adds_no_note_after_a_full_validation(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """``limit_val_batches`` covering the whole dev set is no cut: no note."""
    run_dir = tmp_path / "run"
    overrides = [
        *[o for o in fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")],
        "+trainer.limit_val_batches=50",  # 50 x 16 > 277
        "validate_best=false",
    ]
    overrides = [o for o in overrides if o != "+trainer.limit_val_batches=2"]
    train(compose(overrides, run_dir, cache_dir))
    (result,) = evaluate(
        compose_eval([f"ckpt_path={run_dir}/checkpoints/last.ckpt", "eval=[dev]", "device=cpu"])
    )
    assert result.notes == [] and "recorded_on" not in result.rows[0]
    assert result.rows[0]["equal"] is True
