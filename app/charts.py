"""Figures for the explorer: matplotlib/seaborn heatmaps and Altair charts, plus HTML token strips.

Pure drawing: every function takes tables or arrays the toolkit computed and returns a figure, a chart or
an HTML string. Layers are 0-based in every label.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import altair as alt
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

ROLE_COLORS = {
    "cls": "#d62728",
    "query": "#1f77b4",
    "sep1": "#6b6b6b",
    "doc": "#2ca02c",
    "sep2": "#6b6b6b",
    "sep": "#6b6b6b",
    "pad": "#bbbbbb",
}
SPECIAL_ROLES = ("cls", "sep1", "sep2")
#: Signed attributions: a diverging orange / purple scale (PuOr), distinct from every role colour above.
RAISES, LOWERS = "230,97,1", "94,60,153"


def token_label(i: int, token: str, role: str) -> str:
    """Axis label of token ``i``: position, the token, and the role for special tokens."""
    return f"{i} {token}" if role not in SPECIAL_ROLES else f"{i} {token} ({role})"


#: Crops of the token × token pattern: which rows (attending tokens) and columns (attended tokens) to show.
CROPS = {
    "all tokens": (None, None),
    "query → document": (("query",), ("doc",)),
    "document → query": (("doc",), ("query",)),
    "[CLS] → all": (("cls",), None),
    "query side → all": (("cls", "query", "sep1"), None),
}


def crop_positions(roles: Sequence[str], crop: str) -> tuple[list[int], list[int]]:
    """Row and column positions of ``crop`` (a key of :data:`CROPS`); all positions where it names none."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {', '.join(CROPS)}")
    row_roles, col_roles = CROPS[crop]
    every = list(range(len(roles)))

    def pick(wanted):
        return every if wanted is None else [i for i, r in enumerate(roles) if r in wanted]

    return pick(row_roles), pick(col_roles)


def attention_heatmap(
    tokens: Sequence[str],
    roles: Sequence[str],
    matrix: np.ndarray,
    title: str,
    *,
    crop: str = "all tokens",
    width: int = 900,
) -> alt.Chart:
    """Token × token attention as an interactive Altair heatmap (rows attend to columns).

    Hover a cell for the attending token, the attended token, their roles and the weight; scroll to zoom
    and drag to pan (both axes are token positions, labelled with the tokens once zoomed in far enough to
    fit them); ``crop`` (:data:`CROPS`) keeps only, e.g., query rows × document columns. Rule lines mark
    the role boundaries. Works for 256-token pairs (65,536 cells)."""
    rows, cols = crop_positions(roles, crop)
    labels = [token_label(i, t, r) for i, (t, r) in enumerate(zip(tokens, roles))]
    sub = np.asarray(matrix, dtype=np.float32)[np.ix_(rows, cols)]
    r_idx, c_idx = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    df = pd.DataFrame(
        {
            "row": r_idx,
            "col": c_idx,
            "weight": sub.ravel().astype(float),
            "source": np.asarray(labels, dtype=object)[r_idx] if len(r_idx) else [],
            "target": np.asarray(labels, dtype=object)[c_idx] if len(c_idx) else [],
        }
    )
    df["row0"], df["row1"] = df["row"] - 0.5, df["row"] + 0.5
    df["col0"], df["col1"] = df["col"] - 0.5, df["col"] + 0.5
    js_labels = json.dumps([(lab if len(lab) <= 18 else lab[:17] + "…") for lab in labels])
    label_expr = f"datum.value % 1 === 0 && datum.value >= 0 ? {js_labels}[datum.value] : ''"

    def axis(title_text: str) -> alt.Axis:
        return alt.Axis(
            title=title_text,
            labelExpr=label_expr,
            tickMinStep=1,
            labelOverlap="greedy",
            labelFontSize=10,
            labelLimit=140,
            grid=False,
        )

    def domain(positions: list[int]) -> list[float]:
        return [min(positions) - 0.5, max(positions) + 0.5] if positions else [0, 1]

    # cells about square, 3-24 px a side: a 16-token pair is 16 × 24 px, 256 tokens fill 900 px
    cell_w = float(np.clip(width / max(len(cols), 1), 3, 24))
    cell_h = float(np.clip(width / max(len(rows), 1), 3, 24))
    width = int(max(cell_w * len(cols), 120))
    height = int(max(cell_h * len(rows), 60))
    vmax = max(float(sub.max()) if sub.size else 0.0, 1e-9)
    cells = (
        alt.Chart(df, title=title)
        .mark_rect(clip=True)
        .encode(
            x=alt.X(
                "col0:Q",
                scale=alt.Scale(domain=domain(cols), nice=False, zero=False),
                axis=axis("attended token (key)"),
            ),
            x2="col1:Q",
            y=alt.Y(
                "row0:Q",
                scale=alt.Scale(domain=domain(rows)[::-1], nice=False, zero=False),
                axis=axis("attending token (query row)"),
            ),
            y2="row1:Q",
            color=alt.Color(
                "weight:Q", scale=alt.Scale(scheme="viridis", domain=[0.0, vmax]), title="attention weight"
            ),
            tooltip=[
                alt.Tooltip("source:N", title="attending token"),
                alt.Tooltip("target:N", title="attended token"),
                alt.Tooltip("weight:Q", title="weight", format=".4f"),
            ],
        )
    )
    bounds = [i - 0.5 for i in range(1, len(roles)) if roles[i] != roles[i - 1]]
    layers = [cells]
    for channel, positions in (("x", cols), ("y", rows)):
        lo, hi = domain(positions)
        inside = [b for b in bounds if lo < b < hi]
        if inside:
            lines = pd.DataFrame({"at": inside})
            rule = alt.Chart(lines).mark_rule(color="white", strokeWidth=0.8, clip=True)
            layers.append(rule.encode(**{channel: "at:Q"}))
    return alt.layer(*layers).properties(width=width, height=height).interactive()


def token_strip(
    tokens: Sequence[str],
    roles: Sequence[str],
    weights: Sequence[float],
    *,
    signed: bool = False,
    caption: str = "",
) -> str:
    """HTML: the pair's tokens in reading order, each shaded by ``weights`` (orange; or, when ``signed``,
    orange for positive and purple for negative: never a role colour), special tokens boxed and labelled,
    roles underlined in their colour."""
    w = np.asarray(weights, dtype=float)
    scale = float(np.abs(w).max()) if len(w) and np.abs(w).max() > 0 else 1.0
    parts = []
    for tok, role, value in zip(tokens, roles, w):
        alpha = min(abs(value) / scale, 1.0)
        rgb = (RAISES if value >= 0 else LOWERS) if signed else "255,127,14"
        text = html.escape(tok[2:] if tok.startswith("##") else tok)
        gap = "" if tok.startswith("##") else " "
        border = (
            f"border:1px solid {ROLE_COLORS[role]};font-weight:bold;"
            if role in SPECIAL_ROLES
            else f"border-bottom:2px solid {ROLE_COLORS.get(role, '#000')};"
        )
        title = html.escape(f"{role} · {tok} · {value:+.4f}")
        parts.append(
            f'{gap}<span class="tok tok-{role}" title="{title}" style="background:rgba({rgb},{alpha:.3f});'
            f'{border}padding:1px 2px;border-radius:3px;line-height:2.1">{text}</span>'
        )
    cap = f'<div style="font-size:0.8em;color:#666">{html.escape(caption)}</div>' if caption else ""
    return (
        f'<div class="token-strip" style="font-family:monospace;font-size:0.95em">{"".join(parts)}</div>{cap}'
    )


def role_legend() -> str:
    items = [
        f'<span style="color:{ROLE_COLORS[r]};font-weight:bold">{r}</span>'
        for r in ("cls", "query", "sep1", "doc", "sep2")
    ]
    return '<div style="font-size:0.85em">roles: ' + " · ".join(items) + " (special tokens boxed)</div>"


def attribution_bars(tokens: pd.DataFrame) -> alt.Chart:
    """Per-token Integrated Gradients attribution (``position, token, role, attribution``) as bars."""
    df = tokens.copy()
    df["label"] = [token_label(int(p), t, r) for p, t, r in zip(df["position"], df["token"], df["role"])]
    order = df["label"].tolist()
    roles = list(ROLE_COLORS)[:5]
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("label:N", sort=order, title="token", axis=alt.Axis(labelAngle=-70, labelFontSize=9)),
            y=alt.Y("attribution:Q", title="attribution"),
            color=alt.Color("role:N", scale=alt.Scale(domain=roles, range=[ROLE_COLORS[r] for r in roles])),
            tooltip=["position", "token", "role", alt.Tooltip("attribution:Q", format="+.4f")],
        )
        .properties(height=260)
    )


# ------------------------------------------------------------------------------------------- flows
def _cell_text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f}\n±{std:.2f}"


def flow_grid(
    panels: Sequence[tuple[str, pd.DataFrame, pd.DataFrame]], *, columns: int = 3, vmax: float | None = None
):
    """Small multiples of source × target heatmaps: ``(title, mean matrix, std matrix)`` per panel; each
    cell shows the mean and ± the spread."""
    n = len(panels)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.6 * rows), squeeze=False)
    top = vmax if vmax is not None else max(float(np.nanmax(m.to_numpy())) for _, m, _ in panels)
    for ax, (title, mean, std) in zip(axes.flat, panels):
        annot = np.vectorize(_cell_text)(
            mean.to_numpy(dtype=float), std.reindex_like(mean).to_numpy(dtype=float)
        )
        sns.heatmap(
            mean,
            ax=ax,
            annot=annot,
            fmt="",
            cmap="viridis",  # as the reports' flow heatmaps
            vmin=0.0,
            vmax=top,
            cbar=False,
            annot_kws={"fontsize": 7},
            linewidths=0.5,
            linecolor="white",
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("target (attended)")
        ax.set_ylabel("source (attending)")
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def flow_spread(per_query: pd.DataFrame, title: str) -> alt.Chart:
    """Per-query values (``layer``, ``query_id``, ``value``) of one flow across layers: box plot + points."""
    y = alt.Y("value:Q", title=title, scale=alt.Scale(zero=False))
    base = alt.Chart(per_query).encode(x=alt.X("layer:O", title="layer"))
    box = base.mark_boxplot(extent="min-max", size=36, opacity=0.5).encode(y=y)
    pts = base.mark_circle(size=30, opacity=0.7, color="#333").encode(
        y=y, tooltip=["query_id", "layer", alt.Tooltip("value:Q", format=".3f")]
    )
    return (box + pts).properties(height=280)


# --------------------------------------------------------------------------------------- ablations
def stars(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def delta_heatmap(delta: pd.DataFrame, marks: pd.DataFrame, title: str):
    """Interaction × layer grid of Δ measure (diverging, 0 = white) annotated with Δ and significance."""
    values = delta.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    bound = max(bound, 1e-3)  # an all-zero grid stays white instead of a ±1e-6 colour scale
    text = np.empty(values.shape, dtype=object)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text[i, j] = "" if math.isnan(v) else f"{v:+.3f}{marks.iat[i, j]}"
    fig, ax = plt.subplots(figsize=(1.0 + 0.95 * values.shape[1] + 1.6, 0.9 + 0.48 * values.shape[0]))
    sns.heatmap(
        delta,
        ax=ax,
        annot=text,
        fmt="",
        cmap="RdBu",  # vmin = -vmax centres it on 0 (seaborn's center= would resample it, and warn)
        vmin=-bound,
        vmax=bound,
        annot_kws={"fontsize": 8},
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": ""},
    )
    ax.collections[0].colorbar.ax.set_title("Δ", fontsize=9)  # upright above the bar, not rotated beside it
    ax.set_xlabel("layers")
    ax.set_ylabel("interaction removed")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------------- MICE
def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (lower or equal ``x`` and higher or equal ``y``, one strictly)."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, row in pts.iterrows():
        if row[y] > best:
            keep.append(idx)
            best = row[y]
    return pts.loc[keep]


def pareto_chart(
    points: pd.DataFrame,
    x: str,
    y: str,
    label: str,
    color: str,
    *,
    x_title: str,
    y_title: str,
    log_x: bool = False,
) -> alt.Chart:
    """Scatter of ``y`` (higher is better) against ``x`` (lower is better), labelled, with the Pareto
    front."""
    front = pareto_front(points, x, y)
    scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    base = alt.Chart(points).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=scale),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
    )
    dots = base.mark_circle(size=90).encode(
        color=alt.Color(f"{color}:N", title=color, legend=alt.Legend(orient="bottom")),  # never under a label
        tooltip=[
            label,
            color,
            alt.Tooltip(f"{x}:Q", format=".3g", title=x_title),
            alt.Tooltip(f"{y}:Q", format=".4f", title=y_title),
        ],
    )
    text = base.mark_text(align="left", dx=7, dy=-6, fontSize=11).encode(text=f"{label}:N")
    line = (
        alt.Chart(front)
        .mark_line(strokeDash=[4, 3], color="#555", interpolate="step-after")
        .encode(x=f"{x}:Q", y=f"{y}:Q")
    )
    return (line + dots + text).properties(height=380)


# --------------------------------------------------------------------------------- MICE configuration
STATE_COLORS = {"kept": "#2ca02c", "removed": "#d9d9d9", "dropped": "#ffffff", "some heads": "#ff7f0e"}


def config_grid_chart(grid: pd.DataFrame, title: str = "") -> alt.Chart:
    """A MICE configuration's layer × interaction grid (``ablations.mice.grid.interaction_grid``): kept
    (green), removed (grey), kept by some heads (orange), dropped layer (white, outlined)."""
    df = grid.copy()
    df["shown"] = [s if s in STATE_COLORS else "some heads" for s in df["state"]]
    order = list(dict.fromkeys(df["interaction"]))
    states = list(STATE_COLORS)
    return (
        alt.Chart(df, title=title)
        .mark_rect(stroke="#bbbbbb", strokeWidth=0.5)
        .encode(
            x=alt.X("layer:O", title="layer", axis=alt.Axis(labelAngle=0)),
            y=alt.Y(
                "interaction:N",
                sort=order,
                title="interaction (source attends to target)",
                axis=alt.Axis(labelOverlap=False),
            ),
            color=alt.Color(
                "shown:N",
                scale=alt.Scale(domain=states, range=[STATE_COLORS[s] for s in states]),
                title="attention",
            ),
            tooltip=["interaction", "layer", "state"],
        )
        # the height holds the title and the axes too (Streamlit fits the whole chart into it)
        .properties(height=16 * len(order) + 80)
    )


def head_view(tokens: Sequence[str], roles: Sequence[str], rows: np.ndarray, source_label: str) -> alt.Chart:
    """Where one token looks in every head: ``rows[h, j]`` = attention of the source token to token ``j``
    in head ``h`` (heads × tokens, hover for the token and the weight; scroll to zoom along the tokens).
    A compact stand-in for bertviz's head view that stays readable at 256 tokens."""
    n = len(tokens)
    labels = [token_label(i, t, r) for i, (t, r) in enumerate(zip(tokens, roles))]
    heads, cols = rows.shape
    df = pd.DataFrame(
        {
            "head": np.repeat(np.arange(heads), cols),
            "col": np.tile(np.arange(cols), heads),
            "weight": np.asarray(rows, dtype=float).ravel(),
        }
    )
    df["target"] = np.asarray(labels, dtype=object)[df["col"]]
    df["role"] = np.asarray(list(roles), dtype=object)[df["col"]]
    df["col0"], df["col1"] = df["col"] - 0.5, df["col"] + 0.5
    js_labels = json.dumps([(lab if len(lab) <= 18 else lab[:17] + "…") for lab in labels])
    width = int(np.clip(14 * n, 300, 900))
    return (
        alt.Chart(df, title=f"what {source_label} attends to, per head")
        .mark_rect(clip=True)
        .encode(
            x=alt.X(
                "col0:Q",
                scale=alt.Scale(domain=[-0.5, n - 0.5], nice=False, zero=False),
                axis=alt.Axis(
                    title="attended token",
                    labelExpr=f"datum.value % 1 === 0 && datum.value >= 0 ? {js_labels}[datum.value] : ''",
                    tickMinStep=1,
                    labelOverlap="greedy",
                    grid=False,
                ),
            ),
            x2="col1:Q",
            y=alt.Y("head:O", title="head", axis=alt.Axis(labelOverlap=False)),
            color=alt.Color("weight:Q", scale=alt.Scale(scheme="viridis", domainMin=0), title="attention"),
            tooltip=[
                alt.Tooltip("head:O"),
                alt.Tooltip("target:N", title="attended token"),
                alt.Tooltip("role:N"),
                alt.Tooltip("weight:Q", format=".4f"),
            ],
        )
        # Streamlit fits the whole chart (title and axes too) into this height: 16 px per head plus ~90
        .properties(width=width, height=16 * heads + 90)
        .interactive(bind_y=False)
    )
