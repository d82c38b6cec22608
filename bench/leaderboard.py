"""Leaderboards: a pure function of run directories (``results.csv`` + ``leaderboard.md``).

Cells are mean ± std over seeds of the test metric (×100). A cell with fewer finished seeds than the
suite asked for is shown with its count and flagged, never silently averaged over fewer seeds.
Aggregation refuses to mix suite versions, budgets or dataset checksums in one table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError
from bench.metrics import format_mean_std, mean_std
from bench.results import RESULT_COLUMNS, atomic_write_bytes, atomic_write_text, load_reports


def results_frame(suite_dir: Path) -> pd.DataFrame:
    reports = load_reports(suite_dir)
    if not reports:
        raise BenchError(f"no finished runs under {str(suite_dir)!r}; run `python -m bench run --suite NAME --out DIR` first")
    df = pd.DataFrame([r.to_row() for r in reports], columns=RESULT_COLUMNS)
    for col, what in (("suite_version", "suite versions"), ("data_checksum", "dataset versions"), ("budget", "budgets")):
        if df[col].nunique() > 1:
            raise BenchError(f"{suite_dir} mixes {what} ({sorted(map(str, df[col].unique()))}); "
                             "use a separate --out directory per version")
    return df.sort_values(["protocol", "fusion", "tabular_encoder", "strategy", "seed"]).reset_index(drop=True)


def _fmt_params(n) -> str:
    return "–" if n is None or pd.isna(n) else f"{n / 1e6:.2f}"


def _fmt_gmac(g) -> str:
    if g is None or pd.isna(g):
        return "–"
    return f"{g:.4f}" if g < 0.1 else f"{g:.3f}"


def render_markdown(df: pd.DataFrame, suite_meta: dict, expected_seeds: list[int] | None = None) -> str:
    metric = df["metric"].iloc[0]
    metric_label = {"auc": "AUC (%)", "acc": "top-1 ACC (%)"}.get(metric, metric)
    protocols = list(dict.fromkeys(df["protocol"]))
    strategies = [s for s in ("frozen", "trainable") if s in set(df["strategy"])]
    n_expected = len(expected_seeds) if expected_seeds else int(df.groupby(
        ["protocol", "fusion", "tabular_encoder", "strategy"])["seed"].nunique().max())
    has_drop = "complete" in protocols and "incomplete-tabular" in protocols

    headers = ["Fusion", "Tabular encoder"]
    for s in strategies:
        for p in protocols:
            headers.append(f"{s} · {p}")
        if has_drop:
            headers.append(f"{s} · drop")
    headers += ["Params fusion (M)", "Params total (M)", "GMac fusion", "GMac total",
                "Latency p50 / p90 (ms)", "Fusion latency p50 (ms)"]
    rows, flagged = [], False
    best: dict[str, float] = {}
    cells: dict[tuple, tuple[float, float, int]] = {}
    for (fusion, tab), g in df.groupby(["fusion", "tabular_encoder"], sort=False):
        for s in strategies:
            for p in protocols:
                v = g[(g.strategy == s) & (g.protocol == p)]["test_value"].to_numpy()
                if len(v):
                    cells[(fusion, tab, s, p)] = mean_std(v)
                    m = cells[(fusion, tab, s, p)][0]
                    best[f"{s}{p}"] = max(best.get(f"{s}{p}", -np.inf), m)
    for (fusion, tab), g in df.groupby(["fusion", "tabular_encoder"], sort=False):
        row = [fusion, tab]
        for s in strategies:
            for p in protocols:
                c = cells.get((fusion, tab, s, p))
                if c is None:
                    row.append("missing")
                    flagged = True
                    continue
                text = format_mean_std(c[0], c[1])
                if np.isclose(c[0], best[f"{s}{p}"]):
                    text = f"**{text}**"
                if c[2] < n_expected:
                    text += f" ({c[2]}/{n_expected} seeds)†"
                    flagged = True
                row.append(text)
            if has_drop:
                a, b = cells.get((fusion, tab, s, "complete")), cells.get((fusion, tab, s, "incomplete-tabular"))
                row.append(f"{(b[0] - a[0]) * 100:+.2f}" if a and b else "–")
        first = g.iloc[0]
        row += [_fmt_params(first.params_fusion), _fmt_params(first.params_total), _fmt_gmac(first.gmac_fusion),
                _fmt_gmac(first.gmac_total),
                f"{first.latency_ms_p50:.2f} / {first.latency_ms_p90:.2f}" if pd.notna(first.latency_ms_p50) else "–",
                f"{first.fusion_latency_ms_p50:.3f}" if pd.notna(first.fusion_latency_ms_p50) else "–"]
        rows.append(row)

    prov = suite_meta.get("provenance", {})
    env = suite_meta.get("environment", {})
    search = suite_meta.get("search", {})
    device = df["device"].dropna().iloc[0] if df["device"].notna().any() else "unknown"
    source = prov.get("source", df["data_source"].iloc[0])
    lines = [
        f"# Leaderboard — {suite_meta.get('suite', df['suite'].iloc[0])} (suite v{int(df['suite_version'].iloc[0])})",
        "",
        "Generated by `bench` from run directories alone (`python -m bench leaderboard`). Do not edit by hand.",
        "",
        f"- **Data**: {prov.get('dataset', df['dataset'].iloc[0])} — **{source.upper()}**"
        + (" (synthetic replica: numbers say how methods rank on a documented generative model, not on patients)"
           if source == "synthetic" else "")
        + f"; version `{prov.get('version', df['data_version'].iloc[0])}`; checksum `{df['data_checksum'].iloc[0]}`"
        + (f"; {prov['protocol_note']}" if prov.get("protocol_note") else ""),
        f"- **Metric**: test {metric_label}, mean ± std over seeds {sorted(map(int, df['seed'].unique()))}"
        f" ({n_expected} per cell)",
        f"- **Budget**: `{df['budget'].iloc[0]}`; search: {_describe_search(search)}"
        + _describe_budget(suite_meta.get("budget_config", {})),
        "- **Protocols**: " + "; ".join(f"`{k}`: {v}" for k, v in suite_meta.get("protocols", {}).items()),
        f"- **Device** (latency at batch 1, {suite_meta.get('latency_runs', 'n')} runs after warm-up): {device}",
        f"- **bench** {env.get('bench_version', df['bench_version'].iloc[0])} @ commit `{env.get('git_commit', df['git_commit'].iloc[0])}`;"
        f" torch {env.get('libraries', {}).get('torch', '?')}; generated {datetime.now(UTC).date().isoformat()}",
        "",
        f"## Test {metric_label}",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]
    if has_drop:
        lines += ["`drop` = incomplete − complete, in points of the metric (mean over seeds).", ""]
    if flagged:
        lines += ["† incomplete cell: fewer finished seeds than the suite asked for; not comparable.", ""]
    uncounted = sorted({op for ops in df["gmac_uncounted"].dropna() for op in str(ops).split(";") if op})
    lines += [
        "GMac = 10⁹ multiply-accumulates counted by fvcore (one multiply-add = 1). "
        + (f"Ops fvcore could not count and that are therefore missing from GMac: {', '.join(f'`{o}`' for o in uncounted)}."
           if uncounted else "No op stayed uncounted."),
        "",
    ]
    probes = suite_meta.get("probes")
    if probes:
        prow = [[k[0], k[1], f"{v['image_val'] * 100:.2f}", f"{v['tabular_val'] * 100:.2f}", f"{v['rconf']:.3f}"]
                for k, v in sorted(probes.items())]
        lines += ["## Unimodal probes (validation) and modality confidence ratio (appendix A.4)", "",
                  tabulate(prow, headers=["Tabular encoder", "Protocol", f"Image {metric_label}",
                                          f"Tabular {metric_label}", "Rconf"], tablefmt="github", disable_numparse=True),
                  ""]
    imp = suite_meta.get("importance")
    if imp:
        ranked = sorted(imp["scores"].items(), key=lambda kv: -kv[1])[:5]
        top = ", ".join(f"`{k}` {v:.1%}" for k, v in ranked)
        lines += [f"Feature importance (integrated gradients, supervised `{imp['model']}` on the training split): {top}.", ""]
    return "\n".join(lines)


def _describe_budget(budget: dict) -> str:
    notes = []
    data = budget.get("data", {})
    if data:
        notes.append("data " + ", ".join(f"{k}={v}" for k, v in data.items()))
    if budget.get("image_encoder"):
        notes.append("image encoder " + ", ".join(f"{k}={v}" for k, v in budget["image_encoder"].items()))
    for name, cfg in budget.get("fusions", {}).items():
        notes.append(f"{name} " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    pre = budget.get("pretrain", {})
    if pre:
        notes.append(f"contrastive pretraining {pre.get('epochs')} epoch(s) on {pre.get('max_samples') or 'all'} training samples")
    trainable = budget.get("finetune", {}).get("trainable", {})
    if trainable.get("warm_start") == "frozen":
        notes.append("trainable runs start from the frozen run's fusion head of the same seed (LP-FT)")
    if trainable.get("max_steps_per_epoch"):
        notes.append(f"trainable: {trainable.get('max_epochs')} epoch(s) of at most {trainable['max_steps_per_epoch']} steps")
    return ("; budget settings: " + "; ".join(notes)) if notes else ""


def _describe_search(search: dict) -> str:
    if not search:
        return "none"
    parts = [f"frozen: {search.get('frozen_n_trials', search.get('n_trials', 1))} Optuna trial(s) over lr {search.get('lr')}"]
    if search.get("fusion_params"):
        parts[0] += f" (+ {', '.join(search['fusion_params'])} where a fusion declares it)"
    if "trainable_lr" in search or "trainable_n_trials" in search:
        n = search.get("trainable_n_trials", search.get("n_trials", 1))
        lr = search.get("trainable_lr", search.get("lr"))
        parts.append(f"trainable: {n} trial(s) over lr {lr}" if n > 1 else f"trainable: lr fixed at {lr[0]} (no search)")
    return "; ".join(parts) + "; validation split, seed 2022, same budget for every method"


def suite_metadata(suite_dir: Path) -> dict:
    path = suite_dir / "suite.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    probes = {}
    for d in sorted((suite_dir / "runs").glob("*")):
        rep = d / "report.json"
        if rep.exists():
            r = json.loads(rep.read_text())
            p = r.get("training", {}).get("probes")
            if p:
                probes[(r["spec"]["tabular_encoder"], r["spec"]["protocol"])] = p
    meta["probes"] = probes
    meta["latency_runs"] = meta.get("budget_config", {}).get("latency", {}).get("runs", "n")
    return meta


def write_leaderboard(suite_dir: Path, *, expected_seeds: list[int] | None = None, publish_to: Path | None = None) -> Path:
    from bench.robustness import render_robustness, robustness_frame

    df = results_frame(suite_dir)
    meta = suite_metadata(suite_dir)
    expected = expected_seeds or meta.get("seeds")
    csv = df.to_csv(index=False)
    atomic_write_text(suite_dir / "results.csv", csv)
    name = meta.get("suite", suite_dir.name)
    rob = robustness_frame(load_reports(suite_dir))
    headline = df[~df["protocol"].str.contains("@train=", regex=False)] if len(rob) else df
    md = render_markdown(headline if len(headline) else df, meta, expected)
    plots: dict[str, bytes] = {}
    if len(rob):
        rob_md, plots = render_robustness(rob, meta, expected, name)
        md += "\n" + rob_md
        atomic_write_text(suite_dir / "robustness.csv", rob.to_csv(index=False))
    atomic_write_text(suite_dir / "leaderboard.md", md + "\n")
    for fname, png in plots.items():
        atomic_write_bytes(suite_dir / fname, png)
    if publish_to is not None:
        atomic_write_text(publish_to / f"{name}.md", md + "\n")
        atomic_write_text(publish_to / f"{name}.csv", csv)
        if len(rob):
            atomic_write_text(publish_to / f"{name}-robustness.csv", rob.to_csv(index=False))
        for fname, png in plots.items():
            atomic_write_bytes(publish_to / fname, png)
    return suite_dir / "leaderboard.md"
