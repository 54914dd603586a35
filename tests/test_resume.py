"""Kill-and-resume (issue 15, defect 6): ``ckpt_path=<run dir>`` continues that run in its
folder with its saved config, and ends exactly where an uninterrupted run ends.

Real Trainer, real Hydra composition, real RTE data; tiny-bert (random init, dropout on),
six steps of three batches per epoch (validations at steps 3 and 6), so a run killed at
step 4 resumes in its second epoch after a validation; a checkpoint every step. A "kill"
is an exception raised at the start of a step, after the previous step's checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

import mole_lightning.callbacks.mole_phases as phases_module
import mole_lightning.train as train_module
from mole_lightning.errors import CheckpointError, ConfigError
from mole_lightning.train import train
from mole_lightning.utils.resume import resume_config
from tests.conftest import REPO, compose, fast_run_overrides


class Killed(Exception):
    pass


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed before step {self.step + 1}")


def run_overrides(glue_dir: Path, method: str, *extra: str) -> list[str]:
    base = [
        o
        for o in fast_run_overrides(glue_dir, "rte", method, "tiny-bert")
        if not o.startswith(("trainer.max_epochs", "+trainer.limit_train_batches"))
    ]
    return [
        *base,
        # max_epochs set: Lightning builds the train loader early (to estimate the steps)
        "trainer.max_epochs=10",
        "trainer.max_steps=6",
        "+trainer.limit_train_batches=3",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        *extra,
    ]


def logged_rows(run: Path) -> list[dict[str, float]]:
    """The CSV logger's rows: ``{column: value}`` without the empty cells."""
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    return [row for row in rows if set(row) != {"step"}]


def last_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def kill_and_resume(
    overrides: list[str], kill_step: int, run: Path, cache: Path, monkeypatch
) -> dict:
    real = train_module.build_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "build_callbacks", lambda cfg: [*real(cfg), KillAt(kill_step)])
        with pytest.raises(Killed):
            train(compose(overrides, run, cache))
    assert json.loads((run / "run_info.json").read_text())["status"] == "failed"
    resume = [f"ckpt_path={run}"]
    return train(resume_config(compose(resume, cache=cache), resume))


MOLE = ("parser=spacy", "method.prune.after_steps=3")
CASES = {
    "lora": ("lora", (), 4),
    "mole-killed-before-pruning": ("mole", MOLE, 2),
    "mole-killed-after-pruning": ("mole", MOLE, 5),
    "molex": ("molex", (), 4),
}
STRAIGHT: dict[str, tuple[dict, Path]] = {}  # uninterrupted runs, shared by the cases


def uninterrupted(method: str, overrides: list[str], cache: Path, tmp_path_factory) -> tuple:
    if method not in STRAIGHT:
        out = tmp_path_factory.mktemp(f"straight-{method}")
        STRAIGHT[method] = train(compose(overrides, out, cache)), out
    return STRAIGHT[method]


@pytest.mark.parametrize("case", list(CASES))
def test_kill_and_resume_ends_as_the_uninterrupted_run(
    case: str, glue_dir: Path, cache_dir: Path, tmp_path: Path, tmp_path_factory, monkeypatch
) -> None:
    method, extra, kill_step = CASES[case]
    overrides = run_overrides(glue_dir, method, *extra)
    straight, straight_dir = uninterrupted(method, overrides, cache_dir, tmp_path_factory)
    run = tmp_path / "killed"
    resumed = kill_and_resume(overrides, kill_step, run, cache_dir, monkeypatch)

    assert straight["global_step"] == 6
    # metrics.csv holds the whole run: the rows logged before the kill, then the rest
    assert_ends_alike(resumed, run, straight, straight_dir)
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "finished" and info["resumes"][0]["previous_status"] == "failed"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best/val/acc"] == pytest.approx(straight["best/val/acc"])
    if method == "mole":
        structure = json.loads((run / "mole_structure.json").read_text())
        assert structure["pruned_at_step"] == 3


def assert_ends_alike(resumed: dict, run: Path, straight: dict, straight_dir: Path) -> None:
    """Same final metrics, weights and ``metrics.csv`` rows as the uninterrupted run."""
    assert resumed["global_step"] == straight["global_step"]
    for key in ("val/loss", "val/acc", "best/val/loss", "best/val/acc"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
    ours, theirs = last_state(run), last_state(straight_dir)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6), name
    ours_rows, theirs_rows = logged_rows(run), logged_rows(straight_dir)
    assert [sorted(row) for row in ours_rows] == [sorted(row) for row in theirs_rows]
    for mine, reference in zip(ours_rows, theirs_rows, strict=True):
        assert mine == pytest.approx(reference, abs=1e-6)


def test_a_retrain_phase_killed_in_it_or_between_the_phases_resumes_alike(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """MoLE with its own retrain phase (batch 4, 1 epoch) after 3 steps of 4-batch
    epochs: the rest of the pruning epoch is skipped. Killed in the retrain phase, or
    after the exploration's fit and before the prune was saved, the resumed run ends as
    the uninterrupted one."""

    overrides = run_overrides(
        glue_dir,
        "mole",
        *MOLE,
        "trainer.limit_train_batches=4",
        "method.prune.retrain_phase.epochs=1",
        "method.prune.retrain_phase.batch_size=4",
    )
    straight_dir = tmp_path / "straight"
    straight = train(compose(overrides, straight_dir, cache_dir))
    assert straight["global_step"] == 6
    assert json.loads((straight_dir / "mole_structure.json").read_text())["pruned_at_step"] == 3

    run = tmp_path / "killed-in-retrain"
    resumed = kill_and_resume(overrides, 5, run, cache_dir, monkeypatch)
    assert_ends_alike(resumed, run, straight, straight_dir)

    def killed(*args, **kwargs):
        raise Killed("killed before the prune was saved")

    run = tmp_path / "killed-between"
    with monkeypatch.context() as patch:
        patch.setattr(phases_module, "start_retrain", killed)
        with pytest.raises(Killed):
            train(compose(overrides, run, cache_dir))
    resume = [f"ckpt_path={run}"]
    resumed = train(resume_config(compose(resume, cache=cache_dir), resume))
    assert_ends_alike(resumed, run, straight, straight_dir)


def test_an_earlier_versions_checkpoint_between_prune_and_retrain_phase_is_refused(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The earlier version pruned at the end of a step but rebuilt the optimizer only when
    the retrain phase's first epoch began: a ``last.ckpt`` saved in between holds
    ``PruneExperts`` state ``{pruned_at: k, phase_start: None}`` with the exploration's
    optimizer state, which the pruned model cannot load. Resuming it is refused, naming
    the file and what to do; every other state of that version is one this version
    writes too (the kill cases above resume them)."""
    run = tmp_path / "run"
    phase = ("method.prune.retrain_phase.epochs=1", "trainer.max_steps=4")
    train(compose(run_overrides(glue_dir, "mole", *MOLE, *phase), run, cache_dir))
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["callbacks"]["PruneExperts"] = {"pruned_at": 3, "phase_start": None}
    torch.save(checkpoint, last)
    resume = [f"ckpt_path={run}"]
    with pytest.raises(CheckpointError) as refused:
        train(resume_config(compose(resume, cache=cache_dir), resume))
    message = str(refused.value)
    assert message.startswith(f"{last}: saved by an earlier version")
    assert "overwrite_run=true" in message and "before the prune" in message


def test_changed_overrides_are_refused_unless_allowed(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(compose(run_overrides(glue_dir, "lora", "trainer.max_steps=2"), run, cache_dir))
    changed = [f"ckpt_path={run}", "data.batch_size=16", "optim.lr=0.1", "task=rte"]
    with pytest.raises(ConfigError) as err:
        resume_config(compose(changed, cache=cache_dir), changed)
    message = str(err.value)
    assert "data.batch_size: saved 8, given 16" in message
    assert "optim.lr: saved 0.0005, given 0.1" in message
    assert "task:" not in message  # the same option as saved
    assert "resume_allow_changes=true" in message

    longer = [f"ckpt_path={run}", "trainer.max_steps=4", "resume_allow_changes=true"]
    metrics = train(resume_config(compose(longer, cache=cache_dir), longer))
    assert metrics["global_step"] == 4
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "finished" and len(info["resumes"]) == 1


def test_cli_resume_writes_into_the_run_folder(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "logs" / "train" / "runs"
    run = runs / "first"
    train(compose(run_overrides(glue_dir, "lora", "trainer.max_steps=2"), run, cache_dir))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    again = [f"ckpt_path={run}", "trainer.max_steps=3", "resume_allow_changes=true"]
    resumed = subprocess.run(
        [sys.executable, "train.py", *again], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [p.name for p in runs.iterdir()] == [run.name]  # no new folder
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 3
    log = (run / "train.log").read_text()  # Lightning's and our lines
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in log and "dev metrics:" in log
    refused = subprocess.run(
        [sys.executable, "train.py", f"ckpt_path={run}", "data.batch_size=4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "data.batch_size: saved 8, given 4" in refused.stderr


def test_resumed_run_continues_its_wandb_run(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """W&B offline (no server here): the killed attempt and the resumed one log into
    one W&B run, whose id ``run_info.json`` keeps."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = [*run_overrides(glue_dir, "lora"), "logger=wandb"]
    run = tmp_path / "killed"
    real = train_module.build_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "build_callbacks", lambda cfg: [*real(cfg), KillAt(4)])
        with pytest.raises(Killed):
            train(compose(overrides, run, cache_dir))
    wandb.finish(exit_code=1)  # what the killed process's exit does
    resume = [f"ckpt_path={run}"]
    train(resume_config(compose(resume, cache=cache_dir), resume))
    wandb.finish()
    wandb_id = json.loads((run / "run_info.json").read_text())["wandb_id"]
    attempts = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(name.endswith(f"-{wandb_id}") for name in attempts)
