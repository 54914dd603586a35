"""The arc-diagram painter: the words of one sentence left to right, labelled arcs
between them, one panel per graph (word graphs of a parsed sentence)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mole_lightning.reporting.figure import pyplot, save_figure


@dataclass
class ArcPanel:
    """One panel: ``arcs`` as ``(from word, to word, label)`` word indices; the words
    marked in ``grey`` (all of them or none) are drawn grey."""

    title: str
    arcs: list[tuple[int, int, str]]
    grey: list[bool] | None = None


def draw_arcs(path: Path, words: list[str], panels: list[ArcPanel]) -> None:
    """Draws ``panels`` one above the other into ``path`` (PNG); the PNG's metadata
    (``read_figure_info``) holds the words and each panel's title and arcs."""
    import networkx as nx

    plt = pyplot()
    n = len(words)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6.0, 1.1 * n), 3.2 * len(panels)), squeeze=False
    )
    pos = {i: (float(i), 0.0) for i in range(n)}
    style = "arc3,rad=-0.5"
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        g.add_edges_from((u, v) for u, v, _ in panel.arcs)
        grey = panel.grey or [False] * n
        colours = ["#dddddd" if grey[i] else "#9ecae1" for i in range(n)]
        nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=500)
        nx.draw_networkx_labels(g, pos, dict(enumerate(words)), ax=ax, font_size=9)
        nx.draw_networkx_edges(g, pos, ax=ax, connectionstyle=style, arrows=True, node_size=500)
        labels = {(u, v): label for u, v, label in panel.arcs}
        nx.draw_networkx_edge_labels(g, pos, labels, ax=ax, connectionstyle=style, font_size=7)
        ax.set_title(panel.title)
        ax.set_ylim(-1.0, 1.5)
        ax.axis("off")
    fig.tight_layout()
    info = {
        "words": words,
        "panels": [{"title": p.title, "arcs": [list(a) for a in p.arcs]} for p in panels],
    }
    save_figure(fig, path, info)
