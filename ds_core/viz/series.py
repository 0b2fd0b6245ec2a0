"""Several series over the same labelled x axis: one line (or one group of bars) per setting, e.g. per τ.

    lines_figure(key_labels, {"τ = 0.5": row_a, "τ = 2": row_b}, "one attention row", "key token", "probability")
    grouped_bars_figure(token_labels, {"τ = 0.7": p_a, "τ = 1.5": p_b}, "next token", "candidate", "probability")

Points sit at x = 0, 1, ... with the labels as tick text, so two labels that print alike stay two points.
"""

from __future__ import annotations

import plotly.graph_objects as go


def _check(labels: list[str], series: dict[str, list[float]]) -> list[int]:
    """The x positions, after checking every series has one value per label."""
    if not series:
        raise ValueError("need at least one series")
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
    return list(range(len(labels)))


def _layout(fig: go.Figure, labels: list[str], title: str, x_title: str, y_title: str, height: int,
            log_y: bool = False) -> go.Figure:
    # a log axis has no zero; it is for values spanning orders of magnitude (bytes of a tiny and a 671B model)
    y_scale = dict(type="log") if log_y else dict(rangemode="tozero")
    fig.update_layout(
        title=title, title_font_size=14, title_x=0.02, height=height, margin=dict(t=70, b=60, l=60, r=20),
        xaxis=dict(title=x_title, tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels)),
        yaxis=dict(title=y_title, **y_scale), legend=dict(orientation="h", y=1.02, yanchor="bottom"),
    )
    return fig


def lines_figure(labels: list[str], series: dict[str, list[float]], title: str, x_title: str, y_title: str,
                 height: int = 420, log_y: bool = False) -> go.Figure:
    """One line with markers per series (name -> values [len(labels)]) over the labelled x axis (log_y: a
    logarithmic y axis)."""
    x = _check(labels, series)
    fig = go.Figure([go.Scatter(x=x, y=list(values), name=name, mode="lines+markers", customdata=list(labels),
                                hovertemplate=f"{name}<br>%{{customdata}}<br>{y_title} %{{y:.4f}}<extra></extra>")
                     for name, values in series.items()])
    return _layout(fig, labels, title, x_title, y_title, height, log_y)


def grouped_bars_figure(labels: list[str], series: dict[str, list[float]], title: str, x_title: str, y_title: str,
                        height: int = 420, log_y: bool = False) -> go.Figure:
    """One bar per series (name -> values [len(labels)]) at each label, side by side (log_y: a logarithmic y
    axis)."""
    x = _check(labels, series)
    fig = go.Figure([go.Bar(x=x, y=list(values), name=name, customdata=list(labels),
                            hovertemplate=f"{name}<br>%{{customdata}}<br>{y_title} %{{y:.4f}}<extra></extra>")
                     for name, values in series.items()])
    fig.update_layout(barmode="group")
    return _layout(fig, labels, title, x_title, y_title, height, log_y)
