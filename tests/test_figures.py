"""What the saved figures show, read back from each PNG's metadata: titles that say
which model and step, fixed colour scales, named axes, n per cell, smoothed losses."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mole_lightning.probing.report import plot_heatmap
from mole_lightning.reporting import HeatmapPanel, draw_heatmap, markdown_table, read_figure_info
from mole_lightning.train import train
from scripts.plot_runs import main as plot_runs
from tests.conftest import REPO, compose, fast_run_overrides
from tests.test_mole_training import mole_overrides


def test_near_uniform_importance_is_drawn_on_the_fixed_scale(tmp_path: Path) -> None:
    values = np.full((2, 4), 0.25) + np.array([[0.0008, -0.0008, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    path = tmp_path / "importance.png"
    panel = HeatmapPanel(
        ["layer 0", "layer 1"], ["syntactic", "semantic", "sequential", "mlp"], values
    )
    draw_heatmap(path, {"": panel}, "importance", ("layer", "expert"))
    info = read_figure_info(path)
    assert (info["vmin"], info["vmax"]) == (0.0, 1.0)
    assert info["axis_names"] == ["layer", "expert"] and info["title"] == "importance"
    with pytest.raises(ValueError, match="do not match 2 rows"):
        HeatmapPanel(["a", "b"], ["x"], np.zeros((3, 1)))


def test_probe_heatmap_prints_n_and_greys_out_small_cells(tmp_path: Path) -> None:
    table = {
        "layer1": {"tense": 0.9, "obj_number": 0.2},
        "majority": {"tense": 0.5, "obj_number": 0.1},
    }
    path = tmp_path / "probe_diff.png"
    plot_heatmap(table, "diff", path, {"tense": 412, "obj_number": 14}, 30, diverging=True)
    info = read_figure_info(path)
    (panel,) = info["panels"].values()
    assert panel["counts"] == [[412, 14], [412, 14]] and info["min_count"] == 30
    assert info["vmin"] == -info["vmax"] == pytest.approx(-0.9)
    assert info["axis_names"] == ["layer", "property"]


def test_markdown_table_checks_its_cells() -> None:
    assert markdown_table(["a", "b", "c"], [["1", "x|y", 0.123456]], "lrc", decimals=2) == (
        "| a | b | c |\n|---|---:|:---:|\n| 1 | x\\|y | 0.12 |"
    )
    assert markdown_table(["n", "x"], [[3, np.float32(0.5)]]) == "| n | x |\n|---|---|\n| 3 | 0.5 |"
    with pytest.raises(ValueError, match="has 1 cells, header 2"):
        markdown_table(["a", "b"], [["1"]])
    with pytest.raises(ValueError, match="align 'lx'"):
        markdown_table(["a", "b"], [], "lx")


TABLE_ROW = re.compile(r"^\|\s|\s\|$|\|\s*:?-{3}|-{3}:?\s*\|")
"""A piece of a Markdown table row written by hand: ``"| "`` opening a row, ``" |"``
closing it, or an alignment line's ``|---`` / ``---:|``."""


def hand_built_table_rows(source: str) -> list[int]:
    """Line numbers of string literals (f-string parts included, docstrings not) that
    look like pieces of a Markdown table row."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and TABLE_ROW.search(node.value)
    ]


def test_markdown_tables_are_written_by_the_one_table_writer() -> None:
    """Every Markdown table of the package and its scripts goes through
    ``reporting.markdown_table``: no other module spells a table row."""
    assert hand_built_table_rows('lines.append(f"| {a} | " + " | ".join(cells) + " |")')
    assert hand_built_table_rows('header = ["|---|" + "---:|" * n]')
    assert not hand_built_table_rows('" | ".join(parts)\nkey = "|".join(parts)')
    files = [*(REPO / "mole_lightning").rglob("*.py"), *(REPO / "scripts").glob("*.py")]
    found = {
        str(path.relative_to(REPO)): rows
        for path in files
        if "reporting" not in path.relative_to(REPO).parts
        and (rows := hand_built_table_rows(path.read_text()))
    }
    assert found == {}, f"Markdown table rows built by hand (use markdown_table): {found}"


def test_figures_are_drawn_by_the_reporting_painters() -> None:
    """No module of the package or its scripts outside ``reporting/`` imports a plotting
    library: each figure goes through one painter per kind."""
    plotting = ("matplotlib", "networkx", "seaborn", "plotly")
    found = {}
    for path in [*(REPO / "mole_lightning").rglob("*.py"), *(REPO / "scripts").glob("*.py")]:
        if "reporting" in path.relative_to(REPO).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] in plotting for n in names):
                found.setdefault(str(path.relative_to(REPO)), []).append(node.lineno)
    assert found == {}, f"figures drawn outside mole_lightning/reporting: {found}"


def test_scripts_do_not_edit_sys_path() -> None:
    """The package is installed: a script imports it as any user code does."""
    edits = [
        path.name
        for path in (REPO / "scripts").glob("*.py")
        if any(
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert edits == []


def test_run_figures_name_the_model_and_both_axes(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A real MoLEx run re-validates its best checkpoint at the end: the selection heatmap
    says so; a real MoLE run's importance at the prune is on the 0–1 scale."""
    molex = tmp_path / "molex"
    train(compose([*fast_run_overrides(glue_dir, "rte", "molex", "tiny-bert")], molex, cache_dir))
    info = read_figure_info(molex / "molex_selection.png")
    saved = json.loads((molex / "molex_selection.json").read_text())
    assert info["title"].startswith("MoLEx layer selection frequency on the dev set (checkpoint ")
    assert saved["model"].startswith("checkpoint best-") or saved["model"].startswith(
        "checkpoint last"
    )
    assert info["axis_names"] == ["routed layer", "chosen layer"]
    assert (info["vmin"], info["vmax"]) == (0.0, 1.0)

    mole = tmp_path / "mole"
    train(compose(mole_overrides(glue_dir, "tiny-bert", 3, 2, "logger=csv"), mole, cache_dir))
    info = read_figure_info(mole / "mole_importance_at_prune.png")
    assert info["title"] == "MoLE expert importance (step 2)"
    assert (info["vmin"], info["vmax"]) == (0.0, 1.0) and info["axis_names"] == ["layer", "expert"]

    out = tmp_path / "figures"
    assert plot_runs([str(tmp_path), "--out", str(out), "--by", "optim.lr"]) == 0
    with Image.open(out / "curves_rte.png") as image:
        curves = json.loads(image.info["mole_lightning"])
    assert curves["loss_smoothing"] == 0.9 and "EMA 0.9" in curves["titles"][0]
    assert sorted(curves["labels"]) == [
        "mole optim.lr=0.0003 seed 42",
        "molex optim.lr=0.0005 seed 42",
    ]
