"""MoLE's structure claims over a folder of runs: graph experts by layer against random
pruning (the paper's claim a), agreement of the kept structure across seeds (claim c),
and how decided each gate was when pruning decided.

    python scripts/mole_structures.py RUNS [--out DIR]

Reads every finished MoLE run under RUNS (``mole_structure.json``,
``mole_importance_at_prune.json``); writes ``mole_structure_claims.md`` and
``mole_graph_by_layer.png`` into DIR (default: RUNS) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mole_lightning.analysis.mole_structure import (
    graph_by_layer,
    plot_graph_by_layer,
    read_structure_runs,
    report_lines,
)
from mole_lightning.analysis.runs import find_runs_or_exit
from mole_lightning.utils.run_info import write_text_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a folder of runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUNS)")
    args = parser.parse_args(argv)
    out = args.out or args.runs
    try:
        runs = read_structure_runs(find_runs_or_exit(args.runs))
        figure = out / "mole_graph_by_layer.png"
        by_layer = graph_by_layer(runs)
        lines = report_lines(runs, by_layer, figure)
        plot_graph_by_layer(by_layer, figure)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "mole_structure_claims.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
