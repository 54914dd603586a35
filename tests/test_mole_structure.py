"""MoLE's structure claims (graph experts by layer, agreement across seeds) against
references computed from the definitions, and the command on real tiny runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mole_lightning.analysis.mole_structure import (
    PruneRule,
    graph_by_layer,
    read_structure_runs,
    seed_agreement,
)
from mole_lightning.analysis.runs import find_runs
from mole_lightning.reporting import read_figure_info
from mole_lightning.train import train
from tests.conftest import compose
from tests.test_mole_training import mole_overrides

ROOT = Path(__file__).resolve().parent.parent


def write_run(root: Path, task: str, seed: int, structure: list[list[str]], rule="per_layer"):
    run = root / task / f"seed{seed}"
    run.mkdir(parents=True)
    info = {"status": "finished", "task": task, "method": "mole", "seed": seed}
    (run / "run_info.json").write_text(json.dumps(info))
    (run / "resolved_config.yaml").write_text(
        yaml.safe_dump({"task": {"name": task}, "method": {"name": "mole"}, "seed": seed})
    )
    saved = {"rule": rule, "top_k": 1, "graph_layers": 2, "structure": structure}
    (run / "mole_structure.json").write_text(json.dumps(saved))
    values = [[0.4, 0.2, 0.2, 0.2] for _ in structure]
    (run / "mole_importance_at_prune.json").write_text(json.dumps({"values": values}))
    return run


def binomial_two_sided(k: int, n: int, p: float) -> float:
    """Sum of the probabilities of every outcome no likelier than ``k``."""
    probs = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    return sum(q for q in probs if q <= probs[k] * (1 + 1e-9))


def test_graph_rate_and_agreement_against_the_definitions(tmp_path: Path) -> None:
    upper_graph = [["mlp"], ["mlp"], ["syntactic"], ["semantic"]]
    for seed in (1, 2, 3):
        write_run(tmp_path, "cola", seed, upper_graph)
    write_run(tmp_path, "rte", 1, [["mlp"], ["sequential"], ["mlp"], ["syntactic"]])
    runs = read_structure_runs(find_runs(tmp_path))
    assert len(runs) == 4

    result = graph_by_layer(runs)
    assert [(r.graph, r.runs) for r in result.layers] == [(0, 4), (1, 4), (3, 4), (4, 4)]
    assert all(r.random == 0.75 for r in result.layers)  # 3 graph experts of 4, top-1
    for row in result.layers:
        assert row.p_value == pytest.approx(binomial_two_sided(row.graph, row.runs, 0.75))
    # upper half 7 of 8 graph, lower half 1 of 8: hypergeometric tail P(X >= 7)
    assert (result.upper, result.upper_total, result.lower, result.lower_total) == (7, 8, 1, 8)
    tail = sum(math.comb(8, i) * math.comb(8, 8 - i) for i in (7, 8)) / math.comb(16, 8)
    assert result.p_value == pytest.approx(tail)

    (cola,) = seed_agreement(runs)  # rte has one seed
    assert cola.task == "cola" and cola.seeds == [1, 2, 3] and cola.observed == 1.0
    assert cola.random == pytest.approx(0.25, abs=0.01)  # 1 / C(4, 1) per layer
    assert cola.p_value < 1e-3


def test_random_rates_of_each_rule() -> None:
    experts = ("syntactic", "semantic", "sequential", "mlp")
    assert PruneRule("per_layer", 2, 2, experts).random_graph_rate(6) == 1.0  # C(1,2)=0
    assert PruneRule("per_layer", 1, 2, ("syntactic", "mlp")).random_graph_rate(6) == 0.5
    assert PruneRule("graph_layers", 1, 2, experts).random_graph_rate(6) == pytest.approx(1 / 3)


def test_mixed_rules_and_bad_files_are_named(tmp_path: Path) -> None:
    write_run(tmp_path, "cola", 1, [["mlp"], ["mlp"]])
    other = write_run(tmp_path, "cola", 2, [["mlp"], ["syntactic"]], rule="graph_layers")
    with pytest.raises(ValueError, match="different rules"):
        graph_by_layer(read_structure_runs(find_runs(tmp_path)))
    (other / "mole_structure.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(other / "mole_structure.json")):
        read_structure_runs(find_runs(tmp_path))


def test_command_on_real_tiny_runs(glue_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """Two real MoLE runs (tiny BERT, spaCy graphs of RTE, pruned at step 2), then the
    command writes the table and the figure from their folders."""
    for seed in (1, 2):
        overrides = mole_overrides(glue_dir, "tiny-bert", 3, 2, "logger=none", f"seed={seed}")
        train(compose(overrides, tmp_path / "runs" / f"seed{seed}", cache_dir))
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "mole_structures.py"),
            str(tmp_path / "runs"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = (out / "mole_structure_claims.md").read_text()
    assert "2 finished MoLE runs (RTE)" in text and "| RTE | 1, 2 |" in text
    layers = len(json.loads((tmp_path / "runs/seed1/mole_structure.json").read_text())["structure"])
    assert text.count(" of 2 | ") == layers
    figure = read_figure_info(out / "mole_graph_by_layer.png")
    assert figure["labels"] == [str(i) for i in range(layers)]
    assert [f"| {i} | {n[0]} of 2 |" in text for i, n in enumerate(figure["notes"])] == [
        True
    ] * layers
    assert figure["reference"][1] == "random pruning"

    missing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mole_structures.py"), str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "no such directory" in missing.stderr
