"""What makes the sweeper of ``hparams_search=optuna``
(``hydra_plugins/mole_lightning_plugins``) continue a study saved in its sweep folder.

hydra-optuna-sweeper opens the study (``hydra.sweeper.storage``, SQLite in the sweep
folder: ``conf/hparams_search/optuna.yaml``) before anything creates that folder, numbers
the jobs of every invocation from 0, and, unlike Hydra's basic sweeper, writes no
``multirun.yaml``. So a second invocation into the same folder would write its first
trials into the folders of the first invocation's, and the job folders would not name
the drawn values (``mole_lightning.utils.sweep_names`` reads them from that file). Here
the sweep folder and its ``multirun.yaml`` are written first, and the jobs are numbered
from the study's trial count: job ``n`` is trial ``n`` of the study.
"""

from __future__ import annotations

from pathlib import Path

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mole_lightning.utils.sweep_names import MULTIRUN_YAML


def trials_so_far(storage: str | None, study_name: str | None) -> int:
    """The number of trials (of any state) of study ``study_name`` in ``storage`` (0 when
    either is unset or the study does not exist yet)."""
    if not storage or not study_name:
        return 0
    import optuna

    summaries = optuna.get_all_study_summaries(storage=storage)
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)


class ContinuesStudy:
    """Mixin for hydra-optuna-sweeper's ``OptunaSweeper`` (first in the bases): writes
    the sweep folder and its ``multirun.yaml``, and numbers the jobs after the study's
    trials."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / MULTIRUN_YAML)
        impl = self.sweeper
        impl.job_idx = trials_so_far(impl.storage, impl.study_name)
