"""Learning curves from each run's CSV logger file (``<run>/csv/metrics.csv``)."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from mole_lightning.analysis.runs import Run
from mole_lightning.analysis.table import row_order, task_label, task_order
from mole_lightning.reporting import Line, LinePanel, draw_lines

TRAIN_LOSS = "train/loss"
LINE_STYLES = ["-", "--", ":", "-."]
"""The line style of each run of a task in turn (the colour is its method's)."""


def metrics_csv_path(run: Run) -> Path:
    """Where the run's CSVLogger wrote (``logger.csv.name``, ``csv`` by default)."""
    return run.path / str(run.config_value("logger.csv.name") or "csv") / "metrics.csv"


class MetricPoint(NamedTuple):
    """One logged value of one metric: the global step, the 0-based epoch (``None`` on
    rows logged outside an epoch, such as the parameter counts at step 0), the value."""

    step: int
    epoch: int | None
    value: float


def read_metrics_csv(path: Path) -> dict[str, list[MetricPoint]]:
    """``metric -> [MetricPoint, ...]`` in file order; empty cells are skipped
    (Lightning writes one row per logging call, with only that call's metrics filled)."""
    series: dict[str, list[MetricPoint]] = defaultdict(list)
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.DictReader(f), start=2):
            try:
                step = int(float(row["step"]))
                epoch = None if row.get("epoch") in ("", None) else int(float(row["epoch"]))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{path}:{line_no}: 'step' must be an integer and 'epoch' an integer or empty ({err})"
                ) from err
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series[key].append(MetricPoint(step, epoch, float(value)))
    return dict(series)


def training_points(run: Run, points: list[MetricPoint]) -> list[MetricPoint]:
    """Drops what ``train()`` logs after fitting: the re-validation of the best checkpoint
    is logged at the final ``global_step``, while validations during fitting are logged
    at earlier steps; left in, it would draw a jump back to the best score."""
    final = (run.metrics or {}).get("global_step")
    return points if final is None else [p for p in points if p.step < final]


def validation_points(run: Run) -> list[MetricPoint]:
    """The monitored dev metric at each validation during fitting, in order (empty
    without ``csv/metrics.csv``)."""
    path = metrics_csv_path(run)
    if not path.is_file() or run.monitor is None:
        return []
    points = training_points(run, read_metrics_csv(path).get(run.monitor, []))
    for point in points:
        if point.epoch is None:
            raise ValueError(f"{path}: {run.monitor} at step {point.step} has no epoch")
    return points


def validations_by_epoch(run: Run) -> dict[int, float]:
    """``epoch (0-based) -> the monitored dev metric`` of the last validation of each
    epoch during fitting. Keyed by epoch, a run whose file lost its earlier epochs
    (resumed before the CSV logger kept them) lines up with the others instead of
    shifting."""
    return {point.epoch: point.value for point in validation_points(run)}


def train_loss_by_epoch(run: Run) -> dict[int, float]:
    """``epoch (0-based) -> mean of the training losses logged in it`` (every
    ``trainer.log_every_n_steps``; empty without ``csv/metrics.csv``)."""
    path = metrics_csv_path(run)
    if not path.is_file():
        return {}
    losses: dict[int, list[float]] = defaultdict(list)
    for point in training_points(run, read_metrics_csv(path).get(TRAIN_LOSS, [])):
        if point.epoch is not None:
            losses[point.epoch].append(point.value)
    return {epoch: sum(v) / len(v) for epoch, v in losses.items()}


def curve_labeller(by: tuple[str, ...] = ()) -> Callable[[Run], str]:
    """Labels a run's curve: method, each ``by`` key's resolved value, seed, and its
    status when unfinished (``lora optim.lr=0.0001 seed 42``)."""

    def label(run: Run) -> str:
        keys = "".join(f" {key}={run.config_value(key)}" for key in by)
        status = "" if run.status == "finished" else f" ({run.status})"
        return f"{run.method}{keys} seed {run.seed}{status}"

    return label


LOSS_SMOOTHING = 0.9
"""Weight of the past in the training-loss curves' exponential moving average."""


def ema(values: list[float], smoothing: float = LOSS_SMOOTHING) -> list[float]:
    """Exponential moving average, bias-corrected as TensorBoard's smoothing:
    ``m_t = s * m_{t-1} + (1 - s) * x_t``, shown as ``m_t / (1 - s**t)``."""
    out, mean = [], 0.0
    for t, value in enumerate(values, start=1):
        mean = smoothing * mean + (1 - smoothing) * value
        out.append(mean / (1 - smoothing**t))
    return out


def plot_learning_curves(
    runs: list[Run], out_dir: Path, label: Callable[[Run], str] | None = None
) -> tuple[list[Path], list[str]]:
    """One PNG per task, ``curves_<task>.png``: ``train/loss`` (its EMA with smoothing
    ``LOSS_SMOOTHING``, the raw per-step values faint behind) and the task's monitored dev
    metric against the step, one line per run (colour = method, style = seed). ``label``
    names each run's line (default: method and seed). The PNG's metadata (key
    ``mole_lightning``) holds the title of each panel, the smoothing and the line labels.

    Returns the written files and notes on runs without curves.
    """
    label = label or curve_labeller()
    out_dir.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[tuple[Run, dict]]] = defaultdict(list)
    notes = []
    for run in runs:
        path = metrics_csv_path(run)
        if run.task is None or not path.is_file():
            notes.append(
                f"{run.path}: no {path.relative_to(run.path)} (a run with logger=none, or "
                "from before every logger wrote it)"
            )
            continue
        by_task[run.task].append((run, read_metrics_csv(path)))
    written = []
    for task in sorted(by_task, key=task_order):
        members = sorted(by_task[task], key=lambda m: (row_order(str(m[0].method)), str(m[0].seed)))
        monitor = next((r.monitor for r, _ in members if r.monitor), "val/acc")
        methods = sorted({str(r.method) for r, _ in members}, key=row_order)
        titles = {
            TRAIN_LOSS: f"{task_label(task)}: training loss (EMA {LOSS_SMOOTHING}; raw faint)",
            monitor: f"{task_label(task)}: dev {monitor}",
        }
        panels = []
        for key, title in titles.items():
            loss = key == TRAIN_LOSS
            lines = []
            for i, (run, series) in enumerate(members):
                points = training_points(run, series.get(key, []))
                if not points:
                    continue
                values = [p.value for p in points]
                lines.append(
                    Line(
                        label(run),
                        [p.step for p in points],
                        ema(values) if loss else values,
                        colour=methods.index(str(run.method)),
                        style=LINE_STYLES[i % len(LINE_STYLES)],
                        marker=None if loss else "o",
                        faint=values if loss else None,
                    )
                )
            empty = f"no run logged {key}\n(trainer.log_every_n_steps > steps?)"
            panels.append(LinePanel(title, ("step", key), lines, legend=not loss, empty=empty))
        path = out_dir / f"curves_{task}.png"
        info = {"loss_smoothing": LOSS_SMOOTHING, "labels": [label(run) for run, _ in members]}
        draw_lines(path, panels, size=(11, 4), info=info)
        written.append(path)
    return written, notes
