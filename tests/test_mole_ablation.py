"""MoLE's structure ablation (claim b): the shipped protocol at the learned structure's
budget, the paired differences against their definition, and the command on tiny real
protocol runs (a learned-structure protocol and an ablation protocol, one cell not run)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from mole_lightning.analysis.runs import Run
from mole_lightning.errors import ConfigError
from mole_lightning.evidence.ablation import (
    ABLATION_PROTOCOL,
    AblationResults,
    ablation_results,
    structure_rows,
)
from mole_lightning.evidence.protocol import DEFAULT_PROTOCOL, ProtocolCell, load_protocol
from mole_lightning.evidence.report import CellResult
from mole_lightning.evidence.state import DONE, NEW, CellState
from mole_lightning.reporting import read_figure_info
from scripts.evidence import main as evidence
from scripts.mole_ablation import main as mole_ablation
from tests.test_evidence import TINY

STRUCTURE = {"mlp": "[[mlp],[mlp]]", "syntactic": "[[syntactic],[syntactic]]"}


def write_protocols(root: Path, glue_dir: Path, fixed_lr: float = 5.0e-4, seeds=(1, 2)):
    """A learned-structure protocol (MoLE pruned after one step) and an ablation protocol
    (one expert kind in both tiny-BERT layers) at the same budget; ``fixed_lr`` other
    than 5e-4 breaks it."""
    common = ["backbone=tiny-bert", "parser=spacy", f"data.dir={glue_dir}", "logger=csv", *TINY]
    shared = {
        "tasks": {"rte": ["trainer.max_epochs=2"]},
        "metric": "best",
        "may_differ": ["paths.", "ckpt_path", "callbacks.model_checkpoint.dirpath"],
    }
    learned = {
        **shared,
        "common": [*common, "optim.lr=5.0e-4"],
        "methods": {"mole": ["method.prune.after_steps=1"], "lora": []},
        "seeds": list(seeds),
        "stages": {"main": {"tasks": ["rte"], "methods": ["lora", "mole"]}},
    }
    ablation = {
        **shared,
        "common": [*common, f"optim.lr={fixed_lr}"],
        "methods": {
            f"mole_{kind}": ["method=mole", "method.prune.enabled=false", f"method.structure={s}"]
            for kind, s in STRUCTURE.items()
        },
        "seeds": [1, 2],
        "stages": {"ablation": {"tasks": ["rte"], "methods": ["mole_mlp", "mole_syntactic"]}},
    }
    paths = root / "learned.yaml", root / "ablation.yaml"
    for path, protocol in zip(paths, (learned, ablation), strict=True):
        path.write_text(yaml.safe_dump(protocol))
    return paths


def test_shipped_ablation_is_at_the_protocols_budget(tmp_path: Path) -> None:
    """conf/evidence_mole_structures.yaml against conf/evidence.yaml's MoLE cells: every
    fixed structure differs only in its structure and the absent prune (else this raises)."""
    results = ablation_results(
        load_protocol(ABLATION_PROTOCOL), tmp_path / "a", load_protocol(DEFAULT_PROTOCOL), tmp_path
    )
    assert len(results.fixed) == 2 * 4 * 3 and len(results.learned) == 2 * 3
    assert {(r.cell.task, r.cell.method) for r in results.learned} == {
        ("cola", "mole"),
        ("stsb", "mole"),
    }
    assert all(r.state.kind == NEW for r in (*results.fixed, *results.learned))


def test_other_budget_or_absent_learned_cells_are_refused(glue_dir: Path, tmp_path: Path) -> None:
    learned, ablation = write_protocols(tmp_path, glue_dir, fixed_lr=1.0e-3)
    with pytest.raises(ConfigError, match=r"rte/mole_mlp/seed1 is not at .* in optim\.lr"):
        ablation_results(load_protocol(ablation), tmp_path, load_protocol(learned), tmp_path)
    learned, ablation = write_protocols(tmp_path, glue_dir, seeds=(1,))
    with pytest.raises(ConfigError, match="has no mole cell for rte seed 2"):
        ablation_results(load_protocol(ablation), tmp_path, load_protocol(learned), tmp_path)


def scored(task: str, method: str, seed: int, score: float | None) -> CellResult:
    """A cell with best dev accuracy ``score`` (done), or not run (``None``)."""
    cell = ProtocolCell("s", task, method, seed, Path(task, method, f"seed{seed}"))
    if score is None:
        return CellResult(cell, CellState(NEW, "no run yet"), {}, {})
    config = {"task": {"name": task, "monitor": "val/acc"}}
    run = Run(cell.path, "finished", {}, config, {"best/val/acc": score})
    return CellResult(cell, CellState(DONE, "finished with this config", run), {}, {})


def test_paired_differences_by_seed() -> None:
    results = AblationResults(
        fixed=[
            scored("rte", "mole_mlp", 1, 0.60),
            scored("rte", "mole_mlp", 2, 0.50),
            scored("rte", "mole_mlp", 3, 0.70),  # the learned cell of seed 3 is missing
            scored("rte", "mole_semantic", 1, None),
        ],
        learned=[
            scored("rte", "mole", 1, 0.55),
            scored("rte", "mole", 2, 0.58),
            scored("rte", "mole", 3, None),
        ],
        metric="best",
    )
    learned, mlp, semantic = structure_rows(results)
    assert (learned.structure, learned.scores, learned.differences) == (
        "learned",
        {1: 0.55, 2: 0.58},
        {},
    )
    assert mlp.structure == "mlp" and mlp.scores == {1: 0.60, 2: 0.50, 3: 0.70}
    assert mlp.differences == pytest.approx({1: 5.0, 2: -8.0})
    assert (semantic.scores, semantic.differences, semantic.mean()) == ({}, {}, None)


def test_command_on_tiny_protocol_runs(glue_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    learned, ablation = write_protocols(tmp_path, glue_dir)
    runs, fixed = tmp_path / "runs", tmp_path / "ablation"
    cache = ["--override", f"paths.cache_dir={cache_dir}"]
    assert evidence(["--protocol", str(learned), "--out", str(runs), *cache]) == 0
    # cells 1-3 of the ablation (seed 1: mlp, syntactic; seed 2: mlp); seed 2's
    # syntactic cell is not run
    for number in (1, 2, 3):
        args = ["--protocol", str(ablation), "--out", str(fixed), "--cell", str(number)]
        assert evidence([*args, *cache]) == 0
    out = tmp_path / "report"
    assert (
        mole_ablation(
            [
                "--ablation",
                str(fixed),
                "--learned",
                str(runs),
                "--out",
                str(out),
                "--ablation-protocol",
                str(ablation),
                "--learned-protocol",
                str(learned),
            ]
        )
        == 0
    )

    def best(path: Path) -> float:
        return json.loads((path / "metrics.json").read_text())["best/val/acc"]

    learned_scores = {s: best(runs / "rte" / "mole" / f"seed{s}") for s in (1, 2)}
    mlp = {s: best(fixed / "rte" / "mole_mlp" / f"seed{s}") for s in (1, 2)}
    syntactic = best(fixed / "rte" / "mole_syntactic" / "seed1")

    def spread(values: list[float]) -> str:
        return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"

    text = (out / "mole_ablation.md").read_text()
    assert "### RTE (acc)" in text
    assert f"| learned | 1, 2 | {spread(list(learned_scores.values()))} | – | – |" in text
    diffs = [100 * (mlp[s] - learned_scores[s]) for s in (1, 2)]
    assert (
        f"| mlp | 1, 2 | {spread(list(mlp.values()))} | {statistics.fmean(diffs):+.1f} ± "
        f"{statistics.stdev(diffs):.1f} (n=2) | 1: {diffs[0]:+.1f}, 2: {diffs[1]:+.1f} |"
    ) in text
    d = 100 * (syntactic - learned_scores[1])
    assert f"| syntactic | 1 | {100 * syntactic:.1f} | {d:+.1f} (n=1) | 1: {d:+.1f} |" in text
    assert "1 of 6 cells are not done" in text
    assert "- not run yet (ablation, stage ablation): rte/mole_syntactic/seed2" in text
    assert f"--out {fixed} --stage ablation" in text

    figure = read_figure_info(out / "mole_ablation_rte.png")
    assert figure["labels"] == ["mlp", "syntactic"]
    assert figure["values"] == pytest.approx([statistics.fmean(mlp.values()), syntactic])
    assert figure["reference"][0] == pytest.approx(statistics.fmean(learned_scores.values()))
    assert figure["notes"][1] == f"{100 * syntactic:.1f} (n=1)"
