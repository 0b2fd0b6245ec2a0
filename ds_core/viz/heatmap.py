"""A matrix as a labelled heatmap: rows and columns named (tokens, heads, dimensions), the shape in the title."""

from __future__ import annotations

import plotly.graph_objects as go
import torch


def heatmap_figure(values, title: str, x_title: str, y_title: str, x_labels: list[str] | None = None,
                   y_labels: list[str] | None = None, diverging: bool = True, height: int = 420) -> go.Figure:
    """values [rows, cols] (tensor or nested lists) -> a heatmap whose title ends with the shape.

    diverging: a blue-white-red scale centred on 0 (activations, projections); otherwise a sequential scale
    from 0 (probabilities). Labels default to indices; pass token_label()ed tokens to name rows or columns.
    """
    z = torch.as_tensor(values, dtype=torch.float32)
    if z.dim() != 2:
        raise ValueError(f"a heatmap needs a 2-D matrix, got shape {tuple(z.shape)}")
    rows, cols = z.shape
    x = list(range(cols))
    y = list(range(rows))
    colors = dict(colorscale="RdBu_r", zmid=0.0) if diverging else dict(colorscale="Viridis", zmin=0.0)
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=x, y=y, **colors,
                               hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>value %{{z:.4f}}<extra></extra>"))
    fig.update_layout(
        title=f"{title}  [{rows} × {cols}]", title_font_size=14, height=height,
        margin=dict(t=60, b=60, l=80, r=20),
        xaxis=dict(title=x_title, **_ticks(x_labels, cols)),
        yaxis=dict(title=y_title, autorange="reversed", **_ticks(y_labels, rows)),
    )
    return fig


def _ticks(labels: list[str] | None, n: int) -> dict:
    if labels is None:
        return {}
    if len(labels) != n:
        raise ValueError(f"need {n} labels, got {len(labels)}")
    return dict(tickmode="array", tickvals=list(range(n)), ticktext=list(labels))
