"""Writing a suite's result into the run directory: ``eval_<name>.json``, ``.csv`` and,
for curves, ``.png``."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mole_lightning.evaluation.checkpoint import EvalRun  # noqa: E402
from mole_lightning.evaluation.suites import SuiteResult  # noqa: E402
from mole_lightning.utils.run_info import write_json  # noqa: E402


def write_result(run: EvalRun, result: SuiteResult) -> list[Path]:
    """Writes ``eval_<name>.json`` (task, method, seed, checkpoint, settings, headline
    ``metrics``, ``rows``), ``eval_<name>.csv`` (the rows) and the figure, if any;
    returns the paths."""
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
    write_json(paths[0], payload)
    columns = list(dict.fromkeys(k for row in result.rows for k in row))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.rows)
    if result.plot is not None:
        paths.append(stem.with_suffix(".png"))
        result.plot(paths[-1])
    return paths


def plot_curves(rows: list[dict], metric: str, title: str, path: Path) -> None:
    """One line per perturbation kind: ``metric`` against the rate ``p``."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        points = sorted((r["p"], r[metric]) for r in rows if r["kind"] == kind)
        ax.plot(*zip(*points, strict=True), marker="o", label=kind)
    ax.set_xlabel("perturbation rate p")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(rows: list[dict], decimals: int = 4) -> str:
    """The rows as a Markdown table (floats rounded)."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value) -> str:
        return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
