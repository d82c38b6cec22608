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
from bench.results import (
    RESULT_COLUMNS,
    RunSpec,
    atomic_write_bytes,
    atomic_write_text,
    load_failures,
    load_reports,
)

#: bootstrap settings of the Statistics table (percentile interval, Efron)
N_BOOT = 2000
BOOT_SEED = 0
CI_LEVEL = 0.95
#: bump when a field of leaderboard.json changes meaning or goes away
JSON_SCHEMA_VERSION = 1

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


def _fmt_params(n) -> str:
    return "–" if n is None or pd.isna(n) else f"{n / 1e6:.2f}"


def _fmt_gmac(g) -> str:
    if g is None or pd.isna(g):
        return "–"
    return f"{g:.4f}" if g < 0.1 else f"{g:.3f}"


def render_markdown(df: pd.DataFrame, suite_meta: dict, expected_seeds: list[int] | None = None, *,
                    statistics: pd.DataFrame | None = None, pareto_png: str | None = None) -> str:
    """The leaderboard page; ``statistics`` (from :func:`method_statistics`) adds the Statistics
    section and ``pareto_png`` a link to the cost–accuracy figure."""
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
                    failed = (fusion, tab, s, p) in suite_meta.get("failed_cells", set())
                    row.append("failed‡" if failed else "missing")
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
    shown = set(zip(df["fusion"], df["tabular_encoder"], strict=True))
    for fusion, tab in sorted({(c[0], c[1]) for c in suite_meta.get("failed_cells", set())} - shown):
        row = [fusion, tab]  # a method none of whose runs finished: every cell failed or missing
        for s in strategies:
            row += ["failed‡" if (fusion, tab, s, p) in suite_meta["failed_cells"] else "missing" for p in protocols]
            row += ["–"] if has_drop else []
        rows.append(row + ["–"] * 6)
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
        f"- **Device** (latency at batch 1, {suite_meta.get('latency_runs', 'n')} runs after warm-up): {device}",
        f"- **bench** {env.get('bench_version', df['bench_version'].iloc[0])} @ commit `{env.get('git_commit', df['git_commit'].iloc[0])}`;"
        f" torch {env.get('libraries', {}).get('torch', '?')}; last run finished {suite_meta.get('last_run', '?')}",
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
    if statistics is not None and len(statistics):
        lines += render_statistics(statistics, metric, n_expected)
    if pareto_png:
        lines += ["## Cost vs accuracy", "",
                  f"Test {metric_label} (mean ± std over seeds) against total GMac and against latency p50, one point per "
                  "method; the dashed step line is the Pareto front (no other method has both a higher metric and a "
                  "lower cost), its methods ringed. Hollow markers: fewer seeds than asked for, kept off the front.",
                  "", f"![{metric_label} vs GMac and latency, with Pareto fronts]({pareto_png})", ""]
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


def method_statistics(df: pd.DataFrame, suite_dir: Path, n_expected: int, *, n_boot: int = N_BOOT,
                      seed: int = BOOT_SEED) -> pd.DataFrame:
    """One row per method (protocol × strategy × fusion × tabular encoder): seed aggregates, costs and
    the statistics of the method's *pooled* test predictions.

    **Pooling.** The seeds' test predictions of a method are pooled into one predictor by averaging
    each test sample's predicted probability over the seeds (samples matched by id; see
    :func:`bench.metrics.pool_seed_predictions`). The 95% CI is a percentile bootstrap (Efron) of that
    predictor's metric over test samples (class-stratified for binary tasks, ``n_boot`` resamples,
    fixed ``seed``), and DeLong's test (DeLong et al. 1988; Sun & Xu 2014) compares its AUC with the
    pooled AUC of the best method of the same protocol and strategy on the same test samples. We pool
    rather than test each seed and report the median p because DeLong's test needs exactly one score
    per sample and predictor, which averaging provides while keeping the two methods paired on the
    same samples and using every seed in a single valid test; a median of per-seed p-values is not a
    p-value of any test (its level is unknown) and depends on an arbitrary pairing of seed *i* of one
    method with seed *i* of the other. The pooled predictor is the seed ensemble, so its metric can
    differ from the mean over seeds of the main table, and its CI and p describe test-sample variability
    for fixed trained models — training-seed variability is the main table's std.

    **Best.** The reference is the method with the highest pooled metric among the *complete* methods
    (all asked-for seeds finished) of the same protocol and strategy. Methods with fewer seeds still get
    statistics over the seeds they have, flagged ``complete=False``; DeLong is binary-only (ROC AUC) and
    is left empty for multiclass tasks.
    """
    metric = df["metric"].iloc[0]
    task = "binary" if metric == "auc" else "multiclass"
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for key, g in df.groupby(METHOD_KEYS, sort=True):
        g = g.sort_values("seed")
        first = g.iloc[0]
        m, sd, k = mean_std(g["test_value"].to_numpy())
        vm, vsd, _ = mean_std(g["val_value"].to_numpy(dtype=float))
        row: dict[str, Any] = dict(zip(METHOD_KEYS, key, strict=True))
        row.update(seeds=[int(x) for x in g["seed"]], n_seeds=k, n_expected=n_expected, complete=k >= n_expected,
                   mean=m, std=sd, test_values=[float(v) for v in g["test_value"]], val_mean=vm, val_std=vsd,
                   params_fusion=_num(first.params_fusion), params_total=_num(first.params_total),
                   gmac_fusion=_num(first.gmac_fusion), gmac_total=_num(first.gmac_total),
                   latency_ms_p50=_num(first.latency_ms_p50), latency_ms_p90=_num(first.latency_ms_p90),
                   fusion_latency_ms_p50=_num(first.fusion_latency_ms_p50),
                   pooled=np.nan, ci_low=np.nan, ci_high=np.nan, n_test=None, reference=None,
                   delong_z=np.nan, delong_p=np.nan, note="")
        preds = [_load_predictions(suite_dir, r) for r in g.itertuples()]
        if any(p is None for p in preds):
            row["note"] = "predictions.npz missing for a seed"
        else:
            try:
                ids, y, scores = pool_seed_predictions(task, [(p["test_ids"], p["test_y"], p["test_logits"]) for p in preds])
                ci = bootstrap_metric_ci(task, y, scores, n_boot=n_boot, alpha=1 - CI_LEVEL, seed=seed)
            except MetricError as e:
                row["note"] = str(e)
            else:
                pooled[key] = (ids, y, scores)
                row.update(pooled=ci.estimate, ci_low=ci.lo, ci_high=ci.hi, n_test=int(y.size))
        rows.append(row)
    stats = pd.DataFrame(rows)
    if task != "binary":
        return stats
    for (_proto, _strategy), g in stats.groupby(["protocol", "strategy"], sort=False):
        cand = g[g["complete"] & g["pooled"].notna()]
        if not len(cand):
            continue
        best = cand.loc[cand["pooled"].idxmax()]
        bkey = tuple(best[k] for k in METHOD_KEYS)
        b_ids, b_y, b_s = pooled[bkey]
        ref = f"{best.fusion} · {best.tabular_encoder}"
        for i, r in g.iterrows():
            key = tuple(r[k] for k in METHOD_KEYS)
            if key not in pooled:
                continue
            stats.at[i, "reference"] = ref
            if key == bkey:
                continue
            ids, y, s = pooled[key]
            if not np.array_equal(ids, b_ids):
                stats.at[i, "note"] = "tested on other samples than the reference; no DeLong test"
                continue
            try:
                res = delong_test(y, s, b_s)
            except MetricError as e:  # e.g. a test split with a single positive: no variance estimate
                stats.at[i, "note"] = str(e)
                continue
            stats.at[i, "delong_z"], stats.at[i, "delong_p"] = res.z, res.p
    return stats


def _fmt_p(p: float) -> str:
    if p is None or pd.isna(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def render_statistics(stats: pd.DataFrame, metric: str, n_expected: int) -> list[str]:
    """Markdown lines of the Statistics section (see :func:`method_statistics` for the method)."""
    label = {"auc": "AUC", "acc": "top-1 ACC"}.get(metric, metric)
    binary = metric == "auc"
    headers = ["Protocol", "Strategy", "Fusion", "Tabular encoder", "Seeds", f"Pooled {label} (%)",
               f"{CI_LEVEL:.0%} CI (pooled)", "DeLong p vs best"]
    rows, flagged, notes = [], False, []
    for r in stats.sort_values(METHOD_KEYS).itertuples():
        seeds = f"{r.n_seeds}/{n_expected}"
        if not r.complete:
            seeds += "†"
            flagged = True
        if pd.isna(r.pooled):
            value = ci = "–"
        else:
            value = f"{r.pooled * 100:.2f}"
            ci = f"[{r.ci_low * 100:.2f}, {r.ci_high * 100:.2f}]"
        if not binary:
            p = "–"
        elif r.reference is not None and pd.isna(r.delong_p) and not r.note:
            p = "ref (best)"
            value = f"**{value}**"
        else:
            p = _fmt_p(r.delong_p)
        if r.note:
            notes.append(f"`{r.protocol} · {r.strategy} · {r.fusion} · {r.tabular_encoder}`: {r.note}")
        rows.append([r.protocol, r.strategy, r.fusion, r.tabular_encoder, seeds, value, ci, p])
    what = ("DeLong p vs best: two-sided DeLong test (DeLong et al. 1988, fast midrank algorithm of Sun & Xu 2014) "
            "of the method's pooled AUC against the pooled AUC of the best complete method of the same protocol and "
            "strategy (*ref*), on the same test samples; unadjusted for multiple comparisons."
            if binary else
            f"DeLong p: – (DeLong's test compares ROC AUCs of a binary task; the metric here is {label}).")
    lines = ["## Statistics (pooled seeds)", "",
             "Pooled = one predictor per method: each test sample's predicted probability averaged over the method's "
             f"seeds (the seed ensemble; samples matched by id). Pooled {label} is that predictor's test metric, so it "
             "can differ from the mean over seeds above. "
             f"{CI_LEVEL:.0%} CI: percentile bootstrap (Efron) over test samples, {int(N_BOOT)} resamples"
             + (", stratified by class" if binary else "") + f", seed {BOOT_SEED}. " + what +
             " CI and p describe test-sample variability for fixed trained models; seed-to-seed variability is the "
             "std of the main table.", "",
             tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    if flagged:
        lines += ["† fewer finished seeds than the suite asked for: pooled over the seeds that finished, never used "
                  "as the reference; not comparable.", ""]
    if notes:
        lines += ["Not computed: " + "; ".join(notes) + ".", ""]
    return lines


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


class LeaderboardJSON(TypedDict):
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
            seeds=list(r.seeds), n_seeds=int(r.n_seeds), n_expected=int(r.n_expected), complete=bool(r.complete),
            test_mean=_num(r.mean), test_std=_num(r.std), test_values=list(r.test_values),
            val_mean=_num(r.val_mean), val_std=_num(r.val_std),
            pooled=_num(r.pooled), ci_low=_num(r.ci_low), ci_high=_num(r.ci_high),
            n_test=None if r.n_test is None or pd.isna(r.n_test) else int(r.n_test),
            delong_reference=r.reference, delong_z=_num(r.delong_z) if np.isfinite(r.delong_z) else None,
            delong_p=_num(r.delong_p),
            params_fusion=r.params_fusion, params_total=r.params_total, gmac_fusion=r.gmac_fusion,
            gmac_total=r.gmac_total, latency_ms_p50=r.latency_ms_p50, latency_ms_p90=r.latency_ms_p90,
            fusion_latency_ms_p50=r.fusion_latency_ms_p50))
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
        statistics={"pooling": "per-sample predicted probability averaged over seeds (seed ensemble)",
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
    trainable = budget.get("finetune", {}).get("trainable", {})
    if trainable.get("warm_start") == "frozen":
        notes.append("trainable runs start from the frozen run's fusion head of the same seed (LP-FT)")
    if trainable.get("max_steps_per_epoch"):
        notes.append(f"trainable: {trainable.get('max_epochs')} epoch(s) of at most {trainable['max_steps_per_epoch']} steps")
    return ("; budget settings: " + "; ".join(notes)) if notes else ""


def _describe_search(search: dict) -> str:
    if not search:
        return "none"
    backend = {"optuna": "Optuna", "ray": "Ray Tune (OptunaSearch)"}.get(search.get("backend", "optuna"), search.get("backend"))
    parts = [f"frozen: {search.get('frozen_n_trials', search.get('n_trials', 1))} {backend} trial(s) over lr {search.get('lr')}"]
    if search.get("fusion_params"):
        parts[0] += f" (+ {', '.join(search['fusion_params'])} where a fusion declares it)"
    if "trainable_lr" in search or "trainable_n_trials" in search:
        n = search.get("trainable_n_trials", search.get("n_trials", 1))
        lr = search.get("trainable_lr", search.get("lr"))
        parts.append(f"trainable: {n} trial(s) over lr {lr}" if n > 1 else f"trainable: lr fixed at {lr[0]} (no search)")
    pruner = search.get("pruner")
    if pruner and pruner != "none":
        parts.append(f"pruner {pruner}")
    return "; ".join(parts) + "; grid when the space fits, else seeded TPE; validation split, seed 2022, same budget for every method"


def suite_metadata(suite_dir: Path, reports: list | None = None) -> dict:
    path = suite_dir / "suite.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    probes = {}
    for r in load_reports(suite_dir) if reports is None else reports:
        meta["last_run"] = max(meta.get("last_run", ""), str(r.created)[:10])
        p = r.training.get("probes")
        if p:
            probes[(r.spec.tabular_encoder, r.spec.protocol)] = p
    meta["probes"] = probes
    meta["latency_runs"] = meta.get("budget_config", {}).get("latency", {}).get("runs", "n")
    return meta


def write_leaderboard(suite_dir: Path, *, expected_seeds: list[int] | None = None, publish_to: Path | None = None,
                      render_to: Path | None = None, run_ids: list[str] | None = None) -> Path:
    """Write ``results.csv``, ``leaderboard.md``, ``leaderboard.json`` and the figures next to the runs.

    ``render_to``: also write them there under their published names (``<suite>.md/.csv/.json``, figures).
    ``publish_to`` (a ``leaderboards/`` folder): copy the compact results to ``<publish_to>/results/<suite>/``
    and render the published files from that copy (:mod:`bench.publish`), so they are reproducible from
    what is committed. ``run_ids``: only these runs (one invocation's plan), whatever else is in the folder.
    Unreadable run files are named and set aside first; the outputs are written together or not at all
    (:func:`bench.results.rendering`)."""
    from bench.results import rendering, rendering_active

    if run_ids is not None or not rendering_active():
        with rendering(suite_dir, run_ids):
            return write_leaderboard(suite_dir, expected_seeds=expected_seeds, publish_to=publish_to,
                                     render_to=render_to)
    from bench.plots import PLOT_COLUMNS, pareto_png
    from bench.robustness import render_robustness, robustness_frame

    reports = load_reports(suite_dir)  # read once; the tables below are all views of these reports
    df = results_frame(suite_dir, reports)
    meta = suite_metadata(suite_dir, reports)
    expected = expected_seeds or meta.get("seeds")
    csv = df.to_csv(index=False)
    atomic_write_text(suite_dir / "results.csv", csv)
    name = meta.get("suite", suite_dir.name)
    rob = robustness_frame(reports)
    headline = df[~df["protocol"].str.contains("@train=", regex=False)] if len(rob) else df
    headline = headline if len(headline) else df
    n_expected = len(expected) if expected else int(headline.groupby(METHOD_KEYS)["seed"].nunique().max())
    stats = method_statistics(headline, suite_dir, n_expected)
    metric = headline["metric"].iloc[0]
    metric_label = {"auc": "AUC (%)", "acc": "top-1 ACC (%)"}.get(metric, metric)
    plots: dict[str, bytes] = {f"{name}-pareto.png": pareto_png(stats[PLOT_COLUMNS], f"{name}: test {metric_label} vs cost",
                                                                metric_label)}
    failures = load_failures(suite_dir)
    meta["failed_cells"] = {(f["spec"]["fusion"], f["spec"]["tabular_encoder"], f["spec"]["strategy"], f["spec"]["protocol"])
                            for f in failures}
    md = render_markdown(headline, meta, expected, statistics=stats, pareto_png=f"{name}-pareto.png")
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
    lb_json = json.dumps(published_precision(leaderboard_json(headline, stats, meta, expected, sorted(plots))),
                         indent=2, allow_nan=False) + "\n"
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

        export_compact(suite_dir, publish_to / "results" / name)  # what `nox -s leaderboard` re-renders from
        render_from_compact(publish_to / "results" / name, publish_to)
    return suite_dir / "leaderboard.md"
