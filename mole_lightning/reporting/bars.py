"""The bar-chart painter: one bar per label against a dashed reference level."""

from __future__ import annotations

from pathlib import Path

from mole_lightning.reporting.figure import pyplot, save_figure


def draw_bars(
    path: Path,
    labels: list[str],
    values: list[float],
    notes: list[str],
    reference: tuple[float, str],
    title: str,
    axis_names: tuple[str, str],
) -> None:
    """Draws one bar per label (``values`` on a 0–1 scale, e.g. shares) with its note
    above it (e.g. ``3/4``), and the dashed level ``reference = (value, legend label)``
    (e.g. the rate of a random baseline) into ``path`` (PNG).

    The PNG's metadata (``read_figure_info``) holds the title, the axis names, the
    labels, values, notes and the reference.
    """
    if not len(labels) == len(values) == len(notes):
        raise ValueError(
            f"bar chart: {len(labels)} labels, {len(values)} values, {len(notes)} notes"
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    positions = range(len(labels))
    ax.bar(positions, values, color="tab:blue")
    for x, value, note in zip(positions, values, notes, strict=True):
        ax.text(x, value + 0.02, note, ha="center", fontsize=8)
    ax.axhline(reference[0], color="black", linestyle="--", label=reference[1])
    ax.set_xticks(positions, labels)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_ylim(0, 1.1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    info = {
        "title": title,
        "axis_names": list(axis_names),
        "labels": labels,
        "values": [float(v) for v in values],
        "notes": notes,
        "reference": [float(reference[0]), reference[1]],
    }
    save_figure(fig, path, info)
