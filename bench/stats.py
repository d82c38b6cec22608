"""Statistics for leaderboards beyond :mod:`bench.metrics`: operating-point metrics at a threshold chosen
on validation, Holm's adjustment and ties with the best method, paired bootstrap tests, and bootstrap
intervals that include the variance over training seeds.

Everything here is a pure function of its arguments (plus an integer ``seed`` for the bootstraps) and
is re-exported by :mod:`bench.metrics`. Nothing here is used by the existing leaderboard, so published
tables do not change until a caller opts in.

Conventions
-----------
* Binary scores are logits, shape ``[N]`` or ``[N, 1]``; the probability is ``sigmoid(logit)`` and a
  sample is predicted positive iff ``logit >= threshold``.
* Multiclass scores are ``[N, C]`` logits; the metric is top-1 accuracy (``argmax``, first index on ties).
* Binary bootstraps resample each class separately (as many positives and negatives as the test set
  holds, so the AUC is always defined); multiclass bootstraps resample all samples together.
* **Published numbers**: the bootstraps are deterministic for a given ``seed`` on one machine, but
  floating-point sums may differ in the last bits across CPUs, BLAS builds and NumPy versions. Callers
  that write values into published tables or JSON round them to 6 significant digits with
  :func:`round_sig` so that re-renders are identical across platforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
from scipy.special import expit
from sklearn.metrics import average_precision_score

from bench.metrics import (
    BootstrapCI,
    MetricError,
    Task,
    _binary_scores,
    _check_binary_labels,
    _chunks,
    _finite,
    _labels_1d,
    _resample_counts,
    auc,
)

__all__ = [
    "ECE_BINS",
    "PUBLISH_DIGITS",
    "BootstrapDiff",
    "binary_metrics",
    "choose_threshold",
    "expected_calibration_error",
    "holm",
    "paired_bootstrap_p",
    "paired_seed_sample_bootstrap_diff_ci",
    "round_sig",
    "seed_sample_bootstrap_ci",
    "tied_with_best",
]

#: number of equal-width probability bins of :func:`expected_calibration_error`
ECE_BINS = 10
#: significant digits that published values are rounded to (see :func:`round_sig`)
PUBLISH_DIGITS = 6

K = TypeVar("K", bound=Hashable)


class BootstrapDiff(NamedTuple):
    """Bootstrap of a difference ``b - a``: estimate, percentile interval at ``level`` and two-sided ``p``."""

    estimate: float
    lo: float
    hi: float
    p: float
    level: float
    n_boot: int


def round_sig(x: float, digits: int = PUBLISH_DIGITS) -> float:
    """``x`` rounded to ``digits`` significant digits (correctly rounded, so platform-independent).

    NaN and ±inf pass through. Use it on every value that goes into a published table or JSON.
    """
    x = float(x)
    if not math.isfinite(x) or x == 0.0:
        return x
    return float(f"{x:.{digits - 1}e}")


# --------------------------------------------------------------------------------------------------
# input checks


def _check_boot(n_boot: int, alpha: float | None = None) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise MetricError(f"n_boot must be an integer >= 1, got {n_boot}")
    if alpha is not None and not 0 < alpha < 1:
        raise MetricError(f"alpha must lie in (0, 1), got {alpha}")


def _binary_y(y_true: Any, what: str) -> np.ndarray:
    y = _labels_1d(y_true)
    _check_binary_labels(y)
    present = np.unique(y)
    if present.size < 2:
        raise MetricError(
            f"{what} is undefined: y_true contains only class {int(present[0])} "
            f"({y.size} sample(s)); the split needs both classes"
        )
    return y


def _seed_rows(task: Task, y: np.ndarray, per_seed: Sequence[Any], name: str) -> np.ndarray:
    """Per-seed scores as ``[S, N]`` (binary logits) or per-seed correctness as ``[S, N]`` (multiclass)."""
    if task == "binary" and isinstance(per_seed, np.ndarray) and per_seed.ndim == 1:
        raise MetricError(f"{name} must be a list with one score array per seed, got one flat array")
    if len(per_seed) == 0:
        raise MetricError(f"{name} is empty: need the test scores of at least one seed")
    if task == "binary":
        return np.stack([_binary_scores(y, s, name=f"{name}[{i}]") for i, s in enumerate(per_seed)])
    if task == "multiclass":
        rows = []
        for i, s in enumerate(per_seed):
            a = np.asarray(s, dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != y.shape[0] or a.shape[1] < 2:
                raise MetricError(f"multiclass {name}[{i}] must have shape [{y.shape[0]}, C] with C >= 2, got {a.shape}")
            _finite(a, f"{name}[{i}]")
            if y.min() < 0 or y.max() >= a.shape[1]:
                raise MetricError(f"labels must lie in [0, {a.shape[1]}), found [{y.min()}, {y.max()}]")
            rows.append(np.argmax(a, axis=1) == y)
        return np.stack(rows).astype(np.float64)
    raise MetricError(f"unknown task {task!r}; expected 'binary' or 'multiclass'")


# --------------------------------------------------------------------------------------------------
# operating point and metrics at a threshold


def choose_threshold(y_val: Any, scores_val: Any, rule: str = "youden") -> float:
    """Decision threshold on the logit scale, chosen on validation data.

    ``rule="youden"`` maximises Youden's J = sensitivity + specificity - 1 (Youden 1950, *Cancer* 3:32-35)
    over the distinct validation scores ``t``, a sample being predicted positive iff ``score >= t``.
    J is compared exactly (as the integer ``TP·N + TN·P``), and ties are broken towards the **smallest**
    such score, i.e. the most sensitive of the optimal operating points. The result is one of the
    validation scores. Constant scores give that constant (J = 0, every sample predicted positive).

    Raises :class:`MetricError` for an empty or single-class validation set, non-finite scores or an
    unknown rule.
    """
    if rule != "youden":
        raise MetricError(f"unknown threshold rule {rule!r}; expected 'youden'")
    y = _binary_y(y_val, "Youden's threshold")
    s = _binary_scores(y, scores_val, name="scores_val")
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    n_pos, n_neg = pos.size, neg.size
    cand = np.unique(s)  # ascending
    tp = n_pos - np.searchsorted(pos, cand, side="left")  # positives with score >= t
    tn = np.searchsorted(neg, cand, side="left")  # negatives with score < t
    j = tp.astype(np.int64) * n_neg + tn.astype(np.int64) * n_pos  # = (J + 1) · P · N
    return float(cand[int(np.argmax(j))])  # argmax: first, i.e. smallest, maximiser


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of positive-class probabilities (Naeini, Cooper & Hauskrecht 2015).

    ``n_bins`` equal-width bins on ``[0, 1]``: bin ``k = min(floor(n_bins · p), n_bins - 1)`` (so bin
    ``k`` is ``[k/n_bins, (k+1)/n_bins)`` and the last bin includes 1). ECE =
    ``sum_k (n_k / N) · |mean(y in bin k) - mean(p in bin k)|`` over non-empty bins. This is the
    reliability of the positive-class probability, not the top-label ("confidence") ECE.
    """
    y = _labels_1d(y_true)
    _check_binary_labels(y)
    p = np.asarray(prob, dtype=np.float64).ravel()
    if p.shape[0] != y.shape[0]:
        raise MetricError(f"prob has {p.shape[0]} samples but y_true has {y.shape[0]}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise MetricError("probabilities must be finite and lie in [0, 1]")
    if n_bins < 1:
        raise MetricError(f"n_bins must be >= 1, got {n_bins}")
    k = np.minimum(np.floor(p * n_bins).astype(np.int64), n_bins - 1)
    gap = np.abs(np.bincount(k, weights=y.astype(np.float64), minlength=n_bins) - np.bincount(k, weights=p, minlength=n_bins))
    return float(np.sum(gap) / y.size)  # sum_k n_k/N · |sum_y/n_k - sum_p/n_k| = sum_k |sum_y - sum_p| / N


def binary_metrics(y_test: Any, logits_test: Any, threshold: float) -> dict[str, Any]:
    """Threshold-free and operating-point metrics of binary logits on a test set.

    Threshold-free: ``auc`` (ROC AUC), ``auprc`` (average precision, scikit-learn's
    ``average_precision_score``: step-wise area, no interpolation), ``brier`` (mean squared error of
    ``sigmoid(logit)``; Brier 1950) and ``ece`` (:func:`expected_calibration_error`, 10 equal-width bins).

    At ``threshold`` (positive iff ``logit >= threshold``; typically from :func:`choose_threshold` on
    validation): ``accuracy``, ``sensitivity`` (TP/P), ``specificity`` (TN/N), ``balanced_accuracy``
    (their mean), ``ppv`` (TP/(TP+FP)) and ``npv`` (TN/(TN+FN)); ``ppv``/``npv`` are NaN when no sample is
    predicted positive/negative. Also ``threshold`` itself and ``predicts_single_class`` (bool: every
    test prediction is on the same side of the threshold). All other values are plain floats.

    Raises :class:`MetricError` on a single-class test set (AUC and sensitivity/specificity undefined),
    non-finite logits or a NaN threshold.
    """
    t = float(threshold)
    if math.isnan(t):
        raise MetricError("threshold is NaN")
    y = _binary_y(y_test, "binary_metrics")
    s = _binary_scores(y, logits_test, name="logits_test")
    p = expit(s)
    pred = s >= t
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    fp = int(np.sum(pred & ~pos))
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    return {
        "auc": auc(y, s),
        "auprc": float(average_precision_score(y, s)),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p),
        "accuracy": (tp + tn) / y.size,
        "sensitivity": float(sens),
        "specificity": float(spec),
        "balanced_accuracy": float((sens + spec) / 2),
        "ppv": tp / (tp + fp) if tp + fp else math.nan,
        "npv": tn / (tn + fn) if tn + fn else math.nan,
        "threshold": t,
        "predicts_single_class": bool(tp + fp == 0 or tn + fn == 0),
    }


def operating_point(y_val: Any, val_logits: Any, y_test: Any, test_logits: Any) -> dict:
    """Youden's J threshold on the validation logits and the binary metrics it gives on test
    (:func:`binary_metrics`): a fixed 0.5 is no decision rule at a 4% prevalence. A degenerate
    validation split gives ``{"rule", "error"}`` instead of an invented threshold."""
    try:
        thr = choose_threshold(np.asarray(y_val).ravel(), np.asarray(val_logits, dtype=np.float64).ravel(), rule="youden")
        out = binary_metrics(np.asarray(y_test).ravel(), np.asarray(test_logits, dtype=np.float64).ravel(), thr)
    except Exception as exc:
        return {"rule": "youden", "error": str(exc)}
    return {"rule": "youden (validation)", **{k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
                                             for k, v in out.items()}}


def decision_metrics(task: Task, y_val: Any, val_logits: Any, y_test: Any, test_logits: Any) -> dict:
    """What a run's test dict adds to :func:`bench.metrics.evaluate` at the harness's decision rule.

    Binary: ``acc`` and ``balanced_acc`` at the threshold chosen on validation (Youden's J), and that
    ``at_threshold`` operating point; multiclass: nothing (``evaluate`` decides by argmax itself).
    """
    if task != "binary":
        return {}
    op = operating_point(y_val, val_logits, y_test, test_logits)
    if "error" in op:
        return {"at_threshold": op}
    return {"acc": op["accuracy"], "balanced_acc": op["balanced_accuracy"], "at_threshold": op}


# --------------------------------------------------------------------------------------------------
# multiple comparisons


def holm(pvalues: Any) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (Holm 1979, *Scand. J. Statist.* 6:65-70).

    With the ``m`` non-NaN p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``
    (monotone in ``p``, capped at 1); rejecting where ``p_adj < alpha`` controls the family-wise error
    rate at ``alpha``. NaN entries stay NaN and do not count towards ``m``. Returns a float array of the
    input's shape. Raises :class:`MetricError` for p-values outside ``[0, 1]``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    out = np.full(flat.shape, np.nan)
    ok = ~np.isnan(flat)
    v = flat[ok]
    if np.any((v < 0) | (v > 1)):
        raise MetricError(f"p-values must lie in [0, 1], got {v[(v < 0) | (v > 1)][:5].tolist()}")
    m = v.size
    if m:
        order = np.argsort(v, kind="stable")
        adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * v[order]))
        res = np.empty(m)
        res[order] = adj
        out[ok] = res
    return out.reshape(p.shape)


def tied_with_best(best: K, pvalues: Mapping[K, float], alpha: float = 0.05) -> set[K]:
    """Methods statistically tied with ``best``: ``best`` itself and every method whose Holm-adjusted
    p-value (:func:`holm`, family = all methods compared with ``best``) is ``>= alpha``.

    ``pvalues`` maps each *other* method of the family to the two-sided p of its comparison with
    ``best`` on the same test samples (e.g. ``delong_test(y, s_method, s_best).p`` for AUC, or
    :func:`paired_bootstrap_p` for another metric). A NaN p (test impossible) is left out of the
    family and the method is not marked tied. An entry for ``best`` itself is ignored.
    """
    if not 0 < alpha < 1:
        raise MetricError(f"alpha must lie in (0, 1), got {alpha}")
    keys = [k for k in pvalues if k != best]
    adj = holm([float(pvalues[k]) for k in keys])
    return {best} | {k for k, a in zip(keys, adj) if not np.isnan(a) and a >= alpha}


# --------------------------------------------------------------------------------------------------
# bootstrap machinery


def _pattern_counts(rng: np.random.Generator, strata: list[np.ndarray], bits: np.ndarray, b: int) -> np.ndarray:
    """Column sums ``[b, K]`` of 0/1 ``bits`` ``[N, K]`` over ``b`` resamples drawn with replacement within
    each stratum (index arrays). Exact and O(b · patterns): the counts of each distinct row of ``bits``
    in a resample of a stratum are multinomial with that stratum's pattern frequencies."""
    total = np.zeros((b, bits.shape[1]))
    for idx in strata:
        pats, cnt = np.unique(bits[idx], axis=0, return_counts=True)
        draws = rng.multinomial(idx.size, cnt / idx.size, size=b)  # [b, n_patterns]
        total += draws @ pats
    return total


def _strata(y: np.ndarray, stratify: bool) -> list[np.ndarray]:
    return [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(y.size)]


def _resample_counts_t(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """``[n, b]`` int32 multiplicities: the transpose of :func:`bench.metrics._resample_counts` for the
    same generator state (same draws), laid out so that the per-sample cumulative sums run over rows."""
    idx = rng.integers(0, n, size=(b, n))
    idx *= b
    idx += np.arange(b)[:, None]
    return np.bincount(idx.ravel(), minlength=n * b).reshape(n, b).astype(np.int32)


def _weighted_auc_rows(pos: np.ndarray, neg: np.ndarray, cp_t: np.ndarray, cn_t: np.ndarray) -> np.ndarray:
    """AUCs ``[b, S]`` of ``S`` predictors (scores ``pos`` ``[S, m]``, ``neg`` ``[S, n]``) on ``b`` shared
    class-stratified resamples given as multiplicities ``cp_t`` ``[m, b]`` and ``cn_t`` ``[n, b]``.

    The algorithm of :func:`bench.metrics._weighted_auc` (Mann-Whitney with ties counting one half)
    in exact integer arithmetic — twice the number of wins is an integer — so the values are identical
    to it; the cumulative sum over sorted negatives is done row by row, which NumPy vectorises over the
    resamples (a plain ``cumsum`` along either axis is several times slower)."""
    m, n = pos.shape[1], neg.shape[1]
    b = cp_t.shape[1]
    wide = np.int64 if 2 * m * n >= 2**31 else np.int32
    cum = np.zeros((n + 1, b), dtype=np.int32)
    out = np.empty((b, pos.shape[0]))
    for k in range(pos.shape[0]):
        order = np.argsort(neg[k], kind="stable")
        neg_sorted = neg[k][order]
        lo = np.searchsorted(neg_sorted, pos[k], side="left")
        hi = np.searchsorted(neg_sorted, pos[k], side="right")
        g = cn_t[order]
        for i in range(n):
            np.add(cum[i], g[i], out=cum[i + 1])
        twice = cum[lo].astype(wide)  # 2 · (negatives below + half the tied ones) = below + below-or-tied
        twice += cum[hi]
        twice *= cp_t
        out[:, k] = twice.sum(axis=0, dtype=np.int64) / (2.0 * m * n)
    return out


def _seed_metric_boot(task: Task, y: np.ndarray, rows: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed metric on the full test set ``[S]`` and on ``n_boot`` test resamples ``[n_boot, S]``.

    Every resample is shared by all seeds (the seeds' models are scored on the same test set). Binary:
    ROC AUC, class-stratified resampling drawn exactly as :func:`bench.metrics._boot_auc` draws it (so
    one seed gives the same resampled AUCs for the same generator), O(n_boot · N) per seed. Multiclass:
    top-1 accuracy from the correctness rows, plain resampling (:func:`_pattern_counts`)."""
    if task == "binary":
        pos, neg = rows[:, y == 1], rows[:, y == 0]
        full = np.array([auc(y, r) for r in rows])
        out = []
        for b in _chunks(n_boot, y.size):
            cp_t = _resample_counts_t(rng, pos.shape[1], b)
            cn_t = _resample_counts_t(rng, neg.shape[1], b)
            out.append(_weighted_auc_rows(pos, neg, cp_t, cn_t))
        return full, np.concatenate(out)
    full = rows.mean(axis=1)
    return full, _pattern_counts(rng, _strata(y, False), rows.T, n_boot) / y.size


def _two_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Generator for test samples (``default_rng(seed)``, as :func:`bench.metrics.bootstrap_metric_ci`) and
    an independent one for seeds (child of ``SeedSequence(seed)``)."""
    return np.random.default_rng(seed), np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _boot_p(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p of ``H0: difference = 0`` from bootstrap differences: twice the smaller tail
    fraction at 0, with the +1 correction of Davison & Hinkley (1997, ch. 4), capped at 1. It inverts the
    percentile interval: ``p < alpha`` roughly iff the ``1 - alpha`` percentile interval excludes 0."""
    b = deltas.size
    le, ge = int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0))
    return float(min(1.0, 2 * (min(le, ge) + 1) / (b + 1)))


def _percentile(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# paired bootstrap test on one test set


def paired_bootstrap_p(
    y: Any,
    metric_fn_or_name: str | Callable[[np.ndarray, np.ndarray], float],
    scores_a: Any,
    scores_b: Any,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    stratify: bool | None = None,
) -> float:
    """Two-sided paired bootstrap p-value (Efron & Tibshirani 1993, ch. 16) that two predictors have the
    same metric on the same test samples.

    Each resample draws test samples with replacement and scores *both* predictors on it, giving
    ``delta* = metric(b) - metric(a)``; ``p`` is twice the smaller tail fraction of ``delta*`` at 0 (+1
    corrected, capped at 1; see :func:`_boot_p`). Resampling is class-stratified when ``stratify`` is
    True; the default (None) stratifies iff the labels are binary (only 0 and 1 occur).

    ``metric_fn_or_name``: ``"auc"`` (binary ROC AUC of ``[N]`` logits, vectorised), ``"acc"`` (top-1
    accuracy of ``[N, C]`` logits, or of ``[N, 1]`` binary logits at ``logit >= 0``, vectorised), or a
    callable ``fn(y, scores) -> float`` evaluated on each resample (rows of the scores are resampled with
    the labels; slower — about ``2 · n_boot`` calls). For AUC use DeLong's test
    (:func:`bench.metrics.delong_test`) where possible; this is for the other metrics. Deterministic for
    a given ``seed``.
    """
    _check_boot(n_boot)
    yy = _labels_1d(y)
    binary_labels = bool(np.all(np.isin(yy, [0, 1])))
    strat = binary_labels if stratify is None else bool(stratify)
    rng = np.random.default_rng(seed)
    if metric_fn_or_name == "auc":
        yy = _binary_y(yy, "ROC AUC")
        rows = np.stack([_binary_scores(yy, scores_a, "scores_a"), _binary_scores(yy, scores_b, "scores_b")])
        if not strat:
            raise MetricError("the vectorised AUC bootstrap is class-stratified; pass stratify=None/True")
        _, boot = _seed_metric_boot("binary", yy, rows, int(n_boot), rng)
        return _boot_p(boot[:, 1] - boot[:, 0])
    if metric_fn_or_name == "acc":
        correct = []
        for s, name in ((scores_a, "scores_a"), (scores_b, "scores_b")):
            a = np.asarray(s, dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != yy.shape[0]:
                raise MetricError(f"{name} must be [N, C] (or [N, 1] binary) logits for 'acc', got {a.shape}")
            _finite(a, name)
            pred = (a[:, 0] >= 0).astype(np.int64) if a.shape[1] == 1 else np.argmax(a, axis=1)
            correct.append(pred == yy)
        bits = np.stack(correct, axis=1).astype(np.float64)
        boot = _pattern_counts(rng, _strata(yy, strat), bits, int(n_boot))
        return _boot_p(boot[:, 1] - boot[:, 0])
    if isinstance(metric_fn_or_name, str) or not callable(metric_fn_or_name):
        raise MetricError(f"unknown metric {metric_fn_or_name!r}; expected 'auc', 'acc' or a callable")
    fn = metric_fn_or_name
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    if a.shape[0] != yy.shape[0] or b.shape[0] != yy.shape[0]:
        raise MetricError(f"scores have {a.shape[0]} and {b.shape[0]} samples but y has {yy.shape[0]}")
    strata = _strata(yy, strat)
    deltas = np.empty(int(n_boot))
    for i in range(int(n_boot)):
        d = np.concatenate([idx[rng.integers(0, idx.size, size=idx.size)] for idx in strata])
        deltas[i] = float(fn(yy[d], b[d])) - float(fn(yy[d], a[d]))
    return _boot_p(deltas)


# --------------------------------------------------------------------------------------------------
# two-level (seed × test sample) bootstrap


def _seed_sample_stats(task: Task, y_true: Any, per_seed: Sequence[tuple[Sequence[Any], str]], n_boot: int,
                       seed: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Seed weights ``[n_boot, S]`` and, per condition, ``(full [S], boot [n_boot, S])`` metrics."""
    y = _labels_1d(y_true)
    if task == "binary":
        y = _binary_y(y, "ROC AUC")
    conds = [_seed_rows(task, y, ps, name) for ps, name in per_seed]
    n_seeds = conds[0].shape[0]
    rng_samples, rng_seeds = _two_rngs(seed)
    rows = np.concatenate(conds)  # all conditions share every test resample
    full, boot = _seed_metric_boot(task, y, rows, n_boot, rng_samples)
    w = _resample_counts(rng_seeds, n_seeds, n_boot).astype(np.float64)  # seed multiplicities [n_boot, S]
    return w, [(full[i * n_seeds:(i + 1) * n_seeds], boot[:, i * n_seeds:(i + 1) * n_seeds]) for i in range(len(conds))]


def seed_sample_bootstrap_ci(
    task: Task,
    y: Any,
    per_seed_scores: Sequence[Any],
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile interval (Efron 1979) of the mean-over-seeds metric that includes seed variance.

    Two-level bootstrap for hierarchical data (Davison & Hinkley 1997, §3.8): each of ``n_boot`` replicates draws ``S`` seeds
    with replacement from the ``S`` given and one resample of the test samples (class-stratified for
    binary tasks, plain for multiclass), shared by the drawn seeds since every seed's model is scored on
    the same test set; the replicate's statistic is the mean over the drawn seeds of each seed's metric
    (ROC AUC for ``"binary"``, top-1 accuracy for ``"multiclass"``) on that resample. The estimate is
    the mean over seeds of the per-seed metric on the full test set (the leaderboard's headline mean).
    Resampling at both levels makes the interval somewhat conservative; with one seed it reduces to
    the test-sample bootstrap (for binary tasks, the same resamples as
    :func:`bench.metrics.bootstrap_metric_ci` with the same ``seed``).

    ``per_seed_scores`` holds one test score array per seed on the same, identically ordered test
    samples: ``[N]``/``[N, 1]`` logits (binary) or ``[N, C]`` logits (multiclass). Vectorised: O(n_boot ·
    N · S). Deterministic for a given ``seed``; round published values with :func:`round_sig`.
    """
    _check_boot(n_boot, alpha)
    w, [(full, boot)] = _seed_sample_stats(task, y, [(per_seed_scores, "per_seed_scores")], int(n_boot), seed)
    stats = np.einsum("bs,bs->b", w, boot) / w.shape[1]
    lo, hi = _percentile(stats, alpha)
    return BootstrapCI(float(np.mean(full)), lo, hi, 1 - alpha, int(n_boot))


def paired_seed_sample_bootstrap_diff_ci(
    task: Task,
    y: Any,
    scores_a_per_seed: Sequence[Any],
    scores_b_per_seed: Sequence[Any],
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapDiff:
    """Two-level bootstrap of the difference of mean-over-seeds metrics between two conditions of the same
    models on the same test samples, e.g. the drop ``incomplete (b) - complete (a)`` of a method.

    Seed ``i`` of ``a`` and of ``b`` are the same trained model, so each replicate draws one set of seeds
    with replacement and one test resample (as in :func:`seed_sample_bootstrap_ci`) and applies both to
    both conditions: ``delta* = mean over drawn seeds of (metric_b - metric_a)``. Returns the estimate
    ``mean_i (metric_b(i) - metric_a(i))`` on the full test set, the percentile interval of ``delta*`` and
    the two-sided bootstrap p of a zero difference (twice the smaller tail at 0, +1 corrected; consistent
    with the interval). Requires the same number of seeds in both conditions, listed in the same order.
    """
    _check_boot(n_boot, alpha)
    if len(scores_a_per_seed) != len(scores_b_per_seed):
        raise MetricError(f"the conditions have {len(scores_a_per_seed)} and {len(scores_b_per_seed)} seeds; "
                          "the paired bootstrap needs the same seeds in both, in the same order")
    w, [(fa, ba), (fb, bb)] = _seed_sample_stats(
        task, y, [(scores_a_per_seed, "scores_a_per_seed"), (scores_b_per_seed, "scores_b_per_seed")], int(n_boot), seed
    )
    deltas = np.einsum("bs,bs->b", w, bb - ba) / w.shape[1]
    lo, hi = _percentile(deltas, alpha)
    return BootstrapDiff(float(np.mean(fb - fa)), lo, hi, _boot_p(deltas), 1 - alpha, int(n_boot))
