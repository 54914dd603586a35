"""The paper-style results table: methods × tasks, mean ± std over seeds, GLUE average.

Each cell holds one (row, task) group of finished runs: the mean and sample standard
deviation of the task's monitored dev metric over seeds, with ``n`` the number of runs.
A row is a method (plus the backbone when several are present, plus any ``by`` config
keys). Runs that cannot fill a cell are kept in ``excluded`` with the reason.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mole_lightning.analysis.runs import Run
from mole_lightning.reporting import markdown_table

GLUE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
TASK_LABELS = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
}
METHOD_ORDER = ("full", "lora", "adapter", "mole", "molex")
# config keys that legitimately differ between the seeds of one cell
SEED_VARYING = (
    "seed",
    "data.seed",  # ${seed} by default
    "paths.",
    "logger.",
    "hydra.",
    "ckpt_path",
    "task_name",
    "tags",
    "data.num_workers",
    "trainer.enable_progress_bar",
)


@dataclass
class Cell:
    """The runs of one (row, task): ``values`` are scaled metric values, one per run."""

    values: list[float]
    seeds: list
    paths: list[Path]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (``None`` for a single run)."""
        return statistics.stdev(self.values) if self.n > 1 else None

    def text(self, decimals: int) -> str:
        """``mean ± std (n=k)`` (no ``±`` for a single run)."""
        std = "" if self.std is None else f" ± {self.std:.{decimals}f}"
        return f"{self.mean:.{decimals}f}{std} (n={self.n})"


@dataclass
class ResultsTable:
    """Aggregated results (see the module docstring).

    Attributes:
        metric: ``best`` (best checkpoint re-validated) or ``final`` (last validation).
        scale: factor applied to every metric value (100: percent).
        tasks: task columns in GLUE order.
        rows: row labels (methods first in ``METHOD_ORDER``).
        cells: ``(row, task) -> Cell``.
        monitors: task -> its monitored metric key (e.g. ``val/mcc``).
        other_metrics: task -> further dev metrics its runs logged (e.g. ``val/f1``).
        params: row -> trainable parameter counts of its runs.
        excluded: runs left out of the table, with the reason.
        warnings: mixed configurations or duplicate seeds inside a cell.
    """

    metric: str
    scale: float
    tasks: list[str]
    rows: list[str]
    cells: dict[tuple[str, str], Cell]
    monitors: dict[str, str]
    other_metrics: dict[str, list[str]]
    params: dict[str, list[int]]
    excluded: list[tuple[Run, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def average(self, row: str) -> float | None:
        """Mean over the task columns of the row's cell means; ``None`` if a cell is empty."""
        means = [self.cells[row, t].mean for t in self.tasks if (row, t) in self.cells]
        return statistics.fmean(means) if means and len(means) == len(self.tasks) else None

    def to_markdown(self, decimals: int = 1, root: Path | None = None) -> str:
        """The table, its notes, and the runs left out (with directory and reason)."""
        lines = (
            self.table_lines(decimals)
            if self.rows
            else ["No run has the requested dev metric: no table."]
        )
        if self.warnings:
            lines += ["", "Warnings:", *(f"- {w}" for w in self.warnings)]
        lines += ["", f"Runs not in the table ({len(self.excluded)}):"]
        lines += [f"- `{relative(run.path, root)}`: {reason}" for run, reason in self.excluded] or [
            "- none"
        ]
        return "\n".join(lines) + "\n"

    def table_lines(self, decimals: int) -> list[str]:
        """The Markdown table and the notes on its columns."""
        what = "best checkpoint" if self.metric == "best" else "last validation"
        unit = f", ×{self.scale:g}" if self.scale != 1 else ""
        rows = []
        for row in self.rows:
            cells = [self.format_cell(row, t, decimals) for t in self.tasks]
            avg = self.average(row)
            filled = sum((row, t) in self.cells for t in self.tasks)
            avg_text = (
                f"{avg:.{decimals}f}"
                if avg is not None
                else f"– ({filled}/{len(self.tasks)} tasks)"
            )
            rows.append([row, format_params(self.params.get(row, [])), *cells, avg_text])
        header = [
            "method",
            "trainable params",
            *(f"{task_label(t)} ({metric_label(self.monitors[t])})" for t in self.tasks),
            "GLUE avg",
        ]
        return [
            f"Dev-set results ({what}{unit}): mean ± std over seeds (n = runs).",
            "",
            *markdown_table(header, rows, "lr" + "r" * (len(self.tasks) + 1)).splitlines(),
            "",
            *self.notes(),
        ]

    def format_cell(self, row: str, task: str, decimals: int) -> str:
        cell = self.cells.get((row, task))
        return "–" if cell is None else cell.text(decimals)

    def notes(self) -> list[str]:
        """Which metric each column shows, and what else its runs logged."""
        notes = []
        for t in self.tasks:
            other = self.other_metrics.get(t)
            also = f" ({', '.join(other)} also logged, not shown)" if other else ""
            notes.append(
                f"- {task_label(t)}: {self.monitors[t]}, the task's monitored metric{also}."
            )
        notes.append(
            f"- GLUE avg: mean of the row's task means over the {len(self.tasks)} task(s) shown."
        )
        return notes

    def to_csv(self) -> str:
        """One line per row: params, then mean/std/n per task, then the average (unrounded)."""
        out = io.StringIO()
        writer = csv.writer(out)
        header = ["method", "params_trainable_min", "params_trainable_max"]
        for t in self.tasks:
            header += [f"{t}_mean", f"{t}_std", f"{t}_n"]
        writer.writerow([*header, "glue_avg"])
        for row in self.rows:
            counts = self.params.get(row, [])
            line: list = [row, min(counts, default=""), max(counts, default="")]
            for t in self.tasks:
                cell = self.cells.get((row, t))
                line += (
                    ["", "", 0]
                    if cell is None
                    else [cell.mean, "" if cell.std is None else cell.std, cell.n]
                )
            avg = self.average(row)
            writer.writerow([*line, "" if avg is None else avg])
        return out.getvalue()


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def metric_label(key: str) -> str:
    return key.split("/", 1)[-1]


def relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root)) or "."
        except ValueError:
            pass
    return str(path)


def format_params(counts: list[int]) -> str:
    """``1.2M``-style; a range when the runs of a row differ (e.g. heads of 2 vs 3 labels)."""
    if not counts:
        return "–"
    low, high = min(counts), max(counts)
    return human_count(low) if low == high else f"{human_count(low)}–{human_count(high)}"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if n < 10 * size else 1}f}{unit}"
    return str(n)


def row_label(run: Run, by: tuple[str, ...], several_backbones: bool) -> str:
    label = str(run.method)
    if several_backbones:
        label += f" [{run.backbone}]"
    for key in by:
        label += f" {key}={run.config_value(key)}"
    return label


def row_order(label: str) -> tuple:
    method = label.split(" ", 1)[0]
    known = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return known, label


def task_order(task: str) -> tuple:
    return (GLUE_ORDER.index(task), task) if task in GLUE_ORDER else (len(GLUE_ORDER), task)


def flatten(node: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    flat: dict[str, object] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = repr(value)
    return flat


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between ``runs``, beyond those seeds may vary
    (``SEED_VARYING``) and paths inside the run's own output directory. A key only some
    runs have is an option added to the framework since the others ran, whose default
    keeps their behaviour: it counts only when the runs that have it differ."""
    flats = []
    for run in runs:
        flat = flatten(run.config or {})
        own = run.config_value("paths.output_dir")
        flats.append({k: v for k, v in flat.items() if not (own and str(own) in v)})
    keys = set().union(*flats)
    return sorted(
        k
        for k in keys
        if not k.startswith(SEED_VARYING) and len({f[k] for f in flats if k in f}) > 1
    )


def build_table(
    runs: list[Run], metric: str = "best", by: tuple[str, ...] = (), scale: float = 100.0
) -> ResultsTable:
    """Groups ``runs`` into cells and collects the runs that cannot fill one.

    Args:
        runs: every run found (finished or not).
        metric: ``best`` or ``final`` (see ``Run.metric_key``).
        by: extra dotted config keys that split rows (e.g. ``("optim.lr",)``).
        scale: factor for every value (100: percent, as papers print GLUE scores).
    """
    good = [r for r in runs if r.problem(metric) is None]
    excluded = [(r, r.problem(metric)) for r in runs if r.problem(metric) is not None]
    several_backbones = len({r.backbone for r in good}) > 1
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in good:
        groups[row_label(run, by, several_backbones), run.task].append(run)
    cells, monitors, other, params = {}, {}, defaultdict(set), defaultdict(list)
    warnings = []
    for (row, task), members in sorted(groups.items()):
        cells[row, task] = Cell(
            values=[scale * r.score(metric) for r in members],
            seeds=[r.seed for r in members],
            paths=[r.path for r in members],
        )
        monitors.setdefault(task, members[0].monitor)
        for r in members:
            other[task].update(
                k
                for k in r.metrics
                if k.startswith("val/")
                and k != r.monitor
                and not k.startswith("val/loss")
                and not k.endswith("_best")
            )
            if "params/trainable" in r.metrics:
                params[row].append(int(r.metrics["params/trainable"]))
        seeds = [r.seed for r in members]
        repeated = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if repeated:
            warnings.append(
                f"{row} / {task}: seed(s) {', '.join(repeated)} appear in more than one run"
            )
        mixed = differing_keys(members)
        if mixed:
            shown = ", ".join(mixed[:5]) + (" ..." if len(mixed) > 5 else "")
            warnings.append(f"{row} / {task}: runs differ in {shown} (split rows with --by KEY)")
    for task in sorted({t for _, t in groups}):
        seen = sorted({str(r.monitor) for r in good if r.task == task})
        if len(seen) > 1:
            warnings.append(
                f"{task}: runs monitor different metrics ({', '.join(seen)}); the column shows each run's own"
            )
    return ResultsTable(
        metric=metric,
        scale=scale,
        tasks=sorted({t for _, t in groups}, key=task_order),
        rows=sorted({r for r, _ in groups}, key=row_order),
        cells=cells,
        monitors=monitors,
        other_metrics={t: sorted(v) for t, v in other.items()},
        params=dict(params),
        excluded=excluded,
        warnings=warnings,
    )
