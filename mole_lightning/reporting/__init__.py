"""Tables and figures of results: every Markdown table of the package and its scripts is
written by ``markdown_table``, every figure by one painter per kind (``draw_heatmap``,
``draw_lines``, ``draw_bars``, ``draw_arcs``), each storing what it drew in the PNG
(``read_figure_info``)."""

from mole_lightning.reporting.arcs import ArcPanel, draw_arcs
from mole_lightning.reporting.bars import draw_bars
from mole_lightning.reporting.figure import read_figure_info
from mole_lightning.reporting.heatmap import HeatmapPanel, draw_heatmap
from mole_lightning.reporting.lines import Line, LinePanel, draw_lines
from mole_lightning.reporting.tables import markdown_table

__all__ = [
    "ArcPanel",
    "HeatmapPanel",
    "Line",
    "LinePanel",
    "draw_arcs",
    "draw_bars",
    "draw_heatmap",
    "draw_lines",
    "markdown_table",
    "read_figure_info",
]
