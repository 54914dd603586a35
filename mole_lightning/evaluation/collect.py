"""Aggregating ``eval_<suite>.json`` across runs: methods × (task, metric), mean ± std over
seeds (``scripts/collect.py --suite <suite>``)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from fnmatch import fnmatch
from pathlib import Path

from omegaconf import OmegaConf

from mole_lightning.analysis.runs import Run
from mole_lightning.analysis.table import Cell, row_label, row_order, task_label, task_order
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.reporting import markdown_table


def advglue_tasks() -> list[str]:
    """The GLUE tasks AdvGLUE has a set for (``conf/eval/advglue.yaml``)."""
    sets = OmegaConf.load(Path(CONFIG_DIR) / "eval" / "advglue.yaml").sets
    return sorted({str(node.task) for node in sets.values()})


def evaluate_hint(run: Run, suite: str) -> str:
    """The ``scripts/evaluate.py`` command that writes ``eval_<suite>.json`` for ``run``,
    or why that suite does not apply to the run's task."""
    from mole_lightning.evaluation.transfer import (  # late: imports torch
        declared_pairs,
        mapped_targets,
        target_data_missing,
    )

    command = f"python scripts/evaluate.py ckpt_path={run.path}"
    task = run.task
    if suite in ("dev", "perturb"):
        return f"`{command} eval={suite}`"
    if suite == "advglue":
        covered = advglue_tasks()
        if task in covered:
            return f"`{command} eval=advglue`"
        return (
            f"not applicable: AdvGLUE has no set for task {task!r} (it covers {', '.join(covered)})"
        )
    if suite.startswith("transfer_"):
        target = suite.removeprefix("transfer_")
        if target in mapped_targets(task):
            missing = target_data_missing(target, run.config_value("data.dir"))
            data = f" data_dir=<glue_data folder with {target}>" if missing else ""
            return f"`{command} eval=transfer 'suites.transfer.targets=[{target}]'{data}`" + (
                f" ({missing})" if missing else ""
            )
        return (
            f"not applicable: no transfer mapping from {task!r} to {target!r} "
            f"(declared: {', '.join(declared_pairs())}); add "
            f"conf/transfer/{task}_to_{target}.yaml to evaluate it"
        )
    return f"{suite!r} is no evaluation suite (dev, advglue, perturb, transfer_<task>)"


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
            excluded.append((run, f"no {path.name}: {evaluate_hint(run, suite)}"))
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
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", *(f"{c}_{s}" for c in columns for s in ("mean", "std", "n"))])
    shown = []
    for row in rows:
        line = [row]
        for column in columns:
            cell = cells.get((row, column))
            line += (
                ["", "", 0]
                if cell is None
                else [cell.mean, "" if cell.std is None else cell.std, cell.n]
            )
        writer.writerow(line)
        shown.append(
            [row, *(cells[row, c].text(decimals) if (row, c) in cells else "–" for c in columns)]
        )
    lines = [
        f"eval_{suite}: mean ± std over seeds (n = runs), ×{scale:g}.",
        "",
        markdown_table(["method", *header], shown, "l" + "r" * len(columns)),
    ]
    lines += ["", f"Runs not in the table ({len(excluded)}):"]
    lines += [f"- `{run.path}`: {reason}" for run, reason in excluded] or ["- none"]
    return "\n".join(lines) + "\n", out.getvalue()
