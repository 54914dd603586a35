"""Layer × property probe tables: JSON, CSV and heatmaps (one model, or the difference
of two)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mole_lightning.utils.run_info import write_json  # noqa: E402


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


def plot_heatmap(table: dict, title: str, path: Path, diverging: bool = False) -> None:
    """Rows (layers, then ``majority``) × properties, each cell annotated."""
    rows = list(table)
    properties = list(table[rows[0]])
    values = np.array([[table[r][p] for p in properties] for r in rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(properties) + 2, 0.45 * len(rows) + 1.5))
    if diverging:
        bound = max(float(np.abs(values).max()), 1e-6)
        image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(properties)):
            ax.text(
                j,
                i,
                f"{values[i, j]:+.2f}" if diverging else f"{values[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if diverging else "white",
            )
    ax.set_xticks(range(len(properties)), properties, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(table: dict) -> str:
    """The table in Markdown (rows: layers and ``majority``)."""
    properties = list(next(iter(table.values())))
    lines = ["| layer | " + " | ".join(properties) + " |", "|---|" + "---|" * len(properties)]
    lines += [
        f"| {row} | " + " | ".join(f"{values[p]:.3f}" for p in properties) + " |"
        for row, values in table.items()
    ]
    return "\n".join(lines)
