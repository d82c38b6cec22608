"""Cost–accuracy plots: the test metric against GMac and against latency, with each panel's Pareto front.

One point per method (fusion × tabular encoder) in each (strategy, protocol) panel: the mean test
metric over seeds with an error bar of ± its std over seeds. The Pareto front — methods that no other
method beats on both axes (higher metric, lower cost) — is drawn as a step line (the best metric
reachable within a cost budget) and its points are ringed. Methods with fewer seeds than asked for
are drawn hollow and left out of the front. Figures are rendered with the Agg canvas, a fixed size and
dpi and no ``Software`` metadata, so the same frame gives byte-identical PNGs.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from bench.results import COST_COLUMNS

#: columns :func:`pareto_png` reads from its ``methods`` frame
PLOT_COLUMNS = ["fusion", "tabular_encoder", "strategy", "protocol", "mean", "std", "complete",
                "gmac_total", "latency_ms_p50"]

_COSTS = tuple((c.key, c.axis) for c in COST_COLUMNS if c.axis)  # the cost axes, from the one cost schema
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
_DPI = 110


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Boolean mask of the Pareto-optimal points for *lower* ``cost`` and *higher* ``value``.

    A point is on the front when no other point has ``cost <=`` and ``value >=`` with one of the two
    strict; of exact duplicates only the first is kept. NaN costs or values are never on the front.
    """
    cost, value = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    mask = np.zeros(cost.shape, dtype=bool)
    ok = np.flatnonzero(np.isfinite(cost) & np.isfinite(value))
    best = -math.inf
    for i in ok[np.lexsort((-value[ok], cost[ok]))]:  # by cost ascending, then value descending
        if value[i] > best:
            mask[i] = True
            best = value[i]
    return mask


def _style(methods: pd.DataFrame) -> dict[tuple[str, str], dict]:
    from matplotlib import colormaps

    fusions = sorted(methods["fusion"].unique())
    tabs = sorted(methods["tabular_encoder"].unique())
    cmap = colormaps["tab10" if len(fusions) <= 10 else "tab20"]
    return {(f, t): {"color": cmap(fusions.index(f) % cmap.N), "marker": _MARKERS[tabs.index(t) % len(_MARKERS)]}
            for f in fusions for t in tabs}


def _log_axis(ax, x: np.ndarray) -> None:
    """Log x axis padded to span at least a factor 2.5, ticked at 1-2-5 × 10^k with plain labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = float(np.min(x)), float(np.max(x))
    pad = max(1.15, math.sqrt(2.5 * lo / hi))
    ax.set_xscale("log")
    ax.set_xlim(lo / pad, hi * pad)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_png(methods: pd.DataFrame, title: str, metric_label: str) -> bytes:
    """PNG of metric vs GMac (left) and vs latency p50 (right), one row per (strategy, protocol).

    ``methods`` has one row per method with the :data:`PLOT_COLUMNS`; ``mean``/``std`` are fractions
    (plotted ×100), ``complete`` says whether all asked-for seeds finished.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.style import context

    panels = list(methods.groupby(["strategy", "protocol"], sort=False))
    style = _style(methods)
    with context("default"):
        fig = Figure(figsize=(11.0, 0.6 + 3.3 * len(panels)))
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(panels), len(_COSTS), squeeze=False)
        for row, ((strategy, protocol), g) in enumerate(panels):
            for col, (cost_col, xlabel) in enumerate(_COSTS):
                ax = axes[row][col]
                g = g.sort_values(["fusion", "tabular_encoder"])
                cost = g[cost_col].to_numpy(dtype=float)
                y = g["mean"].to_numpy(dtype=float) * 100
                err = g["std"].to_numpy(dtype=float) * 100
                usable = np.isfinite(cost) & (cost > 0) & np.isfinite(y)
                complete = g["complete"].to_numpy(dtype=bool)
                for i, r in enumerate(g.itertuples()):
                    if not usable[i]:
                        continue
                    st = style[(r.fusion, r.tabular_encoder)]
                    ax.errorbar(cost[i], y[i], yerr=err[i] if np.isfinite(err[i]) else None, fmt=st["marker"], color=st["color"], markersize=6,
                                capsize=2.5, elinewidth=1, mfc=st["color"] if complete[i] else "none", zorder=3)
                front = pareto_front(np.where(usable & complete, cost, np.nan), y)
                if front.any():
                    order = np.argsort(cost[front], kind="stable")
                    fx, fy = cost[front][order], y[front][order]
                    ax.step(fx, fy, where="post", color="black", linewidth=1.2, linestyle="--", zorder=2)
                    ax.scatter(fx, fy, s=150, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
                if usable.any():
                    _log_axis(ax, cost[usable])
                else:
                    ax.text(0.5, 0.5, f"no {cost_col} recorded", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(f"{strategy} · {protocol}", fontsize=10)
                ax.set_xlabel(xlabel, fontsize=9)
                ax.set_ylabel(metric_label, fontsize=9)
                ax.tick_params(labelsize=8)
                ax.grid(alpha=0.3, which="both")
        handles = [Line2D([], [], linestyle="none", marker=st["marker"], color=st["color"], markersize=7,
                          label=f"{f} · {t}") for (f, t), st in style.items()
                   if ((methods.fusion == f) & (methods.tabular_encoder == t)).any()]
        handles += [Line2D([], [], color="black", linestyle="--", marker="o", mfc="none", markersize=11,
                           label="Pareto front (higher metric, lower cost)")]
        if not methods["complete"].all():
            handles.append(Line2D([], [], linestyle="none", marker="o", mfc="none", color="grey",
                                  label="hollow: fewer seeds than asked (not on the front)"))
        fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
        fig.suptitle(title + " — error bars: ± std over seeds", fontsize=11)
        n_legend_rows = math.ceil(len(handles) / min(3, len(handles)))
        bottom = (0.25 + 0.22 * n_legend_rows) / fig.get_figheight()
        fig.tight_layout(rect=(0, bottom, 1, 1 - 0.45 / fig.get_figheight()))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()
