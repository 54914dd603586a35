"""The heatmap painter: one or more labelled panels side by side, a fixed colour scale,
both axes named, optional per-cell counts; what it drew is stored in the PNG's metadata
(``read_figure_info``), so a figure can be checked without looking at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mole_lightning.reporting.figure import pyplot, save_figure


@dataclass
class HeatmapPanel:
    """One panel: ``values`` ``[len(rows), len(columns)]`` (NaN: blank cell), and
    optionally ``counts`` of the same shape (items behind each cell: printed as
    ``n=<k>``; cells under the painter's ``min_count`` are greyed out)."""

    rows: list[str]
    columns: list[str]
    values: np.ndarray
    counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=float)
        shape = (len(self.rows), len(self.columns))
        if self.values.shape != shape or (
            self.counts is not None and np.shape(self.counts) != shape
        ):
            raise ValueError(
                f"heatmap panel values {self.values.shape} (counts "
                f"{None if self.counts is None else np.shape(self.counts)}) do not match "
                f"{len(self.rows)} rows × {len(self.columns)} columns"
            )


def draw_heatmap(
    path: Path,
    panels: dict[str, HeatmapPanel],
    title: str,
    axis_names: tuple[str, str],
    scale: tuple[float, float] | str = (0.0, 1.0),
    decimals: int = 2,
    min_count: int = 0,
) -> None:
    """Draws ``panels`` side by side (panel titles = their keys) into ``path`` (PNG).

    Args:
        axis_names: the row axis and column axis names, on every panel.
        scale: ``(vmin, vmax)`` for every panel (the default 0–1 suits frequencies and
            importances: a near-uniform table then looks uniform), or ``"diverging"``
            (symmetric around 0, for differences).
        decimals: digits of the value printed in each cell.
        min_count: cells with ``counts`` below it are greyed out (too few items).

    The PNG's metadata holds ``title``, the colour limits, the axis names and each
    panel's cells and counts (``read_figure_info``).
    """
    plt = pyplot()
    if scale == "diverging":
        bound = max(
            [
                float(np.nanmax(np.abs(p.values)))
                for p in panels.values()
                if np.isfinite(p.values).any()
            ]
            or [1e-6]
        )
        vmin, vmax, cmap = -max(bound, 1e-6), max(bound, 1e-6), "RdBu"
    else:
        (vmin, vmax), cmap = scale, "viridis"
    widest = max(len(p.columns) for p in panels.values())
    tallest = max(len(p.rows) for p in panels.values())
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.8 + len(panels) * (0.75 * widest + 1.4), 1.8 + 0.45 * tallest),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, (label, panel) in zip(axes[0], panels.items(), strict=True):
        shown = np.ma.masked_invalid(panel.values)
        image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        if panel.counts is not None and min_count > 0:
            sparse = np.ma.masked_where(
                np.asarray(panel.counts) >= min_count, np.ones_like(panel.values)
            )
            ax.imshow(sparse, cmap="Greys", vmin=0, vmax=1.5, aspect="auto", alpha=0.85)
        ax.set_xticks(range(len(panel.columns)), panel.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(panel.rows)), panel.rows, fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(axis_names[0])
        ax.set_xlabel(axis_names[1])
        if panel.values.size <= 144:
            for (i, j), v in np.ndenumerate(panel.values):
                if np.isnan(v):
                    continue
                text = f"{v:+.{decimals}f}" if scale == "diverging" else f"{v:.{decimals}f}"
                if panel.counts is not None:
                    text += f"\nn={int(panel.counts[i][j])}"
                light = (v - vmin) / max(vmax - vmin, 1e-12) > 0.6
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if light or scale == "diverging" else "white",
                )
    fig.suptitle(title)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    info = {
        "title": title,
        "vmin": vmin,
        "vmax": vmax,
        "axis_names": list(axis_names),
        "min_count": min_count,
        "panels": {
            label: {
                "rows": p.rows,
                "columns": p.columns,
                "values": [[None if np.isnan(v) else float(v) for v in row] for row in p.values],
                "counts": None if p.counts is None else np.asarray(p.counts).astype(int).tolist(),
            }
            for label, p in panels.items()
        },
    }
    save_figure(fig, path, info)
