"""The evidence protocol: planning from the real conf/evidence.yaml, and end to end on a
tiny slice of real data (real Hydra composition, real Trainer): run, skip, resume, report."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock
from omegaconf import OmegaConf

from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.errors import ConfigError
from mole_lightning.evidence.protocol import (
    ProtocolCell,
    compose_cell,
    load_protocol,
    plan_cells,
    resolved,
)
from mole_lightning.evidence.report import (
    BEGIN_TEMPLATE,
    END_TEMPLATE,
    extension_rows,
    replace_section,
)
from mole_lightning.evidence.runner import ProtocolRunner
from mole_lightning.evidence.state import config_differences
from scripts.evidence import INTERRUPTED_EXIT_CODE, main
from scripts.plain_lora_loop import main as plain_lora_loop

CONF = Path(CONFIG_DIR)
# the markers of conf/evidence.yaml's section of docs/results.md
BEGIN, END = BEGIN_TEMPLATE.format(name="evidence"), END_TEMPLATE.format(name="evidence")

TINY = [
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.max_length=32",
    "data.num_workers=0",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
]


def write_protocol(
    path: Path,
    glue_dir: Path,
    methods: list[str],
    task: str = "rte",
    epochs: int = 2,
    seeds: tuple[int, ...] = (1,),
    evaluations: dict | None = None,
) -> Path:
    """A protocol of one task in the format of conf/evidence.yaml (one cell per method
    and seed), with an ``evaluations`` section when given."""
    protocol = {
        "common": ["backbone=minilm", f"data.dir={glue_dir}", "logger=csv"],
        "tasks": {task: [f"trainer.max_epochs={epochs}"]},
        "methods": {"lora": ["optim.lr=5.0e-4"], "adapter": ["optim.lr=1.0e-3"]},
        "seeds": list(seeds),
        "stages": {"tiny": {"tasks": [task], "methods": methods}},
        "metric": "best",
        "may_differ": ["paths.", "ckpt_path", "callbacks.model_checkpoint.dirpath"],
    }
    if evaluations is not None:
        protocol["evaluations"] = evaluations
    path.write_text(yaml.safe_dump(protocol))
    return path


def evidence_args(protocol: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    args = ["--protocol", str(protocol), "--out", str(out), "--trainer", "cpu"]
    for override in [*TINY, f"paths.cache_dir={cache}"]:
        args += ["--override", override]
    return [*args, *extra]


def evidence(protocol: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(evidence_args(protocol, out, cache, *extra))


def report_args(results: Path, runs_csv: Path, figures: Path) -> list[str]:
    """``--report`` into ``results`` (Markdown), ``runs_csv`` and ``figures``."""
    return [
        "--report",
        "--results",
        str(results),
        "--csv",
        str(runs_csv),
        "--figures",
        str(figures),
    ]


def test_real_protocol_order_and_configs(tmp_path: Path) -> None:
    protocol = load_protocol()
    cells = plan_cells(protocol, "all", tmp_path, "cpu")
    assert len(cells) == 4 * 4 * 3 + 3 + 2 * 4 * 3 + 4 * 3
    first = cells[:24]
    assert {c.task for c in first} == {"cola", "rte"}
    assert {c.method for c in first} == {"lora", "adapter", "mole", "molex"}
    assert [c.seed for c in first] == [1] * 8 + [2] * 8 + [3] * 8  # seed by seed
    assert {c.task for c in cells[24:48]} == {"mrpc", "stsb"}
    assert {(c.task, c.method) for c in cells[48:51]} == {("rte", "full")}
    assert cells[0].path == tmp_path / "cola" / "lora" / "seed1"
    # the fast-settings check: the cola_rte cells again, in folders of their own, with
    # bf16-mixed and length grouping on top of each method's settings
    fast = cells[51:75]
    assert {c.variant for c in fast} == {"fast"} and {c.variant for c in cells[:51]} == {None}
    assert [(c.task, c.method, c.seed) for c in fast] == [(c.task, c.method, c.seed) for c in first]
    assert fast[0].path == tmp_path / "cola" / "lora@fast" / "seed1" and not fast[0].evaluations
    cfg, base = compose_cell(fast[0]), compose_cell(first[0])
    assert (cfg.trainer.precision, cfg.data.group_by_length) == ("bf16-mixed", True)
    assert config_differences(resolved(base), cfg, ["paths.", "callbacks.model_checkpoint."]) == [
        "data.group_by_length",
        "trainer.precision",
    ]
    # SST-2: one epoch (the LoRA curve's choice) validated every 526 steps, evaluated on
    # AdvGLUE's SST-2 set and the perturbations
    sst2 = cells[75:]
    assert [(c.task, c.seed) for c in sst2] == [("sst2", s) for s in (1, 2, 3) for _ in range(4)]
    assert [c.method for c in sst2[:4]] == ["lora", "adapter", "mole", "molex"]
    assert [e.name for e in sst2[0].evaluations] == ["advglue", "perturb"]
    cfg = compose_cell(sst2[2])
    assert (cfg.task.name, cfg.method.name, cfg.optim.lr) == ("sst2", "mole", 3e-4)
    assert (cfg.trainer.max_epochs, cfg.trainer.val_check_interval) == (1, 526)
    # a stage that names cells of other stages again (MoLE's rerun) plans them once
    rerun = plan_cells(protocol, "mole_rte_stsb", tmp_path, "cpu")
    assert {(c.task, c.method) for c in rerun} == {("rte", "mole"), ("stsb", "mole")}
    assert len(rerun) == 6 and {c.path for c in rerun} <= {c.path for c in cells}
    gpu = plan_cells(protocol, "cola_rte", tmp_path, "gpu")
    by_method = {c.method: c for c in gpu}
    for method, lr in {"lora": 1e-3, "adapter": 1e-3, "mole": 3e-4, "molex": 1e-3}.items():
        cfg = compose_cell(by_method[method])
        assert cfg.method.name == method and cfg.optim.lr == lr
        assert cfg.backbone.name == "minilm" and cfg.trainer.accelerator == "gpu"
        assert cfg.paths.output_dir == str(by_method[method].path.resolve())
    assert compose_cell(by_method["mole"]).parser.name == "spacy"
    assert compose_cell(by_method["mole"]).method.prune.after_steps == 200


def test_lr_grid_and_structure_ablation_protocols_compose(tmp_path: Path) -> None:
    """Every cell of the side protocols composes to the method and settings its name says."""
    grid = plan_cells(load_protocol(CONF / "evidence_lr_grid.yaml"), "all", tmp_path, "cpu")
    assert len(grid) == 4 * 3 * 2 and {c.seed for c in grid} == {0}
    for cell in grid:
        cfg = compose_cell(cell)
        method, lr = cell.method.split("@")
        assert cfg.method.name == method and cfg.optim.lr == float(lr), cell.name
        assert cfg.trainer.max_epochs == {"cola": 5, "mrpc": 4}[cell.task]
    # the learned structure is conf/evidence.yaml's MoLE cells, not run again here
    ablation = load_protocol(CONF / "evidence_mole_structures.yaml")
    cells = plan_cells(ablation, "all", tmp_path, "cpu")
    assert len(cells) == 2 * 4 * 3 and "mole" not in {c.method for c in cells}
    for cell in cells[:4]:
        cfg = compose_cell(cell)
        assert cfg.method.name == "mole" and cfg.optim.lr == 3e-4
        kind = cell.method.removeprefix("mole_")
        assert list(cfg.method.structure) == [[kind]] * 6 and not cfg.method.prune.enabled


def test_mole_paper_protocol_keeps_the_recipe(tmp_path: Path) -> None:
    """Each cell of conf/evidence_mole_paper.yaml is `experiment=mole_paper` on MiniLM but
    for the parser (spaCy: no Stanza models offline), the retrain phase's epochs (5; the
    recipe's own 30 in mole_paper_30) and the fast CPU settings (bf16-mixed, length
    grouping): the protocol's common and task overrides undo none of the experiment
    file's values."""
    protocol = load_protocol(CONF / "evidence_mole_paper.yaml")
    cells = plan_cells(protocol, "all", tmp_path, "cpu")
    assert [(c.task, c.method, c.seed) for c in cells] == [
        *((task, "mole_paper", seed) for seed in (1, 2, 3) for task in ("cola", "rte")),
        *(("cola", "mole_paper_30", seed) for seed in (1, 2, 3)),
    ]
    for cell in [*cells[:2], cells[6]]:
        cfg = compose_cell(cell)
        recipe_overrides = [
            f"task={cell.task}",
            "experiment=mole_paper",
            "backbone=minilm",
            "trainer=cpu",
            "logger=csv",
            f"seed={cell.seed}",
        ]
        recipe = compose_cell(
            ProtocolCell("recipe", cell.task, "recipe", cell.seed, cell.path, recipe_overrides)
        )
        changed = config_differences(resolved(recipe), cfg, protocol.may_differ)
        shortened = {"method.prune.retrain_phase.epochs"} if cell.method == "mole_paper" else set()
        assert {k for k in changed if not k.startswith("parser.")} == {
            *shortened,
            "data.group_by_length",
        }
        assert cfg.parser.name == "spacy" and recipe.parser.name == "stanza"
        assert (cfg.trainer.precision, recipe.trainer.precision) == ("bf16-mixed", "32-true")
        assert cfg.method.prune.retrain_phase.epochs == (5 if shortened else 30)
        assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.weight_decay) == (1e-4, "constant", 0)
        assert (cfg.data.max_length, cfg.trainer.max_epochs) == (256, -1)
        assert cfg.method.prune.after_steps == 1000 and cfg.method.prune.retrain == "scratch"
        assert cfg.callbacks.model_checkpoint.monitor == "val/loss"


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("evidence*.yaml")))
def test_every_protocol_file_composes_each_method(name: str, tmp_path: Path) -> None:
    """Each method of each protocol file composes (first task, first seed): a typo in an
    override fails here, not hours into a protocol."""
    protocol = load_protocol(CONF / name)
    cells = plan_cells(protocol, "all", tmp_path, "cpu")
    first = {}
    for cell in cells:
        first.setdefault(cell.method, cell)
    assert set(first) == set(protocol.methods) - {
        m
        for m in protocol.methods
        if not any(m in stage["methods"] for stage in protocol.stages.values())
    }
    for cell in first.values():
        cfg = compose_cell(cell)
        assert cfg.seed == cell.seed and cfg.task.name == cell.task
        if cfg.method.name != "mole":
            continue
        gate = (cfg.method.gate_lr, cfg.method.gate_weight_decay)
        if name == "evidence.yaml":  # the protocol's MoLE: the default of issue 31
            assert (cfg.optim.lr, *gate) == (3e-4, 0.05, 0.0)
        elif name == "evidence_lr_grid.yaml":  # the grid: MoLE's defaults at each lr
            assert gate == (0.05, 0.0)
        elif name == "evidence_mole_gate.yaml" and "gate_lr" not in cell.method:
            assert gate == (None, None)  # the variants change the gate of before issue 31


def test_protocol_end_to_end(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    protocol = write_protocol(tmp_path / "tiny.yaml", glue_dir, ["lora", "adapter"])
    out = tmp_path / "evidence"
    assert evidence(protocol, out, cache_dir) == 0
    first = capsys.readouterr().out
    assert "[evidence 1/2] rte/lora/seed1: new" in first
    assert "[evidence 2/2] rte/adapter/seed1: new" in first
    assert "left (from 1 finished cells)" in first  # the estimate once a cell finished
    cells = [out / "rte" / m / "seed1" for m in ("lora", "adapter")]
    for cell in cells:
        assert json.loads((cell / "run_info.json").read_text())["status"] == "finished"
        record = json.loads((cell / "evidence_cell.json").read_text())
        assert [a["outcome"] for a in record["attempts"]] == ["finished"]
        assert record["attempts"][0]["machine"]["cpu_count"] >= 1
        throughput = json.loads((cell / "throughput.json").read_text())
        assert throughput["train_samples"] == 2 * 2 * 4 and throughput["train_samples_per_s"] > 0
        # the cell's own log: the progress lines and Lightning's messages of its run
        log_text = (cell / "train.log").read_text()
        assert log_text.count("[mole_lightning.callbacks.progress][INFO] - train step ") >= 1
        assert "trainable parameters:" in log_text
    stamps = [(c / "metrics.json").stat().st_mtime_ns for c in cells]

    # second call: both cells finished with the same config, so nothing runs
    assert evidence(protocol, out, cache_dir) == 0
    second = capsys.readouterr().out
    assert second.count("done earlier, skipped") == 2
    assert [(c / "metrics.json").stat().st_mtime_ns for c in cells] == stamps

    # a killed cell (status still "running") resumes from its last.ckpt in its folder
    info_path = cells[1] / "run_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "status": "running"}))
    assert evidence(protocol, out, cache_dir) == 0
    assert "rte/adapter/seed1: resume" in capsys.readouterr().out
    attempts = json.loads((cells[1] / "evidence_cell.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["finished", "finished"]
    assert attempts[1]["resumed_from"] == str((cells[1] / "checkpoints" / "last.ckpt").resolve())
    assert (cells[1] / "train.log").read_text().count("trainable parameters:") == 2  # appended

    # the sanity row: the plain loop's result where the report looks for it
    plain_lora_loop(
        [
            "--task",
            "rte",
            "--data-dir",
            str(glue_dir),
            "--epochs",
            "1",
            "--seed",
            "1",
            "--train-limit",
            "8",
            "--dev-limit",
            "8",
            "--max-length",
            "32",
            "--device",
            "cpu",
            "--out",
            str(out / "plain_lora" / "rte_seed1.json"),
        ]
    )
    # the report: a marked section of an existing Markdown file, the CSV, idempotent
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nHand-written text.\n")
    report = report_args(results, tmp_path / "runs.csv", tmp_path / "figures")
    assert evidence(protocol, out, cache_dir, *report) == 0
    text = results.read_text()
    begin, end = BEGIN_TEMPLATE.format(name="tiny"), END_TEMPLATE.format(name="tiny")
    assert text.startswith("# Results\n\nHand-written text.\n") and text.count(begin) == 1
    section = text.split(begin)[1].split(end)[0]
    assert "| lora |" in section and "| adapter |" in section and "RTE (acc)" in section
    assert "Cells done: 2 of 2" in section and "Every cell of the protocol is done." in section
    # at a glance, before the protocol's section: each method's row, its cost per cell
    # and the paired difference, computed here from the cells' records
    glance_begin = BEGIN_TEMPLATE.format(name="tiny_glance")
    glance_end = END_TEMPLATE.format(name="tiny_glance")
    assert text.count(glance_begin) == 1 and text.index(glance_end) < text.index(begin)
    glance = text.split(glance_begin)[1].split(glance_end)[0]
    best = {
        c.parent.name: 100 * json.loads((c / "metrics.json").read_text())["best/val/acc"]
        for c in cells
    }
    minutes = {
        c.parent.name: sum(
            a["wall_s"] for a in json.loads((c / "evidence_cell.json").read_text())["attempts"]
        )
        / 60
        for c in cells
    }
    # the adapter's cell was resumed: its two attempts' total, marked as an upper bound
    for method, bound in (("lora", ""), ("adapter", "≤")):
        row = next(line for line in glance.splitlines() if line.startswith(f"| {method} |"))
        score = f"{best[method]:.1f}"
        assert f"| {score} (n=1) | {score} | {bound}{minutes[method]:.1f} |" in row
    assert "(2 of 2 cells done)" in glance and "precision 32-true (2 cells)" in glance
    difference = f"{best['adapter'] - best['lora']:+.1f} (n=1)"
    assert f"| adapter | {difference} |" in glance.split("Paired difference to lora")[1]
    assert "Paired difference" not in section
    assert "Against the method it extends" not in glance  # no MoLE cell
    sanity = section.split("### Sanity row: the plain LoRA loop")[1].split("###")[0]
    assert "| RTE | 1 | acc | " in sanity and "no done cell" not in sanity
    assert (tmp_path / "figures" / "curves_rte.png").is_file()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert [(r["method"], r["state"]) for r in rows] == [("lora", "done"), ("adapter", "done")]
    adapter, lora = rows[1], rows[0]
    assert float(adapter["best_minus_lora"]) == pytest.approx(
        float(adapter["best"]) - float(lora["best"])
    )
    assert evidence(protocol, out, cache_dir, *report) == 0
    assert results.read_text() == text


def test_changed_config_reruns_and_failed_cell_is_listed(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Two cells that fail for real (no data files: refused by the start-up check of
    resources): each is recorded, the protocol goes on to the next, exits 1, and the
    report lists both with the continue command."""
    protocol = write_protocol(tmp_path / "tiny.yaml", tmp_path / "no_data", ["lora", "adapter"])
    out = tmp_path / "evidence"
    assert evidence(protocol, out, cache_dir) == 1
    captured = capsys.readouterr()
    assert captured.out.count(": failed in ") == 2
    for method in ("lora", "adapter"):
        record = json.loads((out / "rte" / method / "seed1" / "evidence_cell.json").read_text())
        assert record["attempts"][0]["outcome"] == "failed"
        assert "MissingResourcesError" in record["attempts"][0]["error"]
    # with another value the failed cells are stale: dry run says they run again
    assert evidence(protocol, out, cache_dir, "--override", "optim.lr=2e-3", "--dry-run") == 0
    dry = capsys.readouterr().out
    assert dry.count("rerun: config changed since it ran (optim.lr)") == 2
    results = tmp_path / "results.md"
    report = report_args(results, tmp_path / "runs.csv", tmp_path / "fig")
    assert evidence(protocol, out, cache_dir, *report) == 0
    section = results.read_text()
    assert "No cell is done yet" in section
    assert "- rte/lora/seed1 (tiny): config changed since it ran (optim.lr)" not in section
    assert "- rte/lora/seed1 (tiny): failed: MissingResourcesError: 1 resource(s)" in section
    assert f"python scripts/evidence.py --stage tiny --trainer cpu --out {out}" in section


def test_replace_section_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text("# R\n\nbefore\n")
    replace_section(path, f"{BEGIN}\nA\n{END}\n")
    path.write_text(path.read_text() + "\n## after\n")
    replace_section(path, f"{BEGIN}\nB\n{END}\n")
    once = path.read_text()
    replace_section(path, f"{BEGIN}\nB\n{END}\n")
    assert path.read_text() == once == f"# R\n\nbefore\n\n{BEGIN}\nB\n{END}\n\n## after\n"


def done_cell(root: Path, task: str, method: str, seed: int, files: dict[str, dict]):
    """A done cell as the runner and train() leave it, with the method's export files."""
    from mole_lightning.analysis.runs import Run
    from mole_lightning.evidence.protocol import ProtocolCell
    from mole_lightning.evidence.results import CellResult
    from mole_lightning.evidence.state import DONE, CellState

    path = root / task / method / f"seed{seed}"
    path.mkdir(parents=True)
    for name, payload in files.items():
        (path / name).write_text(json.dumps(payload))
    run = Run(path, "finished", {"task": task, "method": method, "seed": seed}, {}, {})
    cell = ProtocolCell("s", task, method, seed, path)
    return CellResult(cell, CellState(DONE, "finished with this config", run), {}, {})


def test_mole_structures_and_molex_heatmaps_across_seeds(tmp_path: Path) -> None:
    from mole_lightning.analysis.heatmaps import average_tables, read_expert_table
    from mole_lightning.evidence.report import (
        mole_lines,
        mole_structures,
        molex_lines,
        structure_table,
    )

    kept = {
        1: [["syntactic"], ["mlp"]],
        2: [["syntactic"], ["semantic"]],
    }
    selection = {
        1: [[3, 1], [0, 4]],
        2: [[1, 3], [2, 2]],
    }
    results = [
        done_cell(tmp_path, "rte", "mole", s, {"mole_structure.json": {"structure": kept[s]}})
        for s in kept
    ] + [
        done_cell(
            tmp_path,
            "rte",
            "molex",
            s,
            {"molex_selection.json": {"counts": selection[s], "routed_layers": [0, 1]}},
        )
        for s in selection
    ]
    figures, md = tmp_path / "fig", tmp_path / "results.md"
    structures = mole_structures(results)
    table = structure_table(structures["rte"], ["mlp", "semantic", "syntactic"])
    assert table.values.tolist() == [[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]]
    lines = mole_lines(results, figures, md)
    assert "| 0 | syntactic | syntactic |" in lines and "| 1 | mlp | semantic |" in lines
    assert "RTE ([figure](fig/mole_structure_rte.png)):" in lines
    assert (figures / "mole_structure_rte.png").is_file()
    assert "- RTE: [molex_selection_rte.png](fig/molex_selection_rte.png)" in molex_lines(
        results, figures, md
    )
    assert (figures / "molex_selection_rte.png").is_file()
    # the figure's values: rows normalised per seed, then the mean over seeds
    tables = [read_expert_table(r.cell.path / "molex_selection.json") for r in results[2:]]
    assert average_tables(tables).values.tolist() == [[0.5, 0.5], [0.25, 0.75]]


def test_learning_curve_table_lines_up_validations_by_epoch(tmp_path: Path) -> None:
    """A cell whose csv/metrics.csv lost its first epoch (resumed before the CSV logger
    kept earlier rows) counts in epochs 2 and 3 only, not shifted into epochs 1 and 2;
    the best checkpoint's re-validation at the final step is left out; the gap is named."""
    from mole_lightning.evidence.report import curve_lines

    rows = {
        1: "0,9,0.50\n1,19,0.60\n2,29,0.70\n2,30,0.70\n",  # the last: re-validation
        2: "1,19,0.80\n2,29,0.90\n2,30,0.90\n",  # epoch 0 lost
    }
    results = []
    for seed, lines in rows.items():
        result = done_cell(tmp_path, "rte", "lora", seed, {})
        result.run.config = {"task": {"monitor": "val/acc"}}
        result.run.metrics = {"global_step": 30}
        (result.cell.path / "csv").mkdir()
        (result.cell.path / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n" + lines)
        results.append(result)
    lines = curve_lines(results)
    assert "| RTE | lora | 2 | 50.0 | 70.0 | 80.0 |" in lines
    assert "rte/lora/seed2 (epochs 1)" in lines[0]


def test_time_left_from_finished_cells(tmp_path: Path) -> None:
    from mole_lightning.evidence.protocol import ProtocolCell
    from mole_lightning.evidence.runner import estimate_left, format_duration

    cells = [
        ProtocolCell("s", task, method, seed, tmp_path)
        for seed in (1, 2)
        for task, method in (("rte", "lora"), ("rte", "mole"), ("cola", "lora"))
    ]
    assert estimate_left(cells, {}) == (None, 0)
    walls = {"rte/lora/seed1": 100.0, "rte/mole/seed1": 300.0}
    # left: cola/lora/seed1 (no cola/lora yet: mean of all, 200), rte/lora/seed2 (100),
    # rte/mole/seed2 (300), cola/lora/seed2 (200)
    assert estimate_left(cells, walls) == (800.0, 2)
    assert format_duration(3725.4) == "1:02:05" and format_duration(None) == "?"


def test_option_added_since_a_cell_ran_is_no_change_unless_the_protocol_sets_it() -> None:
    saved = {"data": {"batch_size": 32}, "optim": {"lr": 5e-4}}
    now = OmegaConf.create(
        {"data": {"batch_size": 32, "group_by_length": False}, "optim": {"lr": 5e-4}}
    )
    assert config_differences(saved, now, [], ["task=cola", "optim.lr=5e-4"]) == []
    # the protocol sets the new option: the finished cell ran without it
    assert config_differences(saved, now, [], ["data.group_by_length=false"]) == [
        "data.group_by_length"
    ]
    assert config_differences(saved, now, [], ["+data=fast"]) == ["data.group_by_length"]
    # ... unless it sets it to null: the option as before it existed (a protocol pinning
    # an old default, e.g. method.gate_lr=null once the default became 0.05)
    with_gate = {**saved, "method": {"name": "mole"}}
    now_gate = OmegaConf.create({**with_gate, "method": {"name": "mole", "gate_lr": None}})
    assert config_differences(with_gate, now_gate, [], ["method.gate_lr=null"]) == []
    now_gate = OmegaConf.create({**with_gate, "method": {"name": "mole", "gate_lr": 0.05}})
    assert config_differences(with_gate, now_gate, [], ["method.gate_lr=0.05"]) == [
        "method.gate_lr"
    ]
    # choosing a group's option (conf/method/) does not set the options added to it since
    with_method = {**saved, "method": {"name": "mole"}}
    now_method = OmegaConf.create({**with_method, "method": {"name": "mole", "rgcn_init": "dgl"}})
    assert config_differences(with_method, now_method, [], ["method=mole", "trainer=cpu"]) == []
    # a value the cell ran with that changed, or an option removed since, is a change
    assert config_differences({**saved, "optim": {"lr": 1e-3}}, now, [], []) == ["optim.lr"]
    gone = {**saved, "threads": 2}
    assert config_differences(gone, now, [], []) == ["threads"]


def test_runners_on_one_folder_share_its_cells(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A second runner of the same command (another core) skips the cell the first one
    holds and trains the next; once the first has finished, a runner skips it as done."""
    protocol = write_protocol(tmp_path / "tiny.yaml", glue_dir, ["lora", "adapter"])
    out = tmp_path / "evidence"
    lora, adapter = (out / "rte" / m / "seed1" for m in ("lora", "adapter"))
    lora.parent.mkdir(parents=True)
    with FileLock(lora.parent / ".seed1.lock"):  # the first runner works on the LoRA cell
        assert evidence(protocol, out, cache_dir) == 0
    logged = capsys.readouterr().out
    assert "[evidence 1/2] rte/lora/seed1: busy (another scripts/evidence.py has it), skipped" in (
        logged
    )
    assert "0 done earlier, 1 finished, 0 failed, 1 busy (another runner has them)" in logged
    assert not lora.exists()
    assert json.loads((adapter / "run_info.json").read_text())["status"] == "finished"
    assert evidence(protocol, out, cache_dir) == 0  # the first runner has stopped
    logged = capsys.readouterr().out
    assert "rte/adapter/seed1: done earlier, skipped" in logged
    assert json.loads((lora / "run_info.json").read_text())["status"] == "finished"


def test_one_cell_per_slurm_array_task(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--cell N`` (what each task of a SLURM array runs, docs/experiments.md) trains the
    N-th cell of the dry run's list and no other, while another runner works on another
    cell; ``--cell`` of a cell another runner holds is refused; a number outside the list
    names the valid ones."""
    protocol = write_protocol(tmp_path / "tiny.yaml", glue_dir, ["lora", "adapter"])
    out = tmp_path / "evidence"
    assert evidence(protocol, out, cache_dir, "--dry-run") == 0
    assert "[2/2] rte/adapter/seed1 (tiny): new" in capsys.readouterr().out
    lora, adapter = (out / "rte" / m / "seed1" for m in ("lora", "adapter"))
    lora.parent.mkdir(parents=True)
    with FileLock(lora.parent / ".seed1.lock"):  # array task 1 works on the LoRA cell
        assert evidence(protocol, out, cache_dir, "--cell", "2") == 0
        with pytest.raises(SystemExit) as stopped:
            evidence(protocol, out, cache_dir, "--cell", "1")
    assert stopped.value.code == 2
    assert "another scripts/evidence.py is running rte/lora/seed1 (it holds " in (
        capsys.readouterr().err
    )
    assert not lora.exists()
    assert json.loads((adapter / "run_info.json").read_text())["status"] == "finished"
    record = json.loads((adapter / "evidence_cell.json").read_text())
    assert record["protocol_command"].endswith("--cell 2")  # the command that continues it
    with FileLock(adapter.parent / ".seed1.lock"), pytest.raises(SystemExit) as stopped:
        evidence(protocol, out, cache_dir, "--cell", "2")
    assert stopped.value.code == 2
    assert "another scripts/evidence.py is running rte/adapter/seed1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evidence(protocol, out, cache_dir, "--cell", "3")
    assert "error: --cell 3: --stage all has 2 cells, numbered 1 to 2" in capsys.readouterr().err


def test_sigterm_during_training_stops_the_protocol_and_the_cell_resumes(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``kill <pid>`` of a running protocol (a real process, real training): Lightning
    ends the fit at the next step, the attempt is recorded as interrupted, the next cell
    never starts, and the same command would resume the cell from its last.ckpt."""
    protocol = write_protocol(tmp_path / "tiny.yaml", glue_dir, ["lora", "adapter"], epochs=40)
    out = tmp_path / "evidence"
    # last.ckpt after every step, so a checkpoint exists soon after training starts
    args = evidence_args(
        protocol, out, cache_dir, "--override", "callbacks.model_checkpoint.every_n_train_steps=1"
    )
    script = Path(__file__).resolve().parent.parent / "scripts" / "evidence.py"
    run = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    cell = out / "rte" / "lora" / "seed1"
    deadline = time.monotonic() + 240
    while not (cell / "checkpoints" / "last.ckpt").is_file():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no last.ckpt within 240 s"
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = (text.decode() for text in run.communicate(timeout=120))
    assert run.returncode == INTERRUPTED_EXIT_CODE, stderr
    assert "rte/lora/seed1: interrupted in " in stdout
    assert "[evidence] interrupted; to continue: python scripts/evidence.py" in stderr
    attempts = json.loads((cell / "evidence_cell.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["interrupted"]
    info = json.loads((cell / "run_info.json").read_text())
    assert info["status"] == "interrupted" and "SIGTERMException" in info["error"]
    last = torch.load(cell / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert 1 <= last["global_step"] < 40 * 2  # stopped early, at a step boundary
    assert not (out / "rte" / "adapter").exists()  # the protocol stopped
    assert main([*args, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "rte/lora/seed1 (tiny): resume: interrupted (Ctrl-C or SIGTERM) at " in dry
    assert "; resuming from checkpoints/last.ckpt" in dry


def test_sigterm_outside_training_stops_the_protocol(tmp_path: Path) -> None:
    """SIGTERM while a cell is not inside a Trainer call (its data being prepared):
    the runner raises KeyboardInterrupt at once, records the attempt as interrupted,
    starts no further cell, and puts the previous SIGTERM handler back."""
    protocol = load_protocol()
    cells = plan_cells(protocol, "cola_rte", tmp_path, "cpu")[:2]
    started = []

    def preparing_data(cfg) -> None:
        started.append(cfg.task.name)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a long preparation the signal cuts short
        raise AssertionError("not interrupted")

    runner = ProtocolRunner(cells, tmp_path, protocol.may_differ, "cmd", preparing_data)
    handler = signal.getsignal(signal.SIGTERM)
    begin = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert time.monotonic() - begin < 20
    assert started == ["cola"]
    record = json.loads((cells[0].path / "evidence_cell.json").read_text())
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted"]
    assert not cells[1].path.exists()
    assert signal.getsignal(signal.SIGTERM) is handler


def test_report_links_are_relative_across_folders(tmp_path: Path) -> None:
    """A report written beside another folder links its figures with ``../``, so the
    link is the same in every clone."""
    from mole_lightning.evidence.report import relative_link

    figure = tmp_path / "docs" / "evidence" / "runs" / "curves_cola.png"
    assert relative_link(figure, tmp_path / "docs" / "notes" / "report.md") == (
        "../evidence/runs/curves_cola.png"
    )
    assert (
        relative_link(figure, tmp_path / "docs" / "results.md") == "evidence/runs/curves_cola.png"
    )


def test_a_worker_ended_by_sigterm_is_a_stop_not_a_failure() -> None:
    """``pkill -f`` ends the DataLoader workers with the runner; their death, surfacing
    first, still counts as an interruption."""
    from mole_lightning.evidence.runner import stopped_by

    assert stopped_by(
        RuntimeError("DataLoader worker (pid 26017) is killed by signal: Terminated. ")
    )
    assert not stopped_by(RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed."))
    assert not stopped_by(ValueError("bad row 12"))


def grid_cell(root: Path, task: str, variant: str, score: float | None):
    """A cell of a grid protocol: done with ``score`` as its best dev metric, or (``None``)
    not run yet."""
    from mole_lightning.analysis.runs import Run
    from mole_lightning.evidence.protocol import ProtocolCell
    from mole_lightning.evidence.results import CellResult
    from mole_lightning.evidence.state import DONE, NEW, CellState

    path = root / task / variant / "seed0"
    cell = ProtocolCell("grid", task, variant, 0, path)
    if score is None:
        return CellResult(cell, CellState(NEW, "no run yet"), {}, {})
    monitor = {"cola": "val/mcc", "mrpc": "val/acc"}[task]
    run = Run(path, "finished", {}, {"task": {"monitor": monitor}}, {f"best/{monitor}": score})
    return CellResult(cell, CellState(DONE, "finished with this config", run), {}, {})


def test_minutes_per_cell_is_the_median_of_the_cells_that_ran_once(tmp_path: Path) -> None:
    """The at-a-glance cost of a cell: the median wall time of the cells that ran in one
    attempt (one slowed cell does not move it); only resumed cells: the median of their
    attempts' total, marked as an upper bound."""
    from mole_lightning.evidence.report import cell_minutes

    results = []
    for seed, walls in {1: [600.0], 2: [660.0], 3: [6000.0], 4: [60.0, 60.0]}.items():
        result = grid_cell(tmp_path / str(seed), "cola", "lora", 0.2)
        result.cell.seed = seed
        result.record["attempts"] = [{"wall_s": wall} for wall in walls]
        results.append(result)
    # seeds 1-3 ran once: the median 660 s (their mean, 2420 s, is seed 3's doing)
    assert cell_minutes(results, "lora", "cola") == "11.0"
    assert cell_minutes(results[3:], "lora", "cola") == "≤2.0"
    assert cell_minutes(results, "adapter", "cola") == "–"


def test_variants_report_chooses_each_methods_value_once_its_cells_are_done(
    tmp_path: Path,
) -> None:
    """The grid's table, and per method the value with the best mean over the tasks: a
    method with a cell not done has no choice yet and says how many are missing."""
    from mole_lightning.evidence.variants import variants_markdown

    scores = {
        ("cola", "lora@1e-4"): 0.10,
        ("mrpc", "lora@1e-4"): 0.80,  # mean 45.0
        ("cola", "lora@3e-4"): 0.22,
        ("mrpc", "lora@3e-4"): 0.70,  # mean 46.0: chosen though MRPC is lower
        ("cola", "adapter@1e-4"): 0.30,
        ("mrpc", "adapter@1e-4"): None,
    }
    results = [grid_cell(tmp_path, t, v, s) for (t, v), s in scores.items()]
    section = variants_markdown(results, "best", "evidence_grid", "REPORT", {"grid": "CONTINUE"})
    assert section.startswith("<!-- evidence_grid:begin") and section.endswith(
        "<!-- evidence_grid:end -->\n"
    )
    assert "| lora@3e-4 | 22.0 (n=1) | 70.0 (n=1) |" in section
    assert "| adapter@1e-4 | 30.0 (n=1) | – |" in section
    assert "| lora | 3e-4 | 46.0 | 1e-4: 45.0, 3e-4: 46.0 |" in section
    assert "| adapter | – (1 cell not done) |" in section
    assert "- stage grid: 1 cell not run yet (mrpc/adapter@1e-4/seed0)" in section
    assert "CONTINUE" in section and "best checkpoint, seed 0" in section


def test_each_protocol_writes_its_own_section(tmp_path: Path) -> None:
    """A variants protocol's report goes between markers named after its file, beside the
    main protocol's section, which it leaves alone; a bad `report` value is refused."""
    path = tmp_path / "results.md"
    path.write_text(f"# R\n\n{BEGIN}\nmain\n{END}\n\n## after\n")
    grid = f"{BEGIN_TEMPLATE.format(name='grid')}\nG1\n{END_TEMPLATE.format(name='grid')}\n"
    replace_section(path, grid, "grid")
    replace_section(path, grid.replace("G1", "G2"), "grid")
    text = path.read_text()
    assert text.count("grid:begin") == 1 and "G2" in text and "G1" not in text
    assert text.startswith(f"# R\n\n{BEGIN}\nmain\n{END}\n\n## after\n")
    path.write_text(text.replace(END_TEMPLATE.format(name="grid"), ""))
    with pytest.raises(ValueError, match="'grid' section has one marker"):
        replace_section(path, grid, "grid")
    protocol = write_protocol(tmp_path / "p.yaml", tmp_path, ["lora"])
    protocol.write_text(protocol.read_text() + "report: table\n")
    with pytest.raises(ConfigError, match="report must be one of full, variants, not 'table'"):
        load_protocol(protocol)


def test_variants_report_from_the_command_line(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--report` of a `report: variants` protocol with no cell run: its own section
    lists every cell as not run, and the CSV defaults to <out>/cells.csv."""
    protocol = write_protocol(tmp_path / "grid.yaml", glue_dir, ["lora", "adapter"])
    protocol.write_text(protocol.read_text() + "report: variants\n")
    out = tmp_path / "grid_runs"
    results = tmp_path / "results.md"
    assert evidence(protocol, out, cache_dir, "--report", "--results", str(results)) == 0
    text = results.read_text()
    assert "<!-- grid:begin" in text and BEGIN not in text
    assert "| lora | – |" in text and "2 of 2 cells are not done" in text
    rows = list(csv.DictReader(io.StringIO((out / "cells.csv").read_text())))
    assert [(r["method"], r["state"]) for r in rows] == [("lora", "new"), ("adapter", "new")]
    assert "(section grid)" in capsys.readouterr().out


def test_variants_curves_show_every_validation_and_the_training_loss(tmp_path: Path) -> None:
    """SST-2's curve validates four times an epoch: every validation is a point (at its
    step), not only each epoch's last; the training loss is the mean of each epoch's
    logged values; the best checkpoint's re-validation at the final step is left out."""
    from mole_lightning.evidence.variants import curve_rows

    rows = {
        0: "0,10,,0.60\n0,20,,0.40\n0,20,0.50,\n0,40,0.70,\n1,50,,0.30\n1,80,0.75,\n1,80,0.75,\n",
        1: "0,10,,0.80\n0,20,0.60,\n",  # a shorter run: the first point only
    }
    results = []
    for seed, lines in rows.items():
        result = done_cell(tmp_path, "sst2", "lora", seed, {})
        result.run.config = {"task": {"monitor": "val/acc"}}
        result.run.metrics = {"global_step": 80 if seed == 0 else 30}
        (result.cell.path / "csv").mkdir()
        (result.cell.path / "csv" / "metrics.csv").write_text(
            "epoch,step,val/acc,train/loss\n" + lines.replace(",80,0.75,\n", ",79,0.75,\n", 1)
        )
        results.append(result)
    assert curve_rows(results) == [
        ["SST-2", "lora", 2, "55.0, 70.0, 75.0", "20, 40, 79", "0.650, 0.300"]
    ]


def test_a_curve_protocol_chooses_the_epochs_after_which_the_curve_gains_less_than_its_tolerance(
    tmp_path: Path,
) -> None:
    """`choose_epochs`: the first epoch after which the rest of the curve raises the best
    dev score by less than the tolerance, from the best up to that epoch's end (a dip
    inside an epoch does not count); the SST-2 curve protocol sets one point."""
    from mole_lightning.analysis.curves import MetricPoint
    from mole_lightning.evidence.variants import chosen_epochs, variants_markdown

    curve = [(0, 0.80), (0, 0.86), (1, 0.85), (1, 0.865), (2, 0.875), (2, 0.87)]
    points = [MetricPoint(100 * i, e, v) for i, (e, v) in enumerate(curve)]
    assert chosen_epochs(points, 0.02) == (1, 0.86, 0.875)  # 1.5 points to gain: < 2
    assert chosen_epochs(points, 0.01) == (3, 0.875, 0.875)  # 1.0 after epoch 2: not < 1
    assert chosen_epochs(points, 0.011) == (2, 0.865, 0.875)
    with pytest.raises(ValueError, match="without validations"):
        chosen_epochs([], 0.01)

    result = done_cell(tmp_path, "sst2", "lora", 0, {})
    result.run.config = {"task": {"monitor": "val/acc"}}
    result.run.metrics = {"global_step": 600}
    (result.cell.path / "csv").mkdir()
    (result.cell.path / "csv" / "metrics.csv").write_text(
        "epoch,step,val/acc\n" + "".join(f"{p.epoch},{p.step},{p.value}\n" for p in points)
    )
    section = variants_markdown([result], "best", "curve", "REPORT", {}, 0.011)
    assert "less than 1.1 (×100)" in section
    assert "| SST-2 | lora | 0 | 2 | 86.5 | 87.5 | 3 |" in section
    assert "Epochs each curve" not in variants_markdown([result], "best", "curve", "R", {})

    assert load_protocol(CONF / "evidence_sst2_curve.yaml").epochs_tolerance == 0.01
    protocol = write_protocol(tmp_path / "p.yaml", tmp_path, ["lora"])
    base = protocol.read_text()
    for bad in ("{tolerance: 1.5}", "{tolerance: true}", "0.01", "{tolerance: 0.01, by: acc}"):
        protocol.write_text(base + f"report: variants\nchoose_epochs: {bad}\n")
        with pytest.raises(ConfigError, match="choose_epochs must be"):
            load_protocol(protocol)
    protocol.write_text(base + "choose_epochs: {tolerance: 0.01}\n")
    with pytest.raises(ConfigError, match="choose_epochs is read by a variants report"):
        load_protocol(protocol)


def test_evaluations_of_the_real_protocol_leave_every_cell_config_as_it_was(
    tmp_path: Path,
) -> None:
    """conf/evidence.yaml's evaluations: which suites run on which cells, with the
    protocol's options over conf/eval/<suite>.yaml's; the section is no part of any
    cell's config (the same overrides and resolved config without it)."""
    protocol = load_protocol()
    cells = plan_cells(protocol, "all", tmp_path, "cpu")
    by_key = {(c.task, c.method, c.seed): c for c in cells if c.variant is None}
    assert not any(c.evaluations for c in cells if c.variant)  # the variants: a check only

    def names(task: str, method: str, seed: int = 1) -> list[str]:
        return [e.name for e in by_key[task, method, seed].evaluations]

    assert names("rte", "lora") == names("rte", "molex", 3) == ["advglue", "perturb"]
    assert names("cola", "mole", 2) == ["perturb"]
    assert names("mrpc", "adapter") == ["perturb", "transfer_stsb"]
    assert names("stsb", "molex") == ["perturb", "transfer_mrpc"]
    assert names("rte", "full") == []  # not among evaluations.methods
    advglue, perturb = by_key["rte", "lora", 1].evaluations
    defaults = OmegaConf.load(CONF / "eval" / "advglue.yaml")
    assert advglue.options["sets"] == OmegaConf.to_container(defaults.sets)
    assert advglue.given == ()
    assert perturb.options == {
        "kinds": ["typo", "dropout", "swap"],
        "rates": [0.0, 0.1, 0.2],
        "seed": 0,
    }
    transfer = by_key["stsb", "lora", 1].evaluations[1]
    assert transfer.options == {"targets": ["mrpc"], "mappings_dir": None}
    assert names("sst2", "adapter", 2) == ["advglue", "perturb"]  # AdvGLUE's SST-2 set

    node = yaml.safe_load((CONF / "evidence.yaml").read_text())
    del node["evaluations"]
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(node, sort_keys=False))
    plain = plan_cells(load_protocol(without), "all", tmp_path, "cpu")
    assert [(c.path, c.overrides) for c in plain] == [(c.path, c.overrides) for c in cells]
    assert all(c.evaluations == [] for c in plain)
    for cell in (by_key["rte", "lora", 1], by_key["stsb", "molex", 2]):
        (same,) = [c for c in plain if c.path == cell.path]
        assert OmegaConf.to_container(compose_cell(same)) == OmegaConf.to_container(
            compose_cell(cell)
        )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"methods": ["lora"], "tasks": {"rte": {"advglue": {}}}, "suites": {}},
            "evaluations.suites: unknown key; valid: methods, options, tasks",
        ),
        (
            {"methods": ["lora", "molex"], "tasks": {"rte": {"advglue": {}}}},
            "evaluations.methods names 'molex', not a method under 'methods' "
            "(valid: adapter, lora)",
        ),
        ({"tasks": {"rte": {"advglue": {}}}}, "evaluations.methods must be a list"),
        (
            {"methods": ["lora"], "tasks": {"sts": {"perturb": {}}}},
            "evaluations.tasks.sts: unknown task 'sts'; valid: cola, sst2, mrpc",
        ),
        (
            {"methods": ["lora"], "tasks": {"rte": ["advglue"]}},
            "evaluations.tasks.rte must be a mapping, not ['advglue']",
        ),
        (
            {"methods": ["lora"], "tasks": {"rte": {"robustness": {}}}},
            "evaluations.tasks.rte.robustness: unknown evaluation suite 'robustness'; "
            "valid: advglue, dev, perturb, transfer",
        ),
        (
            {"methods": ["lora"], "tasks": {"rte": {"perturb": {"rate": [0.1]}}}},
            "evaluations.tasks.rte.perturb.rate: unknown option of suite perturb "
            "(conf/eval/perturb.yaml); valid: kinds, rates, seed",
        ),
        (
            {
                "methods": ["lora"],
                "options": {"perturb": {"kinds": ["shuffle"]}},
                "tasks": {"rte": {"perturb": {}}},
            },
            "evaluations.tasks.rte.perturb: unknown perturbation kind(s) ['shuffle']; "
            "valid: typo, dropout, swap",
        ),
        (
            {"methods": ["lora"], "tasks": {"rte": {"perturb": {"rates": [0.1, 2]}}}},
            "evaluations.tasks.rte.perturb: rates [0.1, 2] must be numbers in [0, 1]",
        ),
        (
            {"methods": ["lora"], "tasks": {"cola": {"advglue": {}}}},
            "evaluations.tasks.cola.advglue: AdvGLUE has no set for task 'cola'",
        ),
        (
            {"methods": ["lora"], "tasks": {"stsb": {"transfer": {}}}},
            "evaluations.tasks.stsb.transfer: transfer needs targets: [<task>, ...]",
        ),
        (
            {"methods": ["lora"], "tasks": {"rte": {"transfer": {"targets": ["cola"]}}}},
            "evaluations.tasks.rte.transfer: no transfer mapping from 'rte' to 'cola'",
        ),
    ],
)
def test_evaluations_section_errors_name_the_key(
    section: dict, message: str, tmp_path: Path
) -> None:
    path = write_protocol(tmp_path / "p.yaml", tmp_path, ["lora"], evaluations=section)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_protocol(path)


def test_mole_is_held_to_the_adapters_mean_minus_one_std() -> None:
    """MoLE against the adapter it extends, per task: the paired difference on the seeds
    both have, and the bar (the adapter's mean minus its sample std) with its verdict, at
    the boundary too; a task with one adapter seed has no bar; LoRA plays no part."""
    scores = {
        **{("adapter", "cola", s): v for s, v in zip((1, 2, 3), (24.0, 26.0, 22.0), strict=True)},
        **{("mole", "cola", s): v for s, v in zip((1, 2, 3), (23.0, 21.0, 22.0), strict=True)},
        **{("adapter", "mrpc", s): v for s, v in zip((1, 2), (78.0, 76.0), strict=True)},
        ("mole", "mrpc", 3): 75.0,
        ("adapter", "stsb", 1): 85.0,
        ("mole", "stsb", 1): 80.0,
        **{("lora", t, s): 0.0 for t in ("cola", "mrpc", "stsb") for s in (1, 2, 3)},
    }
    mrpc_bar = 77.0 - 2**0.5  # mean 77, sample std of (78, 76) = √2
    assert extension_rows(scores) == [
        # CoLA: bar 24 − 2 = 22.00, MoLE's mean 22.00: at the bar passes; paired: −1, −5, 0
        [
            "mole",
            "adapter",
            "CoLA",
            "-2.0 ± 2.6 (n=3)",
            "22.00 (n=3)",
            "22.00 (n=3)",
            "at or above",
        ],
        # MRPC: no seed with both cells, so no paired difference
        ["mole", "adapter", "MRPC", "–", f"{mrpc_bar:.2f} (n=2)", "75.00 (n=1)", "below by 0.59"],
    ]


def eval_stamps(cells: list[Path]) -> dict[str, int]:
    return {
        str(p): p.stat().st_mtime_ns for cell in cells for p in sorted(cell.glob("eval_*.json"))
    }


def test_protocol_evaluates_its_cells_and_reports_the_tables(
    glue_dir: Path,
    shared_data: Path,
    cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """Tiny real RTE cells (lora, adapter, seeds 1 and 2): a cell trained before the
    protocol had evaluations stays done; --evaluate-only evaluates it alone; a run trains
    the others and evaluates each after it trained; a second run does nothing; changed
    settings and a lost checkpoint are listed, never retrained; the report's AdvGLUE,
    perturbation and transfer tables hold the eval JSONs' numbers."""
    from mole_lightning.core.tasks import get_task
    from mole_lightning.data.glue import read_glue_split

    out = tmp_path / "evidence"
    path = tmp_path / "tiny.yaml"
    methods = ["lora", "adapter"]
    write_protocol(path, glue_dir, methods, seeds=(1, 2))
    assert evidence(path, out, cache_dir, "--cell", "1") == 0
    capsys.readouterr()
    cells = [out / "rte" / m / f"seed{s}" for s in (1, 2) for m in methods]
    stamp = (cells[0] / "run_info.json").stat().st_mtime_ns

    mappings = tmp_path / "mappings"  # an identity mapping: transfer must equal dev
    mappings.mkdir()
    (mappings / "rte_to_rte.yaml").write_text(
        "kind: labels\nlabels: {entailment: entailment, not_entailment: not_entailment}\n"
    )
    evaluations = {
        "methods": methods,
        "options": {"perturb": {"kinds": ["typo"], "rates": [0.0, 0.2]}},
        "tasks": {
            "rte": {
                "advglue": {},
                "perturb": {},
                "transfer": {"targets": ["rte"], "mappings_dir": str(mappings)},
            },
            "sst2": {"advglue": {}},  # no stage trains SST-2: nothing to evaluate
        },
    }
    write_protocol(path, glue_dir, methods, seeds=(1, 2), evaluations=evaluations)
    assert evidence(path, out, cache_dir, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "[1/4] rte/lora/seed1 (tiny): done: finished with this config" in dry
    assert "    eval advglue: pending: no eval_advglue.json" in dry
    assert "    eval transfer_rte: pending: no eval_transfer_rte.json" in dry
    assert dry.count("    then evaluates: advglue, perturb, transfer_rte") == 3

    # --evaluate-only: the done cell's evaluations, no training
    assert evidence(path, out, cache_dir, "--evaluate-only") == 0
    first = capsys.readouterr().out
    assert "[evidence 1/4] rte/lora/seed1: evaluating best-" in first
    for name in ("advglue", "perturb", "transfer_rte"):
        assert f"[evidence 1/4] rte/lora/seed1: eval {name} written in " in first
    assert first.count("not trained (--evaluate-only)") == 3
    assert "evaluations: 3 written, 0 failed" in first
    assert not cells[1].exists() and (cells[0] / "run_info.json").stat().st_mtime_ns == stamp

    # a run trains the other cells, each evaluated right after its training
    assert evidence(path, out, cache_dir) == 0
    second = capsys.readouterr().out
    assert "[evidence 1/4] rte/lora/seed1: done earlier, skipped" in second
    assert "rte/lora/seed1: evaluating" not in second
    assert second.count(": eval perturb written in ") == 3
    assert "3 finished, 0 failed, 0 busy (another runner has them); evaluations: 9 written" in (
        second
    )
    stamps = eval_stamps(cells)
    assert len(stamps) == 12

    # a second run: nothing to train, nothing to evaluate
    assert evidence(path, out, cache_dir) == 0
    third = capsys.readouterr().out
    assert third.count("done earlier, skipped") == 4 and "evaluating" not in third
    assert "evaluations: 0 written" in third and eval_stamps(cells) == stamps

    # the eval JSONs of the best checkpoint
    results: dict[tuple[str, int], dict[str, dict]] = {}
    for cell in cells:
        key = (cell.parent.name, int(cell.name.removeprefix("seed")))
        results[key] = {
            name: json.loads((cell / f"eval_{name}.json").read_text())
            for name in ("advglue", "perturb", "transfer_rte")
        }
        assert Path(results[key]["advglue"]["checkpoint"]).name.startswith("best-")
    adv = {k: v["advglue"]["rows"][0] for k, v in results.items()}
    advglue_items = json.loads((shared_data / "advglue" / "dev.json").read_text())["rte"]
    entailment = sum(item["label"] == 0 for item in advglue_items) / len(advglue_items)
    dev_labels = [e.label for e in read_glue_split(get_task("rte"), "validation", glue_dir)]
    dev_entailment = dev_labels.count(0) / len(dev_labels)
    assert all(row["const_entailment"] == pytest.approx(entailment) for row in adv.values())

    results_md = tmp_path / "results.md"
    report = report_args(results_md, tmp_path / "runs.csv", tmp_path / "figures")
    assert evidence(path, out, cache_dir, *report) == 0
    begin, end = BEGIN_TEMPLATE.format(name="tiny"), END_TEMPLATE.format(name="tiny")
    section = results_md.read_text().split(begin)[1].split(end)[0]

    def level(values: list[float]) -> str:
        mean, std = statistics.fmean(values), statistics.stdev(values)
        return f"{100 * mean:.1f} ± {100 * std:.1f} (n={len(values)})"

    def diff(key, method: str = "adapter") -> str:
        values = [100 * (key(method, s) - key("lora", s)) for s in (1, 2)]
        return f"{statistics.fmean(values):+.1f} ± {statistics.stdev(values):.1f} (n=2)"

    advglue = section.split("### Robustness: AdvGLUE")[1].split("###")[0]
    assert "RTE, AdvGLUE set `rte` (81 examples):" in advglue
    for method in methods:
        rows = [adv[method, s] for s in (1, 2)]
        cells_text = [level([r[k] for r in rows]) for k in ("acc", "clean_acc", "drop")]
        assert f"| {method} | {' | '.join(cells_text)} |" in advglue
    always = f"| {100 * entailment:.1f} | {100 * dev_entailment:.1f} | "
    assert f"| always entailment {always}" in advglue
    assert f"| always not_entailment | {100 * (1 - entailment):.1f} | " in advglue
    acc, drop = (diff(lambda m, s, k=k: adv[m, s][k]) for k in ("acc", "drop"))
    assert f"| adapter | {acc} | {drop} |" in advglue

    perturb = section.split("### Robustness: perturbations")[1].split("###")[0]
    typo = {k: v["perturb"]["rows"][1] for k, v in results.items()}
    assert all(row["p"] == 0.2 for row in typo.values())
    assert "| task | method | metric | clean | typo p=0.2 |" in perturb
    lora_drop = level([typo["lora", s]["drop"] for s in (1, 2)])
    lora_clean = level([adv["lora", s]["clean_acc"] for s in (1, 2)])  # p = 0: clean dev
    assert f"| RTE | lora | acc | {lora_clean} | {lora_drop} |" in perturb
    assert f"| RTE | adapter | {diff(lambda m, s: typo[m, s]['drop'])} |" in perturb

    transfer = section.split("### Zero-shot transfer")[1].split("###")[0]
    for method in methods:  # the identity mapping: the clean dev accuracy
        scores = [results[method, s]["transfer_rte"]["metrics"]["transfer/rte/acc"] for s in (1, 2)]
        assert scores == [adv[method, s]["clean_acc"] for s in (1, 2)]
        assert f"| RTE → RTE | {method} | acc | {level(scores)} |" in transfer
    assert f"| RTE → RTE | always entailment | acc | {100 * dev_entailment:.1f} |" in transfer
    assert "| RTE → RTE | adapter | " in transfer.split("Paired difference")[1]
    assert "Every evaluation of the done cells is done (12)." in section

    # other settings: the evaluation is pending again (its checkpoint is here)
    evaluations["options"]["perturb"]["rates"] = [0.0, 0.1]
    write_protocol(path, glue_dir, methods, seeds=(1, 2), evaluations=evaluations)
    assert evidence(path, out, cache_dir, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert dry.count("eval perturb: pending: eval_perturb.json has other settings (rates)") == 4
    evaluations["options"]["perturb"]["rates"] = [0.0, 0.2]
    write_protocol(path, glue_dir, methods, seeds=(1, 2), evaluations=evaluations)

    # a lost checkpoint: listed with what to do, the finished cell never trained again
    lost = cells[3]  # rte/adapter/seed2
    shutil.rmtree(lost / "checkpoints")
    (lost / "eval_perturb.json").unlink()
    stamp = (lost / "run_info.json").stat().st_mtime_ns
    assert evidence(path, out, cache_dir, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert (
        "    eval perturb: no checkpoint: no eval_perturb.json; no checkpoints/best-*.ckpt here"
        in dry
    )
    assert "run `python scripts/evidence.py --evaluate-only` there" in dry
    assert evidence(path, out, cache_dir) == 0
    run = capsys.readouterr().out
    assert "[evidence 4/4] rte/adapter/seed2: eval perturb cannot run: no eval_perturb.json" in run
    assert "evaluations: 0 written, 0 failed, 1 without a checkpoint" in run
    assert (lost / "run_info.json").stat().st_mtime_ns == stamp
    assert evidence(path, out, cache_dir, *report) == 0
    begin, end = BEGIN_TEMPLATE.format(name="tiny"), END_TEMPLATE.format(name="tiny")
    section = results_md.read_text().split(begin)[1].split(end)[0]
    missing = section.split("### Missing evaluations")[1].split("###")[0]
    assert "1 of 12 evaluations of the done cells are not done." in missing
    assert "- rte/adapter/seed2: perturb (no checkpoint: no eval_perturb.json; " in missing
    perturb = section.split("### Robustness: perturbations")[1].split("###")[0]
    assert f"| {100 * typo['adapter', 1]['drop']:.1f} (n=1) |" in perturb

    # a failed evaluation (a damaged checkpoint) is reported, the protocol goes on, exit 1
    (lost / "checkpoints").mkdir()
    (lost / "checkpoints" / "best-4.ckpt").write_bytes(b"not a checkpoint")
    assert evidence(path, out, cache_dir) == 1
    captured = capsys.readouterr()
    assert "[evidence 4/4] rte/adapter/seed2: eval perturb failed: CheckpointError: " in (
        captured.out
    )
    assert "error in rte/adapter/seed2 eval perturb: CheckpointError" in captured.err
    assert "evaluations: 0 written, 1 failed, 0 without a checkpoint" in captured.out
    assert (lost / "run_info.json").stat().st_mtime_ns == stamp


def test_stage_variants_are_compared_with_the_methods_own_cells(tmp_path: Path) -> None:
    """A stage variant's cells against the same task, method and seed: paired
    difference, the base cells' seed spread and the speed ratio (the median of the
    per-seed ratios); a variant with no pair yet says so; bad stage keys are refused with
    the file and stage named."""
    from mole_lightning.evidence.report import stage_variant_lines

    results = []
    for seed, (base, fast) in {1: (0.20, 0.22), 2: (0.30, 0.26), 3: (0.25, None)}.items():
        for variant, score, speed in ((None, base, 10.0), ("fast", fast, 25.0)):
            result = grid_cell(tmp_path / str(seed), "cola", "lora", score)
            result.cell.seed, result.cell.variant = seed, variant
            result.throughput["train_samples_per_s"] = speed * seed
            results.append(result)
    molex = grid_cell(tmp_path, "cola", "molex", None)
    molex.cell.variant = "fast"
    lines = stage_variant_lines([*results, molex], "best")
    assert "| fast | CoLA | lora | 2 of 3 | -1.0 ± 4.2 (n=2) | 7.1 | 2.50x | – |" in lines
    assert "| fast | CoLA | molex | 0 of 1 |  |  |  | – |" in lines
    assert "- fast: 0 of 2 rows within the spread; 2 still waiting for pairs." in lines
    assert stage_variant_lines(results[::2], "best") == []  # no variant cell: no section
    # every pair done: |mean difference| against the base std decides each row
    # (base std 5.0; seed 3's fast cell at 27.0: mean difference 0.0, at 9.0: -6.0)
    for third, verdict, summary in (
        (0.27, "yes", "1 of 1 rows within the spread; every row within the spread"),
        (0.09, "no", "0 of 1 rows within the spread; 1 outside the spread"),
    ):
        done = grid_cell(tmp_path / f"3-{third}", "cola", "lora", third)
        done.cell.seed, done.cell.variant = 3, "fast"
        lines = stage_variant_lines([*results[:-1], done], "best")
        row = next(line for line in lines if line.startswith("| fast | CoLA | lora |"))
        assert row.startswith("| fast | CoLA | lora | 3 of 3 |") and row.endswith(f"| {verdict} |")
        assert f"- fast: {summary}." in lines
    # a base cell slowed to a tenth (its machine paused): per-seed ratios 2.5, 2.5 and 25,
    # whose median is 2.5 (their mean would be 10)
    slowed = grid_cell(tmp_path / "3-slowed", "cola", "lora", 0.25)
    slowed.cell.seed, slowed.throughput["train_samples_per_s"] = 3, 3.0
    done = grid_cell(tmp_path / "3-fast", "cola", "lora", 0.27)
    done.cell.seed, done.cell.variant, done.throughput["train_samples_per_s"] = 3, "fast", 75.0
    lines = stage_variant_lines([*results[:-2], slowed, done], "best")
    assert any(
        line.startswith("| fast | CoLA | lora | 3 of 3 |") and "| 2.50x |" in line for line in lines
    )
    protocol = write_protocol(tmp_path / "p.yaml", tmp_path, ["lora"])
    text = protocol.read_text()
    for stage, message in (
        ("{tasks: [rte], methods: [lora], variant: fast}", "needs both 'variant'"),
        ("{tasks: [rte], methods: [lora], variant: a/b, overrides: [x=1]}", "without '/'"),
        ("{tasks: [rte], methods: [lora], variant: f, overrides: [x]}", "list of key=value"),
        ("{tasks: [rte], methods: [lora], overrides: {lora: [x]}}", "list of key=value"),
        ("{tasks: [rte], methods: [lora], overrides: {adapter: [x=1]}}", "does not run: 'adapter'"),
        ("{tasks: [rte], methods: [lora], seeds: [1]}", "unknown key(s) 'seeds'"),
    ):
        protocol.write_text(text.replace("stages:\n", f"stages:\n  bad: {stage}\n"))
        with pytest.raises(ConfigError, match=rf"p.yaml: stage 'bad'.*{re.escape(message)}"):
            load_protocol(protocol)


def test_a_stage_sets_its_cells_per_method_and_refuses_to_run_a_cell_two_ways(
    tmp_path: Path,
) -> None:
    """A stage without a variant adds its ``overrides`` to its own cells (the methods'
    folders): a list for every method, a mapping for the methods it names. A file whose
    stages run one folder with different overrides is refused when read, naming both."""
    protocol = write_protocol(tmp_path / "p.yaml", tmp_path, ["lora", "adapter"])
    node = yaml.safe_load(protocol.read_text())
    node["stages"]["tiny"]["overrides"] = {"lora": ["trainer.precision=bf16-mixed"]}
    protocol.write_text(yaml.safe_dump(node))
    lora, adapter = plan_cells(load_protocol(protocol), "all", tmp_path, "cpu")
    assert lora.path == tmp_path / "rte" / "lora" / "seed1" and lora.variant is None
    assert lora.overrides[-2:] == ["trainer.precision=bf16-mixed", "seed=1"]
    assert not any(o.startswith("trainer.precision") for o in adapter.overrides)
    node["stages"]["tiny"]["overrides"] = ["data.group_by_length=true"]
    node["stages"]["again"] = {"tasks": ["rte"], "methods": ["adapter"]}
    protocol.write_text(yaml.safe_dump(node, sort_keys=False))
    with pytest.raises(ConfigError, match=r"stages 'tiny' and 'again' both run rte/adapter/seed1"):
        load_protocol(protocol)


def test_the_sst2_stage_runs_fast_where_the_check_found_equal_results(tmp_path: Path) -> None:
    """conf/evidence.yaml's SST-2 cells follow the fast_check's outcome: LoRA, the adapter
    and MoLE in bf16-mixed with length-grouped batches, MoLEx in fp32 without grouping
    (its CoLA cells lost 4.3 ± 0.4 with them); in their methods' own folders."""
    cells = [c for c in plan_cells(load_protocol(), "sst2", tmp_path, "cpu") if c.seed == 1]
    configs = {c.method: compose_cell(c) for c in cells}
    settings = {m: (c.trainer.precision, c.data.group_by_length) for m, c in configs.items()}
    assert settings == {
        "lora": ("bf16-mixed", True),
        "adapter": ("bf16-mixed", True),
        "mole": ("bf16-mixed", True),
        "molex": ("32-true", False),
    }
    assert {c.path.parent.name for c in cells} == {"lora", "adapter", "mole", "molex"}


def test_variants_report_shows_how_decided_each_mole_gate_was(tmp_path: Path) -> None:
    """Per MoLE cell: the range over layers of the importance entropy (an undecided gate
    of 4 experts: ln 4) and of the top-1 minus top-2 importance, what it kept, its score;
    a cell without the importance table shows dashes, a LoRA cell no row."""
    from mole_lightning.evidence.variants import gate_rows

    undecided, decided = [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]
    # -(0.7 ln 0.7 + 3 * 0.1 ln 0.1) = 0.9404, by hand
    structure = {"structure": [["mlp"], ["syntactic"]], "rule": "per_layer", "top_k": 1}
    importance = {"rows": ["layer 0", "layer 1"], "values": [undecided, decided]}
    both = {"mole_structure.json": structure, "mole_importance_at_prune.json": importance}
    results = [
        done_cell(tmp_path, "mrpc", "mole", 1, {"mole_structure.json": structure}),
        done_cell(tmp_path, "cola", "mole", 2, both),
        done_cell(tmp_path, "cola", "lora", 1, {}),
    ]
    for result, score in zip(results, (0.755, 0.25, 0.2), strict=True):
        result.run.config = {"task": {"monitor": "val/x"}}
        result.run.metrics = {"best/val/x": score}
    assert gate_rows(results, "best") == [
        ["CoLA", "mole", "2", "0.940–1.386", "0.000–0.600", "mlp, syntactic", "25.0"],
        ["MRPC", "mole", "1", "–", "–", "mlp, syntactic", "75.5"],
    ]


def test_sst2_curve_runs_the_protocols_lora(tmp_path: Path) -> None:
    """The SST-2 learning curve that picks the SST-2 stage's epochs trains the protocol's
    LoRA: the same lr (the lr grid's choice) and method settings as conf/evidence.yaml's
    LoRA cells, on SST-2, validated every 526 steps for 3 epochs."""
    (curve,) = plan_cells(load_protocol(CONF / "evidence_sst2_curve.yaml"), "all", tmp_path, "cpu")
    main = next(
        c for c in plan_cells(load_protocol(), "all", tmp_path, "cpu") if c.method == "lora"
    )
    ours, theirs = compose_cell(curve), compose_cell(main)
    assert (ours.task.name, curve.seed) == ("sst2", 0)
    assert ours.optim == theirs.optim and ours.method == theirs.method
    assert (ours.trainer.max_epochs, ours.trainer.val_check_interval) == (3, 526)
