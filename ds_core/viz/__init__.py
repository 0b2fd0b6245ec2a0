"""Figure builders shared by the explorer (ds_core/ui) and the lessons: plain data in, plotly figure out; and the
same numbers as text (tables, human-readable counts and bytes) for the CLI and the benchmarks."""

from .distribution import distribution_figure, token_label
from .heatmap import heatmap_figure
from .routing import routing_figure
from .series import grouped_bars_figure, lines_figure
from .text import human_bytes, human_count, table

__all__ = ["distribution_figure", "grouped_bars_figure", "heatmap_figure", "lines_figure", "routing_figure",
           "token_label", "human_bytes", "human_count", "table"]
