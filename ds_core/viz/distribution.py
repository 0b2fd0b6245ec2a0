"""A next-token distribution as a bar chart: the candidates, their probabilities, the one that was sampled."""

from __future__ import annotations

import html

import plotly.graph_objects as go

SAMPLED_COLOR = "#c44e52"
OTHER_COLOR = "#4c72b0"


def token_label(text: str) -> str:
    """A token's text made readable on an axis: spaces as ␣, unprintable characters escaped (\\n, \\x1b), empty as ∅.

    The result is HTML-escaped because plotly reads tick labels as markup (a token like '<eos>' would vanish).
    """
    if text == "":
        return "∅"
    shown = "".join("␣" if ch == " " else ch if ch.isprintable() else ch.encode("unicode_escape").decode()
                    for ch in text)
    return html.escape(shown, quote=False)


def distribution_figure(labels: list[str], probs: list[float], sampled: int, title: str) -> go.Figure:
    """Bars of probs over labels (display strings, see token_label), the bar at index sampled marked as sampled.

    Bars sit at x = 0, 1, ... with the labels as tick text, so two candidates that print alike (say two halves
    of one character, both '�') stay two bars instead of merging into one category.
    """
    if len(labels) != len(probs) or not 0 <= sampled < len(probs):
        raise ValueError(f"need one label per probability and 0 <= sampled < {len(probs)}, "
                         f"got {len(labels)} labels, {len(probs)} probabilities, sampled={sampled}")
    x = list(range(len(probs)))
    colors = [SAMPLED_COLOR if i == sampled else OTHER_COLOR for i in x]
    fig = go.Figure(go.Bar(
        x=x, y=list(probs), marker_color=colors, customdata=list(labels),
        text=[f"{p:.3f}" for p in probs], textposition="outside",
        hovertemplate="%{customdata}<br>probability %{y:.4f}<extra></extra>",
    ))
    fig.add_annotation(x=sampled, y=probs[sampled], text="sampled", showarrow=True, arrowhead=2, ay=-30,
                       font_color=SAMPLED_COLOR, yshift=24)  # yshift clears the bar's own number
    fig.update_layout(
        title=title, title_font_size=14, title_x=0.02, height=420, margin=dict(t=70, b=60, l=60, r=20),
        xaxis=dict(title="candidate token", tickmode="array", tickvals=x, ticktext=list(labels)),
        yaxis=dict(title="probability", range=[0, 1.2 * max(probs)]),  # room for the numbers and the arrow
        showlegend=False,
    )
    return fig
