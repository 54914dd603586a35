"""Collect run directories into a paper-style results table (Markdown and CSV).

    python scripts/collect.py logs/train/multiruns/<date_time> [--metric best|final]
        [--out table.md] [--csv table.csv] [--by optim.lr] [--decimals 1]
    python scripts/collect.py <folder> --suite advglue [--keys 'advglue/*/acc']

Walks every directory holding ``run_info.json`` under the given folder and reads its
``metrics.json`` and ``resolved_config.yaml`` (not W&B). Columns: each task's monitored
dev metric, then the GLUE average; rows: methods; cells: mean ± std over seeds (n runs);
plus each method's trainable parameter count. Failed and unfinished runs are listed
below the table with their directory and error.

``--suite S`` aggregates the ``eval_S.json`` files ``scripts/evaluate.py`` wrote instead:
one column per (task, headline metric), filtered by ``--keys`` patterns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mole_lightning.analysis import build_table, find_runs_or_exit
from mole_lightning.analysis.runs import METRIC_CHOICES
from mole_lightning.evaluation.collect import suite_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root", type=Path, help="a multirun folder, a log folder or one run directory"
    )
    parser.add_argument(
        "--metric",
        choices=METRIC_CHOICES,
        default="best",
        help="best: the best checkpoint re-validated (default); final: the last validation",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="split rows by this resolved-config key (repeatable), e.g. optim.lr",
    )
    parser.add_argument("--decimals", type=int, default=1)
    parser.add_argument(
        "--suite", help="aggregate eval_<suite>.json (dev, advglue, perturb, transfer_<task>)"
    )
    parser.add_argument(
        "--keys",
        action="append",
        default=[],
        metavar="PATTERN",
        help="with --suite: keep metrics matching this pattern (repeatable), e.g. 'advglue/*/acc'",
    )
    parser.add_argument(
        "--scale", type=float, default=100.0, help="factor for every value (default: percent)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = find_runs_or_exit(args.root)
    if args.suite:
        markdown, csv_text = suite_table(
            runs, args.suite, tuple(args.keys), args.scale, args.decimals
        )
    else:
        table = build_table(runs, metric=args.metric, by=tuple(args.by), scale=args.scale)
        markdown = table.to_markdown(decimals=args.decimals, root=args.root)
        csv_text = table.to_csv()
    print(markdown, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text(csv_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
