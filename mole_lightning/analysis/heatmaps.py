"""Expert heatmaps side by side across tasks: MoLE's layer × expert importance and survival
frequency, and MoLEx's routed-layer × chosen-layer selection frequency, each averaged
over the runs (seeds) of a task.

Runs write ``mole_importance.json`` (at the end), ``mole_importance_at_prune.json`` (the
scores pruning decided on), ``mole_structure.json`` (the experts each layer kept) and
``molex_selection.json`` into their directory.
Both layouts are read: the labelled table of ``mole_lightning.reporting.export``
(``rows``, ``columns``, ``values`` with ``null`` for pruned experts) and the bare forms
``{"layers", "experts", "importance"}`` (MoLE) and ``{"counts", "routed_layers"}``
(MoLEx raw counts, normalised per routed layer here).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from mole_lightning.analysis.runs import Run
from mole_lightning.analysis.table import task_label, task_order
from mole_lightning.reporting import HeatmapPanel, draw_heatmap

# file -> (figure title, row axis, column axis)
EXPERT_FILES = {
    "mole_importance.json": ("MoLE expert importance", "layer", "expert"),
    "mole_importance_at_prune.json": ("MoLE expert importance when pruned", "layer", "expert"),
    "mole_structure.json": ("MoLE expert survival frequency over seeds", "layer", "expert"),
    "molex_selection.json": ("MoLEx layer selection frequency", "routed layer", "chosen layer"),
}


def as_array(rows: list, path: Path) -> np.ndarray:
    try:
        return np.array(
            [[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: table values are not a list of numeric rows ({err})") from err


def selection_frequencies(counts: np.ndarray, routed_layers: list[int]) -> HeatmapPanel:
    """Row-normalised MoLEx counts; ``counts`` is ``[routed, T]`` or ``[T, T]``."""
    num_layers = counts.shape[1]
    if counts.shape[0] != len(routed_layers):
        counts = counts[routed_layers]
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(totals > 0, counts / totals, np.nan)
    return HeatmapPanel(
        rows=[f"layer {i}" for i in routed_layers],
        columns=[f"layer {j}" for j in range(num_layers)],
        values=freq,
    )


def survival_table(structure: list[list[str]], experts: list[str]) -> HeatmapPanel:
    """``[layers, experts]``: 1 where the layer kept the expert after pruning, else 0 (the
    mean over seeds is each expert's survival frequency)."""
    return HeatmapPanel(
        rows=[f"layer {i}" for i in range(len(structure))],
        columns=list(experts),
        values=np.array([[float(e in kept) for e in experts] for kept in structure]),
    )


def read_run_table(run: Run, filename: str) -> HeatmapPanel:
    """The table of one run's expert file; ``mole_structure.json`` becomes its survival
    table over the run's ``method.experts``."""
    path = run.path / filename
    if filename != "mole_structure.json":
        return read_expert_table(path)
    structure = json.loads(path.read_text())["structure"]
    experts = run.config_value("method.experts") or sorted({e for kept in structure for e in kept})
    return survival_table(structure, experts)


def read_expert_table(path: Path) -> HeatmapPanel:
    """Reads either layout (see the module docstring).

    Raises:
        ValueError: the file is no JSON object of a known layout, or its shape disagrees
            with its labels; the message names the file.
    """
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if "values" in payload:
        table = HeatmapPanel(
            [str(r) for r in payload["rows"]],
            [str(c) for c in payload["columns"]],
            as_array(payload["values"], path),
        )
    elif "importance" in payload:
        table = HeatmapPanel(
            [f"layer {i}" for i in payload["layers"]],
            [str(e) for e in payload["experts"]],
            as_array(payload["importance"], path),
        )
    elif "counts" in payload and "routed_layers" in payload:
        table = selection_frequencies(
            as_array(payload["counts"], path), [int(i) for i in payload["routed_layers"]]
        )
    else:
        raise ValueError(
            f"{path}: unknown layout with keys {sorted(payload)}; expected rows/columns/values, "
            "layers/experts/importance or counts/routed_layers"
        )
    if table.values.shape != (len(table.rows), len(table.columns)):
        raise ValueError(
            f"{path}: values have shape {table.values.shape}, labels say "
            f"{len(table.rows)} rows × {len(table.columns)} columns"
        )
    return table


def average_tables(tables: list[HeatmapPanel]) -> HeatmapPanel:
    """Cell-wise mean over runs (seeds), ignoring blank cells; all must share labels."""
    first = tables[0]
    for t in tables[1:]:
        if t.rows != first.rows or t.columns != first.columns:
            raise ValueError("tables of one task have different rows or columns")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-blank cells stay NaN
        values = np.nanmean(np.stack([t.values for t in tables]), axis=0)
    return HeatmapPanel(first.rows, first.columns, values)


def write_panels(
    panels: dict[str, tuple[HeatmapPanel, list[Path]]], title: str, path: Path
) -> None:
    """Writes the plotted means as JSON: ``{"title", "panels": {task label: {"rows",
    "columns", "values" [rows, columns] (null = blank), "runs": [run directories]}}}``."""
    payload = {
        "title": title,
        "panels": {
            label: {
                "rows": table.rows,
                "columns": table.columns,
                "values": [
                    [None if np.isnan(v) else float(v) for v in row] for row in table.values
                ],
                "runs": [str(p) for p in run_paths],
            }
            for label, (table, run_paths) in panels.items()
        },
    }
    path.write_text(json.dumps(payload, indent=2))


def plot_expert_heatmaps(runs: list[Run], out_dir: Path) -> tuple[list[Path], list[str]]:
    """For each expert file kind and backbone, one PNG with a panel per task (mean over the
    finished runs of that task) and the plotted means beside it as JSON (``write_panels``):
    ``mole_importance_<backbone>.{png,json}``, ``mole_importance_at_prune_<backbone>.*``,
    ``mole_structure_<backbone>.*`` (survival frequency over seeds),
    ``molex_selection_<backbone>.*`` (selection frequency, mean over seeds). Runs without
    the files are skipped.

    Returns the written files (the PNGs) and notes (unreadable files, shape mismatches).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for filename, (title, *axis_names) in EXPERT_FILES.items():
        groups: dict[str, dict[str, list[tuple[HeatmapPanel, Path]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for run in runs:
            path = run.path / filename
            if run.status != "finished" or not path.is_file():
                continue
            try:
                table = read_run_table(run, filename)
            except (OSError, KeyError, ValueError) as err:
                notes.append(f"{path}: skipped ({err})")
                continue
            groups[str(run.backbone)][str(run.task)].append((table, run.path))
        for backbone, by_task in sorted(groups.items()):
            panels = {}
            for task in sorted(by_task, key=task_order):
                tables, run_paths = zip(*by_task[task], strict=True)
                try:
                    mean = average_tables(list(tables))
                except ValueError as err:
                    notes.append(f"{filename} {backbone} {task}: skipped ({err})")
                    continue
                panels[f"{task_label(task)} (n={len(tables)})"] = (mean, list(run_paths))
            if panels:
                path = out_dir / f"{Path(filename).stem}_{backbone}.png"
                full_title = f"{title} — {backbone}"
                means = {label: mean for label, (mean, _) in panels.items()}
                draw_heatmap(path, means, full_title, tuple(axis_names))
                write_panels(panels, full_title, path.with_suffix(".json"))
                written.append(path)
    return written, notes
