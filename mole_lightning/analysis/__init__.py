"""Reading run directories back: results tables, learning curves, expert heatmaps.

Used by ``scripts/collect.py`` and ``scripts/plot_runs.py``; reads only what runs leave on
disk (``run_info.json``, ``resolved_config.yaml``, ``metrics.json``, ``csv/metrics.csv``,
expert tables), never W&B.
"""

from mole_lightning.analysis.runs import Run, find_runs, find_runs_or_exit, load_run
from mole_lightning.analysis.table import Cell, ResultsTable, build_table

__all__ = [
    "Cell",
    "ResultsTable",
    "Run",
    "build_table",
    "find_runs",
    "find_runs_or_exit",
    "load_run",
]
