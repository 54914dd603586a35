"""Plot learning curves and expert heatmaps of the runs under a folder.

    python scripts/plot_runs.py logs/train/multiruns/<date_time> --out figures/ [--by optim.lr]

Writes ``curves_<task>.png`` (training loss and the monitored dev metric against the
step, from each run's ``csv/metrics.csv``, which every run but one with logger=none
writes; each line is labelled with the method, the ``--by`` keys' values and the seed)
and, when runs exported them,
``mole_importance_<backbone>.png``, ``mole_importance_at_prune_<backbone>.png``,
``mole_structure_<backbone>.png`` (MoLE: the fraction of seeds in which each layer kept
each expert) and ``molex_selection_<backbone>.png`` (MoLEx: routed layer × chosen layer)
with one panel per task (mean over the task's finished runs), each beside a ``.json`` of
the plotted means (per task: rows, columns, values and the runs averaged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mole_lightning.analysis import find_runs_or_exit
from mole_lightning.analysis.curves import curve_labeller, plot_learning_curves
from mole_lightning.analysis.heatmaps import plot_expert_heatmaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root", type=Path, help="a multirun folder, a log folder or one run directory"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="a resolved-config key whose value labels the curves (repeatable), e.g. optim.lr",
    )
    args = parser.parse_args(argv)
    runs = find_runs_or_exit(args.root)
    curves, curve_notes = plot_learning_curves(runs, args.out, curve_labeller(tuple(args.by)))
    heatmaps, heatmap_notes = plot_expert_heatmaps(runs, args.out)
    for path in [*curves, *heatmaps]:
        print(f"wrote {path}")
    if not heatmaps:
        print(
            "no expert heatmaps: no finished run has mole_importance.json, mole_structure.json "
            "or molex_selection.json"
        )
    for note in [*curve_notes, *heatmap_notes]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
