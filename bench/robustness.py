"""Robustness to missing data: metric-vs-rate tables, curves (PNG) and the area under each curve.

Two stress tests per missingness protocol (the resilient vision-tabular transformer's protocols):

* **test-time**: models trained on complete data, tested with a fraction p of test samples missing
  the modality (or cells), p swept;
* **training-time**: models trained (and validated) with a fraction p missing, tested at the same p.

The summary number is MultiBench's *relative robustness*: the area under the metric-vs-rate curve,
normalised by the rate range (trapezoidal rule), computed per seed and reported as mean ± std.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.metrics import format_mean_std, mean_std
from bench.metrics import metric_label as label_of
from bench.protocols import parse_run_protocol
from bench.results import RunReport

ROB_COLUMNS = ["protocol", "train_rate", "test_rate", "fusion", "tabular_encoder", "strategy", "seed", "metric", "value"]


def robustness_frame(reports: list[RunReport]) -> pd.DataFrame:
    """One row per (run, missingness protocol, test rate) from the runs' sweeps."""
    rows = []
    for r in reports:
        setting, train_rate = parse_run_protocol(r.spec.protocol)
        for proto, by_rate in r.sweep.items():
            if train_rate is not None and setting != proto:
                continue
            for rate, metrics in by_rate.items():
                rows.append({"protocol": proto, "train_rate": 0.0 if train_rate is None else train_rate,
                             "test_rate": float(rate), "fusion": r.spec.fusion,
                             "tabular_encoder": r.spec.tabular_encoder, "strategy": r.spec.strategy,
                             "seed": r.spec.seed, "metric": metrics["metric"], "value": metrics["value"]})
    df = pd.DataFrame(rows, columns=ROB_COLUMNS)
    return df.sort_values(["protocol", "fusion", "tabular_encoder", "strategy", "train_rate", "test_rate", "seed"]
                          ).reset_index(drop=True)


def relative_robustness(rates: np.ndarray, values: np.ndarray) -> float:
    """Area under the metric-vs-rate curve divided by the rate range (trapezoidal rule)."""
    order = np.argsort(rates)
    x, y = np.asarray(rates, float)[order], np.asarray(values, float)[order]
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def curves(rob: pd.DataFrame, proto: str, kind: str) -> pd.DataFrame:
    """Per (method, seed, rate) values of one stress test: ``kind`` = "test" or "train"."""
    d = rob[rob.protocol == proto]
    if kind == "test":
        d = d[d.train_rate == 0.0].assign(rate=lambda x: x.test_rate)
    else:
        d = d[np.isclose(d.train_rate, d.test_rate)].assign(rate=lambda x: x.train_rate)
    return d


def _method(row) -> str:
    return f"{row.fusion} · {row.tabular_encoder} · {row.strategy}"


def _table(d: pd.DataFrame, n_expected: int, metric_label: str) -> tuple[list[str], list[list[str]], dict]:
    rates = sorted(d.rate.unique())
    headers = ["Fusion", "Tabular encoder", "Strategy"] + [f"p={r:g}" for r in rates] + ["Area (rel. robustness)"]
    rows, series = [], {}
    best_area = -np.inf
    areas = {}
    for (fusion, tab, strategy), g in d.groupby(["fusion", "tabular_encoder", "strategy"], sort=False):
        per_seed = []
        complete = True
        for _seed, gs in g.groupby("seed"):
            if set(gs.rate) == set(rates):
                per_seed.append(relative_robustness(gs.rate.to_numpy(), gs.value.to_numpy()))
            else:
                complete = False
        areas[(fusion, tab, strategy)] = (mean_std(per_seed) if per_seed else None, complete)
        if per_seed:
            best_area = max(best_area, float(np.mean(per_seed)))
    for (fusion, tab, strategy), g in d.groupby(["fusion", "tabular_encoder", "strategy"], sort=False):
        row = [fusion, tab, strategy]
        means = []
        for r in rates:
            v = g[np.isclose(g.rate, r)].value.to_numpy()
            if not len(v):
                row.append("missing")
                means.append(np.nan)
                continue
            m, s, k = mean_std(v)
            means.append(m)
            row.append(format_mean_std(m, s) + (f" ({k}/{n_expected})†" if k < n_expected else ""))
        area, complete = areas[(fusion, tab, strategy)]
        if area is None:
            row.append("–")
        else:
            text = format_mean_std(area[0], area[1])
            if np.isclose(area[0], best_area):
                text = f"**{text}**"
            if area[2] < n_expected or not complete:
                text += "†"
            row.append(text)
        rows.append(row)
        series[f"{fusion} · {tab} · {strategy}"] = (np.array(rates), np.array(means))
    return headers, rows, series


def _plot(panels: list[tuple[str, dict]], title: str, metric_label: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels, strict=True):
        for i, (label, (x, y)) in enumerate(sorted(series.items())):
            style = "-" if i < 10 else "--"
            ax.plot(x, y * 100, style, marker="o", markersize=3, linewidth=1.4, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("missing rate p")
        ax.set_ylabel(metric_label)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def render_robustness(rob: pd.DataFrame, meta: dict, expected_seeds: list[int] | None, suite: str) -> tuple[str, dict[str, bytes]]:
    """Markdown sections (one per missingness protocol) and their PNG figures by file name."""
    metric = rob["metric"].iloc[0]
    metric_label = label_of(metric)
    n_expected = len(expected_seeds) if expected_seeds else int(rob.seed.nunique())
    lines = ["## Robustness to missing data", "",
             "Cells: test " + metric_label + ", mean ± std over seeds. *Area* = MultiBench's relative robustness: "
             "the area under the metric-vs-rate curve divided by the rate range (per seed, then mean ± std); "
             "higher is more robust. Imputation variants are labelled `<fusion>+zero` / `<fusion>+mean`. "
             "† = fewer seeds or rates than asked for.", ""]
    refused = meta.get("refused") or {}
    if refused:
        lines += ["Refused combinations: " + "; ".join(f"`{k}` — {v}" for k, v in refused.items()), ""]
    plots: dict[str, bytes] = {}
    for proto in dict.fromkeys(rob.protocol):
        panels = []
        lines += [f"### `{proto}`", ""]
        desc = meta.get("protocols", {}).get(proto)
        if desc:
            lines += [desc[:1].upper() + desc[1:] + ".", ""]
        for kind, heading in (("test", "Test-time missingness (trained on complete data, tested at rate p)"),
                              ("train", "Training-time missingness (trained, validated and tested at rate p)")):
            d = curves(rob, proto, kind)
            if d.rate.nunique() < 2:
                continue
            headers, rows, series = _table(d, n_expected, metric_label)
            lines += [f"**{heading}**", "", tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
            panels.append((heading.split(" (")[0], series))
        if panels:
            fname = f"{suite}-{proto.replace(':', '-')}.png"
            plots[fname] = _plot(panels, f"{suite}: {proto}", metric_label)
            lines += [f"![{proto}: metric vs missing rate]({fname})", ""]
    return "\n".join(lines), plots
