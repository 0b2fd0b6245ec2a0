"""Figure builders shared by the explorer (ds_core/ui) and the lessons: plain data in, plotly figure out."""

from .distribution import distribution_figure, token_label

__all__ = ["distribution_figure", "token_label"]
