"""MoLE's structure ablation (issue 31, claim b): one expert kind in every layer
(``conf/evidence_mole_structures.yaml``) against the learned structure (the MoLE cells of
``conf/evidence.yaml``) at the same budget, on the same seeds.

A cell counts as the evidence report counts it: done (finished with its protocol's
config, ``state.DONE``) and scored by its protocol's metric (``best``: the best
checkpoint re-validated; ``CellResult.score``). Every other cell is listed as missing.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from mole_lightning.analysis.table import metric_label, task_label, task_order
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.errors import ConfigError
from mole_lightning.evidence.protocol import (
    ALL_STAGES,
    Protocol,
    ProtocolCell,
    compose_cell,
    plan_cells,
    resolved,
)
from mole_lightning.evidence.results import CellResult, gather, mean_std
from mole_lightning.evidence.state import NEW, cell_state, config_differences
from mole_lightning.reporting import draw_bars, markdown_table

ABLATION_PROTOCOL = Path(CONFIG_DIR) / "evidence_mole_structures.yaml"
LEARNED_METHOD = "mole"
"""The learned structure's method in the learned-structure protocol."""
LEARNED, ABLATION = "learned", "ablation"
STRUCTURE_KEYS = ("method.structure", "method.prune.enabled", "method.prune.after_steps")
"""The resolved-config keys in which a fixed-structure cell may differ from the learned
structure's cell of its task and seed (besides the ablation protocol's ``may_differ``)."""
PLANNING_TRAINER = "cpu"
"""The trainer the cells are planned with: only ``trainer.accelerator``, ``devices`` and
``precision`` depend on it, which every protocol's ``may_differ`` lists, so GPU cells
count too."""


@dataclass
class AblationResults:
    """The cells of both protocols, with their states.

    Attributes:
        fixed: the ablation protocol's cells (every task, method, seed).
        learned: the learned structure's cells of the same tasks and seeds.
        metric: the ablation protocol's score (``best`` or ``final``).
    """

    fixed: list[CellResult]
    learned: list[CellResult]
    metric: str


def structure_name(method: str) -> str:
    """A row's name: ``learned`` for the learned structure, ``mole_<kind>`` as ``<kind>``."""
    return LEARNED if method == LEARNED_METHOD else method.removeprefix("mole_")


def check_budget(
    fixed: list[tuple[ProtocolCell, DictConfig]],
    learned: dict[tuple[str, int], DictConfig],
    may_differ: list[str],
) -> None:
    """Every fixed-structure cell against the learned structure's cell of its task and
    seed (``learned``: ``(task, seed) -> config``).

    Raises:
        ConfigError: a resolved-config key other than ``STRUCTURE_KEYS`` and
            ``may_differ`` differs (a different lr, epochs, batch ...): not the same budget.
    """
    for cell, cfg in fixed:
        other = learned[cell.task, cell.seed]
        changed = config_differences(resolved(other), cfg, [*may_differ, *STRUCTURE_KEYS])
        if changed:
            raise ConfigError(
                f"{cell.name} is not at the learned structure's budget: its config differs "
                f"from {cell.task}/{LEARNED_METHOD}/seed{cell.seed} in {', '.join(changed)} "
                f"(only {', '.join(STRUCTURE_KEYS)} may); set the same values in both "
                "protocol files"
            )


def composed_results(cells: list[ProtocolCell], may_differ: list[str]):
    """``(results, configs)``: each cell's ``CellResult`` against its composed config."""
    configs = [compose_cell(c) for c in cells]
    states = [
        cell_state(c.path, cfg, may_differ, c.overrides)
        for c, cfg in zip(cells, configs, strict=True)
    ]
    return gather(cells, states), configs


def ablation_results(
    ablation: Protocol, ablation_out: Path, learned: Protocol, learned_out: Path
) -> AblationResults:
    """The ablation protocol's cells in ``ablation_out`` and the learned structure's
    (``LEARNED_METHOD`` of ``learned``) in ``learned_out``, for the ablation's tasks and
    seeds.

    Raises:
        ConfigError: ``learned`` has no ``LEARNED_METHOD`` cell for one of the ablation's
            (task, seed) pairs, or a fixed structure is not at its budget (``check_budget``).
    """
    fixed_cells = plan_cells(ablation, ALL_STAGES, ablation_out, PLANNING_TRAINER)
    pairs = dict.fromkeys((c.task, c.seed) for c in fixed_cells)
    learned_cells = [
        c
        for c in plan_cells(learned, ALL_STAGES, learned_out, PLANNING_TRAINER)
        if c.method == LEARNED_METHOD and c.variant is None and (c.task, c.seed) in pairs
    ]
    absent = [p for p in pairs if p not in {(c.task, c.seed) for c in learned_cells}]
    if absent:
        raise ConfigError(
            f"{learned.path} has no {LEARNED_METHOD} cell for "
            + ", ".join(f"{task} seed {seed}" for task, seed in absent)
            + f" (the tasks and seeds of {ablation.path}): the learned structure is its "
            f"{LEARNED_METHOD} cells"
        )
    fixed, fixed_configs = composed_results(fixed_cells, ablation.may_differ)
    learned_results, learned_configs = composed_results(learned_cells, learned.may_differ)
    check_budget(
        list(zip(fixed_cells, fixed_configs, strict=True)),
        {(c.task, c.seed): cfg for c, cfg in zip(learned_cells, learned_configs, strict=True)},
        ablation.may_differ,
    )
    return AblationResults(fixed, learned_results, ablation.metric)


@dataclass
class StructureRow:
    """One structure on one task.

    Attributes:
        task, structure: the task and the row's name (``structure_name``).
        scores: ``seed -> score`` (×1) of its done cells.
        differences: ``seed -> 100 * (score - the learned structure's score)`` over the
            seeds where both cells are done (empty for the learned structure itself).
    """

    task: str
    structure: str
    scores: dict[int, float]
    differences: dict[int, float]

    def mean(self) -> float | None:
        return statistics.fmean(self.scores.values()) if self.scores else None


def structure_rows(results: AblationResults) -> list[StructureRow]:
    """Per task (GLUE order): the learned structure's row, then each fixed structure's
    (the ablation protocol's method order)."""
    learned = {
        (r.cell.task, r.cell.seed): r.score(results.metric)
        for r in results.learned
        if r.score(results.metric) is not None
    }
    rows = []
    tasks = sorted({r.cell.task for r in results.fixed}, key=task_order)
    for task in tasks:
        seeds = {seed: score for (t, seed), score in learned.items() if t == task}
        rows.append(StructureRow(task, LEARNED, dict(sorted(seeds.items())), {}))
        for method in dict.fromkeys(r.cell.method for r in results.fixed if r.cell.task == task):
            scores = {
                r.cell.seed: r.score(results.metric)
                for r in results.fixed
                if r.cell.task == task
                and r.cell.method == method
                and r.score(results.metric) is not None
            }
            differences = {
                seed: 100 * (score - seeds[seed]) for seed, score in scores.items() if seed in seeds
            }
            rows.append(StructureRow(task, structure_name(method), scores, differences))
    return rows


def score_text(scores: list[float]) -> str:
    """``mean ± std`` (×100, sample std; no ± for one value), ``–`` for none."""
    if not scores:
        return "–"
    mean = f"{100 * statistics.fmean(scores):.1f}"
    return mean + (f" ± {100 * statistics.stdev(scores):.1f}" if len(scores) > 1 else "")


def monitor_of(results: AblationResults, task: str) -> str:
    """The task's dev metric (``mcc``, ``pearson`` ...) from a done cell, else ``dev``."""
    for r in (*results.learned, *results.fixed):
        if r.cell.task == task and r.done and r.run.monitor:
            return metric_label(r.run.monitor)
    return "dev"


def plot_task(rows: list[StructureRow], path: Path, metric: str, monitor: str) -> bool:
    """Bars: each fixed structure's mean score over its done seeds; dashed: the learned
    structure's (the painter's 0-1 axis: a negative MCC draws no bar; the table has every
    value). Returns whether it drew (the learned structure needs a done cell)."""
    learned, fixed = rows[0], rows[1:]
    if learned.mean() is None:
        return False
    draw_bars(
        path,
        [row.structure for row in fixed],
        [row.mean() or 0.0 for row in fixed],
        [
            f"{100 * row.mean():.1f} (n={len(row.scores)})" if row.scores else "no run"
            for row in fixed
        ],
        (learned.mean(), f"learned structure {100 * learned.mean():.1f} (n={len(learned.scores)})"),
        f"MoLE on {task_label(rows[0].task)}: one expert kind per layer ({metric}, seed mean)",
        ("expert kind in every layer", f"dev {monitor}"),
    )
    return True


def missing_lines(results: AblationResults, commands: dict[tuple[str, str], str]) -> list[str]:
    """Every cell of either protocol that is not done, with why, and the commands
    (``(ABLATION or LEARNED, stage) -> command``) that run them."""
    pending = [
        (kind, r)
        for kind, group in ((ABLATION, results.fixed), (LEARNED, results.learned))
        for r in group
        if not r.done
    ]
    if not pending:
        return ["Every cell is done."]
    total = len(results.fixed) + len(results.learned)
    lines = [f"{len(pending)} of {total} cells are not done (left out of the table):", ""]
    new: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, r in pending:
        if r.state.kind == NEW:
            new[kind, r.cell.stage].append(r.cell.name)
        else:
            lines.append(f"- {r.cell.name} ({kind}, {r.cell.path}): {r.state.reason}")
    lines += [
        f"- not run yet ({kind}, stage {stage}): {', '.join(names)}"
        for (kind, stage), names in new.items()
    ]
    lines += ["", "Run them (done cells are skipped):", "", "```bash"]
    lines += [commands[key] for key in dict.fromkeys((k, r.cell.stage) for k, r in pending)]
    return [*lines, "```"]


def ablation_report(
    results: AblationResults,
    out: Path,
    commands: dict[tuple[str, str], str],
    report_command: str,
) -> list[str]:
    """Markdown lines: per task a table and a figure ``mole_ablation_<task>.png`` in
    ``out``, then the cells not done (``commands``: ``(ABLATION or LEARNED, stage) ->``
    the command that runs that stage of that protocol)."""
    rows = structure_rows(results)
    lines = [
        "## MoLE's structure ablation (claim b)",
        "",
        f"Written by `{report_command}`.",
        "",
        f"Dev score ({results.metric} checkpoint, ×100) of one expert kind in every layer "
        "against the learned structure (the evidence protocol's MoLE: gated exploration, "
        "prune to top-1 per layer, retrain) at the same budget: mean ± std over the done "
        "seeds. *vs learned*: the fixed structure's score minus the learned structure's "
        "on the same seed, mean ± std over the seeds where both cells are done (n), and "
        "per seed; positive: the fixed structure scores higher.",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    for task in dict.fromkeys(row.task for row in rows):
        task_rows = [row for row in rows if row.task == task]
        monitor = monitor_of(results, task)
        table = [
            [
                row.structure,
                ", ".join(map(str, row.scores)) or "none done",
                score_text(list(row.scores.values())),
                mean_std(list(row.differences.values())) if row.differences else "–",
                ", ".join(f"{seed}: {d:+.1f}" for seed, d in row.differences.items()) or "–",
            ]
            for row in task_rows
        ]
        figure = out / f"mole_ablation_{task}.png"
        drawn = plot_task(task_rows, figure, results.metric, monitor)
        lines += [
            f"### {task_label(task)} ({monitor})",
            "",
            *markdown_table(
                ["structure", "seeds", "dev score", "vs learned", "per seed"], table, "llrrl"
            ).splitlines(),
            "",
            f"[Figure]({figure.name})."
            if drawn
            else "No figure: the learned structure has no done cell.",
            "",
        ]
    lines += ["### Cells not done", "", *missing_lines(results, commands)]
    return lines
