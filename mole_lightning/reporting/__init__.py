"""Tables and figures of results: the one heatmap painter (``draw_heatmap``) and the one
Markdown table writer (``markdown_table``) that every report of the package uses,
and the perturbation curves (``plot_curves``)."""

from mole_lightning.reporting.curves import plot_curves
from mole_lightning.reporting.heatmap import HeatmapPanel, draw_heatmap, read_figure_info
from mole_lightning.reporting.tables import markdown_table

__all__ = ["HeatmapPanel", "draw_heatmap", "markdown_table", "plot_curves", "read_figure_info"]
