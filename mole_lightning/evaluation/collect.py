"""Aggregating ``eval_<suite>.json`` across runs: methods × (task, metric), mean ± std over
seeds (``scripts/collect.py --suite <suite>``)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from fnmatch import fnmatch

from mole_lightning.analysis.runs import Run
from mole_lightning.analysis.table import Cell, row_label, row_order, task_label, task_order


def suite_cells(
    runs: list[Run], suite: str, keys: tuple[str, ...] = (), scale: float = 100.0
) -> tuple[dict[tuple[str, str], Cell], list[tuple[Run, str]]]:
    """``(row, "<task> <metric>") -> Cell`` over the runs holding ``eval_<suite>.json``, and
    the runs left out with the reason.

    Args:
        keys: ``fnmatch`` patterns of the headline metrics to keep (empty: all), e.g.
            ``advglue/*/acc`` or ``perturb/typo/*/acc``.
    """
    several_backbones = len({r.backbone for r in runs}) > 1
    values: dict[tuple[str, str], list[tuple[float, object, object]]] = defaultdict(list)
    excluded = []
    for run in runs:
        path = run.path / f"eval_{suite}.json"
        if not path.is_file():
            excluded.append(
                (run, f"no {path.name}: scripts/evaluate.py ckpt_path={run.path} eval={suite}")
            )
            continue
        metrics = json.loads(path.read_text())["metrics"]
        for key, value in metrics.items():
            if not keys or any(fnmatch(key, pattern) for pattern in keys):
                column = f"{run.task} {key}"
                values[row_label(run, (), several_backbones), column].append(
                    (scale * float(value), run.seed, run.path)
                )
    cells = {
        cell: Cell([v for v, _, _ in got], [s for _, s, _ in got], [p for _, _, p in got])
        for cell, got in values.items()
    }
    return cells, excluded


def suite_table(
    runs: list[Run], suite: str, keys: tuple[str, ...] = (), scale: float = 100.0, decimals: int = 1
) -> tuple[str, str]:
    """``(markdown, csv)`` of ``suite_cells``; the Markdown lists the runs left out."""
    cells, excluded = suite_cells(runs, suite, keys, scale)
    rows = sorted({r for r, _ in cells}, key=row_order)
    columns = sorted(
        {c for _, c in cells}, key=lambda c: (task_order(c.split(" ", 1)[0]), c.split(" ", 1)[1])
    )
    header = [f"{task_label(c.split(' ', 1)[0])} {c.split(' ', 1)[1]}" for c in columns]
    lines = [
        f"eval_{suite}: mean ± std over seeds (n = runs), ×{scale:g}.",
        "",
        "| method | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", *(f"{c}_{s}" for c in columns for s in ("mean", "std", "n"))])
    for row in rows:
        shown, line = [], [row]
        for column in columns:
            cell = cells.get((row, column))
            if cell is None:
                shown.append("–")
                line += ["", "", 0]
                continue
            std = "" if cell.std is None else f" ± {cell.std:.{decimals}f}"
            shown.append(f"{cell.mean:.{decimals}f}{std} (n={cell.n})")
            line += [cell.mean, "" if cell.std is None else cell.std, cell.n]
        lines.append(f"| {row} | " + " | ".join(shown) + " |")
        writer.writerow(line)
    lines += ["", f"Runs not in the table ({len(excluded)}):"]
    lines += [f"- `{run.path}`: {reason}" for run, reason in excluded] or ["- none"]
    return "\n".join(lines) + "\n", out.getvalue()
