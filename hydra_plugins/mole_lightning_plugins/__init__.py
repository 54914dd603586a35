"""The project's Hydra plugins: ``hydra/launcher=slurm`` and ``hydra/launcher=local``
(hydra-submitit-launcher's launchers whose requeued jobs resume their run,
``mole_lightning.utils.submitit_launchers``) and the sweeper of
``hparams_search=optuna`` (hydra-optuna-sweeper's, continuing a study saved in the sweep
folder, ``mole_lightning.utils.optuna_study``).

Hydra instantiates plugins only from the ``hydra_plugins`` namespace, and imports every
module in it at start-up: without the ``cluster`` extra (``pip install -e ".[cluster]"``)
this module defines nothing, and the configs that name these plugins do not compose.
"""

from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:
    submitit_launcher = None
try:
    from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper
except ImportError:
    optuna_sweeper = None

if submitit_launcher is not None:
    from mole_lightning.utils.submitit_launchers import ContinuesOwnRun

    class SlurmLauncher(ContinuesOwnRun, submitit_launcher.SlurmLauncher):
        """``hydra/launcher=slurm``: submitit's SLURM launcher whose requeued jobs resume."""

    class LocalLauncher(ContinuesOwnRun, submitit_launcher.LocalLauncher):
        """``hydra/launcher=local``: submitit's local executor (each job a process of its
        own, all at once) whose requeued jobs resume."""


if optuna_sweeper is not None:
    from mole_lightning.utils.optuna_study import ContinuesStudy

    class OptunaSweeper(ContinuesStudy, optuna_sweeper.OptunaSweeper):
        """``hparams_search=optuna``: hydra-optuna-sweeper's sweeper, whose jobs are
        numbered after the study's trials."""
