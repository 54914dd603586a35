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


def tiny_rte(glue_dir: Path, out: Path, rows: dict[str, int]) -> Path:
    """A glue_data folder holding the first rows of the real RTE files (header kept)."""
    (out / "RTE").mkdir(parents=True)
    for split, n in rows.items():
        lines = (glue_dir / "RTE" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (out / "RTE" / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n")
    return out


def test_survival_and_selection_figures_from_real_runs(glue_dir: Path, tmp_path: Path) -> None:
    """Two real MoLE runs (tiny BERT, spaCy graphs, pruned at step 2) and two real MoLEx
    runs with other seeds, then scripts/plot_runs.py over their parent folder: the PNGs
    exist and the plotted means are what the runs' own files say."""
    from mole_lightning.train import train
    from scripts.plot_runs import main as plot_runs
    from tests.conftest import compose, fast_run_overrides

    data = tiny_rte(glue_dir, tmp_path / "glue", {"train": 48, "dev": 16})
    root, cache = tmp_path / "multirun", tmp_path / "cache"
    for seed in (0, 1):
        mole = [
            *fast_run_overrides(data, "rte", "mole", "tiny-bert"),
            "parser=spacy",
            "method.prune.after_steps=2",
            "validate_best=false",
            "logger=none",
            f"seed={seed}",
        ]
        train(compose(mole, root / f"mole_{seed}", cache))
        molex = [*fast_run_overrides(data, "rte", "molex", "tiny-bert"), "logger=none"]
        train(
            compose([*molex, "validate_best=false", f"seed={seed}"], root / f"molex_{seed}", cache)
        )
    assert plot_runs([str(root), "--out", str(tmp_path / "fig")]) == 0

    survival = json.loads((tmp_path / "fig" / "mole_structure_tiny-bert.json").read_text())
    (panel,) = survival["panels"].values()
    assert (tmp_path / "fig" / "mole_structure_tiny-bert.png").is_file()
    assert panel["columns"] == EXPERTS and len(panel["runs"]) == 2
    kept = [
        json.loads((root / f"mole_{s}" / "mole_structure.json").read_text())["structure"]
        for s in (0, 1)
    ]
    expected = [
        [np.mean([e in run[t] for run in kept]) for e in EXPERTS] for t in range(len(kept[0]))
    ]
    np.testing.assert_allclose(panel["values"], expected)

    selection = json.loads((tmp_path / "fig" / "molex_selection_tiny-bert.json").read_text())
    (panel,) = selection["panels"].values()
    assert (tmp_path / "fig" / "molex_selection_tiny-bert.png").is_file()
    assert len(panel["runs"]) == 2
    frequencies = []
    for s in (0, 1):
        counts = np.array(
            json.loads((root / f"molex_{s}" / "molex_selection.json").read_text())["counts"], float
        )
        assert counts.sum() > 0
        frequencies.append(counts / counts.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(panel["values"], np.mean(frequencies, axis=0))
