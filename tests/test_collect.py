"""Results aggregation, curves and heatmaps on synthetic run directories (exact values)."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mole_lightning.analysis import build_table, find_runs, load_run
from mole_lightning.analysis.curves import (
    MetricPoint,
    plot_learning_curves,
    read_metrics_csv,
    training_points,
    validations_by_epoch,
)
from mole_lightning.analysis.heatmaps import average_tables, plot_expert_heatmaps, read_expert_table
from tests.conftest import REPO

MONITORS = {"rte": "val/acc", "mrpc": "val/acc", "cola": "val/mcc"}


def write_run(
    root: Path,
    name: str,
    task: str,
    method: str,
    seed: int,
    score: float | None = None,
    status: str = "finished",
    lr: float = 5e-4,
    params: int = 3170,
    error: str | None = None,
    backbone: str = "minilm",
) -> Path:
    """A run directory as ``train()`` leaves it: run_info, resolved config, metrics."""
    run = root / name
    run.mkdir(parents=True)
    info = {
        "status": status,
        "task": task,
        "method": method,
        "backbone": backbone,
        "seed": seed,
        "started": "2026-01-01T00:00:00",
    }
    if error:
        info["error"] = error
    (run / "run_info.json").write_text(json.dumps(info))
    config = {
        "task": {"name": task, "monitor": MONITORS[task], "mode": "max"},
        "method": {"name": method, "lr": lr},
        "backbone": {"name": backbone},
        "seed": seed,
        "optim": {"lr": lr},
        "paths": {"output_dir": str(run)},
        "callbacks": {"model_checkpoint": {"dirpath": f"{run}/checkpoints"}},
        "logger": {"wandb": {"tags": [f"seed-{seed}"]}},
    }
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    if score is not None:
        monitor = MONITORS[task]
        metrics = {
            monitor: score - 0.01,
            f"best/{monitor}": score,
            "val/loss": 0.5,
            "global_step": 10,
            "params/trainable": params,
            "params/total": 10**6,
        }
        if task == "mrpc":
            metrics |= {"val/f1": 0.9, "best/val/f1": 0.9}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """lora on rte (3 seeds) and mrpc (2 seeds); adapter on rte only; broken runs."""
    root = tmp_path / "multirun"
    for seed, score in zip((1, 2, 3), (0.80, 0.84, 0.86), strict=True):
        write_run(root, f"rte_lora_{seed}", "rte", "lora", seed, score)
    for seed, score in zip((1, 2), (0.70, 0.75), strict=True):
        write_run(root, f"mrpc_lora_{seed}", "mrpc", "lora", seed, score, params=3202)
    write_run(root, "rte_adapter_1", "rte", "adapter", 1, 0.60, params=50000)
    write_run(
        root,
        "rte_adapter_2",
        "rte",
        "adapter",
        2,
        status="failed",
        error="RuntimeError: CUDA out of memory",
    )
    write_run(root, "mrpc_adapter_1", "mrpc", "adapter", 1, status="running")
    return root


def test_cells_hold_mean_and_sample_std(runs_dir: Path) -> None:
    table = build_table(find_runs(runs_dir), metric="best")
    cell = table.cells["lora", "rte"]
    assert cell.n == 3 and sorted(cell.seeds) == [1, 2, 3]
    assert cell.mean == pytest.approx(100 * (0.80 + 0.84 + 0.86) / 3)
    assert cell.std == pytest.approx(float(np.std([80.0, 84.0, 86.0], ddof=1)))
    assert cell.std == pytest.approx(3.0550504633)
    assert table.cells["lora", "mrpc"].mean == pytest.approx(72.5)
    assert table.cells["adapter", "rte"].std is None  # one run: no spread
    assert table.tasks == ["mrpc", "rte"]  # GLUE order
    assert table.rows == ["lora", "adapter"]  # paper order


def test_markdown_table_average_missing_cells_and_params(runs_dir: Path) -> None:
    table = build_table(find_runs(runs_dir))
    text = table.to_markdown(decimals=1, root=runs_dir)
    lora = next(line for line in text.splitlines() if line.startswith("| lora "))
    adapter = next(line for line in text.splitlines() if line.startswith("| adapter "))
    assert "| MRPC (acc) | RTE (acc) | GLUE avg |" in text
    assert "72.5 ± 3.5 (n=2)" in lora and "83.3 ± 3.1 (n=3)" in lora
    assert lora.endswith(f"| {statistics.fmean([72.5, 250 / 3]):.1f} |")  # 77.9
    assert "3.17K–3.20K" in lora  # heads of different tasks differ
    assert "| – |" in adapter and "– (1/2 tasks)" in adapter and "50.0K" in adapter
    assert "val/f1 also logged, not shown" in text


def test_failed_and_unfinished_runs_are_listed_with_directory_and_error(runs_dir: Path) -> None:
    broken = runs_dir / "corrupt"
    broken.mkdir()
    (broken / "run_info.json").write_text("{not json")
    write_run(runs_dir, "rte_full_1", "rte", "full", 1, status="finished")  # no metrics.json
    write_run(runs_dir, "rte_mole_1", "rte", "mole", 1, status="interrupted")
    table = build_table(find_runs(runs_dir))
    reasons = {run.path.name: reason for run, reason in table.excluded}
    assert reasons["rte_adapter_2"] == "failed: RuntimeError: CUDA out of memory"
    assert reasons["mrpc_adapter_1"].startswith("unfinished: status running")
    assert reasons["corrupt"].startswith("unreadable run_info.json")
    assert reasons["rte_full_1"] == "finished but no metrics.json"
    assert reasons["rte_mole_1"] == "interrupted (Ctrl-C or SIGTERM) at ?"
    text = table.to_markdown(root=runs_dir)
    assert "Runs not in the table (5):" in text
    assert "- `rte_adapter_2`: failed: RuntimeError: CUDA out of memory" in text
    assert "full" not in table.rows


def test_runs_without_validation_are_listed_not_counted(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", "rte", "lora", 1, 0.8)
    (run / "metrics.json").write_text(json.dumps({"train/loss": 0.7, "global_step": 5}))
    table = build_table(find_runs(tmp_path))
    assert not table.cells
    assert "no best/val/acc in metrics.json (no validation ran" in table.excluded[0][1]


def test_final_metric_reads_the_last_validation(runs_dir: Path) -> None:
    table = build_table(find_runs(runs_dir), metric="final")
    assert table.cells["lora", "rte"].mean == pytest.approx(100 * (0.79 + 0.83 + 0.85) / 3)


def test_mixed_learning_rates_are_flagged_and_split_with_by(tmp_path: Path) -> None:
    write_run(tmp_path, "a", "cola", "lora", 1, 0.5, lr=1e-4)
    write_run(tmp_path, "b", "cola", "lora", 2, 0.6, lr=1e-3)
    write_run(tmp_path, "c", "cola", "lora", 2, 0.7, lr=1e-3)
    mixed = build_table(find_runs(tmp_path))
    assert any("differ in method.lr, optim.lr" in w for w in mixed.warnings)
    split = build_table(find_runs(tmp_path), by=("optim.lr",))
    assert split.rows == ["lora optim.lr=0.0001", "lora optim.lr=0.001"]
    assert split.cells["lora optim.lr=0.001", "cola"].mean == pytest.approx(65.0)
    assert any("seed(s) 2 appear in more than one run" in w for w in split.warnings)
    assert "| CoLA (mcc) |" in split.to_markdown()


def test_options_added_since_a_run_and_the_data_seed_are_not_differences(tmp_path: Path) -> None:
    """A run from before an option existed lacks its key; ``data.seed`` follows the
    seed: neither splits a cell. Two values of the new option among newer runs do."""
    for name, seed, extra in (("old", 1, {}), ("new", 2, {"zero_down_bias": False})):
        run = write_run(tmp_path, name, "cola", "lora", seed, 0.5)
        config = yaml.safe_load((run / "resolved_config.yaml").read_text())
        config["method"].update(extra)
        config["data"] = {"seed": seed}
        (run / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    assert not build_table(find_runs(tmp_path)).warnings
    run = write_run(tmp_path, "newer", "cola", "lora", 3, 0.5)
    config = yaml.safe_load((run / "resolved_config.yaml").read_text())
    config["method"]["zero_down_bias"] = True
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    (warning,) = build_table(find_runs(tmp_path)).warnings
    assert "runs differ in method.zero_down_bias" in warning


def test_a_renamed_key_is_read_under_its_new_name(tmp_path: Path) -> None:
    """A run from before the head group (``method.head_pooling``) and one after it
    (``head.pooling``) with the same head are one cell; another head splits it."""
    old = write_run(tmp_path, "old", "cola", "lora", 1, 0.5)
    config = yaml.safe_load((old / "resolved_config.yaml").read_text())
    config["method"]["head_pooling"] = "first"
    (old / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    for name, seed, pooling in (("new", 2, "first"), ("newer", 3, "mean")):
        run = write_run(tmp_path, name, "cola", "lora", seed, 0.5)
        config = yaml.safe_load((run / "resolved_config.yaml").read_text())
        config["head"] = {"pooling": pooling}
        (run / "resolved_config.yaml").write_text(yaml.safe_dump(config))
        if pooling == "first":
            assert not build_table(find_runs(tmp_path)).warnings
    (warning,) = build_table(find_runs(tmp_path)).warnings
    assert "runs differ in head.pooling" in warning


def test_csv_mirrors_the_table(runs_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(build_table(find_runs(runs_dir)).to_csv())))
    lora = next(r for r in rows if r["method"] == "lora")
    assert float(lora["rte_mean"]) == pytest.approx(250 / 3)
    assert float(lora["rte_std"]) == pytest.approx(3.0550504633)
    assert lora["rte_n"] == "3" and lora["params_trainable_min"] == "3170"
    assert float(lora["glue_avg"]) == pytest.approx((72.5 + 250 / 3) / 2)
    adapter = next(r for r in rows if r["method"] == "adapter")
    assert adapter["mrpc_mean"] == "" and adapter["glue_avg"] == ""


def test_collect_cli_writes_markdown_and_csv(runs_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "collect.py"),
            str(runs_dir),
            "--out",
            str(tmp_path / "t.md"),
            "--csv",
            str(tmp_path / "t.csv"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "83.3 ± 3.1 (n=3)" in out.stdout
    assert (tmp_path / "t.md").read_text() == out.stdout
    assert (tmp_path / "t.csv").read_text().startswith("method,params_trainable_min")
    missing = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "collect.py"), str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "collect.py"), str(tmp_path / "empty")],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 1 and "no run directories" in empty.stderr


# --- curves and expert heatmaps ----------------------------------------------------------


def test_read_metrics_csv_skips_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,params/trainable,step,train/loss,val/acc\n,3170,0,,\n0,,4,0.69,\n0,,9,0.61,\n0,,9,,0.55\n"
    )
    series = read_metrics_csv(path)
    assert series["train/loss"] == [(4, 0, 0.69), (9, 0, 0.61)]
    assert series["val/acc"] == [(9, 0, 0.55)]
    assert series["params/trainable"] == [(0, None, 3170)]
    assert "epoch" not in series


def test_malformed_metrics_csv_names_the_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/acc\n0,4,0.5\nfirst,9,0.6\n")
    with pytest.raises(ValueError, match=r"metrics\.csv:3: 'step' must be an integer"):
        read_metrics_csv(path)
    run = load_run(write_run(tmp_path, "r", "rte", "lora", 1, 0.8))
    (run.path / "csv").mkdir()
    (run.path / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n0,4,0.5\n,9,0.6\n")
    run.config = {"task": {"monitor": "val/acc"}}
    with pytest.raises(ValueError, match="val/acc at step 9 has no epoch"):
        validations_by_epoch(run)


def test_curves_leave_out_the_best_checkpoint_revalidation(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path, "r", "rte", "lora", 1, 0.8))  # global_step 10
    points = [MetricPoint(4, 0, 0.5), MetricPoint(9, 1, 0.6), MetricPoint(10, 1, 0.6)]
    assert training_points(run, points) == points[:2]
    unfinished = load_run(write_run(tmp_path, "u", "rte", "lora", 1, status="running"))
    assert training_points(unfinished, points[:1]) == points[:1]


def test_learning_curves_one_png_per_task(runs_dir: Path, tmp_path: Path) -> None:
    for run in runs_dir.glob("rte_*"):
        (run / "csv").mkdir()
        (run / "csv" / "metrics.csv").write_text(
            "epoch,step,train/loss,val/acc\n0,1,0.7,\n0,2,0.6,\n0,2,,0.6\n"
        )
    written, notes = plot_learning_curves(find_runs(runs_dir), tmp_path / "fig")
    assert [p.name for p in written] == ["curves_rte.png"]
    assert written[0].stat().st_size > 10_000
    assert sum("no csv/metrics.csv" in n for n in notes) == 3  # the mrpc runs


def test_expert_tables_both_layouts(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            {
                "rows": ["layer 0", "layer 1"],
                "columns": ["syntactic", "mlp"],
                "values": [[0.7, 0.3], [None, 1.0]],
            }
        )
    )
    bare = tmp_path / "bare.json"
    bare.write_text(
        json.dumps(
            {
                "layers": [0, 1],
                "experts": ["syntactic", "mlp"],
                "importance": [[0.5, 0.5], [0.2, 0.8]],
            }
        )
    )
    mean = average_tables([read_expert_table(export), read_expert_table(bare)])
    assert mean.columns == ["syntactic", "mlp"]
    np.testing.assert_allclose(mean.values, [[0.6, 0.4], [0.2, 0.9]])  # blank cell ignored
    counts = tmp_path / "molex.json"
    counts.write_text(
        json.dumps({"counts": [[0, 0, 0], [3, 0, 1], [0, 0, 0]], "routed_layers": [1]})
    )
    table = read_expert_table(counts)
    assert table.rows == ["layer 1"] and table.columns == ["layer 0", "layer 1", "layer 2"]
    np.testing.assert_allclose(table.values, [[0.75, 0.0, 0.25]])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": []}))
    with pytest.raises(ValueError, match="bad.json: unknown layout"):
        read_expert_table(bad)


def test_heatmaps_side_by_side_and_tolerate_absence(runs_dir: Path, tmp_path: Path) -> None:
    written, _ = plot_expert_heatmaps(find_runs(runs_dir), tmp_path / "none")
    assert written == []
    for run in [runs_dir / "rte_lora_1", runs_dir / "rte_lora_2", runs_dir / "mrpc_lora_1"]:
        (run / "molex_selection.json").write_text(
            json.dumps({"counts": [[2, 2], [0, 4]], "routed_layers": [0, 1]})
        )
    (runs_dir / "mrpc_lora_2" / "molex_selection.json").write_text("{broken")
    written, notes = plot_expert_heatmaps(find_runs(runs_dir), tmp_path / "fig")
    assert [p.name for p in written] == ["molex_selection_minilm.png"]
    assert any("mrpc_lora_2" in n and "not JSON" in n for n in notes)
