"""Writing a suite's result into the run directory: ``eval_<name>.json``, ``.csv`` and,
for curves, ``.png`` (drawn by the suite with ``mole_lightning.reporting.draw_lines``)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from mole_lightning.evaluation.checkpoint import EvalRun
from mole_lightning.evaluation.suites import SuiteResult
from mole_lightning.reporting import markdown_table
from mole_lightning.utils.run_info import write_json


def write_result(run: EvalRun, result: SuiteResult) -> list[Path]:
    """Writes ``eval_<name>.csv`` (the rows), the figure, if any, and last, atomically,
    ``eval_<name>.json`` (task, method, seed, checkpoint, settings, headline ``metrics``,
    ``rows``): the JSON exists only once the result is whole. Returns the paths."""
    stem = run.run_dir / f"eval_{result.name}"
    payload = {
        "suite": result.name,
        "task": run.task,
        "method": run.cfg.method.name,
        "backbone": run.cfg.backbone.name,
        "seed": run.cfg.get("seed"),
        "checkpoint": str(run.ckpt),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": result.settings,
        "metrics": result.metrics,
        "rows": result.rows,
    }
    paths = [stem.with_suffix(".json"), stem.with_suffix(".csv")]
    columns = list(dict.fromkeys(k for row in result.rows for k in row))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.rows)
    if result.plot is not None:
        paths.append(stem.with_suffix(".png"))
        result.plot(paths[-1])
    write_json(paths[0], payload)
    return paths


def format_table(rows: list[dict], decimals: int = 4) -> str:
    """The rows as a Markdown table (floats rounded, a missing key left blank)."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return markdown_table(
        columns, [[r.get(c, "") for c in columns] for r in rows], decimals=decimals
    )
