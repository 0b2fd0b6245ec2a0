"""A router's decision as a token × expert heatmap: affinities as colour, the chosen experts ringed, the experts a
token's group limit ruled out crossed, dotted lines between expert groups."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from .heatmap import heatmap_figure

CHOSEN_COLOR = "#ff2d55"
DROPPED_COLOR = "#9a9a9a"


def routing_figure(values, experts, weights, labels: list[str], title: str, eligible=None,
                   experts_per_group: int | None = None, value_title: str = "affinity") -> go.Figure:
    """values [N, E] (one layer's affinities for N tokens) -> heatmap with tokens down and experts across.

    experts [N, k] and weights [N, k]: each token's chosen experts, ringed, their gate weight on hover.
    eligible [N, E] bool (optional): False cells (the expert's group was not kept for that token) are crossed.
    experts_per_group: draws a dotted line between groups of that many consecutive experts.
    """
    z = torch.as_tensor(values, dtype=torch.float32)
    experts, weights = torch.as_tensor(experts), torch.as_tensor(weights, dtype=torch.float32)
    n, E = z.shape
    if experts.shape != weights.shape or experts.shape[0] != n:
        raise ValueError(f"experts and weights must both be [{n}, k], got {list(experts.shape)} and "
                         f"{list(weights.shape)}")
    fig = heatmap_figure(z, title, "routed expert", "token", [f"e{e}" for e in range(E)], labels, diverging=False,
                         height=max(360, 18 * n + 160))
    fig.data[0].colorbar = dict(title=value_title)
    if eligible is not None:
        rows, cols = (~torch.as_tensor(eligible, dtype=torch.bool)).nonzero(as_tuple=True)
        fig.add_trace(go.Scatter(x=cols.tolist(), y=rows.tolist(), mode="markers", name="group not kept",
                                 marker=dict(symbol="x-thin", size=9, line=dict(width=1.5, color=DROPPED_COLOR)),
                                 hoverinfo="skip"))
    rows = torch.arange(n)[:, None].expand_as(experts)
    fig.add_trace(go.Scatter(
        x=experts.flatten().tolist(), y=rows.flatten().tolist(), mode="markers", name="chosen (top-k)",
        customdata=weights.flatten().tolist(),
        marker=dict(symbol="circle-open", size=15, color=CHOSEN_COLOR, line=dict(width=2.5)),  # open: color draws
        hovertemplate="token %{y}<br>expert %{x}<br>gate weight %{customdata:.4f}<extra>chosen</extra>"))
    if experts_per_group and experts_per_group < E:
        for boundary in range(experts_per_group, E, experts_per_group):
            fig.add_vline(x=boundary - 0.5, line=dict(dash="dot", width=1.5, color="white"))
    fig.update_layout(legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig
