"""The report's evaluation sections, from the done evaluations' ``eval_<suite>.json``:
AdvGLUE (beside the accuracy of always answering each class), perturbations and
zero-shot transfer, mean ± std over seeds per task and method, each method's paired
difference to LoRA on the same seed, and the evaluations of done cells not done yet."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from mole_lightning.analysis.table import task_label, task_order
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.evidence.results import (
    BASELINE,
    CellResult,
    mean_std,
    paired_to_baseline,
    pct,
)
from mole_lightning.evidence.state import DONE, NO_CHECKPOINT, NO_CHECKPOINT_HELP
from mole_lightning.reporting import markdown_table

NO_DIFFERENCE = "No method has an evaluation paired with a LoRA evaluation of the same seed yet."


def level(values: list[float]) -> str:
    """Fractions as ``mean ± std (n=k)`` ×100, ``–`` for none."""
    return mean_std([100 * v for v in values], signed=False) if values else "–"


def method_order(results: list[CellResult]) -> list[str]:
    """The protocol's methods in the order its cells run them."""
    return list(dict.fromkeys(r.cell.method for r in results))


def difference_rows(
    values: dict[tuple[str, str, int], float],
    columns: list[str],
    first: list[str],
    methods: list[str],
) -> list[list[str]]:
    """Table rows of paired differences to LoRA (×100): one per method of ``methods``
    with a pair, starting with the cells ``first`` (e.g. the task), then one cell per
    ``columns`` entry; ``values``: ``(method, column, seed) -> value`` (×1)."""
    diffs = paired_to_baseline({k: 100 * v for k, v in values.items()})
    return [
        [
            *first,
            method,
            *(mean_std(diffs[method, c]) if (method, c) in diffs else "–" for c in columns),
        ]
        for method in methods
        if any((method, c) in diffs for c in columns)
    ]


def header_lines(header: list[str], rows: list[list], left: int) -> list[str]:
    """``markdown_table`` lines, the first ``left`` columns left-aligned."""
    return markdown_table(header, rows, "l" * left + "r" * (len(header) - left)).splitlines()


def advglue_lines(results: list[CellResult]) -> list[str]:
    """Per AdvGLUE set: each method's accuracy, the clean dev accuracy and the drop, with
    rows for always answering one class; then the paired differences to LoRA."""
    rows_of: dict[tuple[str, str], dict[str, dict[int, dict]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in results:
        for _, payload in r.evaluated("advglue"):
            for row in payload["rows"]:
                rows_of[r.cell.task, row["set"]][r.cell.method][r.cell.seed] = row
    if not rows_of:
        return ["No AdvGLUE evaluation is done yet."]
    methods = method_order(results)
    lines = [
        "Accuracy (×100) on each AdvGLUE set, on the task's clean dev set and the drop "
        "between them (clean − AdvGLUE), mean ± std over seeds (n = seeds). An `always "
        "<label>` row is the accuracy of answering that class for every example: a model "
        "near it has learned nothing the set rewards, however small its drop.",
        "",
    ]
    for task, name in sorted(rows_of, key=lambda k: (task_order(k[0]), k[1])):
        by_method = rows_of[task, name]
        every = [row for seeds in by_method.values() for row in seeds.values()]
        labels = list(
            dict.fromkeys(k.removeprefix("const_") for k in every[0] if k.startswith("const_"))
        )
        rows = []
        for method in sorted(by_method, key=methods.index):
            seeds = by_method[method].values()
            rows.append(
                [method, *(level([row[k] for row in seeds]) for k in ("acc", "clean_acc", "drop"))]
            )
        for label in labels:
            const = statistics.fmean(row[f"const_{label}"] for row in every)
            clean = statistics.fmean(row[f"clean_const_{label}"] for row in every)
            rows.append([f"always {label}", pct(const), pct(clean), pct(clean - const)])
        lines += [
            f"{task_label(task)}, AdvGLUE set `{name}` ({every[0]['n']} examples):",
            "",
            *header_lines(["method", "AdvGLUE acc", "clean dev acc", "drop"], rows, 1),
            "",
        ]
        values = {
            (method, k, seed): row[k]
            for method, seeds in by_method.items()
            for seed, row in seeds.items()
            for k in ("acc", "drop")
        }
        diffs = difference_rows(values, ["acc", "drop"], [], methods)
        lines += (
            [
                f"Paired difference to {BASELINE} on the same seed (×100, mean ± std of the "
                "per-seed differences): AdvGLUE accuracy (positive: more accurate) and drop "
                "(positive: loses more than LoRA).",
                "",
                *header_lines(["method", "AdvGLUE acc", "drop"], diffs, 1),
            ]
            if diffs
            else [NO_DIFFERENCE]
        ) + [""]
    return lines[:-1]


def perturb_lines(results: list[CellResult]) -> list[str]:
    """Per task and method: the drop of the monitored dev metric at each perturbation
    kind and rate (p > 0), then the paired differences of the drops to LoRA."""
    drops: dict[tuple[str, str, int], dict[str, float]] = {}
    clean: dict[tuple[str, str, int], float] = {}
    monitors: dict[str, str] = {}
    columns: dict[str, None] = {}
    for r in results:
        for _, payload in r.evaluated("perturb"):
            monitor = r.run.monitor.removeprefix("val/")
            monitors[r.cell.task] = monitor
            key = (r.cell.task, r.cell.method, r.cell.seed)
            drops[key] = {}
            for row in sorted(payload["rows"], key=lambda row: row["p"]):
                if row["p"] == 0:
                    clean[key] = row[monitor]
                else:
                    column = f"{row['kind']} p={row['p']:g}"
                    columns[column] = None
                    drops[key][column] = row["drop"]
    if not drops:
        return ["No perturbation evaluation is done yet."]
    methods = method_order(results)
    tasks = sorted(monitors, key=task_order)
    names = list(columns)
    rows, diffs = [], []
    for task in tasks:
        for method in methods:
            seeds = [k for k in drops if k[:2] == (task, method)]
            if not seeds:
                continue
            rows.append(
                [
                    task_label(task),
                    method,
                    monitors[task],
                    level([clean[k] for k in seeds if k in clean]),
                    *(level([drops[k][c] for k in seeds if c in drops[k]]) for c in names),
                ]
            )
        values = {
            (method, column, seed): value
            for (t, method, seed), by_column in drops.items()
            if t == task
            for column, value in by_column.items()
        }
        diffs += difference_rows(values, names, [task_label(task)], methods)
    lines = [
        "Drop of the monitored dev metric (×100; clean − perturbed) under each seeded "
        "perturbation of the dev set (typo: per letter, dropout: per word, swap: per "
        "adjacent word pair, each at rate p), mean ± std over seeds; `clean`: the metric "
        "on the unperturbed dev set.",
        "",
        *header_lines(["task", "method", "metric", "clean", *names], rows, 3),
        "",
    ]
    if not diffs:
        return [*lines, NO_DIFFERENCE]
    return [
        *lines,
        f"Paired difference of the drops to {BASELINE} on the same seed (×100, mean ± std "
        "of the per-seed differences; positive: loses more than LoRA).",
        "",
        *header_lines(["task", "method", *names], diffs, 2),
    ]


def target_monitor(task: str) -> str:
    """The monitored metric of ``task`` (``conf/task/<task>.yaml``), without ``val/``."""
    return str(OmegaConf.load(Path(CONFIG_DIR) / "task" / f"{task}.yaml").monitor).removeprefix(
        "val/"
    )


def transfer_lines(results: list[CellResult]) -> list[str]:
    """Per source → target and method: the target's monitored metric through the
    declared mapping, rows for always answering one class of a classification target,
    then the paired differences to LoRA."""
    scores: dict[tuple[str, str], dict[tuple[str, int], float]] = defaultdict(dict)
    consts: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for evaluation, payload in r.evaluated("transfer"):
            target = evaluation.options["targets"][0]
            pair = (r.cell.task, target)
            prefix = f"transfer/{target}/"
            scores[pair][r.cell.method, r.cell.seed] = payload["metrics"][
                prefix + target_monitor(target)
            ]
            for key, value in payload["metrics"].items():
                if key.startswith(prefix + "const/"):
                    consts[pair][key.removeprefix(prefix + "const/")].append(value)
    if not scores:
        return ["No transfer evaluation is done yet."]
    methods = method_order(results)
    rows, diffs = [], []
    for pair in sorted(scores, key=lambda p: (task_order(p[0]), task_order(p[1]))):
        source, target = pair
        label = f"{task_label(source)} → {task_label(target)}"
        metric = target_monitor(target)
        by_seed = scores[pair]
        for method in methods:
            values = [v for (m, _), v in by_seed.items() if m == method]
            if values:
                rows.append([label, method, metric, level(values)])
        for name, values in consts[pair].items():
            rows.append([label, f"always {name}", metric, pct(statistics.fmean(values))])
        paired = {(m, metric, seed): v for (m, seed), v in by_seed.items()}
        diffs += difference_rows(paired, [metric], [label], methods)
    lines = [
        "Zero-shot transfer: each cell's best checkpoint scored on another task's dev set "
        "through the declared mapping (conf/transfer/<source>_to_<target>.yaml), the "
        "target's monitored metric ×100, mean ± std over seeds; `always <label>`: "
        "answering that class for every example of the target.",
        "",
        *header_lines(["source → target", "method", "metric", "score"], rows, 3),
        "",
    ]
    if not diffs:
        return [*lines, NO_DIFFERENCE]
    return [
        *lines,
        f"Paired difference to {BASELINE} on the same seed (×100, mean ± std of the "
        "per-seed differences; positive: better than LoRA).",
        "",
        *header_lines(["source → target", "method", "difference"], diffs, 2),
    ]


def missing_evaluation_lines(results: list[CellResult], evaluate_command: str) -> list[str]:
    """The evaluations of done cells that are not done, per cell, with what to do."""
    if not any(r.cell.evaluations for r in results):
        return ["The protocol names no evaluations (its `evaluations:` section)."]
    planned = [(r, e, s) for r in results for e, s in r.evaluations]
    missing = [(r, e, s) for r, e, s in planned if s.kind != DONE]
    later = sum(len(r.cell.evaluations) for r in results if not r.done)
    note = f" {later} more follow the training of the cells not done yet." if later else ""
    if not missing:
        return [f"Every evaluation of the done cells is done ({len(planned)}).{note}"]
    lines = [
        f"{len(missing)} of {len(planned)} evaluations of the done cells are not done.{note}",
        "",
    ]
    by_cell: dict[str, list[str]] = defaultdict(list)
    for r, e, s in missing:
        by_cell[r.cell.name].append(f"{e.name} ({s.kind}: {s.reason})")
    lines += [f"- {name}: {'; '.join(found)}" for name, found in by_cell.items()]
    if any(s.kind == NO_CHECKPOINT for _, _, s in missing):
        lines += ["", f"Without a checkpoint: {NO_CHECKPOINT_HELP}."]
    if any(s.kind != NO_CHECKPOINT for _, _, s in missing):
        lines += [
            "",
            "Run the others (their checkpoints are here):",
            "",
            "```bash",
            evaluate_command,
            "```",
        ]
    return lines


def evaluation_sections(results: list[CellResult], evaluate_command: str) -> list[str]:
    """The report's evaluation sections, headings included."""
    return [
        "### Robustness: AdvGLUE",
        "",
        *advglue_lines(results),
        "",
        "### Robustness: perturbations",
        "",
        *perturb_lines(results),
        "",
        "### Zero-shot transfer",
        "",
        *transfer_lines(results),
        "",
        "### Missing evaluations",
        "",
        *missing_evaluation_lines(results, evaluate_command),
        "",
    ]
