"""Line plots of a metric against a rate, one line per kind (perturbation curves)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(rows: list[dict], metric: str, title: str, path: Path) -> None:
    """One line per perturbation kind: ``metric`` against the rate ``p`` (``rows``: dicts
    with ``kind``, ``p`` and ``metric``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        points = sorted((r["p"], r[metric]) for r in rows if r["kind"] == kind)
        ax.plot(*zip(*points, strict=True), marker="o", label=kind)
    ax.set_xlabel("perturbation rate p")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
