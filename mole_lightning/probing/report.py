"""Layer × property probe tables: JSON, CSV and heatmaps (one model, or the difference
of two)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mole_lightning.reporting import HeatmapPanel, draw_heatmap, markdown_table
from mole_lightning.utils.run_info import write_json


def layer_names(num_layers: int) -> list[str]:
    """``embeddings``, ``layer1`` ... ``layerT``."""
    return ["embeddings", *(f"layer{t}" for t in range(1, num_layers + 1))]


def write_table(stem: Path, table: dict, meta: dict) -> list[Path]:
    """Writes ``<stem>.json`` (``meta`` + ``accuracy`` row -> property -> value) and
    ``<stem>.csv`` (one row per layer, then ``majority``); returns the paths."""
    paths = [stem.with_suffix(".json"), stem.with_suffix(".csv")]
    write_json(paths[0], {**meta, "accuracy": table})
    properties = list(next(iter(table.values())))
    with paths[1].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", *properties])
        for row, values in table.items():
            writer.writerow([row, *(f"{values[p]:.4f}" for p in properties)])
    return paths


def plot_heatmap(
    table: dict,
    title: str,
    path: Path,
    test_items: dict[str, int],
    min_items: int,
    diverging: bool = False,
) -> None:
    """Rows (layers, then ``majority``) × properties, each cell annotated with its value
    and the property's number of test items; properties with fewer than ``min_items``
    are greyed out (a difference on few items is mostly noise)."""
    rows = list(table)
    properties = list(table[rows[0]])
    values = np.array([[table[r][p] for p in properties] for r in rows])
    counts = np.array([[test_items.get(p, 0) for p in properties] for _ in rows])
    draw_heatmap(
        path,
        {"": HeatmapPanel(rows, properties, values, counts)},
        title,
        ("layer", "property"),
        scale="diverging" if diverging else (0.0, 1.0),
        min_count=min_items,
    )


def format_table(table: dict) -> str:
    """The table in Markdown (rows: layers and ``majority``)."""
    properties = list(next(iter(table.values())))
    return markdown_table(
        ["layer", *properties],
        [[row, *(values[p] for p in properties)] for row, values in table.items()],
        decimals=3,
    )
