"""The line-plot painter: panels side by side, each with its lines, axis names and title
(learning curves, a metric against a perturbation rate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mole_lightning.reporting.figure import pyplot, save_figure


@dataclass
class Line:
    """``y`` against ``x`` (same length), named ``label`` in the legend.

    Attributes:
        colour: index into matplotlib's ``tab10`` colours (lines of one index share it).
        style: the matplotlib line style (``-``, ``--``, ``:``, ``-.``).
        marker: a matplotlib marker on each point, or ``None``.
        faint: values at the same ``x`` drawn thin and faint behind the line (e.g. the
            raw values of a smoothed line).
    """

    label: str
    x: list[float]
    y: list[float]
    colour: int = 0
    style: str = "-"
    marker: str | None = "o"
    faint: list[float] | None = None


@dataclass
class LinePanel:
    """One panel: its ``lines``, title and axis names (x, y); ``empty`` is written in
    the panel when it has no line."""

    title: str
    axis_names: tuple[str, str]
    lines: list[Line] = field(default_factory=list)
    legend: bool = True
    empty: str = "no data"


def draw_lines(
    path: Path, panels: list[LinePanel], size: tuple[float, float], info: dict | None = None
) -> None:
    """Draws ``panels`` side by side into ``path`` (PNG, figure ``size`` in inches).

    The PNG's metadata (``read_figure_info``) holds the panels' ``titles``, every
    line's ``labels`` and ``info`` (which may replace either).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for line in panel.lines:
            colour = plt.cm.tab10(line.colour % 10)
            if line.faint is not None:
                ax.plot(line.x, line.faint, "-", color=colour, alpha=0.15, linewidth=0.6)
            ax.plot(
                line.x,
                line.y,
                line.style,
                marker=line.marker,
                markersize=3,
                color=colour,
                label=line.label,
            )
        if not panel.lines:
            ax.text(0.5, 0.5, panel.empty, transform=ax.transAxes, ha="center", va="center")
        elif panel.legend:
            ax.legend(fontsize=7, loc="best")
        ax.set_xlabel(panel.axis_names[0])
        ax.set_ylabel(panel.axis_names[1])
        ax.set_title(panel.title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    labels = [line.label for panel in panels for line in panel.lines]
    save_figure(fig, path, {"titles": [p.title for p in panels], "labels": labels, **(info or {})})
