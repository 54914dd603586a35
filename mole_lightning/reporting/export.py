"""Writing a labelled table as JSON, CSV and a heatmap PNG, and logging it to W&B."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytorch_lightning as pl
import torch

from mole_lightning.reporting import HeatmapPanel, draw_heatmap


def export_table(
    out_dir: Path,
    stem: str,
    table: torch.Tensor,
    rows: list[str],
    columns: list[str],
    title: str,
    axis_names: tuple[str, str],
    extra: dict | None = None,
) -> dict[str, Path]:
    """Saves ``table`` ``[len(rows), len(columns)]`` as ``<stem>.json``, ``.csv`` and ``.png``
    (a heatmap on the fixed 0–1 scale, axes named by ``axis_names``: row axis, column
    axis).

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
    panel = HeatmapPanel(rows, columns, table.float().numpy())
    draw_heatmap(paths["png"], {"": panel}, title, axis_names, decimals=3)
    return paths


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


def log_structure_to_wandb(
    trainer: pl.Trainer, key: str, structure: list[list[str]], experts: list[str]
) -> None:
    """Logs a pruned MoLE structure to every W&B logger as a table: one row per layer,
    its kept experts and a 0/1 column per expert (what the constant gate weights of the
    kept experts would otherwise have to say), and ``<key>/pruned_at_step`` in the
    summary."""
    from pytorch_lightning.loggers import WandbLogger

    rows = [
        [i, ", ".join(kept), *(int(name in kept) for name in experts)]
        for i, kept in enumerate(structure)
    ]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(
                key=f"{key}/table",
                columns=["layer", "kept", *experts],
                data=rows,
                step=trainer.global_step,
            )
            logger.experiment.summary[f"{key}/pruned_at_step"] = trainer.global_step
