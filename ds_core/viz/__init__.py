"""Figure builders shared by the explorer (ds_core/ui) and the lessons: plain data in, plotly figure out."""

from .distribution import distribution_figure, token_label
from .heatmap import heatmap_figure
from .routing import routing_figure
from .series import grouped_bars_figure, lines_figure

__all__ = ["distribution_figure", "grouped_bars_figure", "heatmap_figure", "lines_figure", "routing_figure",
           "token_label"]
