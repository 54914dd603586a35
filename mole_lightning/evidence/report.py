"""The protocol's report: a Markdown section for ``docs/results.md``, a CSV of every
run, and figures (MoLE's pruned structures, MoLEx's selection heatmaps, learning curves).

Reads only what the cells left on disk (``run_info.json``, ``resolved_config.yaml``,
``metrics.json``, ``throughput.json``, ``evidence_cell.json``, ``csv/metrics.csv``,
``mole_structure.json``, ``molex_selection.json``, ``eval_<suite>.json``). Only cells
whose saved config is the protocol's (``state.DONE``) enter the tables, and of those only
the evaluations done with the protocol's settings (``evaluation_report``); every other
cell and evaluation is listed as missing, failed or stale, with the command that
continues the protocol.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from mole_lightning.analysis.curves import (
    plot_learning_curves,
    validations_by_epoch,
)
from mole_lightning.analysis.heatmaps import average_tables, read_expert_table
from mole_lightning.analysis.table import (
    build_table,
    format_params,
    human_count,
    metric_label,
    task_label,
    task_order,
)
from mole_lightning.evidence.evaluation_report import evaluation_sections
from mole_lightning.evidence.results import (
    BASELINE,
    CellResult,
    mean_std,
    paired_to_baseline,
    pct,
)
from mole_lightning.evidence.runner import format_duration, wall_seconds
from mole_lightning.evidence.state import NEW
from mole_lightning.reporting import HeatmapPanel, draw_heatmap, markdown_table
from mole_lightning.utils.run_info import write_text_atomic

# each protocol's section is marked with its file's stem (conf/evidence.yaml: evidence)
BEGIN_TEMPLATE = (
    "<!-- {name}:begin (scripts/evidence.py --report writes this section; edits inside are "
    "overwritten) -->"
)
END_TEMPLATE = "<!-- {name}:end -->"
OTHER_METRIC = {"best": "final", "final": "best"}

LIMITS = """What this protocol cannot show:
- The papers used RoBERTa-base/large (MoLE, MoLEx GLUE) and GPT-2 medium (MoLEx E2E) on
  GPUs. MiniLM-L6 is a small distilled model (6 layers, hidden 384): a method's rank here
  need not carry over to those backbones, and MoLEx has only 6 layers to choose from.
- Epochs and learning rates are the protocol's fixed values for every method, not each
  method's tuned optimum; a method that needs a longer schedule is disadvantaged.
- Three seeds give a rough spread, not a significance test; dev sets are small (RTE 277,
  MRPC 408 examples), and `best` scores select the checkpoint on the same dev set."""


def percent_scores(results: list[CellResult], metric: str) -> dict[tuple[str, str, int], float]:
    """``(method, task, seed) -> 100 * metric score`` of the done cells."""
    return {
        (r.cell.method, r.cell.task, r.cell.seed): 100 * score
        for r in results
        if (score := r.score(metric)) is not None
    }


def paired_differences(
    results: list[CellResult], metric: str
) -> dict[tuple[str, str], list[float]]:
    """``(method, task) -> [100 * (score - LoRA's score)]`` over the seeds where both the
    method's and LoRA's cell are done."""
    return paired_to_baseline(percent_scores(results, metric))


def difference_lines(results: list[CellResult], metric: str) -> list[str]:
    diffs = paired_differences(results, metric)
    if not diffs:
        return [
            f"No method has a done cell paired with a done {BASELINE} cell of the same seed yet."
        ]
    tasks = sorted({t for _, t in diffs}, key=task_order)
    methods = [m for m in dict.fromkeys(r.cell.method for r in results) if m != BASELINE]
    lines = [
        f"Paired difference to {BASELINE} on the same seed ({metric} score, ×100): mean ± std "
        "of the per-seed differences (n = seeds with both cells done); positive = better than "
        f"{BASELINE}.",
        "",
    ]
    rows = []
    for method in methods:
        cells = [mean_std(diffs[method, t]) if (method, t) in diffs else "–" for t in tasks]
        if any(c != "–" for c in cells):
            rows.append([method, *cells])
    header = ["method", *(task_label(t) for t in tasks)]
    return [*lines, *markdown_table(header, rows, "l" + "r" * len(tasks)).splitlines()]


# a method -> the method it extends: MoLE's MLP expert is the bottleneck adapter, and MoLE
# is held to at least the adapter's mean minus one of the adapter's seed stds per task
EXTENDS = {"mole": "adapter"}


def extension_rows(scores: dict[tuple[str, str, int], float]) -> list[list[str]]:
    """Per method of ``EXTENDS`` and task where the method has a score and the method it
    extends has two or more: ``[method, extended, task, paired difference (mean ± std),
    bar = extended's mean − its std, method's mean, verdict]``, from ``(method, task,
    seed) -> score ×100``. The verdict is ``at or above`` (the method's mean ≥ the bar) or
    ``below by <gap>``; bar, mean and gap have 2 decimals, as the gap can be small."""
    rows = []
    for method, extended in EXTENDS.items():
        diffs = paired_to_baseline(scores, extended)
        for task in sorted({t for m, t, _ in scores if m == method}, key=task_order):
            own = [v for (m, t, _), v in scores.items() if (m, t) == (method, task)]
            base = [v for (m, t, _), v in scores.items() if (m, t) == (extended, task)]
            if len(base) < 2:
                continue
            bar, mean = statistics.fmean(base) - statistics.stdev(base), statistics.fmean(own)
            verdict = "at or above" if mean >= bar else f"below by {bar - mean:.2f}"
            paired = mean_std(diffs[method, task]) if (method, task) in diffs else "–"
            rows.append(
                [
                    method,
                    extended,
                    task_label(task),
                    paired,
                    f"{bar:.2f} (n={len(base)})",
                    f"{mean:.2f} (n={len(own)})",
                    verdict,
                ]
            )
    return rows


def extension_lines(results: list[CellResult], metric: str) -> list[str]:
    """``extension_rows`` of the done cells' ``metric`` scores as a Markdown table (no
    lines without a row)."""
    rows = extension_rows(percent_scores(results, metric))
    if not rows:
        return []
    header = ["method", "extends", "task", "paired difference", "bar", "mean", "verdict"]
    return [
        "",
        f"Against the method it extends ({metric} score ×100): the paired difference on the "
        "same seeds, and the bar: the extended method's mean minus one of its seed stds; "
        "the method's mean at or above it passes.",
        "",
        *markdown_table(header, rows, "lllrrrl").splitlines(),
    ]


def cell_minutes(results: list[CellResult], method: str, task: str) -> str:
    """Median wall minutes of a done cell of ``method`` on ``task``, over the cells that
    ran in one attempt (the median, so that one cell slowed by other work on its machine
    does not move it); where every cell was stopped and resumed (or failed first), the
    median of their attempts' total, an upper bound marked ``≤``; ``–`` for none."""
    done = [r for r in results if r.done and (r.cell.method, r.cell.task) == (method, task)]
    whole = [r for r in done if len(r.record.get("attempts", [])) == 1]
    walls = [w for w in map(wall_seconds, [r.record for r in whole or done]) if w is not None]
    if not walls:
        return "–"
    return f"{'' if whole else '≤'}{statistics.median(walls) / 60:.1f}"


def machine_and_precision(result: CellResult) -> str:
    """``<machine>, precision <p>`` of a done cell's last attempt."""
    attempts = result.record.get("attempts", [])
    machine = attempts[-1]["machine"]["summary"] if attempts else "unknown machine"
    return f"{machine}, precision {result.run.config_value('trainer.precision')}"


def cell_count(count: int) -> str:
    """``1 cell``, ``2 cells``."""
    return f"{count} cell" if count == 1 else f"{count} cells"


def machine_summary(results: list[CellResult]) -> str:
    """``<machine>, precision <p> (<n> cells)`` for each machine and precision of the
    done cells."""
    counts: dict[str, int] = defaultdict(int)
    for r in results:
        if r.done:
            counts[machine_and_precision(r)] += 1
    return "; ".join(f"{m} ({cell_count(n)})" for m, n in counts.items())


def glance_markdown(results: list[CellResult], metric: str, report_command: str, name: str) -> str:
    """The at-a-glance section (between the markers of ``<name>_glance``): per method,
    the task means ± std of the ``metric`` score ×100, their average, the trainable
    parameters and the wall minutes of one cell per task; then the paired differences to
    LoRA. The methods' own cells only (no stage variants)."""
    own = [r for r in results if r.cell.variant is None]
    done = [r for r in own if r.done]
    lines = [
        BEGIN_TEMPLATE.format(name=f"{name}_glance"),
        f"Written by `{report_command}` from the cells' records ({len(done)} of {len(own)} "
        "cells done); the protocol's section below has every run.",
        "",
    ]
    if not done:
        return (
            "\n".join([*lines, "No cell is done yet.", END_TEMPLATE.format(name=f"{name}_glance")])
            + "\n"
        )
    table = build_table([r.run for r in done], metric=metric)
    rows = []
    for row in table.rows:
        avg = table.average(row)
        rows.append(
            [
                row,
                format_params(table.params.get(row, [])),
                *(table.format_cell(row, t, 1) for t in table.tasks),
                "–" if avg is None else f"{avg:.1f}",
                " / ".join(cell_minutes(own, row, t) for t in table.tasks),
            ]
        )
    labels = [task_label(t) for t in table.tasks]
    header = [
        "method",
        "trainable params",
        *(f"{task_label(t)} ({metric_label(table.monitors[t])})" for t in table.tasks),
        "avg",
        f"minutes per cell ({' / '.join(labels)})",
    ]
    what = "best checkpoint" if metric == "best" else "last validation"
    lines += [
        f"Dev score ×100 ({what}): mean ± std over the seeds done (n); avg: the mean of the "
        "row's task means (– until every task has a cell); minutes: the wall time of one "
        "cell, the median over the seeds whose cell ran in one attempt (≤: every cell was "
        "resumed or retried, the median of their attempts' total).",
        "",
        *markdown_table(header, rows, "lr" + "r" * (len(labels) + 1) + "l").splitlines(),
        "",
        f"Machines: {machine_summary(own)}.",
        "",
        *difference_lines(own, metric),
        *extension_lines(own, metric),
        END_TEMPLATE.format(name=f"{name}_glance"),
    ]
    return "\n".join(lines) + "\n"


def run_lines(results: list[CellResult]) -> list[str]:
    """One row per done cell: scores, parameters, wall time, throughput, machine."""
    if not any(r.done for r in results):
        return ["No cell is done yet."]
    rows = []
    for r in results:
        if not r.done:
            continue
        run = r.run
        params = (run.metrics or {}).get("params/trainable")
        attempts = r.record.get("attempts", [])
        machine = attempts[-1]["machine"]["summary"] if attempts else "?"
        rate = r.throughput.get("train_samples_per_s")
        note = f" ({len(attempts)} attempts)" if len(attempts) > 1 else ""
        rows.append(
            [
                task_label(r.cell.task),
                r.cell.method,
                r.cell.seed,
                pct(run.score("best")),
                pct(run.score("final")),
                human_count(int(params)) if params else "–",
                f"{format_duration(wall_seconds(r.record))}{note}",
                "–" if rate is None else f"{rate:.1f}",
                machine,
                run.config_value("trainer.precision"),
                str(run.info.get("git_commit"))[:12],
            ]
        )
    header = [
        "task",
        "method",
        "seed",
        "best",
        "final",
        "trainable params",
        "wall time",
        "train samples/s",
        "machine",
        "precision",
        "commit",
    ]
    return markdown_table(header, rows, "llrrrrrrlll").splitlines()


def epoch_cells(values: dict[int, float], epochs: int) -> list[str]:
    """``values`` (epoch → metric) as ``epochs`` table cells, ``–`` where one is missing."""
    return [pct(values[e]) if e in values else "–" for e in range(epochs)]


def curve_lines(results: list[CellResult]) -> list[str]:
    """The monitored dev metric at each validation (each epoch end), mean over seeds."""
    series: dict[tuple[str, str], list[dict[int, float]]] = defaultdict(list)
    gaps = []
    for r in results:
        if r.done:
            values = validations_by_epoch(r.run)
            if values:
                series[r.cell.task, r.cell.method].append(values)
                missing = [e + 1 for e in range(max(values)) if e not in values]
                if missing:
                    gaps.append(f"{r.cell.name} (epochs {', '.join(map(str, missing))})")
    if not series:
        return ["No done cell has a csv/metrics.csv with dev scores yet."]
    width = max(max(v) + 1 for runs in series.values() for v in runs)
    note = (
        f" Validations missing from a cell's csv/metrics.csv (resumed before its CSV logger "
        f"kept the earlier attempt's rows) are left out of that epoch's mean: {'; '.join(gaps)}."
        if gaps
        else ""
    )
    lines = [
        "Dev metric (×100) at each validation (one per epoch), mean over the done seeds." + note,
        "",
    ]
    rows = []
    for (task, method), runs in sorted(series.items(), key=lambda kv: task_order(kv[0][0])):
        means = []
        for epoch in range(width):
            at = [v[epoch] for v in runs if epoch in v]
            means.append(pct(statistics.fmean(at)) if at else "")
        rows.append([task_label(task), method, len(runs), *means])
    header = ["task", "method", "seeds", *(str(i) for i in range(1, width + 1))]
    return [*lines, *markdown_table(header, rows, "llr" + "r" * width).splitlines()]


PLAIN_DIR = "plain_lora"


def sanity_lines(results: list[CellResult], out: Path) -> list[str]:
    """The plain transformers + peft loop (``<out>/plain_lora/<task>_seed<k>.json``,
    written by ``scripts/plain_lora_loop.py --out``) beside the project's LoRA cell of
    the same task and seed: the dev metric after each epoch."""
    files = sorted((out / PLAIN_DIR).glob("*.json"))
    if not files:
        return [
            f"No plain-loop result in {out / PLAIN_DIR}/ yet (docs/experiments.md: the sanity row)."
        ]
    lora = {(r.cell.task, r.cell.seed): r for r in results if r.cell.method == BASELINE and r.done}
    lines = [
        "The dev metric (×100) after each epoch: scripts/plain_lora_loop.py (same LoRA "
        "settings, plain transformers + peft) against the project's LoRA cell of the same "
        "task and seed.",
        "",
    ]
    rows = []
    for path in files:
        plain = json.loads(path.read_text())
        task, seed, monitor = plain["task"], int(plain["settings"]["seed"]), plain["monitor"]
        curve = ", ".join(pct(e["dev"][monitor]) for e in plain["epochs"])
        cell = lora.get((task, seed))
        ours = "no done cell"
        if cell:
            values = validations_by_epoch(cell.run)
            ours = ", ".join(epoch_cells(values, max(values, default=-1) + 1))
        rows.append([task_label(task), seed, monitor, curve, ours])
    header = ["task", "seed", "metric", "plain loop, per epoch", "project LoRA, per epoch"]
    return [*lines, *markdown_table(header, rows, "lrlll").splitlines()]


def mole_structures(results: list[CellResult]) -> dict[str, dict[int, list[list[str]]]]:
    """``task -> seed -> kept experts per layer`` from the done MoLE cells."""
    found: dict[str, dict[int, list[list[str]]]] = defaultdict(dict)
    for r in results:
        path = r.cell.path / "mole_structure.json"
        if r.done and r.cell.method == "mole" and path.is_file():
            found[r.cell.task][r.cell.seed] = json.loads(path.read_text())["structure"]
    return dict(found)


def structure_table(by_seed: dict[int, list[list[str]]], experts: list[str]) -> HeatmapPanel:
    """Layer × expert: the fraction of seeds in which the expert survived pruning."""
    layers = max(len(s) for s in by_seed.values())
    values = np.zeros((layers, len(experts)))
    for structure in by_seed.values():
        for layer, kept in enumerate(structure):
            for name in kept:
                values[layer, experts.index(name)] += 1
    return HeatmapPanel([f"layer {i}" for i in range(layers)], experts, values / len(by_seed))


def mole_lines(results: list[CellResult], figures: Path, link: Path) -> list[str]:
    structures = mole_structures(results)
    if not structures:
        return [
            "No done MoLE cell has a mole_structure.json yet (it is written when pruning runs)."
        ]
    lines = ["Which expert survived pruning in each layer, per seed:", ""]
    for task in sorted(structures, key=task_order):
        by_seed = structures[task]
        seeds = sorted(by_seed)
        experts = sorted({e for s in by_seed.values() for kept in s for e in kept})
        path = figures / f"mole_structure_{task}.png"
        figures.mkdir(parents=True, exist_ok=True)
        draw_heatmap(
            path,
            {f"{task_label(task)} (n={len(seeds)} seeds)": structure_table(by_seed, experts)},
            "MoLE: fraction of seeds keeping each expert",
            ("layer", "expert"),
        )
        rows = [
            [
                layer,
                *(", ".join(by_seed[s][layer]) if layer < len(by_seed[s]) else "–" for s in seeds),
            ]
            for layer in range(max(len(s) for s in by_seed.values()))
        ]
        lines += [
            f"{task_label(task)} ([figure]({relative_link(path, link)})):",
            "",
            *markdown_table(["layer", *(f"seed {s}" for s in seeds)], rows).splitlines(),
            "",
        ]
    return lines


def molex_lines(results: list[CellResult], figures: Path, link: Path) -> list[str]:
    """One selection heatmap per task, the mean over its done seeds."""
    by_task: dict[str, list[HeatmapPanel]] = defaultdict(list)
    for r in results:
        path = r.cell.path / "molex_selection.json"
        if r.done and r.cell.method == "molex" and path.is_file():
            by_task[r.cell.task].append(read_expert_table(path))
    if not by_task:
        return ["No done MoLEx cell has a molex_selection.json yet."]
    lines = [
        "MoLEx layer selection on the dev set (routed layer × chosen layer, frequency; the "
        "last dev pass of each run, the best checkpoint's re-validation), mean over seeds:",
        "",
    ]
    for task in sorted(by_task, key=task_order):
        path = figures / f"molex_selection_{task}.png"
        figures.mkdir(parents=True, exist_ok=True)
        draw_heatmap(
            path,
            {f"{task_label(task)} (n={len(by_task[task])} seeds)": average_tables(by_task[task])},
            "MoLEx layer selection frequency (the best checkpoint's dev pass)",
            ("routed layer", "chosen layer"),
        )
        lines.append(f"- {task_label(task)}: [{path.name}]({relative_link(path, link)})")
    return lines


def relative_link(path: Path, markdown: Path) -> str:
    """``path`` relative to the Markdown file's folder (``../`` where needed), so the
    link works in every clone; absolute only across drives."""
    try:
        return os.path.relpath(path.resolve(), markdown.resolve().parent)
    except ValueError:
        return str(path.resolve())


def missing_lines(results: list[CellResult], continue_command: dict[str, str]) -> list[str]:
    """Every cell not done, with why, and the command per stage that continues it."""
    pending = [r for r in results if not r.done]
    if not pending:
        return ["Every cell of the protocol is done."]
    lines = [f"{len(pending)} of {len(results)} cells are not done:", ""]
    new: dict[str, list[str]] = defaultdict(list)
    for r in pending:
        if r.state.kind == NEW:
            new[r.cell.stage].append(r.cell.name)
        else:
            lines.append(f"- {r.cell.name} ({r.cell.stage}): {r.state.reason}")
    for stage, names in new.items():
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"
        lines.append(f"- stage {stage}: {cell_count(len(names))} not run yet ({shown})")
    lines += ["", "Continue the protocol (done cells are skipped, killed ones resume):", ""]
    stages = dict.fromkeys(r.cell.stage for r in pending)
    lines += ["```bash", *(continue_command[s] for s in stages), "```"]
    return lines


def provenance_lines(results: list[CellResult], report_command: str) -> list[str]:
    """Commands, commits, machines and dates of the done cells."""
    done = [r for r in results if r.done]
    machines: dict[str, list[str]] = defaultdict(list)
    commits: dict[str, int] = defaultdict(int)
    commands = dict.fromkeys(r.record.get("protocol_command") for r in done if r.record)
    for r in done:
        machines[machine_and_precision(r)].append(r.cell.name)
        commits[str(r.run.info.get("git_commit"))] += 1
    starts = [r.run.info.get("started") for r in done if r.run.info.get("started")]
    ends = [r.run.info.get("ended") for r in done if r.run.info.get("ended")]
    lines = [
        f"Written by `{report_command}` (run it again to refresh this section).",
        f"Cells done: {len(done)} of {len(results)}"
        + (
            f", run between {min(starts)} and {max(ends)} (local time of the machine)."
            if starts and ends
            else "."
        ),
    ]
    if commands:
        lines.append("Protocol command(s): " + "; ".join(f"`{c}`" for c in commands if c))
    if commits:
        lines.append(
            "Commit(s): " + ", ".join(f"`{c}` ({cell_count(n)})" for c, n in commits.items())
        )
    for machine, names in machines.items():
        lines.append(f"Machine: {machine}: {cell_count(len(names))} ({', '.join(names)}).")
    return lines


def write_figures(results: list[CellResult], figures: Path, link: Path) -> list[str]:
    """Learning curves (``curves_<task>.png``) of the done cells."""
    runs = [r.run for r in results if r.done]
    if not runs:
        return []
    written, _ = plot_learning_curves(runs, figures)
    return [
        f"- {task_label(p.stem.removeprefix('curves_'))}: [{p.name}]({relative_link(p, link)})"
        for p in written
    ]


def stage_variant_lines(results: list[CellResult], metric: str) -> list[str]:
    """Each stage variant's cells (``method@variant``) against the method's own cells of
    the same task and seed: the paired difference of the dev score, the method's seed
    spread beside it, the training speed ratio (samples/s, variant over base, the median
    over the seeds: one cell slowed by other work on its machine does not move it), and once
    every planned pair of a row is done whether the row stays within the spread
    (``|mean difference| <= base std``); then, per variant, how many rows do."""
    base = {(r.cell.task, r.cell.method, r.cell.seed): r for r in results if r.cell.variant is None}
    rows = []
    verdicts: dict[str, list[bool | None]] = {}
    for variant in dict.fromkeys(r.cell.variant for r in results if r.cell.variant):
        cells = [r for r in results if r.cell.variant == variant]
        verdicts[variant] = []
        for task in sorted({r.cell.task for r in cells}, key=task_order):
            for method in dict.fromkeys(r.cell.method for r in cells if r.cell.task == task):
                pairs = [
                    (base[task, method, r.cell.seed], r)
                    for r in cells
                    if r.cell.task == task
                    and r.cell.method == method
                    and r.done
                    and (task, method, r.cell.seed) in base
                    and base[task, method, r.cell.seed].done
                ]
                planned = sum(1 for r in cells if r.cell.task == task and r.cell.method == method)
                if not pairs:
                    rows.append(
                        [variant, task_label(task), method, f"0 of {planned}", "", "", "", "–"]
                    )
                    verdicts[variant].append(None)
                    continue
                diffs = [v.score(metric) - b.score(metric) for b, v in pairs]
                base_scores = [b.score(metric) for b, _ in pairs]
                within = None
                if len(pairs) == planned and len(pairs) > 1:
                    within = abs(statistics.fmean(diffs)) <= statistics.stdev(base_scores)
                verdicts[variant].append(within)
                speeds = [
                    v.throughput["train_samples_per_s"] / b.throughput["train_samples_per_s"]
                    for b, v in pairs
                    if v.throughput.get("train_samples_per_s")
                    and b.throughput.get("train_samples_per_s")
                ]
                rows.append(
                    [
                        variant,
                        task_label(task),
                        method,
                        f"{len(pairs)} of {planned}",
                        mean_std([100 * d for d in diffs]),
                        f"{100 * statistics.stdev(base_scores):.1f}" if len(pairs) > 1 else "–",
                        f"{statistics.median(speeds):.2f}x" if speeds else "–",
                        {None: "–", True: "yes", False: "no"}[within],
                    ]
                )
    if not rows:
        return []
    summary = []
    for variant, found in verdicts.items():
        within, decided = sum(v is True for v in found), sum(v is not None for v in found)
        outcome = (
            f"{len(found) - decided} still waiting for pairs"
            if decided < len(found)
            else "every row within the spread"
            if within == len(found)
            else f"{len(found) - within} outside the spread"
        )
        summary.append(f"- {variant}: {within} of {len(found)} rows within the spread; {outcome}.")
    return [
        f"Each variant's cell against the method's own cell of the same task and seed ({metric} "
        "dev score ×100, variant minus base, mean ± std over the seeds where both are done), "
        "the base cells' own seed spread (std) for scale, the training speed of the "
        "variant over the base (samples/s, the median of the per-seed ratios, so that one "
        "cell slowed by other work on its machine does not move it), and, once every "
        "planned pair of a row is done, whether the mean difference stays within the base "
        "std.",
        "",
        *markdown_table(
            ["variant", "task", "method", "pairs", "difference", "base std", "speed", "within"],
            rows,
            "lllrrrrl",
        ).splitlines(),
        "",
        *summary,
    ]


def report_markdown(
    results: list[CellResult],
    metric: str,
    figures: Path,
    markdown_path: Path,
    report_command: str,
    continue_command: dict[str, str],
    out: Path,
    evaluate_command: str,
    name: str = "evidence",
) -> str:
    """The whole generated section, between protocol ``name``'s markers; ``out`` is the
    protocol folder, ``evaluate_command`` runs the pending evaluations. The tables hold
    the methods' own cells; stage variants' cells (``method@variant``) are compared with
    them in a section of their own."""
    every = results
    results = [r for r in every if r.cell.variant is None]
    runs = [r.run for r in results if r.done]
    backbones = sorted({str(r.run.backbone) for r in results if r.done}) or ["no run yet"]
    seeds = sorted({r.cell.seed for r in results})
    lines = [
        BEGIN_TEMPLATE.format(name=name),
        f"## Evidence protocol: dev scores ({', '.join(backbones)}, seeds {', '.join(map(str, seeds))})",
        "",
    ]
    lines += provenance_lines(results, report_command) + [""]
    for which in (metric, OTHER_METRIC[metric]):
        if runs:
            table = build_table(runs, metric=which)
            lines += table.table_lines(1) + [""]
            lines += [f"- {w}" for w in table.warnings] + ([""] if table.warnings else [])
        else:
            lines += ["No cell is done yet: no table.", ""]
            break
    lines += ["### Learning curves", ""] + curve_lines(results) + [""]
    figure_links = write_figures(results, figures, markdown_path)
    lines += figure_links + ([""] if figure_links else [])
    lines += ["### Sanity row: the plain LoRA loop", ""] + sanity_lines(results, out) + [""]
    lines += ["### Every run", ""] + run_lines(results) + [""]
    lines += (
        ["### MoLE: pruned structures", ""] + mole_lines(results, figures, markdown_path) + [""]
    )
    lines += (
        ["### MoLEx: layer selection", ""] + molex_lines(results, figures, markdown_path) + [""]
    )
    lines += evaluation_sections(results, evaluate_command)
    variant_lines = stage_variant_lines(every, metric)
    if variant_lines:
        lines += ["### Stage variants against the methods' own cells", "", *variant_lines, ""]
    lines += ["### Missing and failed cells", ""] + missing_lines(every, continue_command) + [""]
    lines += [LIMITS, END_TEMPLATE.format(name=name)]
    return "\n".join(lines) + "\n"


def runs_csv(results: list[CellResult]) -> str:
    """One line per planned cell: state, scores (×1, unrounded), every best/val metric,
    LoRA difference, parameters, time, throughput, machine, commit, folder."""
    diffs = {
        (r.cell.task, r.cell.seed): r.score("best") for r in results if r.cell.label == BASELINE
    }
    extra = sorted(
        {
            k
            for r in results
            if r.done
            for k in (r.run.metrics or {})
            if k.startswith(("best/val/", "val/"))
        }
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "stage",
            "task",
            "method",
            "seed",
            "state",
            "monitor",
            "best",
            "final",
            "best_minus_lora",
            "params_trainable",
            "wall_s",
            "attempts",
            "train_samples_per_s",
            "machine",
            "precision",
            "git_commit",
            "path",
            *extra,
        ]
    )
    for r in results:
        run, done = r.run, r.done
        metrics = (run.metrics or {}) if done else {}
        best, lora = r.score("best"), diffs.get((r.cell.task, r.cell.seed))
        attempts = r.record.get("attempts", [])
        writer.writerow(
            [
                r.cell.stage,
                r.cell.task,
                r.cell.label,
                r.cell.seed,
                r.state.kind,
                run.monitor if done else "",
                "" if best is None else best,
                "" if r.score("final") is None else r.score("final"),
                "" if best is None or lora is None or r.cell.label == BASELINE else best - lora,
                metrics.get("params/trainable", ""),
                wall_seconds(r.record) or "",
                len(attempts),
                r.throughput.get("train_samples_per_s", "") if done else "",
                attempts[-1]["machine"]["summary"] if attempts else "",
                run.config_value("trainer.precision") if done else "",
                run.info.get("git_commit", "") if done else "",
                str(r.cell.path),
                *(metrics.get(k, "") for k in extra),
            ]
        )
    return out.getvalue()


def replace_section(path: Path, section: str, name: str = "evidence") -> None:
    """Writes ``section`` (which starts and ends with protocol ``name``'s markers,
    ``BEGIN_TEMPLATE`` / ``END_TEMPLATE``) into the Markdown file, replacing the text
    between those markers, or appending it when the file has none. Other protocols'
    sections are left alone. Running it twice with the same section leaves the file
    unchanged."""
    begin, end = BEGIN_TEMPLATE.format(name=name), END_TEMPLATE.format(name=name)
    text = path.read_text() if path.is_file() else ""
    if (begin in text) != (end in text):
        raise ValueError(
            f"{path}: the {name!r} section has one marker without the other; fix the file by hand"
        )
    if begin in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
