"""Cluster runs (the ``cluster`` extra): a sweep's jobs as parallel processes through
hydra-submitit-launcher (``hydra/launcher=local``), a job requeued by submitit's signal
resuming its run, the sbatch script of ``hydra/launcher=slurm``, and an Optuna study
(``hparams_search=optuna``) that a second invocation continues.

Real processes and the real Trainer on a slice of RTE with tiny-bert; only SLURM's
``sbatch`` is a stand-in (a script that keeps the job script it is given).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import submitit
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution

from mole_lightning.utils.submitit_launchers import recorded_job_id, rerun_overrides
from tests.conftest import CLI_ENV, CONF_DIR, REPO, fast_run_overrides
from tests.test_interruptions import RESULT_KEYS
from tests.test_multirun import compose_with_hydra
from tests.test_resume import logged_rows

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def tiny_run(glue_dir: Path, log_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    """A short real run of LoRA on RTE (tiny-bert): three batches per epoch, a
    validation after each, logs under ``log_dir``; ``extra`` replaces a default of the
    same key."""
    keys = {o.split("=", 1)[0] for o in extra}
    base = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")
        if o.split("=", 1)[0] not in keys
    ]
    return [*base, f"paths.log_dir={log_dir}", f"paths.cache_dir={cache_dir}", *extra]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """``python train.py <args>`` as a user starts it (a real process)."""
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=env or CLI_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pattern: str, root: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    """The first path under ``root`` matching ``pattern``, once it exists."""
    deadline = time.monotonic() + timeout
    while not (found := sorted(root.glob(pattern))):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {pattern} under {root} within {timeout} s"
        time.sleep(0.05)
    return found[0]


def job_logs(sweep: Path) -> str:
    """The end of every job's submitit log (stderr), for a failed assertion's message."""
    return "\n".join(p.read_text()[-3000:] for p in sorted(sweep.glob(".submitit/*/*_log.err")))


def child_pids(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# --- hydra/launcher=local: parallel processes, a requeued job resumes ---------------


@pytest.fixture(scope="module")
def local_sweep(glue_dir: Path, cache_dir: Path, tmp_path_factory) -> Path:
    """``python train.py -m hydra/launcher=local seed=7,7 ...``: two jobs of one config,
    each a process of its own. Job 1 gets submitit's requeue signal (USR2, what SLURM
    sends before the time limit) once it has saved its first checkpoint; job 0 runs
    uninterrupted. Returns the sweep folder."""
    logs = tmp_path_factory.mktemp("cluster") / "logs"
    run = tiny_run(
        glue_dir,
        logs,
        cache_dir,
        "trainer.max_epochs=100",
        "trainer.max_steps=30",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    )
    sweep_run = start(["-m", "hydra/launcher=local", "seed=7,7", *run])
    ckpt = wait_for("train/multiruns/*/1_rte_lora_seed7/checkpoints/last.ckpt", logs, sweep_run)
    job = ckpt.parents[1]
    controller = int(recorded_job_id(job))  # the local executor's job id: its process
    (task,) = child_pids(controller)
    assert "submitit.core._submit" in Path(f"/proc/{task}/cmdline").read_text()
    os.kill(task, signal.SIGUSR2)
    _, stderr = sweep_run.communicate(timeout=600)
    assert sweep_run.returncode == 0, stderr[-3000:] + job_logs(job.parent)
    return job.parent


def run_info(job: Path) -> dict:
    return json.loads((job / "run_info.json").read_text())


@pytest.mark.slow  # two submitit jobs, one requeued: about 45 s
def test_a_two_job_sweep_runs_as_parallel_processes_and_both_finish(local_sweep: Path) -> None:
    jobs = sorted(p for p in local_sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert [j.name for j in jobs] == ["0_rte_lora_seed7", "1_rte_lora_seed7"]
    assert [run_info(j)["status"] for j in jobs] == ["finished", "finished"]
    ids = [recorded_job_id(j) for j in jobs]
    assert ids[0] != ids[1] and all(i.isdigit() for i in ids)  # two processes
    spans = [[datetime.fromisoformat(run_info(j)[k]) for k in ("started", "ended")] for j in jobs]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # at once


@pytest.mark.slow  # the two-job sweep (module fixture): about 45 s
def test_a_requeued_job_resumes_to_the_metrics_of_an_uninterrupted_one(
    local_sweep: Path,
) -> None:
    twin, requeued = local_sweep / "0_rte_lora_seed7", local_sweep / "1_rte_lora_seed7"
    assert [r["previous_status"] for r in run_info(requeued)["resumes"]] == ["interrupted"]
    assert "resumes" not in run_info(twin)
    overrides = OmegaConf.load(requeued / ".hydra" / "overrides.yaml")
    assert f"ckpt_path='{requeued}'" in overrides  # the launcher made the rerun a resume
    reference = json.loads((twin / "metrics.json").read_text())
    metrics = json.loads((requeued / "metrics.json").read_text())
    assert metrics["global_step"] == reference["global_step"] == 30
    for key in RESULT_KEYS:
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    ours, theirs = logged_rows(requeued), logged_rows(twin)
    assert [sorted(row) for row in ours] == [sorted(row) for row in theirs]
    for mine, expected in zip(ours, theirs, strict=True):
        assert mine == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow  # the two-job sweep (module fixture): about 45 s
def test_only_a_rerun_of_the_same_job_resumes_its_folder(local_sweep: Path, tmp_path: Path) -> None:
    job = local_sweep / "0_rte_lora_seed7"
    own = recorded_job_id(job)
    given = ["task=rte", "seed=7", "ckpt_path=/elsewhere/last.ckpt", "overwrite_run=true"]
    resumed = rerun_overrides(given, job, own)
    assert resumed == ["task=rte", "seed=7", f"ckpt_path='{job}'"]
    assert OverridesParser.create().parse_override(resumed[-1]).value() == str(job)
    # another job's folder: left alone (the run refuses it as any occupied folder)
    assert rerun_overrides(given, job, own + "1") == given
    # an attempt that left no checkpoint starts again, its files moved aside by the run
    bare = tmp_path / "bare"
    shutil.copytree(job / ".hydra", bare / ".hydra")
    for name in ("run_info.json", "resolved_config.yaml"):
        shutil.copy2(job / name, bare / name)
    assert rerun_overrides(given[:2], bare, own) == ["task=rte", "seed=7", "overwrite_run=true"]
    # a fresh folder: nothing to continue
    assert rerun_overrides(given, tmp_path / "fresh", own) == given


# --- hydra/launcher=slurm: the job script handed to sbatch ---------------------------


def test_slurm_launcher_options_reach_the_sbatch_script(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "job.sh"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    commands = {  # submitit looks for srun before it submits; the script is never run
        "sbatch": f'cp "$1" {kept}\necho "Submitted batch job 4242"',
        "srun": "exit 1",
    }
    for name, body in commands.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**CLI_ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    logs = tmp_path / "logs"
    options = [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.mem_gb=16",
        "hydra.launcher.array_parallelism=1",
    ]
    sweep_run = start(["-m", *options, "seed=1,2", *tiny_run(glue_dir, logs, cache_dir)], env)
    try:
        wait_for("job.sh", tmp_path, sweep_run, timeout=120)
    finally:
        sweep_run.terminate()  # it would wait for SLURM to run the jobs
        sweep_run.communicate(timeout=60)
    script = kept.read_text().splitlines()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --mem=16GB",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --array=0-1%1",  # both jobs in one array, one at a time
        "#SBATCH --signal=USR2@120",  # submitit's requeue signal, before the time limit
    ):
        assert line in script, "\n".join(script)
    assert any("-m submitit.core._submit" in line for line in script if line.startswith("srun"))
    (submitted,) = logs.glob("train/multiruns/*/.submitit/4242_0/4242_0_submitted.pkl")
    launcher = submitit.helpers.DelayedSubmission.load(submitted).function
    assert type(launcher).__module__ == "hydra_plugins.mole_lightning_plugins"
    assert type(launcher).__name__ == "SlurmLauncher"


# --- hparams_search=optuna ------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_searches_its_own_options(method: str) -> None:
    cfg = compose_with_hydra(["hparams_search=optuna", f"method={method}"])
    params = dict(cfg.hydra.sweeper.params)
    assert "optim.lr" in params
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed and all(isinstance(d, BaseDistribution) for d in space.values())
    for key in params:  # each searched key is an option of the method's config
        assert OmegaConf.select(cfg, key) is not None, key
    own = {
        "lora": {"method.r"},
        "adapter": {"method.bottleneck"},
        "molex": {"method.alpha"},
        "mole": {"method.temperature.end", "method.prune.after_steps"},
        "full": set(),
    }[method]
    assert set(params) == {"optim.lr", *own}


def test_the_study_follows_the_task_s_metric_and_lives_in_the_sweep_folder() -> None:
    for task in TASKS:
        cfg = compose_with_hydra(["hparams_search=optuna", f"task={task}"])
        sweeper = cfg.hydra.sweeper
        assert sweeper.direction == {"max": "maximize", "min": "minimize"}[cfg.task.mode]
        assert sweeper.study_name == f"{task}_lora"
        assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert compose_with_hydra(["hparams_search=optuna", "task=e2e"]).task.mode == "min"


def test_optuna_runs_trials_and_a_second_invocation_continues_the_study(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    # a sweep on the command line replaces the search space's range of that key
    run = tiny_run(glue_dir, logs, cache_dir, "trainer.max_steps=3", "method.r=choice(2,4)")
    first = start(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *run])
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    (sweep,) = (logs / "optuna" / "multiruns").iterdir()
    more = ["hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"]
    second = start(["-m", "hparams_search=optuna", *more, *run])
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-3000:]

    study = optuna.load_study(study_name="rte_lora", storage=f"sqlite:///{sweep}/optuna.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["optim.lr"] for t in trials}) == 5  # the second drew new points
    jobs = {int(p.name.split("_")[0]): p for p in sweep.iterdir() if p.name[0].isdigit()}
    assert sorted(jobs) == [0, 1, 2, 3, 4]  # job n is trial n
    for trial in trials:
        job = jobs[trial.number]
        assert job.name.startswith(f"{trial.number}_rte_lora_seed42_lr")
        assert job.name.endswith(f"_r{trial.params['method.r']}")  # named by the draws
        config = OmegaConf.load(job / "resolved_config.yaml")
        assert config.optim.lr == pytest.approx(trial.params["optim.lr"])
        assert config.method.r == trial.params["method.r"] in (2, 4)
        metrics = json.loads((job / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["best/val/acc"])  # the objective
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(t.value for t in trials))
