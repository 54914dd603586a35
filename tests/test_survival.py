"""MoLE's layer × expert survival frequency across seeds (scripts/plot_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from mole_lightning.analysis import find_runs
from mole_lightning.analysis.heatmaps import average_tables, plot_expert_heatmaps, read_run_table
from tests.test_collect import write_run

EXPERTS = ["syntactic", "semantic", "sequential", "mlp"]


def test_survival_frequency_over_seeds(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    kept = [
        [["mlp"], ["syntactic"]],
        [["mlp"], ["semantic"]],
        [["syntactic"], ["syntactic"]],
        [["mlp"], ["mlp", "sequential"]],
    ]
    for seed, structure in enumerate(kept):
        run = write_run(root, f"rte_mole_{seed}", "rte", "mole", seed, 0.6)
        config = yaml.safe_load((run / "resolved_config.yaml").read_text())
        config["method"]["experts"] = EXPERTS
        (run / "resolved_config.yaml").write_text(yaml.safe_dump(config))
        (run / "mole_structure.json").write_text(json.dumps({"structure": structure}))
    runs = find_runs(root)
    one = read_run_table(runs[0], "mole_structure.json")
    assert one.columns == EXPERTS and one.values.tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    written, notes = plot_expert_heatmaps(runs, tmp_path / "fig")
    assert [p.name for p in written] == ["mole_structure_minilm.png"] and not notes
    survival = average_tables([read_run_table(r, "mole_structure.json") for r in runs])
    np.testing.assert_allclose(survival.values, [[0.25, 0, 0, 0.75], [0.5, 0.25, 0.25, 0.25]])
