"""Writing a labelled table as JSON, CSV and a heatmap PNG, and logging it to W&B."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytorch_lightning as pl
import torch


def export_table(
    out_dir: Path,
    stem: str,
    table: torch.Tensor,
    rows: list[str],
    columns: list[str],
    title: str,
    extra: dict | None = None,
) -> dict[str, Path]:
    """Saves ``table`` ``[len(rows), len(columns)]`` as ``<stem>.json``, ``.csv`` and ``.png``.

    NaN cells (e.g. pruned experts) are written as ``null`` / empty and drawn blank.
    Returns the written paths by suffix.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    values = [[None if math.isnan(v) else float(v) for v in row] for row in table.tolist()]
    payload = {"title": title, "rows": rows, "columns": columns, "values": values, **(extra or {})}
    paths = {
        "json": out_dir / f"{stem}.json",
        "csv": out_dir / f"{stem}.csv",
        "png": out_dir / f"{stem}.png",
    }
    paths["json"].write_text(json.dumps(payload, indent=2))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", *columns])
        for name, row in zip(rows, values, strict=True):
            writer.writerow([name, *("" if v is None else f"{v:.6g}" for v in row)])
    draw_heatmap(paths["png"], table, rows, columns, title)
    return paths


def draw_heatmap(
    path: Path, table: torch.Tensor, rows: list[str], columns: list[str], title: str
) -> None:
    """A labelled heatmap with the value in each cell (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table.float().numpy()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(columns), 1.0 + 0.5 * len(rows)))
    image = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not math.isnan(data[i, j]):
                ax.text(
                    j, i, f"{data[i, j]:.3f}", ha="center", va="center", color="white", fontsize=8
                )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_table_to_wandb(trainer: pl.Trainer, key: str, paths: dict[str, Path]) -> None:
    """Logs the heatmap image and the table to every W&B logger of the run."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            payload = json.loads(paths["json"].read_text())
            logger.log_image(
                key=f"{key}/heatmap", images=[str(paths["png"])], step=trainer.global_step
            )
            logger.log_table(
                key=f"{key}/table",
                columns=["row", *payload["columns"]],
                data=[[r, *v] for r, v in zip(payload["rows"], payload["values"], strict=True)],
                step=trainer.global_step,
            )


def run_dir(trainer: pl.Trainer) -> Path:
    """The run's output directory (where checkpoints' parent and logs live)."""
    return Path(trainer.default_root_dir)
