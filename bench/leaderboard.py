"""Leaderboards: a pure function of run directories (``results.csv`` + ``leaderboard.md``).

Cells are mean ± std over seeds of the test metric (×100). A cell with fewer finished seeds than the
suite asked for is shown with its count and flagged, never silently averaged over fewer seeds.
Aggregation refuses to mix suite versions, budgets or dataset checksums in one table.

Beside the main table: a *Statistics* table per method (pooled-seed metric, its 95% bootstrap CI and,
for binary tasks, DeLong's p against the best method of the same protocol and strategy; see
:func:`method_statistics`), a machine-readable ``leaderboard.json`` (:class:`LeaderboardJSON`) and a
cost–accuracy figure ``<suite>-pareto.png`` (:mod:`bench.plots`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError
from bench.metrics import (
    MetricError,
    bootstrap_metric_ci,
    delong_test,
    format_mean_std,
    mean_std,
    pool_seed_predictions,
)
from bench.metrics import (
    metric_label as label_of,
)
from bench.results import (
    COST_KEYS,
    RESULT_COLUMNS,
    RunSpec,
    atomic_write_bytes,
    atomic_write_text,
    cost_cells,
    cost_headers,
    load_failures,
    load_reports,
)

#: bootstrap settings of the Statistics table (percentile interval, Efron)
N_BOOT = 2000
BOOT_SEED = 0
CI_LEVEL = 0.95
#: bump when a field of leaderboard.json changes meaning or goes away
JSON_SCHEMA_VERSION = 2  # 2: role, headline CI over seeds x samples, Holm p, tied

METHOD_KEYS = ["protocol", "strategy", "fusion", "tabular_encoder"]


def results_frame(suite_dir: Path, reports: list | None = None) -> pd.DataFrame:
    reports = load_reports(suite_dir) if reports is None else reports
    if not reports:
        raise BenchError(f"no finished runs under {str(suite_dir)!r}; run `python -m bench run --suite NAME --out DIR` first")
    df = pd.DataFrame([r.to_row() for r in reports], columns=RESULT_COLUMNS)
    for col, what in (("suite_version", "suite versions"), ("data_checksum", "dataset versions"), ("budget", "budgets")):
        if df[col].nunique() > 1:
            raise BenchError(f"{suite_dir} mixes {what} ({sorted(map(str, df[col].unique()))}); "
                             "use a separate --out directory per version")
    return df.sort_values(["protocol", "fusion", "tabular_encoder", "strategy", "seed"]).reset_index(drop=True)


def render_markdown(df: pd.DataFrame, suite_meta: dict, expected_seeds: list[int] | None = None, *,
                    statistics: pd.DataFrame | None = None, pareto_png: str | None = None,
                    drops: pd.DataFrame | None = None) -> str:
    """The leaderboard page; ``statistics`` (from :func:`method_statistics`) adds the Statistics
    section and ``pareto_png`` a link to the cost–accuracy figure."""
    metric = df["metric"].iloc[0]
    metric_label = label_of(metric)
    protocols = list(dict.fromkeys(df["protocol"]))
    strategies = [s for s in ("frozen", "trainable") if s in set(df["strategy"])]
    n_expected = len(expected_seeds) if expected_seeds else int(df.groupby(
        ["protocol", "fusion", "tabular_encoder", "strategy"])["seed"].nunique().max())
    has_drop = "complete" in protocols and "incomplete-tabular" in protocols

    headers = ["Fusion", "Role", "Tabular encoder"]
    for s in strategies:
        for p in protocols:
            headers.append(f"{s} · {p}")
        if has_drop:
            headers.append(f"{s} · drop")
    headers += cost_headers()
    rows, flagged = [], False
    tied: set[tuple] = set()
    if statistics is not None and len(statistics):
        tied = {(r.protocol, r.strategy, r.fusion, r.tabular_encoder) for r in statistics.itertuples() if r.tied}
    untrained = {tab for tab, info in suite_meta.get("pretraining", {}).items()
                 if info.get("heldout") and not info["heldout"].get("learned")}
    roles = role_of(df)
    order = {r: i for i, r in enumerate(ROLES)}
    keyed = df.assign(_role=roles, _o=roles.map(order))
    cells: dict[tuple, tuple[float, float, int]] = {}
    groups = list(keyed.groupby(["_o", "fusion", "tabular_encoder"], sort=True))
    for (_o, fusion, tab), g in groups:
        for s in strategies:
            for p in protocols:
                v = g[(g.strategy == s) & (g.protocol == p)]["test_value"].to_numpy()
                if len(v):
                    cells[(fusion, tab, s, p)] = mean_std(v)
    for (_o, fusion, tab), g in groups:
        role = str(g["_role"].iloc[0])
        enc = f"{tab} (encoders not trained)" if tab in untrained else tab
        row = [fusion, role, enc]
        for s in strategies:
            for p in protocols:
                c = cells.get((fusion, tab, s, p))
                if c is None:
                    failed = (fusion, tab, s, p) in suite_meta.get("failed_cells", set())
                    if role != "fusion" and role != "baseline" or (role == "baseline" and not failed
                                                                    and not len(g[g.strategy == s])):
                        row.append("–")  # a reference row without this strategy / protocol (not a gap)
                        continue
                    row.append("failed‡" if failed else "missing")
                    flagged = True
                    continue
                text = format_mean_std(c[0], c[1])
                if (p, s, fusion, tab) in tied and c[2] >= n_expected:
                    text = f"**{text}**"
                if c[2] < n_expected:
                    text += f" ({c[2]}/{n_expected} seeds)†"
                    flagged = True
                row.append(text)
            if has_drop:
                a, b = cells.get((fusion, tab, s, "complete")), cells.get((fusion, tab, s, "incomplete-tabular"))
                row.append(f"{(b[0] - a[0]) * 100:+.2f}" if a and b else "–")
        row += cost_cells(g.iloc[0])
        rows.append(row)
    shown = set(zip(df["fusion"], df["tabular_encoder"], strict=True))
    for fusion, tab in sorted({(c[0], c[1]) for c in suite_meta.get("failed_cells", set())} - shown):
        row = [fusion, "fusion", tab]  # a method none of whose runs finished: every cell failed or missing
        for s in strategies:
            row += ["failed‡" if (fusion, tab, s, p) in suite_meta["failed_cells"] else "missing" for p in protocols]
            row += ["–"] if has_drop else []
        rows.append(row + ["–"] * len(cost_headers()))
        flagged = True

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
        _describe_plugins(suite_meta.get("plugins", {})),
        f"- **Device** (latency at batch 1, {suite_meta.get('latency_runs', 'n')} runs after warm-up): {device}",
        f"- **bench** {env.get('bench_version', df['bench_version'].iloc[0])} @ commit `{env.get('git_commit', df['git_commit'].iloc[0])}`;"
        f" torch {env.get('libraries', {}).get('torch', '?')}; last run finished {suite_meta.get('last_run', '?')}",
        "",
        f"## Test {metric_label}",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]
    lines += ["Bold: tied with the best ranked method of the column (Holm-adjusted p ≥ 0.05; see *Statistics*), "
              "so several cells may be bold. Role: `fusion` methods; `baseline` rows (single-modality heads on the "
              "same encoders; `logreg[…]` = L2 logistic regression (scikit-learn) and `lightgbm[…]` = gradient-boosted "
              "trees (LightGBM), on the table and on table + frozen image features) and, on synthetic "
              "data, `ceiling` rows from the generator's known logit (upper bounds, never ranked). "
              "A tabular encoder marked *encoders not trained* is a pair whose contrastive pretraining did not beat "
              "chance by the budget's margin on held-out pairs (see *Pretraining*).", ""]
    if has_drop:
        lines += ["`drop` = incomplete − complete, in points of the metric (mean over seeds; CI in *Drop*).", ""]
    if flagged:
        lines += ["† incomplete cell: fewer finished seeds than the suite asked for; not comparable.", ""]
    uncounted = sorted({op for ops in df["gmac_uncounted"].dropna() for op in str(ops).split(";") if op})
    lines += [
        "GMac = 10⁹ multiply-accumulates counted by fvcore (one multiply-add = 1). "
        + (f"Ops fvcore could not count and that are therefore missing from GMac: {', '.join(f'`{o}`' for o in uncounted)}."
           if uncounted else "No op stayed uncounted."),
        "",
    ]
    if statistics is not None and len(statistics):
        lines += render_statistics(statistics, metric, n_expected)
    if pareto_png:
        lines += ["## Cost vs accuracy", "",
                  f"Test {metric_label} (mean ± std over seeds) against total GMac and against latency p50, one point per "
                  "method; the dashed step line is the Pareto front (no other method has both a higher metric and a "
                  "lower cost), its methods ringed. Hollow markers: fewer seeds than asked for, kept off the front.",
                  "", f"![{metric_label} vs GMac and latency, with Pareto fronts]({pareto_png})", ""]
    lines += render_pretraining(suite_meta, df, metric_label)
    probes = suite_meta.get("probes")
    if probes:
        def _pct(v):
            return "–" if v is None else f"{v * 100:.2f}"

        prow = [[k[0], k[1], _pct(v.get("image_val_random_init")), _pct(v["image_val"]),
                 _pct(v.get("tabular_val_random_init")), _pct(v["tabular_val"]), f"{v['rconf']:.3f}"]
                for k, v in sorted(probes.items())]
        lines += ["## Unimodal probes (validation) and modality confidence ratio (appendix A.4)", "",
                  "A linear probe on each encoder's frozen pooled features, on the randomly initialised encoder "
                  "(the exact starting point of pretraining) and on the pretrained one: what pretraining bought.", "",
                  tabulate(prow, headers=["Tabular encoder", "Protocol", f"Image, random init {metric_label}",
                                          f"Image, pretrained {metric_label}", f"Tabular, random init {metric_label}",
                                          f"Tabular, pretrained {metric_label}", "Rconf"],
                           tablefmt="github", disable_numparse=True),
                  ""]
    if statistics is not None and len(statistics):
        lines += render_operating_point(df, metric, suite_meta.get("logit_offsets"))
        lines += render_sensitivity(statistics, metric)
    if drops is not None and len(drops):
        lines += render_drops(drops, metric_label)
    imp = suite_meta.get("importance")
    if imp:
        ranked = sorted(imp["scores"].items(), key=lambda kv: -kv[1])[:5]
        top = ", ".join(f"`{k}` {v:.1%}" for k, v in ranked)
        lines += [f"Feature importance (integrated gradients, supervised `{imp['model']}` on the training split): {top}.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# statistics per method (pooled seeds), leaderboard.json


def _load_predictions(suite_dir: Path, row: pd.Series) -> dict[str, np.ndarray] | None:
    spec = RunSpec(suite=str(row.suite), protocol=str(row.protocol), image_encoder=str(row.image_encoder),
                   tabular_encoder=str(row.tabular_encoder), fusion=str(row.fusion), strategy=str(row.strategy),
                   seed=int(row.seed))
    path = suite_dir / "runs" / spec.run_id / "predictions.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        if not {"test_ids", "test_y", "test_logits"} <= set(z.files):
            return None
        return {k: z[k] for k in ("test_ids", "test_y", "test_logits")}


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def add_metric_columns(df: pd.DataFrame, suite_dir: Path, names: Sequence[str]) -> pd.DataFrame:
    """``df`` with a ``test_<name>`` column per registered metric, computed from each run's stored test
    predictions (``None`` where a run has none or the metric fails on them), so a metric named after the
    runs finished re-scores them without retraining."""
    from bench.metrics import get_metric

    if not names:
        return df
    df = df.copy()
    metrics = [get_metric(n) for n in names]
    values: dict[str, list] = {m.name: [] for m in metrics}
    for _, row in df.iterrows():
        pred = _load_predictions(suite_dir, row)
        for m in metrics:
            v = None
            if pred is not None:
                logits = pred["test_logits"]
                logits = logits.ravel() if logits.ndim == 2 and logits.shape[1] == 1 else logits
                try:
                    v = m(pred["test_y"], logits)
                except Exception:  # noqa: BLE001 - e.g. a single-class test split: no value, not a crash
                    v = None
            values[m.name].append(v if v is None or np.isfinite(v) else None)
    for name, col in values.items():
        df[f"test_{name}"] = col
    return df


def other_metrics_json(df: pd.DataFrame, names: Sequence[str]) -> list[dict]:
    """Per method and extra metric: direction, mean, std and the seeds it is over (``leaderboard.json``)."""
    from bench.metrics import get_metric

    out = []
    for (proto, strat, fusion, tab), g in df.groupby(METHOD_KEYS, sort=True):
        entry: dict[str, Any] = {"protocol": proto, "strategy": strat, "fusion": fusion, "tabular_encoder": tab}
        for name in names:
            vals = [float(v) for v in g[f"test_{name}"] if v is not None and not pd.isna(v)]
            m, sd, n = mean_std(vals) if vals else (None, None, 0)
            entry[name] = {"higher_is_better": get_metric(name).higher_is_better, "mean": m,
                           "std": None if sd is None or not np.isfinite(sd) else sd, "n_seeds": n}
        out.append(entry)
    return out


def render_other_metrics(df: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """The *Other metrics* table: per method, each extra metric's mean ± std over seeds, with its direction."""
    from bench.metrics import get_metric

    if not names:
        return []
    metrics = [get_metric(n) for n in names]
    role = role_of(df)
    rows = []
    for (proto, strat, fusion, tab), g in df.assign(_role=role).groupby(METHOD_KEYS, sort=True):
        cells = []
        for m in metrics:
            vals = [v for v in g[f"test_{m.name}"] if v is not None and not pd.isna(v)]
            cells.append(m.format(vals) if vals else "–")
        rows.append((ROLES.index(g["_role"].iloc[0]), [proto, strat, g["_role"].iloc[0], fusion, tab, *cells]))
    rows = [r for _, r in sorted(rows, key=lambda t: (t[1][0], t[1][1], t[0], t[1][3], t[1][4]))]
    return ["## Other metrics", "",
            "Test metrics the suite names beside the primary one (`metrics:` in the suite, or `bench leaderboard "
            "--metric`), computed from each run's stored test predictions; mean ± std over seeds. ↑: higher is "
            "better, ↓: lower is better. No method is marked best here: these columns are not tested for ties.", "",
            tabulate([r for r in rows], headers=["Protocol", "Strategy", "Role", "Fusion", "Tabular encoder",
                                                 *[m.heading for m in metrics]],
                     tablefmt="github", disable_numparse=True), ""]


ROLES = ("fusion", "baseline", "ceiling")  # row order in every table; only fusion and baseline rows are ranked
TIE_ALPHA = 0.05


def role_of(df: pd.DataFrame) -> pd.Series:
    """``fusion`` / ``baseline`` / ``ceiling`` per row (reports written before roles existed are fusions)."""
    if "kind" not in df:
        return pd.Series("fusion", index=df.index)
    return df["kind"].where(df["kind"].isin(ROLES), "fusion")


def method_statistics(df: pd.DataFrame, suite_dir: Path, n_expected: int, *, n_boot: int = N_BOOT,
                      seed: int = BOOT_SEED) -> pd.DataFrame:
    """One row per method (protocol × strategy × fusion × tabular encoder): seed aggregates, costs, intervals
    and the comparison with the best method of the same protocol and strategy.

    **Headline interval.** ``mean_ci_low/high``: a two-level percentile bootstrap (Efron) of the headline —
    the mean over seeds of the per-seed test metric — resampling seeds and test samples (class-stratified
    for binary tasks), so it includes seed-to-seed variance (:func:`bench.stats.seed_sample_bootstrap_ci`).

    **Pooled.** The seeds' test predictions are also pooled into the seed ensemble (each test sample's
    predicted probability averaged over seeds; :func:`bench.metrics.pool_seed_predictions`) — a different
    predictor than the headline mean, named as such — with a bootstrap CI over test samples.

    **Ties with the best.** The reference is the ranked method (role fusion or baseline, every asked-for seed
    finished) with the highest pooled metric in its protocol and strategy. Every other ranked method is
    compared with it on the same test samples: DeLong's test of pooled AUCs for binary tasks (DeLong et al.
    1988; Sun & Xu 2014), a paired bootstrap of pooled accuracy otherwise; the p-values of one family are
    Holm-adjusted (Holm 1979) and a method is *tied with the best* when its adjusted p >= 0.05. Ceilings are
    never ranked; incomplete methods (fewer seeds) are never tied nor the reference.
    """
    from bench.stats import holm, paired_bootstrap_p, seed_sample_bootstrap_ci

    metric = df["metric"].iloc[0]
    task = "binary" if metric == "auc" else "multiclass"
    roles = role_of(df)
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for key, g in df.groupby(METHOD_KEYS, sort=True):
        g = g.sort_values("seed")
        first = g.iloc[0]
        m, sd, k = mean_std(g["test_value"].to_numpy())
        vm, vsd, _ = mean_std(g["val_value"].to_numpy(dtype=float))
        row: dict[str, Any] = dict(zip(METHOD_KEYS, key, strict=True))
        role = str(roles.loc[g.index[0]])
        row.update(role=role, seeds=[int(x) for x in g["seed"]], n_seeds=k, n_expected=n_expected,
                   complete=k >= n_expected,
                   mean=m, std=sd, test_values=[float(v) for v in g["test_value"]], val_mean=vm, val_std=vsd,
                   **{k: _num(getattr(first, k)) for k in COST_KEYS},
                   mean_ci_low=np.nan, mean_ci_high=np.nan,
                   pooled=np.nan, ci_low=np.nan, ci_high=np.nan, n_test=None, reference=None,
                   delong_z=np.nan, delong_p=np.nan, p_vs_best=np.nan, p_holm=np.nan, tied=False, note="")
        preds = [_load_predictions(suite_dir, r) for r in g.itertuples()]
        if any(p is None for p in preds):
            row["note"] = "predictions.npz missing for a seed"
        else:
            try:
                ids, y, scores = pool_seed_predictions(task, [(p["test_ids"], p["test_y"], p["test_logits"]) for p in preds])
                ci = bootstrap_metric_ci(task, y, scores, n_boot=n_boot, alpha=1 - CI_LEVEL, seed=seed)
                per_seed = _aligned_seed_scores(preds, ids)
                mci = seed_sample_bootstrap_ci(task, y, per_seed, n_boot=n_boot, alpha=1 - CI_LEVEL, seed=seed)
            except MetricError as e:
                row["note"] = str(e)
            else:
                pooled[key] = (ids, y, scores)
                row.update(pooled=ci.estimate, ci_low=ci.lo, ci_high=ci.hi, n_test=int(y.size),
                           mean_ci_low=mci.lo, mean_ci_high=mci.hi)
        rows.append(row)
    stats = pd.DataFrame(rows)
    for (_proto, _strategy), g in stats.groupby(["protocol", "strategy"], sort=False):
        cand = g[g["complete"] & g["pooled"].notna() & (g["role"] != "ceiling")]
        if not len(cand):
            continue
        best = cand.loc[cand["pooled"].idxmax()]
        bkey = tuple(best[k] for k in METHOD_KEYS)
        b_ids, b_y, b_s = pooled[bkey]
        ref = f"{best.fusion} · {best.tabular_encoder}"
        family: dict[Any, float] = {}
        for i, r in g.iterrows():
            key = tuple(r[k] for k in METHOD_KEYS)
            if key not in pooled:
                continue
            stats.at[i, "reference"] = ref
            if key == bkey:
                stats.at[i, "tied"] = True
                continue
            ids, y, sc = pooled[key]
            if not np.array_equal(ids, b_ids):
                stats.at[i, "note"] = "tested on other samples than the reference; no test"
                continue
            try:
                if task == "binary":
                    res = delong_test(y, sc, b_s)
                    stats.at[i, "delong_z"], stats.at[i, "delong_p"] = res.z, res.p
                    p = res.p
                else:
                    p = paired_bootstrap_p(y, "acc", sc, b_s, n_boot=n_boot, seed=seed)
            except MetricError as e:  # e.g. a test split with a single positive: no variance estimate
                stats.at[i, "note"] = str(e)
                continue
            stats.at[i, "p_vs_best"] = p
            if r["role"] != "ceiling" and r["complete"]:
                family[i] = p
        if family:
            adjusted = holm(np.array(list(family.values()), dtype=float))
            for i, pa in zip(family, adjusted, strict=True):
                stats.at[i, "p_holm"] = float(pa)
                stats.at[i, "tied"] = bool(pa >= TIE_ALPHA)
    _sensitivity(stats, pooled, task, n_boot, seed)
    return stats


def _sensitivity(stats: pd.DataFrame, pooled: dict, task: str, n_boot: int, seed: int) -> None:
    """``sens_p`` (and Holm-adjusted ``sens_p_holm`` over protocol × strategy) on the row of each family's best
    fusion: one-sided test that it beats the family's best single-modality model, same test samples."""
    from bench.stats import holm, paired_bootstrap_p

    stats["sens_p"], stats["sens_p_holm"] = np.nan, np.nan
    found = {}
    for (_proto, _strategy), g in stats.groupby(["protocol", "strategy"], sort=True):
        fus = g[_fused(g) & g["complete"] & g["pooled"].notna()]
        single = g[g["fusion"].isin(SINGLE_MODALITY) & g["complete"] & g["pooled"].notna()]
        if not len(fus) or not len(single):
            continue
        i_f, i_s = fus["pooled"].idxmax(), single["pooled"].idxmax()
        kf = tuple(stats.loc[i_f, k] for k in METHOD_KEYS)
        ks = tuple(stats.loc[i_s, k] for k in METHOD_KEYS)
        (ids_f, y, s_f), (ids_s, _, s_s) = pooled[kf], pooled[ks]
        if not np.array_equal(ids_f, ids_s):
            continue
        try:
            if task == "binary":
                p2 = delong_test(y, s_f, s_s).p
            else:
                p2 = paired_bootstrap_p(y, "acc", s_f, s_s, n_boot=n_boot, seed=seed)
        except MetricError:
            continue
        better = stats.loc[i_f, "pooled"] > stats.loc[i_s, "pooled"]
        found[i_f] = p2 / 2 if better else 1 - p2 / 2
    if found:
        for i, (p, pa) in zip(found, zip(found.values(), holm(np.array(list(found.values()))), strict=True),
                              strict=True):
            stats.at[i, "sens_p"], stats.at[i, "sens_p_holm"] = float(p), float(pa)


def _aligned_seed_scores(preds: list[dict], ids: np.ndarray) -> list[np.ndarray]:
    """Each seed's test logits in the order of ``ids`` (the pooled predictor's sample order)."""
    out = []
    for p in preds:
        order = {str(v): j for j, v in enumerate(p["test_ids"])}
        idx = np.array([order[str(v)] for v in ids])
        logits = np.asarray(p["test_logits"], dtype=np.float64)
        out.append(logits[idx])
    return out


def _fmt_p(p: float) -> str:
    if p is None or pd.isna(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def render_statistics(stats: pd.DataFrame, metric: str, n_expected: int) -> list[str]:
    """Markdown lines of the Statistics section (see :func:`method_statistics` for the method)."""
    label = label_of(metric).removesuffix(" (%)")
    binary = metric == "auc"
    headers = ["Protocol", "Strategy", "Role", "Fusion", "Tabular encoder", "Seeds", f"Mean {label} (%)",
               f"{CI_LEVEL:.0%} CI (seeds × samples)", f"Seed ensemble {label} (%)", f"{CI_LEVEL:.0%} CI (samples)",
               ("DeLong p" if binary else "bootstrap p") + " vs best", "Holm p", "Tied with best"]
    rows, flagged, notes = [], False, []
    order = {r: i for i, r in enumerate(ROLES)}
    ordered = stats.assign(_o=stats["role"].map(order)).sort_values(["protocol", "strategy", "_o", "fusion",
                                                                       "tabular_encoder"])
    for r in ordered.itertuples():
        seeds = f"{r.n_seeds}/{n_expected}"
        if not r.complete:
            seeds += "†"
            flagged = True
        mean = "–" if pd.isna(r.mean) else f"{r.mean * 100:.2f}"
        mci = "–" if pd.isna(r.mean_ci_low) else f"[{r.mean_ci_low * 100:.2f}, {r.mean_ci_high * 100:.2f}]"
        if pd.isna(r.pooled):
            value = ci = "–"
        else:
            value = f"{r.pooled * 100:.2f}"
            ci = f"[{r.ci_low * 100:.2f}, {r.ci_high * 100:.2f}]"
        is_ref = r.reference is not None and r.reference == f"{r.fusion} · {r.tabular_encoder}"
        p = "ref (best)" if is_ref else _fmt_p(r.p_vs_best)
        tied = "–" if r.role == "ceiling" else ("**yes**" if r.tied else "no")
        if r.tied:
            mean = f"**{mean}**"
        if r.note:
            notes.append(f"`{r.protocol} · {r.strategy} · {r.fusion} · {r.tabular_encoder}`: {r.note}")
        rows.append([r.protocol, r.strategy, r.role, r.fusion, r.tabular_encoder, seeds, mean, mci, value, ci, p,
                     _fmt_p(r.p_holm), tied])
    test = ("two-sided DeLong test (DeLong et al. 1988; fast midrank algorithm of Sun & Xu 2014) of the seed "
            "ensemble's AUC" if binary else "two-sided paired bootstrap (2000 resamples) of the seed ensemble's accuracy")
    lines = ["## Statistics", "",
             f"**Mean**: the headline, mean over seeds of the test {label}; its {CI_LEVEL:.0%} CI is a percentile "
             f"bootstrap over seeds *and* test samples ({int(N_BOOT)} resamples"
             + (", test samples stratified by class" if binary else "") + f", seed {BOOT_SEED}), so it includes "
             "seed-to-seed variance. **Seed ensemble**: another predictor — each test sample's predicted probability "
             "averaged over the method's seeds — with a bootstrap CI over test samples. **Tied with best**: the "
             "reference (*ref*) is the ranked method (fusion or baseline, all seeds finished) with the best "
             f"seed-ensemble {label} of its protocol and strategy; every other ranked method is compared with it by a "
             f"{test} on the same test samples; the p-values of a protocol × strategy family are Holm-adjusted "
             f"(Holm 1979) and a method with adjusted p ≥ {TIE_ALPHA} is tied with the best (bold). No single "
             "method is called the winner unless nothing is tied with it. Ceilings are upper bounds from the "
             "generator's latents, never ranked.", "",
             tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    if flagged:
        lines += ["† fewer finished seeds than the suite asked for: never tied, never the reference; not comparable.", ""]
    if notes:
        lines += ["Not computed: " + "; ".join(notes) + ".", ""]
    return lines


def render_pretraining(meta: dict, df: pd.DataFrame, metric_label: str) -> list[str]:
    """The *Pretraining* section: held-out contrastive measure against chance, and what ``trainable`` did."""
    info = meta.get("pretraining", {})
    rows = []
    for tab, p in sorted(info.items()):
        h = p.get("heldout")
        if not h or h.get("itc") is None or h.get("itc_init") is None:  # too few held-out pairs for one batch
            rows.append([tab, str(p.get("epochs", "?")), str(p.get("samples", "?")), "not measured", "", "", "", "–"])
            continue
        rows.append([tab, str(p.get("epochs", "?")), str(p.get("samples", "?")),
                     f"{h['itc_init']:.3f} → **{h['itc']:.3f}**", f"{h['chance_itc']:.3f}",
                     f"{h['top1_init'] * 100:.2f} → **{h['top1'] * 100:.2f}**", f"{h['chance_top1'] * 100:.2f}",
                     "yes" if h.get("learned") else "**no — encoders not trained**"])
    if not rows:
        return []
    out = ["## Pretraining", "",
           "Image–table contrastive pretraining (AMF-MedIT 3.1, eq. 11), measured on held-out pairs (the validation "
           "split, never the test split), in batches of B without augmentation: ITC loss and image→table top-1 "
           "retrieval of the randomly initialised pair → the pretrained pair, beside their chance levels (ln B and "
           "1/B). *Learned*: held-out ITC ≤ ln B − 0.5 or top-1 ≥ 5/B.", "",
           tabulate(rows, headers=["Tabular encoder", "Epochs", "Training pairs", "Held-out ITC", "Chance ln B",
                                   "Held-out top-1 (%)", "Chance 1/B (%)", "Learned"],
                    tablefmt="github", disable_numparse=True), ""]
    out += _render_auxiliary_pretraining(info)
    change = meta.get("encoder_change", {})
    if change:
        crow = [[tab, f"{c['image']:.2e}", f"{c['tabular']:.2e}", c["delta_val"], str(c["n"])]
                for tab, c in sorted(change.items())]
        out += ["What the `trainable` strategy did to the encoders: relative L2 change of the encoders' weights "
                "(median over trainable runs) and the mean change of the validation metric against the frozen run of "
                "the same method and seed (points).", "",
                tabulate(crow, headers=["Tabular encoder", "Image encoder ‖Δθ‖/‖θ‖", "Tabular encoder ‖Δθ‖/‖θ‖",
                                        f"Δ validation {metric_label} (trainable − frozen)", "Runs"],
                         tablefmt="github", disable_numparse=True), ""]
    return out


def _render_auxiliary_pretraining(info: dict) -> list[str]:
    """The held-out measures of pretraining's optional terms (``pretrain.reconstruct`` / ``pretrain.supervised``)."""
    rows = []
    for tab, p in sorted(info.items()):
        rec, sup = p.get("reconstruction") or {}, p.get("supervised") or {}
        if not rec and not sup:
            continue
        r2 = rec.get("numeric_r2")
        cat = (f"{rec['categorical_accuracy'] * 100:.1f} (majority {rec['categorical_majority'] * 100:.1f})"
               if rec.get("categorical_accuracy") is not None else "–")
        heads = ", ".join(f"{k} {sup[k] * 100:.1f}" for k in sup.get("heads", []) if sup.get(k) is not None)
        rows.append([tab, f"{rec['weight']:g}" if rec else "–", f"{r2:.3f}" if r2 is not None else "–", cat,
                     f"{sup['weight']:g}: {heads} (chance {sup['chance'] * 100:.1f})" if sup else "–"])
    if not rows:
        return []
    return ["Pretraining's optional terms, measured on the same held-out rows: `reconstruct` — the clean table "
            "decoded from the pooled features of its corrupted copy (numeric R², chance 0; categorical accuracy "
            "beside the majority class's); `supervised` — each label head's validation metric (%) beside chance. "
            "Both are NOTE[DIFF] additions to the paper's label-free ITC pretraining (see `bench/pretrain.py`).", "",
            tabulate(rows, headers=["Tabular encoder", "Reconstruct weight", "Held-out numeric R²",
                                    "Held-out categorical acc (%)", "Supervised heads (held-out)"],
                     tablefmt="github", disable_numparse=True), ""]


def render_operating_point(df: pd.DataFrame, metric: str, offsets: list | None = None) -> list[str]:
    """Binary tasks: the metrics at the validation-chosen threshold (Youden's J), mean over seeds.

    ``offsets``: the trained runs' ``logit_offset_removed`` (None where a run predates it), so the text
    says whether the networks' probabilities refer to the data's prevalence."""
    if metric != "auc" or "test_balanced_accuracy" not in df or df["test_balanced_accuracy"].isna().all():
        return []
    cols = [("test_balanced_accuracy", "Balanced ACC"), ("test_sensitivity", "Sensitivity"),
            ("test_specificity", "Specificity"), ("test_auprc", "AUPRC"), ("test_brier", "Brier"), ("test_ece", "ECE")]
    rows = []
    roles = role_of(df)
    order = {r: i for i, r in enumerate(ROLES)}
    d = df.assign(_o=roles.map(order), _role=roles)
    for (_o, proto, strategy, fusion, tab), g in d.groupby(["_o", "protocol", "strategy", "fusion", "tabular_encoder"],
                                                          sort=True):
        if g["test_balanced_accuracy"].isna().all():
            continue
        single = g["test_single_class"].astype("boolean").fillna(False).astype(bool)
        rows.append([proto, strategy, fusion, tab] + [f"{g[c].astype(float).mean() * (100 if c not in ('test_brier', 'test_ece') else 1):.2f}"
                                                      if c not in ("test_brier", "test_ece") else f"{g[c].astype(float).mean():.4f}"
                                                      for c, _ in cols] + [f"{int(single.sum())}/{len(g)}"])
    n_runs = int(df["test_single_class"].notna().sum())
    n_single = int(df["test_single_class"].astype("boolean").fillna(False).astype(bool).sum())
    return ["## Operating point (threshold chosen on validation)", "",
            "The decision threshold of every binary run is chosen on its validation predictions by Youden's J "
            "(sensitivity + specificity − 1; Youden 1950) and applied to the test split. " + _offset_note(offsets) + " Mean "
            "over seeds; balanced ACC, sensitivity, specificity and AUPRC in %, Brier score and expected "
            "calibration error (10 equal-width bins) of the predicted probability. The published results keep every run's validation logits, so any other rule "
            f"can be recomputed. Runs predicting a single class on test: {n_single} of {n_runs}.", "",
            tabulate(rows, headers=["Protocol", "Strategy", "Fusion", "Tabular encoder"] + [c[1] for c in cols]
                     + ["Single-class runs"], tablefmt="github", disable_numparse=True), ""]


def _offset_note(offsets: list | None) -> str:
    known = sorted({round(float(o), 4) for o in offsets or [] if o is not None})
    if offsets and len(known) == 1 and None not in offsets:
        return ("The networks' logits are stored with the known shift of the class weights and the sampler taken off "
                f"(ln(w1·r1 / (w0·k0)) = {known[0]:.2f}), so their probabilities refer to the data's own prevalence.")
    if not known:
        return ("The networks' logits carry the shift of the class weights and the sampler (these runs predate its "
                "removal), so their Brier score and calibration error describe shifted probabilities.")
    return "The networks' runs differ in the logit shift taken off (" + ", ".join(f"{k:.2f}" for k in known) + \
        " or none): compare their Brier score and calibration error with care."


SINGLE_MODALITY = ("image_only", "tabular_only", "logreg[table]", "lightgbm[table]")


def _fused(stats: pd.DataFrame) -> pd.Series:
    """Models that use both modalities: the fusion methods and the classical models on table + image features."""
    return (stats["role"] == "fusion") | stats["fusion"].str.endswith("[table,image]")


def render_sensitivity(stats: pd.DataFrame, metric: str) -> list[str]:
    """Does the best fusion beat the best single-modality model? One test per protocol × strategy."""
    from bench.stats import holm, paired_bootstrap_p  # noqa: F401  (documented method)

    rows = []
    for (proto, strategy), g in stats.groupby(["protocol", "strategy"], sort=True):
        fus = g[_fused(g) & g["complete"] & g["pooled"].notna()]
        single = g[g["fusion"].isin(SINGLE_MODALITY) & g["complete"] & g["pooled"].notna()]
        if not len(fus) or not len(single):
            continue
        bf, bs = fus.loc[fus["pooled"].idxmax()], single.loc[single["pooled"].idxmax()]
        p = bf.get("sens_p", np.nan)
        rows.append([proto, strategy, f"{bf.fusion} · {bf.tabular_encoder}", f"{bf.pooled * 100:.2f}",
                     f"{bs.fusion} · {bs.tabular_encoder}", f"{bs.pooled * 100:.2f}",
                     f"{(bf.pooled - bs.pooled) * 100:+.2f}", _fmt_p(p), _fmt_p(bf.get("sens_p_holm", np.nan))])
    if not rows:
        return []
    test = "one-sided DeLong test" if metric == "auc" else "one-sided paired bootstrap"
    return ["## Does fusion help? (the benchmark's sensitivity check)", "",
            "Per protocol and strategy: the best model that uses both modalities (a fusion method, or a classical "
            "model on the table plus frozen image features; seed ensemble) against the best single-modality model "
            "(image-only or tabular-only head, or a classical model on the table alone), "
            f"{test} that the fusion is better, Holm-adjusted over the rows of this table. On the synthetic replica "
            "v2 the generator plants an image × table interaction that no single modality or additive model "
            "recovers: a benchmark that cannot detect it is not sensitive.", "",
            tabulate(rows, headers=["Protocol", "Strategy", "Best fused model", "Seed ensemble (%)",
                                    "Best single modality", "Seed ensemble (%)", "Difference", "p", "Holm p"],
                     tablefmt="github", disable_numparse=True), ""]


def render_drops(drops: pd.DataFrame, metric_label: str) -> list[str]:
    rows = [[r.strategy, r.fusion, r.tabular_encoder, f"{r.estimate * 100:+.2f}",
             f"[{r.lo * 100:+.2f}, {r.hi * 100:+.2f}]", _fmt_p(r.p), _fmt_p(r.p_holm)]
            for r in drops.sort_values(["strategy", "fusion", "tabular_encoder"]).itertuples()]
    return ["## Drop (incomplete − complete)", "",
            f"Mean over seeds of the per-seed difference in test {metric_label} between the incomplete-tabular and "
            f"the complete protocol (points); {CI_LEVEL:.0%} CI and two-sided p from a paired bootstrap over seeds and "
            f"test samples ({int(N_BOOT)} resamples; the same resample for both protocols), p Holm-adjusted over the "
            "table.", "",
            tabulate(rows, headers=["Strategy", "Fusion", "Tabular encoder", "Drop", f"{CI_LEVEL:.0%} CI", "p", "Holm p"],
                     tablefmt="github", disable_numparse=True), ""]


def drop_statistics(df: pd.DataFrame, suite_dir: Path, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Per method with both protocols and the same seeds: the drop with its seed × sample bootstrap CI."""
    from bench.stats import holm, paired_seed_sample_bootstrap_diff_ci

    metric = df["metric"].iloc[0]
    task = "binary" if metric == "auc" else "multiclass"
    out = []
    for (strategy, fusion, tab), g in df.groupby(["strategy", "fusion", "tabular_encoder"], sort=True):
        a, b = g[g.protocol == "complete"].sort_values("seed"), g[g.protocol == "incomplete-tabular"].sort_values("seed")
        if not len(a) or list(a["seed"]) != list(b["seed"]):
            continue
        pa = [_load_predictions(suite_dir, r) for r in a.itertuples()]
        pb = [_load_predictions(suite_dir, r) for r in b.itertuples()]
        if any(p is None for p in pa + pb):
            continue
        ids = pa[0]["test_ids"]
        try:
            res = paired_seed_sample_bootstrap_diff_ci(task, pa[0]["test_y"], _aligned_seed_scores(pa, ids),
                                                       _aligned_seed_scores(pb, ids), n_boot=n_boot,
                                                       alpha=1 - CI_LEVEL, seed=seed)
        except (MetricError, KeyError):
            continue
        out.append({"strategy": strategy, "fusion": fusion, "tabular_encoder": tab, "estimate": res.estimate,
                    "lo": res.lo, "hi": res.hi, "p": res.p})
    frame = pd.DataFrame(out)
    if len(frame):
        frame["p_holm"] = holm(frame["p"].to_numpy(dtype=float))
    return frame


class ProvenanceJSON(TypedDict):
    dataset: str | None
    source: str | None
    version: str | None
    checksum: str | None
    protocol_note: str | None


class EnvironmentJSON(TypedDict):
    bench_version: str | None
    git_commit: str | None
    torch: str | None
    device: str | None


class MethodJSON(TypedDict):
    protocol: str
    strategy: str
    fusion: str
    tabular_encoder: str
    role: str
    mean_ci_low: float | None
    mean_ci_high: float | None
    p_vs_best: float | None
    p_holm: float | None
    tied_with_best: bool
    seeds: list[int]
    n_seeds: int
    n_expected: int
    complete: bool
    test_mean: float | None
    test_std: float | None
    test_values: list[float]
    val_mean: float | None
    val_std: float | None
    pooled: float | None
    ci_low: float | None
    ci_high: float | None
    n_test: int | None
    delong_reference: str | None
    delong_z: float | None
    delong_p: float | None
    params_fusion: float | None
    params_total: float | None
    gmac_fusion: float | None
    gmac_total: float | None
    latency_ms_p50: float | None
    latency_ms_p90: float | None
    fusion_latency_ms_p50: float | None


class _LeaderboardFields(TypedDict):
    schema_version: int
    suite: str
    suite_version: int
    budget: str
    metric: str
    task: str
    seeds_expected: list[int]
    provenance: ProvenanceJSON
    environment: EnvironmentJSON
    statistics: dict[str, Any]
    methods: list[MethodJSON]
    figures: list[str]


class LeaderboardJSON(_LeaderboardFields, total=False):
    """``leaderboard.json``; ``other_metrics`` only when the suite or the command names extra metrics."""

    other_metrics: list[dict[str, Any]]


def leaderboard_json(df: pd.DataFrame, stats: pd.DataFrame, meta: dict, expected_seeds: list[int] | None,
                     figures: list[str]) -> LeaderboardJSON:
    """Machine-readable leaderboard: provenance and one entry per method (values are fractions, NaN → null)."""
    prov = meta.get("provenance", {})
    env = meta.get("environment", {})
    metric = str(df["metric"].iloc[0])
    device = df["device"].dropna().iloc[0] if df["device"].notna().any() else None
    methods: list[MethodJSON] = []
    for r in stats.sort_values(METHOD_KEYS).itertuples():
        methods.append(MethodJSON(
            protocol=r.protocol, strategy=r.strategy, fusion=r.fusion, tabular_encoder=r.tabular_encoder,
            role=r.role, mean_ci_low=_num(r.mean_ci_low), mean_ci_high=_num(r.mean_ci_high),
            p_vs_best=_num(r.p_vs_best), p_holm=_num(r.p_holm), tied_with_best=bool(r.tied),
            seeds=list(r.seeds), n_seeds=int(r.n_seeds), n_expected=int(r.n_expected), complete=bool(r.complete),
            test_mean=_num(r.mean), test_std=_num(r.std), test_values=list(r.test_values),
            val_mean=_num(r.val_mean), val_std=_num(r.val_std),
            pooled=_num(r.pooled), ci_low=_num(r.ci_low), ci_high=_num(r.ci_high),
            n_test=None if r.n_test is None or pd.isna(r.n_test) else int(r.n_test),
            delong_reference=r.reference, delong_z=_num(r.delong_z) if np.isfinite(r.delong_z) else None,
            delong_p=_num(r.delong_p), **{k: getattr(r, k) for k in COST_KEYS}))
    seeds = expected_seeds or sorted({int(s) for s in df["seed"]})
    return LeaderboardJSON(
        schema_version=JSON_SCHEMA_VERSION,
        suite=str(meta.get("suite", df["suite"].iloc[0])),
        suite_version=int(df["suite_version"].iloc[0]),
        budget=str(df["budget"].iloc[0]),
        metric=metric,
        task="binary" if metric == "auc" else "multiclass",
        seeds_expected=[int(s) for s in seeds],
        provenance=ProvenanceJSON(
            dataset=prov.get("dataset", df["dataset"].iloc[0]), source=prov.get("source", df["data_source"].iloc[0]),
            version=prov.get("version", df["data_version"].iloc[0]), checksum=str(df["data_checksum"].iloc[0]),
            protocol_note=prov.get("protocol_note")),
        environment=EnvironmentJSON(
            bench_version=env.get("bench_version", df["bench_version"].iloc[0]),
            git_commit=env.get("git_commit", df["git_commit"].iloc[0]),
            torch=env.get("libraries", {}).get("torch"), device=device),
        statistics={"headline_ci": {"method": "percentile bootstrap over seeds and test samples", "level": CI_LEVEL,
                                    "n_boot": N_BOOT, "seed": BOOT_SEED},
                    "ties": {"reference": "best seed-ensemble metric among ranked methods (fusion, baseline) with "
                                          "every seed", "adjustment": "Holm", "alpha": TIE_ALPHA,
                             "test": "DeLong" if metric == "auc" else "paired bootstrap of accuracy"},
                    "pooling": "per-sample predicted probability averaged over seeds (seed ensemble)",
                    "ci": {"method": "percentile bootstrap over test samples", "level": CI_LEVEL, "n_boot": N_BOOT,
                           "seed": BOOT_SEED, "stratified": metric == "auc"},
                    "delong": ("two-sided DeLong test of pooled AUCs vs the best complete method of the same "
                               "protocol and strategy" if metric == "auc" else None)},
        methods=methods,
        figures=figures,
    )


#: significant digits of every float in ``leaderboard.json``: what a published number promises. Test statistics
#: (DeLong z and p, bootstrap bounds) differ between CPU vendors in the last bits of a double (BLAS and libm
#: kernels sum in other orders), so the published copy carries fewer digits than a double and the publish check
#: compares what is promised, not the rounding noise of one machine.
PUBLISHED_DIGITS = 6


def published_precision(obj: Any, digits: int = PUBLISHED_DIGITS) -> Any:
    """``obj`` with every float rounded to ``digits`` significant digits (recursively; ints, bools, str kept)."""
    if isinstance(obj, float):  # NaN / inf are published as null (strict JSON)
        return float(f"{obj:.{digits}g}") if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: published_precision(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [published_precision(v, digits) for v in obj]
    return obj


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
        if pre.get("image_encoder") == "shared":
            notes.append(f"one image encoder shared by the pairs (pretrained with {pre.get('anchor', 'mlp')}, then fixed "
                         "while the other tabular encoders align to it)")
    trainable = budget.get("finetune", {}).get("trainable", {})
    if trainable.get("warm_start") == "frozen":
        notes.append("trainable runs start from the frozen run's fusion head of the same seed (LP-FT)")
    if trainable.get("max_steps_per_epoch"):
        notes.append(f"trainable: {trainable.get('max_epochs')} epoch(s) of at most {trainable['max_steps_per_epoch']} steps")
    return ("; budget settings: " + "; ".join(notes)) if notes else ""


def _describe_plugins(plugins: dict) -> str:
    """Where every plug-in of the table came from: distribution, version and source hash."""
    if not plugins:
        return "- **Plug-ins**: not recorded (runs made before fingerprints)"
    parts = []
    for (kind, name), p in sorted(plugins.items()):
        where = f"{p.get('distribution') or 'not installed as a distribution'} {p.get('version') or ''}".strip()
        parts.append(f"{kind} `{name}` ({where}; `{p.get('module')}` source `{p.get('source')}`)")
    return "- **Plug-ins**: " + "; ".join(parts)


def _describe_search(search: dict) -> str:
    if not search:
        return "none"
    backend = {"optuna": "Optuna", "ray": "Ray Tune (OptunaSearch)"}.get(search.get("backend", "optuna"), search.get("backend"))
    if "n_configs" not in search and "frozen_n_configs" not in search:  # results made before equal searches
        parts = [f"frozen: {search.get('frozen_n_trials', search.get('n_trials', 1))} {backend} trial(s) over lr "
                 f"{search.get('lr')}"]
        if search.get("fusion_params"):
            parts[0] += f" (+ {', '.join(search['fusion_params'])} where a fusion declares it)"
        if "trainable_lr" in search or "trainable_n_trials" in search:
            n = search.get("trainable_n_trials", search.get("n_trials", 1))
            lr = search.get("trainable_lr", search.get("lr"))
            parts.append(f"trainable: {n} trial(s) over lr {lr}" if n > 1 else f"trainable: lr fixed at {lr[0]} (no search)")
        pruner = search.get("pruner")
        if pruner and pruner != "none":
            parts.append(f"pruner {pruner}")
        return "; ".join(parts) + "; grid when the space fits, else seeded TPE; validation split, seed 2022"
    n = search.get("frozen_n_configs", search.get("n_configs"))
    wd = search.get("weight_decay")
    parts = [f"frozen: {n} distinct configurations per method ({backend}), every lr of {search.get('lr')}"
             + (f" × weight decay {wd}" if wd else "")
             + (f", + {', '.join(search['fusion_params'])} drawn on top where a fusion declares it"
                if search.get("fusion_params") else "")]
    tn = search.get("trainable_n_configs", 1)
    tlr = search.get("trainable_lr", search.get("lr"))
    parts.append(f"trainable: {tn} configurations over lr {tlr}" if tn > 1 else f"trainable: lr fixed at {tlr[0]} (no search)")
    pruner = search.get("pruner", "none")
    parts.append("no pruning" if pruner == "none" else f"pruner {pruner}")
    return ("; ".join(parts) + "; each configuration once, the same for every method (equal budgets); best by the "
            "validation metric, seed 2022")


def suite_metadata(suite_dir: Path, reports: list | None = None) -> dict:
    path = suite_dir / "suite.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    reports = load_reports(suite_dir) if reports is None else reports
    vals = {(r.spec.protocol, r.spec.tabular_encoder, r.spec.fusion, r.spec.strategy, r.spec.seed): r.val.get("value")
            for r in reports}
    probes, pre, changes, plugins = {}, {}, {}, {}
    offsets = []  # the trained runs' logit shift taken off (None: older code)
    for r in reports:
        meta["last_run"] = max(meta.get("last_run", ""), str(r.created)[:10])
        if r.training.get("probes"):
            probes[(r.spec.tabular_encoder, r.spec.protocol)] = r.training["probes"]
        p = r.training.get("pretraining")
        if p and r.training.get("kind", "fusion") != "ceiling":
            pre.setdefault(r.spec.tabular_encoder, p)
        c = r.training.get("encoder_change")
        if c:
            frozen = vals.get((r.spec.protocol, r.spec.tabular_encoder, r.spec.fusion, "frozen", r.spec.seed))
            delta = None if frozen is None or r.val.get("value") is None else r.val["value"] - frozen
            changes.setdefault(r.spec.tabular_encoder, []).append((c["image_relative_l2"], c["tabular_relative_l2"], delta))
        if "epochs_run" in r.training:
            offsets.append(r.training.get("logit_offset_removed"))
        for kind, ident in (r.fingerprint or {}).get("plugins", {}).items():
            if isinstance(ident, dict) and ident.get("name"):
                plugins.setdefault((kind, ident["name"]), ident)
    meta["probes"] = probes
    meta["pretraining"] = pre
    meta["logit_offsets"] = offsets
    meta["plugins"] = plugins
    meta["encoder_change"] = {
        # a single-modality head's other encoder is never run (None): left out of that encoder's median
        tab: {"image": _median_given([c[0] for c in cs]), "tabular": _median_given([c[1] for c in cs]),
              "delta_val": ("–" if all(c[2] is None for c in cs) else
                            f"{np.mean([c[2] for c in cs if c[2] is not None]) * 100:+.2f}"), "n": len(cs)}
        for tab, cs in changes.items()}
    meta["latency_runs"] = meta.get("budget_config", {}).get("latency", {}).get("runs", "n")
    return meta


def _median_given(values: list) -> float:
    given = [v for v in values if v is not None]
    return float(np.median(given)) if given else float("nan")


def write_leaderboard(suite_dir: Path, *, expected_seeds: list[int] | None = None, publish_to: Path | None = None,
                      render_to: Path | None = None, run_ids: list[str] | None = None,
                      metrics: Sequence[str] = ()) -> Path:
    """Write ``results.csv``, ``leaderboard.md``, ``leaderboard.json`` and the figures next to the runs.

    ``render_to``: also write them there under their published names (``<suite>.md/.csv/.json``, figures).
    ``publish_to`` (a ``leaderboards/`` folder): copy the compact results to ``<publish_to>/results/<suite>/``
    and render the published files from that copy (:mod:`bench.publish`), so they are reproducible from
    what is committed. ``run_ids``: only these runs (one invocation's plan), whatever else is in the folder.
    ``metrics``: registered metrics to report beside the suite's own ``metrics:`` (*Other metrics*).
    Unreadable run files are named and set aside first; the outputs are written together or not at all
    (:func:`bench.results.rendering`)."""
    from bench.results import rendering, rendering_active

    if run_ids is not None or not rendering_active():
        with rendering(suite_dir, run_ids):
            return write_leaderboard(suite_dir, expected_seeds=expected_seeds, publish_to=publish_to,
                                     render_to=render_to, metrics=metrics)
    from bench.plots import PLOT_COLUMNS, pareto_png
    from bench.robustness import render_robustness, robustness_frame

    reports = load_reports(suite_dir)  # read once; the tables below are all views of these reports
    df = results_frame(suite_dir, reports)
    meta = suite_metadata(suite_dir, reports)
    expected = expected_seeds or meta.get("seeds")
    extra = list(dict.fromkeys([*meta.get("metrics", []), *metrics]))  # the suite's, then the command line's
    df = add_metric_columns(df, suite_dir, extra)
    csv = df.to_csv(index=False)
    atomic_write_text(suite_dir / "results.csv", csv)
    name = meta.get("suite", suite_dir.name)
    rob = robustness_frame(reports)
    headline = df[~df["protocol"].str.contains("@train=", regex=False)] if len(rob) else df
    headline = headline if len(headline) else df
    n_expected = len(expected) if expected else int(headline.groupby(METHOD_KEYS)["seed"].nunique().max())
    stats = method_statistics(headline, suite_dir, n_expected)
    metric = headline["metric"].iloc[0]
    metric_label = label_of(metric)
    plots: dict[str, bytes] = {f"{name}-pareto.png": pareto_png(stats[PLOT_COLUMNS], f"{name}: test {metric_label} vs cost",
                                                                metric_label)}
    failures = load_failures(suite_dir)
    meta["failed_cells"] = {(f["spec"]["fusion"], f["spec"]["tabular_encoder"], f["spec"]["strategy"], f["spec"]["protocol"])
                            for f in failures}
    drops = drop_statistics(headline[role_of(headline) != "ceiling"], suite_dir) \
        if {"complete", "incomplete-tabular"} <= set(headline["protocol"]) else None
    md = render_markdown(headline, meta, expected, statistics=stats, pareto_png=f"{name}-pareto.png", drops=drops)
    if extra:
        md += "\n".join(["", *render_other_metrics(headline, extra)])
    if failures:
        rows = [[f["spec"]["protocol"], f["spec"]["fusion"], f["spec"]["tabular_encoder"], f["spec"]["strategy"],
                 str(f["spec"]["seed"]), f["reason"][:160]] for f in failures]
        md += "\n".join(["", "## Failed runs", "",
                         "‡ These runs raised and were recorded as failed (the rest of the suite completed); a rerun "
                         "retries them. Cells with some failed seeds show only the finished ones, flagged †.", "",
                         tabulate(rows, headers=["Protocol", "Fusion", "Tabular encoder", "Strategy", "Seed", "Reason"],
                                  tablefmt="github", disable_numparse=True), ""])
    if len(rob):
        rob_md, rob_plots = render_robustness(rob, meta, expected, name)
        md += "\n" + rob_md
        plots.update(rob_plots)
        rob_csv = rob.to_csv(index=False)
        atomic_write_text(suite_dir / "robustness.csv", rob_csv)
    lb = leaderboard_json(headline, stats, meta, expected, sorted(plots))
    if extra:
        lb["other_metrics"] = other_metrics_json(headline, extra)
    lb_json = json.dumps(published_precision(lb), indent=2, allow_nan=False) + "\n"
    atomic_write_text(suite_dir / "leaderboard.md", md + "\n")
    atomic_write_text(suite_dir / "leaderboard.json", lb_json)
    for fname, png in plots.items():
        atomic_write_bytes(suite_dir / fname, png)
    if render_to is not None:  # the same files under their published names
        texts = {f"{name}.md": md + "\n", f"{name}.csv": csv, f"{name}.json": lb_json}
        if len(rob):
            texts[f"{name}-robustness.csv"] = rob_csv
        for fname, data in {**{k: v.encode() for k, v in texts.items()}, **plots}.items():
            atomic_write_bytes(render_to / fname, data)
    if publish_to is not None:
        from bench.publish import export_compact, render_from_compact

        # what `nox -s leaderboard` re-renders from: this invocation's runs only
        export_compact(suite_dir, publish_to / "results" / name, run_ids=run_ids)
        render_from_compact(publish_to / "results" / name, publish_to)
    return suite_dir / "leaderboard.md"
