"""What makes the project's submitit launchers (``hydra/launcher=slurm``,
``hydra/launcher=local``: ``hydra_plugins.mole_lightning_plugins``) continue a job's own
run when the job runs again.

Submitit runs a job again, with the arguments it was first given, when it is requeued:
on the signal SLURM sends before the time limit and, where the cluster sends it, at a
preemption (``USR2``: submitit calls the launcher's ``checkpoint``, requeues the job and
exits), and when SLURM requeues a preempted job itself (after ``SIGTERM``, which
Lightning turns into an interrupted run). The job's folder then holds its own earlier
attempt, which a new run may not write over (``mole_lightning.utils.run_dir``). These
launchers see that before the job starts and run it as a resume
(``ckpt_path=<job folder>``, README "Resuming a run"): from the folder's ``last.ckpt``.

A job is a rerun of the attempt in its folder when that attempt ran under the same
scheduler job: Hydra writes each attempt's ``hydra.job.id`` (the launcher sets it to
submitit's job id: ``SLURM_JOB_ID``, ``<array job>_<task>`` in an array, the local
executor's controller process) into ``<job folder>/.hydra/hydra.yaml``, and a requeue
keeps the id. An attempt that left no checkpoint is started again
(``overwrite_run=true``: its files go to ``_previous/``). Any other run in the folder is
left alone, and the job is refused as every new run into an occupied folder is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf, open_dict

from mole_lightning.utils.run_dir import run_files

HYDRA_RECORD = Path(".hydra") / "hydra.yaml"
REPLACED_KEYS = ("ckpt_path", "overwrite_run")
"""Overrides a rerun sets itself (the ones given for the first attempt are dropped)."""


def recorded_job_id(job_dir: Path) -> str | None:
    """The ``hydra.job.id`` of the attempt whose Hydra record is in ``job_dir`` (``None``
    when there is none)."""
    try:
        record = OmegaConf.load(job_dir / HYDRA_RECORD)
    except (OSError, ValueError):
        return None
    job_id = OmegaConf.select(record, "hydra.job.id", default=None)
    return None if job_id is None else str(job_id)


def rerun_overrides(overrides: list[str], job_dir: Path, job_id: str) -> list[str]:
    """The overrides job ``job_id`` runs with in ``job_dir``: ``overrides`` unchanged, or,
    when the folder holds an earlier attempt of the same job, ``ckpt_path=<job_dir>``
    (a checkpoint is there) or ``overwrite_run=true`` (none is) in place of any
    ``ckpt_path`` / ``overwrite_run`` given."""
    if recorded_job_id(job_dir) != job_id or not run_files(job_dir):
        return overrides
    parsed = OverridesParser.create().parse_overrides(overrides)
    kept = [
        line
        for line, override in zip(overrides, parsed, strict=True)
        if override.key_or_group not in REPLACED_KEYS
    ]
    if any((job_dir / "checkpoints").glob("*.ckpt")):
        return [*kept, f"ckpt_path='{job_dir}'"]
    return [*kept, "overwrite_run=true"]


class ContinuesOwnRun:
    """Mixin for hydra-submitit-launcher's launchers (first in the bases): a job run again
    in a folder holding its own earlier attempt resumes it (``rerun_overrides``)."""

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> Any:
        import submitit

        Singleton.set_state(singleton_state)
        setup_globals()
        job_dir = self.job_dir(list(sweep_overrides), job_dir_key, job_num)
        overrides = rerun_overrides(
            list(sweep_overrides), job_dir, str(submitit.JobEnvironment().job_id)
        )
        return super().__call__(overrides, job_dir_key, job_num, job_id, singleton_state)

    def job_dir(self, overrides: list[str], job_dir_key: str, job_num: int) -> Path:
        """The job's folder, composed as Hydra's ``run_job`` composes it:
        ``<job_dir_key>/<hydra.sweep.subdir>``."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = job_num
        HydraConfig.instance().set_config(config)
        sweep_dir = str(OmegaConf.select(config, job_dir_key))
        return Path(sweep_dir) / str(OmegaConf.select(config, "hydra.sweep.subdir"))
