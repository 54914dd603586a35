"""Saving a figure with what it shows in the PNG's metadata, and reading that back, so a
figure can be checked without looking at it."""

from __future__ import annotations

import json
from pathlib import Path

INFO_KEY = "mole_lightning"


def pyplot():
    """``matplotlib.pyplot`` on the file-only ``Agg`` backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, info: dict, dpi: int = 120) -> None:
    """Writes ``fig`` to ``path`` (PNG; folders made) with ``info`` (JSON) in its
    metadata under ``INFO_KEY`` and ``info["title"]``, if any, as its title; closes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {INFO_KEY: json.dumps(info)}
    if "title" in info:
        metadata["Title"] = info["title"]
    fig.savefig(path, dpi=dpi, metadata=metadata)
    pyplot().close(fig)


def read_figure_info(path: Path) -> dict:
    """What a figure of this package stored in its PNG (``save_figure``'s ``info``)."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.info[INFO_KEY])
