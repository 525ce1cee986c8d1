"""The report's plots. Each ``*_plot`` returns a function ``draw(fig)`` that draws into a matplotlib
``Figure`` or ``SubFigure`` (no pyplot, no global state), so HTML and PDF draw the same plot on their own
canvas. Colours and sizes are fixed; nothing random.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: matplotlib settings every rendering runs under (fonts embedded as TrueType, deterministic SVG ids).
RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "mice-toolkit-report",
    "path.simplify": False,
    "image.composite_image": True,
}

ROLE_COLORS = {"cls": "#444444", "query": "#1f77b4", "sep1": "#9467bd", "doc": "#d62728", "sep2": "#ff7f0e"}


def _annotate(ax, values: np.ndarray, labels: list[list[str]], vmax: float, *, diverging: bool) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not labels[i][j]:
                continue
            strong = abs(v) > 0.55 * vmax if diverging else v < 0.5 * vmax  # viridis is dark at the low end
            ax.text(
                j,
                i,
                labels[i][j],
                ha="center",
                va="center",
                fontsize=6,
                color="white" if strong and np.isfinite(v) else "black",
            )


def _vector(cbar) -> None:
    """Colorbars rasterize their gradient by default; keep it vector."""
    if cbar.solids is not None:
        cbar.solids.set_rasterized(False)
        cbar.solids.set_edgecolor("face")  # no hairline seams between the quads in PDF viewers


def _mesh(ax, vals: np.ndarray, **kw):
    """A heatmap as vector quads (pcolormesh; imshow would embed a raster image), row 0 at the top, cell
    (i, j) centred on (j, i) like imshow."""
    n, m = vals.shape
    im = ax.pcolormesh(
        np.arange(m + 1) - 0.5,
        np.arange(n + 1) - 0.5,
        np.ma.masked_invalid(vals),
        edgecolors="white",
        linewidth=0.5,
        **kw,
    )
    ax.set_xlim(-0.5, m - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    return im


def flow_heatmaps_plot(grids: dict[int, pd.DataFrame]):
    """One source→target heatmap per layer (shares of the source's attention; rows sum to 1)."""
    layers = sorted(grids)

    def draw(fig):
        ncols = min(3, len(layers))
        nrows = int(np.ceil(len(layers) / ncols))
        axes = np.atleast_1d(
            fig.subplots(
                nrows,
                ncols,
                squeeze=False,
                gridspec_kw={
                    "left": 0.09,
                    "right": 0.88,
                    "bottom": 0.07,
                    "top": 0.93,
                    "wspace": 0.35,
                    "hspace": 0.45,
                },
            )
        ).ravel()
        im = None
        for ax, layer in zip(axes, layers):
            g = grids[layer]
            vals = g.to_numpy(dtype=float)
            im = _mesh(ax, vals, cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_aspect("equal")
            _annotate(ax, vals, [[f"{v:.2f}" for v in row] for row in vals], 1.0, diverging=False)
            ax.set_title(f"layer {layer}")
            ax.set_xticks(range(len(g.columns)), list(g.columns), rotation=45, ha="right")
            ax.set_yticks(range(len(g.index)), list(g.index))
            ax.set_xlabel("target (attended)")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("source (attending)")
        for ax in axes[len(layers) :]:
            ax.set_axis_off()
        if im is not None:
            cax = fig.add_axes([0.91, 0.25, 0.015, 0.5])
            _vector(fig.colorbar(im, cax=cax, label="share of attention"))

    return draw


def rollout_plot(curves: pd.DataFrame):
    """Share of the final CLS representation coming from each role after layers 0..ℓ.

    ``curves``: columns method (rollout|flow), role, layer, value (mean over pairs)."""

    def draw(fig):
        ax = fig.subplots(gridspec_kw={"left": 0.1, "right": 0.78, "bottom": 0.14, "top": 0.9})
        order = {r: i for i, r in enumerate(ROLE_COLORS)}
        keys = sorted(
            curves.groupby(["method", "role"]).groups,
            key=lambda k: (k[0] != "rollout", order.get(k[1], 99), k[1]),
        )
        for method, role in keys:
            part = curves[(curves["method"] == method) & (curves["role"] == role)].sort_values("layer")
            ax.plot(
                part["layer"],
                part["value"],
                color=ROLE_COLORS.get(role, "black"),
                linestyle="-" if method == "rollout" else "--",
                marker="o" if method == "rollout" else "s",
                markersize=3,
                label=f"{role} ({method})",
            )
        layers = sorted(curves["layer"].unique())
        ax.set_xticks(layers, [str(int(x)) for x in layers])
        ax.set_xlabel("after layer ℓ (0-based)")
        ax.set_ylabel("share of CLS from role")
        ax.set_ylim(0, max(1e-9, float(curves["value"].max())) * 1.08)
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title("CLS attention rollout (solid) and attention flow (dashed)")

    return draw


def ablation_heatmap_plot(delta: pd.DataFrame, p: pd.DataFrame, measure: str, baseline: float):
    """Δ ``measure`` per interaction (rows) × layer unit (columns), with significance stars."""
    from .blocks import stars

    def draw(fig):
        ax = fig.subplots(gridspec_kw={"left": 0.18, "right": 0.86, "bottom": 0.16, "top": 0.88})
        vals = delta.to_numpy(dtype=float)
        finite = np.abs(vals[np.isfinite(vals)])
        vmax = max(float(finite.max()) if finite.size else 0.0, 1e-3)
        im = _mesh(ax, vals, cmap="RdBu", vmin=-vmax, vmax=vmax)
        pv = p.reindex(index=delta.index, columns=delta.columns).to_numpy(dtype=float)
        labels = [
            [
                (
                    ""
                    if not np.isfinite(vals[i, j])
                    else f"{vals[i, j] + 0.0 if round(vals[i, j], 3) else 0.0:+.3f}{stars(pv[i, j])}"
                )
                for j in range(vals.shape[1])
            ]
            for i in range(vals.shape[0])
        ]
        _annotate(ax, vals, labels, vmax, diverging=True)
        ax.set_xticks(range(len(delta.columns)), [str(c) for c in delta.columns])
        ax.set_yticks(
            range(len(delta.index)),
            [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in delta.index],
        )
        ax.set_xlabel("layers removed in (0-based)")
        ax.set_ylabel("interaction removed")
        ax.set_title(f"Δ {measure} vs the full model ({baseline:.4f}); * p<0.05, ** p<0.01, *** p<0.001")
        cax = fig.add_axes([0.88, 0.16, 0.015, 0.72])
        _vector(fig.colorbar(im, cax=cax, label=f"Δ {measure}"))

    return draw


def search_plot(alone: pd.DataFrame, removed: set[str], tolerance: float, measure: str):
    """Each unit's Δ when removed alone; units in the final removed set highlighted."""

    def draw(fig):
        ax = fig.subplots(gridspec_kw={"left": 0.22, "right": 0.96, "bottom": 0.12, "top": 0.82})
        units = list(alone["unit"])
        y = np.arange(len(units))
        colors = ["#2ca02c" if u in removed else "#7f7f7f" for u in units]
        deltas = alone["delta"].to_numpy(dtype=float)
        ax.barh(y, deltas, color=colors, height=0.7)
        ax.scatter(deltas, y, c=colors, s=14, zorder=3)  # a zero Δ still shows its colour
        ax.axvline(
            -tolerance, color="#d62728", linestyle="--", linewidth=0.8, label=f"−tolerance ({tolerance:g})"
        )
        ax.axvline(0, color="black", linewidth=0.5)
        finite = deltas[np.isfinite(deltas)]
        lo, hi = min([-tolerance, 0.0, *finite]), max([0.0, *finite])
        pad = 0.06 * max(hi - lo, 1e-6)
        ax.set_xlim(lo - pad, hi + pad)  # a Δ of 0 is not hidden on the frame
        ax.set_yticks(y, units)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {measure} when removed alone")
        ax.set_title("Search units: green = in the final removed set, grey = kept", loc="left")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.06), frameon=False, borderaxespad=0)
        ax.grid(axis="x", alpha=0.3, linewidth=0.5)

    return draw


def pareto_plot(
    points: pd.DataFrame, x: str, y: str, label: str, xlabel: str, ylabel: str, group: str | None = None
):
    """Latency (x, lower is better) against effectiveness (y, higher is better); the Pareto front joined."""

    def draw(fig):
        ax = fig.subplots(gridspec_kw={"left": 0.12, "right": 0.96, "bottom": 0.13, "top": 0.9})
        groups = [(None, points)] if group is None else list(points.groupby(group, sort=True))
        markers = "osD^v<>p"
        for k, (g, part) in enumerate(groups):
            ax.scatter(
                part[x],
                part[y],
                s=22,
                marker=markers[k % len(markers)],
                label=None if g is None else str(g),
                zorder=3,
            )
            xmin, xmax = float(points[x].min()), float(points[x].max())
            for _, row in part.iterrows():
                right = xmax > xmin and (row[x] - xmin) > 0.7 * (
                    xmax - xmin
                )  # label left of points at the right
                ax.annotate(
                    str(row[label]),
                    (row[x], row[y]),
                    xytext=(-3 if right else 3, 3),
                    textcoords="offset points",
                    ha="right" if right else "left",
                    fontsize=6,
                )
            front = pareto_front(part, x, y)
            ax.step(front[x], front[y], where="post", linewidth=0.8, alpha=0.7, zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if (points[x] > 0).all() and points[x].max() / max(points[x].min(), 1e-12) > 20:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, linewidth=0.5)
        if group is not None:
            ax.legend(frameon=False)
        ax.set_title("Latency–effectiveness (up and left is better; line = Pareto front)")

    return draw


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another row (lower-or-equal x and higher-or-equal y, one strictly), sorted by
    x."""
    pts = points.sort_values([x, y], ascending=[True, False], kind="stable")
    best = -np.inf
    keep = []
    for idx, row in pts.iterrows():
        if row[y] > best:
            keep.append(idx)
            best = row[y]
    return pts.loc[keep]
