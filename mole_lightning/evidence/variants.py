"""The report of a variants protocol (``report: variants`` in the protocol file): the
learning-rate grid, MoLE's gate variants, any protocol whose methods are variants of a
method rather than the methods themselves.

One table of best dev scores (task columns, one row per variant, mean ± std over the
done seeds), the curves (the dev metric at each validation, the mean training loss of each
epoch), and for a grid (variants named ``<method>@<value>``, e.g.
``lora@3e-4``) the value each method's rule chooses: the highest mean over the grid's
tasks of the best score, once every cell of that method is done. With ``choose_epochs``
in the protocol file, per done cell the epochs its curve supports (``chosen_epochs``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import numpy as np

from mole_lightning.analysis.curves import MetricPoint, train_loss_by_epoch, validation_points
from mole_lightning.analysis.mole_structure import (
    gate_entropies,
    gate_margins,
    read_structure_runs,
)
from mole_lightning.analysis.table import task_label, task_order
from mole_lightning.evidence.report import (
    BEGIN_TEMPLATE,
    END_TEMPLATE,
    cell_count,
    missing_lines,
    provenance_lines,
)
from mole_lightning.evidence.results import CellResult, mean_std, pct
from mole_lightning.reporting import markdown_table

GRID_SEPARATOR = "@"


def scores_by_variant(results: list[CellResult], metric: str) -> dict[tuple[str, str], list[float]]:
    """``(variant, task) -> [score]`` over the done seeds."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        score = r.score(metric)
        if score is not None:
            scores[r.cell.method, r.cell.task].append(score)
    return dict(scores)


def grid_choices(results: list[CellResult], metric: str) -> list[list[str]]:
    """Per grid method (variants ``<method>@<value>``): its value with the highest mean
    over the tasks of the mean best score, or why none is chosen yet. Rows:
    ``[method, chosen value, mean score ×100, every value's mean]``."""
    scores = scores_by_variant(results, metric)
    variants = list(dict.fromkeys(r.cell.method for r in results))
    tasks = sorted({r.cell.task for r in results}, key=task_order)
    groups: dict[str, list[str]] = defaultdict(list)
    for variant in variants:
        if GRID_SEPARATOR in variant:
            groups[variant.split(GRID_SEPARATOR, 1)[0]].append(variant)
    rows = []
    for method, members in groups.items():
        pending = [r.cell.name for r in results if r.cell.method in members and not r.done]
        if pending:
            rows.append([method, f"– ({cell_count(len(pending))} not done)", "", ""])
            continue
        means = {
            v: statistics.fmean(statistics.fmean(scores[v, t]) for t in tasks) for v in members
        }
        chosen = max(members, key=lambda v: means[v])
        rows.append(
            [
                method,
                chosen.split(GRID_SEPARATOR, 1)[1],
                pct(means[chosen]),
                ", ".join(f"{v.split(GRID_SEPARATOR, 1)[1]}: {pct(m)}" for v, m in means.items()),
            ]
        )
    return rows


def mean_by_index(series: list[list[float]]) -> list[float]:
    """Position-wise means of lists of unequal length (a position's mean over the lists
    that reach it)."""
    width = max(map(len, series), default=0)
    return [statistics.fmean(s[i] for s in series if len(s) > i) for i in range(width)]


def curve_rows(results: list[CellResult]) -> list[list]:
    """Per task and variant: the dev metric ×100 at each validation and the mean training
    loss of each epoch, both averaged over the done seeds, and the validation steps."""
    by_row: dict[tuple[str, str], list[CellResult]] = defaultdict(list)
    for r in results:
        if r.done:
            by_row[r.cell.task, r.cell.method].append(r)
    rows = []
    for (task, variant), done in sorted(by_row.items(), key=lambda kv: task_order(kv[0][0])):
        points = [validation_points(r.run) for r in done]
        losses = [train_loss_by_epoch(r.run) for r in done]
        dev = mean_by_index([[p.value for p in run] for run in points])
        loss = mean_by_index([[v for _, v in sorted(run.items())] for run in losses])
        rows.append(
            [
                task_label(task),
                variant,
                len(done),
                ", ".join(pct(v) for v in dev) or "–",
                ", ".join(str(p.step) for p in max(points, key=len)) or "–",
                ", ".join(f"{v:.3f}" for v in loss) or "–",
            ]
        )
    return rows


def chosen_epochs(points: list[MetricPoint], tolerance: float) -> tuple[int, float, float]:
    """The epochs a finished curve supports: the first epoch ``e`` (1-based) after which
    the rest of the curve raises the best dev score by less than ``tolerance`` (the best
    over the validations up to the end of epoch ``e`` against the best of the whole
    curve). Returns ``(e, best up to e, best of the curve)``; the last epoch always
    qualifies.

    Raises:
        ValueError: no validation.
    """
    if not points:
        raise ValueError("a curve without validations supports no epoch count")
    overall = max(p.value for p in points)
    for epoch in sorted({p.epoch for p in points}):
        so_far = max(p.value for p in points if p.epoch <= epoch)
        if overall - so_far < tolerance:
            break
    return epoch + 1, so_far, overall


def epoch_rows(results: list[CellResult], tolerance: float) -> list[list[str]]:
    """Per done cell: ``[task, variant, seed, epochs, best up to them ×100, best of the
    curve ×100, epochs trained]`` (``chosen_epochs``)."""
    rows = []
    for r in results:
        points = validation_points(r.run) if r.done else []
        if points:
            epochs, so_far, overall = chosen_epochs(points, tolerance)
            rows.append(
                [
                    task_label(r.cell.task),
                    r.cell.method,
                    str(r.cell.seed),
                    str(epochs),
                    pct(so_far),
                    pct(overall),
                    str(max(p.epoch for p in points) + 1),
                ]
            )
    return rows


def value_range(values: np.ndarray, digits: int) -> str:
    """``min–max`` of the finite ``values`` (one number when they are equal)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "–"
    low, high = (f"{v:.{digits}f}" for v in (finite.min(), finite.max()))
    return low if low == high else f"{low}–{high}"


def gate_rows(results: list[CellResult], metric: str) -> list[list[str]]:
    """Per done MoLE cell that pruned: how decided its gates were at the prune and what
    it kept. Rows: ``[task, variant, seed, importance entropy per layer (min–max), top-1
    minus top-2 importance (min–max), kept experts per layer, score ×100]``; the entropy
    of an undecided gate over ``n`` experts is ``ln n`` (1.386 for 4)."""
    done = {r.run.path: r for r in results if r.done and r.run is not None}
    order = {variant: i for i, variant in enumerate(dict.fromkeys(r.cell.method for r in results))}
    keyed = []
    for run in read_structure_runs([r.run for r in done.values()]):
        result = done[run.path]
        entropy = margins = "–"
        if run.importance is not None:
            entropy = value_range(gate_entropies(run), 3)
            margins = value_range(gate_margins(run), 3)
        row = [
            task_label(run.task),
            result.cell.method,
            str(run.seed),
            entropy,
            margins,
            ", ".join("+".join(kept) for kept in run.structure),
            pct(result.score(metric)),
        ]
        keyed.append(((task_order(run.task), order[result.cell.method], run.seed), row))
    return [row for _, row in sorted(keyed, key=lambda pair: pair[0])]


def variants_markdown(
    results: list[CellResult],
    metric: str,
    name: str,
    report_command: str,
    continue_command: dict[str, str],
    epochs_tolerance: float | None = None,
) -> str:
    """The generated section of protocol ``name`` (its file's stem), between its markers;
    with ``epochs_tolerance``, the epochs each done cell's curve supports."""
    tasks = sorted({r.cell.task for r in results}, key=task_order)
    scores = scores_by_variant(results, metric)
    rows = [
        [
            variant,
            *(
                mean_std([100 * v for v in scores[variant, t]], signed=False)
                if (variant, t) in scores
                else "–"
                for t in tasks
            ),
        ]
        for variant in dict.fromkeys(r.cell.method for r in results)
    ]
    seeds = sorted({r.cell.seed for r in results})
    spread = (
        f"seed {seeds[0]}"
        if len(seeds) == 1
        else f"mean ± std over the done seeds of {', '.join(map(str, seeds))}"
    )
    lines = [
        BEGIN_TEMPLATE.format(name=name),
        *provenance_lines(results, report_command),
        "",
        f"Dev score ×100 ({metric} checkpoint, {spread}; – not done):",
        "",
        *markdown_table(
            ["variant", *(task_label(t) for t in tasks)], rows, "l" + "r" * len(tasks)
        ).splitlines(),
        "",
    ]
    choices = grid_choices(results, metric)
    if choices:
        lines += [
            "Chosen per method: the value with the highest mean over "
            f"{', '.join(task_label(t) for t in tasks)} of the {metric} dev score (×100).",
            "",
            *markdown_table(
                ["method", "chosen", "mean", "every value's mean"], choices, "llrl"
            ).splitlines(),
            "",
        ]
    curves = curve_rows(results)
    if curves:
        lines += [
            "Curves, mean over the done seeds: the dev metric ×100 at each validation (at the "
            "steps given), the mean of the training losses logged in each epoch.",
            "",
            *markdown_table(
                ["task", "variant", "seeds", "dev", "validation steps", "train loss per epoch"],
                curves,
                "llrlll",
            ).splitlines(),
            "",
        ]
    epochs = epoch_rows(results, epochs_tolerance) if epochs_tolerance is not None else []
    if epochs:
        lines += [
            "Epochs each curve supports: the first epoch after which the rest of the curve "
            f"raises the best dev score by less than {pct(epochs_tolerance)} (×100).",
            "",
            *markdown_table(
                ["task", "variant", "seed", "epochs", "best up to them", "best of the curve", "of"],
                epochs,
                "lllrrrr",
            ).splitlines(),
            "",
        ]
    gates = gate_rows(results, metric)
    if gates:
        lines += [
            "MoLE's gates at the prune, per cell: the entropy of each layer's importance "
            "(softmax of its gate logits; ln 4 = 1.386 for an undecided gate of 4 experts) "
            "and its top-1 minus top-2 importance, as the range over the layers; the "
            "experts kept in layers 0 to last.",
            "",
            *markdown_table(
                ["task", "variant", "seed", "entropy", "top-1 − top-2", "kept", "score"],
                gates,
                "lllllll",
            ).splitlines(),
            "",
        ]
    lines += missing_lines(results, continue_command)
    lines.append(END_TEMPLATE.format(name=name))
    return "\n".join(lines) + "\n"
