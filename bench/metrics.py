"""Task metrics, seed aggregation, bootstrap confidence intervals and DeLong's test.

Conventions
-----------
* Binary tasks: the model emits one logit per sample (``[N]`` or ``[N, 1]``); the primary metric is
  ROC AUC (rank-based, so logits and sigmoid probabilities give the same value). Accuracy and
  balanced accuracy are reported at a decision threshold chosen on validation, never at a fixed 0.5.
* Multiclass tasks: the model emits ``[N, C]`` logits; the primary metric is top-1 accuracy, with
  top-5 accuracy as an extra when ``C >= 5``.
* Metric values are fractions in ``[0, 1]``; :func:`format_mean_std` scales them for tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.special import expit
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.errors import BenchError

Task = Literal["binary", "multiclass"]

_PRIMARY: dict[str, str] = {"binary": "auc", "multiclass": "acc"}


class Metric(NamedTuple):
    """A registered test metric (:func:`bench.registry.register_metric`): ``fn(y_true, logits) -> float``.

    Binary logits are ``[N]``, multiclass ``[N, C]``. ``higher_is_better`` gives the direction every table
    states (an arrow beside the label); ``percent``: a fraction, shown x100. Seeds are aggregated as
    mean ± sample standard deviation, like the primary metric.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    tasks: tuple[str, ...]
    higher_is_better: bool = True
    percent: bool = False
    label: str = ""

    def __call__(self, y_true: Any, logits: Any) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(logits)))

    @property
    def heading(self) -> str:
        """``"AUPRC (%) ↑"``: label, unit and direction."""
        return f"{self.label or self.name}{' (%)' if self.percent else ''} {'↑' if self.higher_is_better else '↓'}"

    def format(self, values: Sequence[float]) -> str:
        """Mean ± std over seeds in this metric's unit."""
        m, sd, _ = mean_std(values)
        if self.percent:
            return format_mean_std(m, sd)
        return f"{m:.4f} ± {sd:.4f}" if np.isfinite(sd) else f"{m:.4f}"


def get_metric(name: str) -> Metric:
    """The registered metric ``name`` (one-line error with close matches for an unknown one)."""
    from bench.registry import get

    return get("metric", name)


def metric_label(name: str) -> str:
    """The primary metric's column label, e.g. ``"AUC (%)"``, from its registration."""
    try:
        m = get_metric(name)
    except Exception:  # noqa: BLE001 - a metric whose plug-in is gone still renders, under its name
        return name
    return f"{m.label}{' (%)' if m.percent else ''}"


class MetricError(BenchError, ValueError):
    """A metric cannot be computed from these labels/scores (e.g. a single-class test set)."""


# --------------------------------------------------------------------------------------------------
# input checks


def _labels_1d(y_true: Any, name: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise MetricError(f"{name} must be a 1-D array of class labels, got shape {y.shape}")
    if y.size == 0:
        raise MetricError(f"{name} is empty; a metric needs at least one sample")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise MetricError(f"{name} must hold integer class labels, got non-integer values")
        y = y.astype(np.int64)
    elif y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise MetricError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    return y


def _finite(a: np.ndarray, name: str) -> None:
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise MetricError(f"{name} contains {bad} NaN/inf value(s); the model's outputs diverged")


def _binary_scores(y: np.ndarray, scores: Any, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise MetricError(
            f"binary {name} must have shape [N] or [N, 1] (one logit per sample), got {s.shape}"
        )
    if s.shape[0] != y.shape[0]:
        raise MetricError(f"{name} has {s.shape[0]} samples but y_true has {y.shape[0]}")
    _finite(s, name)
    return s


def _check_binary_labels(y: np.ndarray) -> None:
    bad = np.setdiff1d(np.unique(y), [0, 1])
    if bad.size:
        raise MetricError(f"binary y_true must contain only 0 and 1, found {bad[:5].tolist()}")


# --------------------------------------------------------------------------------------------------
# metrics


def auc(y_true: Any, scores: Any) -> float:
    """Binary ROC AUC (scikit-learn's ``roc_auc_score``).

    ``scores`` are logits or probabilities of the positive class, shape ``[N]`` or ``[N, 1]``.
    Raises :class:`MetricError` (a ``ValueError``) when only one class is present, since the AUC is
    undefined there.
    """
    y = _labels_1d(y_true)
    _check_binary_labels(y)
    s = _binary_scores(y, scores)
    present = np.unique(y)
    if present.size < 2:
        raise MetricError(
            f"ROC AUC is undefined: y_true contains only class {int(present[0])} "
            f"({y.size} sample(s)); the evaluation split needs both classes"
        )
    return float(roc_auc_score(y, s))


def _predictions(logits_or_pred: Any, n: int) -> np.ndarray:
    a = np.asarray(logits_or_pred)
    if a.ndim == 2:
        _finite(a, "logits")
        pred = (a[:, 0] >= 0).astype(np.int64) if a.shape[1] == 1 else np.argmax(a, axis=1)
    elif a.ndim == 1:
        if a.dtype.kind == "f" and not np.all(a == np.round(a)):
            raise MetricError(
                "got a 1-D float array with non-integer values: pass binary logits as [N, 1] "
                "and predicted labels as integers"
            )
        pred = _labels_1d(a, name="predictions")
    else:
        raise MetricError(f"expected [N, C] logits or [N] predicted labels, got shape {a.shape}")
    if pred.shape[0] != n:
        raise MetricError(f"got {pred.shape[0]} predictions for {n} labels")
    return pred


def accuracy(y_true: Any, logits_or_pred: Any) -> float:
    """Top-1 accuracy.

    ``logits_or_pred`` is ``[N, C]`` logits (argmax), ``[N, 1]`` binary logits (``logit >= 0`` is
    class 1) or ``[N]`` integer predicted labels. A 1-D float array of logits is rejected: pass it
    as ``[N, 1]`` so it is not mistaken for labels.
    """
    y = _labels_1d(y_true)
    return float(np.mean(_predictions(logits_or_pred, y.shape[0]) == y))


def topk_accuracy(y_true: Any, logits: Any, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` largest logits (ties broken by index)."""
    y = _labels_1d(y_true)
    a = np.asarray(logits, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != y.shape[0]:
        raise MetricError(f"expected [{y.shape[0]}, C] logits, got shape {a.shape}")
    _finite(a, "logits")
    k = min(k, a.shape[1])
    top = np.argsort(-a, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def primary_metric(task: str) -> str:
    """``"auc"`` for binary tasks, ``"acc"`` for multiclass tasks."""
    try:
        return _PRIMARY[task]
    except KeyError:
        raise MetricError(f"unknown task {task!r}; expected one of {sorted(_PRIMARY)}") from None


def evaluate(task: Task, y_true: np.ndarray, logits: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
    """All metrics of one evaluation.

    Returns ``{"metric": "auc" | "acc", "value": <primary>, "n": <samples>, ...extras}``. Binary tasks
    add ``"acc"`` and ``"balanced_acc"`` only when a decision ``threshold`` on the logit is given
    (positive iff ``logit >= threshold``; the harness chooses it on validation, see
    :func:`bench.stats.operating_point`): under class weights and resampling a fixed 0.5 predicts
    one class for most models, so no accuracy is reported without a chosen threshold. Multiclass
    tasks add ``"balanced_acc"`` (argmax, the mean recall over the classes present) and, with at
    least 5 classes, ``"top5_acc"``.
    """
    metric = primary_metric(task)
    y = _labels_1d(y_true)
    if task == "binary":
        s = _binary_scores(y, logits, name="logits")
        _check_binary_labels(y)
        out = {"metric": metric, "value": auc(y, s), "n": int(y.size)}
        if threshold is not None:
            pred = (s >= float(threshold)).astype(np.int64)
            out.update(acc=float(np.mean(pred == y)), balanced_acc=float(balanced_accuracy_score(y, pred)))
        return out
    a = np.asarray(logits, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise MetricError(f"multiclass logits must have shape [N, C] with C >= 2, got {a.shape}")
    if a.shape[0] != y.shape[0]:
        raise MetricError(f"logits have {a.shape[0]} samples but y_true has {y.shape[0]}")
    if y.min() < 0 or y.max() >= a.shape[1]:
        raise MetricError(f"labels must lie in [0, {a.shape[1]}), found [{y.min()}, {y.max()}]")
    out: dict[str, Any] = {"metric": metric, "value": accuracy(y, a), "n": int(y.size),
                           "balanced_acc": float(balanced_accuracy_score(y, np.argmax(a, axis=1)))}
    if a.shape[1] >= 5:
        out["top5_acc"] = topk_accuracy(y, a, 5)
    return out


# --------------------------------------------------------------------------------------------------
# aggregation over seeds


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float, int]:
    """``(mean, sample std with ddof=1, n)``; the std is NaN when ``n < 2`` and both are NaN at ``n = 0``.

    NaN entries are not dropped: a failed seed must stay visible.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(np.mean(v))
    std = float(np.std(v, ddof=1)) if n >= 2 else math.nan
    return mean, std, n


def format_mean_std(mean: float, std: float, scale: float = 100, digits: int = 2) -> str:
    """``"76.97 ± 0.75"`` for ``(0.7697, 0.0075)``; only the mean (``"76.97"``) when the std is NaN."""
    if math.isnan(mean):
        return "nan"
    m = f"{mean * scale:.{digits}f}"
    if std is None or math.isnan(std):
        return m
    return f"{m} ± {std * scale:.{digits}f}"


# --------------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_ci(
    y_true: Any,
    scores: Any,
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` of ``metric_fn(y_true, scores)`` at level ``1 - alpha``.

    Resampling is stratified by class: each resample draws, with replacement, as many samples of
    each class as the original has, so every resample holds both classes of a binary task (and the
    AUC is always defined). ``scores`` may be ``[N]`` or ``[N, ...]``; rows are resampled together
    with the labels. Deterministic for a given ``seed``.
    """
    if n_boot < 1:
        raise MetricError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise MetricError(f"alpha must lie in (0, 1), got {alpha}")
    y = _labels_1d(y_true)
    s = np.asarray(scores)
    if s.shape[0] != y.shape[0]:
        raise MetricError(f"scores have {s.shape[0]} samples but y_true has {y.shape[0]}")
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y == c) for c in np.unique(y)]
    draws = np.concatenate(
        [idx[rng.integers(0, idx.size, size=(n_boot, idx.size))] for idx in strata], axis=1
    )
    stats = np.array([metric_fn(y[d], s[d]) for d in draws], dtype=np.float64)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# statistics for leaderboards: DeLong's test and a vectorised bootstrap on pooled predictions


class DeLongResult(NamedTuple):
    """Outcome of :func:`delong_test`; unpacks as ``(auc_a, auc_b, z, p)``."""

    auc_a: float
    auc_b: float
    z: float
    p: float


class BootstrapCI(NamedTuple):
    """Percentile bootstrap interval of a metric: ``(estimate, lo, hi)`` at ``level``."""

    estimate: float
    lo: float
    hi: float
    level: float
    n_boot: int


def _binary_inputs(y_true: Any, score_rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    y = _labels_1d(y_true)
    _check_binary_labels(y)
    s = np.stack([_binary_scores(y, r) for r in score_rows])
    if np.unique(y).size < 2:
        raise MetricError(f"ROC AUC is undefined: y_true contains only class {int(y[0])}; DeLong needs both classes")
    return y, s


def delong_covariance(y_true: Any, scores: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of ``k`` predictors on the same samples and DeLong's ``k × k`` covariance matrix.

    DeLong, DeLong & Clarke-Pearson (1988), *Biometrics* 44:837-845, computed with the midrank
    algorithm of Sun & Xu (2014), *IEEE Signal Processing Letters* 21:1389-1393, in O(N log N):
    with ``m`` positives and ``n`` negatives, ``T_z`` the midranks over all samples and ``T_x``/``T_y``
    the midranks within positives/negatives, the structural components are
    ``V10 = (T_z[pos] - T_x) / n`` and ``V01 = 1 - (T_z[neg] - T_y) / m`` (ties count one half, exactly
    as in the Mann-Whitney statistic), the AUC is ``mean(V10)`` and the covariance is
    ``cov(V10) / m + cov(V01) / n`` (sample covariances, ``ddof=1``). ``scores`` holds one ``[N]``
    score vector per predictor (logits or probabilities; only their order matters).
    """
    from scipy.stats import rankdata

    y, s = _binary_inputs(y_true, scores)
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise MetricError(f"DeLong's variance needs at least 2 positives and 2 negatives, got {m} and {n}")
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(y_true: Any, scores_a: Any, scores_b: Any) -> DeLongResult:
    """DeLong's test that two correlated ROC AUCs on the same samples are equal (two-sided).

    ``z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab)`` with the covariance of
    :func:`delong_covariance` (DeLong et al. 1988; Sun & Xu 2014), and ``p = 2 (1 - Φ(|z|))``.
    Identical predictors (zero variance of the difference and equal AUCs) give ``z = 0, p = 1``; a
    non-zero difference with zero variance gives ``z = ±inf, p = 0``.
    """
    from scipy.stats import norm

    aucs, cov = delong_covariance(y_true, [scores_a, scores_b])
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15 * max(1.0, abs(float(cov[0, 0])) + abs(float(cov[1, 1]))):
        if abs(diff) < 1e-12:
            return DeLongResult(float(aucs[0]), float(aucs[1]), 0.0, 1.0)
        return DeLongResult(float(aucs[0]), float(aucs[1]), math.copysign(math.inf, diff), 0.0)
    z = diff / math.sqrt(var)
    return DeLongResult(float(aucs[0]), float(aucs[1]), z, float(2 * norm.sf(abs(z))))


def _chunks(n_boot: int, width: int) -> list[int]:
    per = max(1, 4_000_000 // max(1, width))
    return [min(per, n_boot - i) for i in range(0, n_boot, per)]


def _resample_counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """``[b, n]`` multiplicities of ``b`` resamples of ``n`` items drawn with replacement."""
    idx = rng.integers(0, n, size=(b, n)) + np.arange(b)[:, None] * n
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


def _weighted_auc(pos: np.ndarray, neg: np.ndarray, cp: np.ndarray, cn: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row's resample, given as multiplicities ``cp`` ``[b, m]`` of the
    positives and ``cn`` ``[b, n]`` of the negatives; ties count one half. O(b · (m + n)): negatives
    are sorted once, so the weighted number of negatives below (and tied with) each positive is a
    gather from a cumulative sum of the counts."""
    order = np.argsort(neg, kind="stable")
    neg_sorted = neg[order]
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    cum = np.zeros((cn.shape[0], neg.size + 1))
    np.cumsum(cn[:, order], axis=1, out=cum[:, 1:])
    below, upto = cum[:, lo], cum[:, hi]
    wins = np.einsum("bi,bi->b", cp, below + 0.5 * (upto - below))
    return wins / (cp.sum(axis=1) * cn.sum(axis=1))


def _boot_auc(y: np.ndarray, s: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """AUCs of ``n_boot`` class-stratified resamples, vectorised (no per-resample sort)."""
    pos, neg = s[y == 1], s[y == 0]
    out = []
    for b in _chunks(n_boot, s.size):
        cp = _resample_counts(rng, pos.size, b)
        cn = _resample_counts(rng, neg.size, b)
        out.append(_weighted_auc(pos, neg, cp, cn))
    return np.concatenate(out)


def _boot_acc(correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracies of ``n_boot`` plain resamples: the number of correct samples in a resample of ``N``
    drawn with replacement is exactly Binomial(N, accuracy), so it is drawn directly in O(n_boot)."""
    n = correct.size
    return rng.binomial(n, float(correct.mean()), size=n_boot) / n


def bootstrap_metric_ci(
    task: Task,
    y_true: Any,
    scores: Any,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap interval (Efron 1979; Efron & Tibshirani 1993, ch. 13) of the task's metric.

    Binary tasks: ROC AUC of ``scores`` (``[N]`` or ``[N, 1]``), resampling stratified by class
    (each resample keeps the numbers of positives and negatives, so the AUC is always defined).
    Multiclass tasks: top-1 accuracy of ``[N, C]`` scores, plain resampling of samples (drawn as its
    exact binomial law, see :func:`_boot_acc`). Vectorised over resamples (see :func:`_boot_auc`), so
    the default 2000 resamples of a few thousand samples take well under a second; deterministic for a
    given ``seed``.
    """
    if n_boot < 1:
        raise MetricError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise MetricError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    if task == "binary":
        y = _labels_1d(y_true)
        s = _binary_scores(y, scores)
        estimate = auc(y, s)
        stats = _boot_auc(y, s, n_boot, rng)
    elif task == "multiclass":
        y = _labels_1d(y_true)
        a = np.asarray(scores, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != y.shape[0]:
            raise MetricError(f"multiclass scores must have shape [{y.shape[0]}, C], got {a.shape}")
        _finite(a, "scores")
        correct = (np.argmax(a, axis=1) == y).astype(np.float64)
        estimate = float(correct.mean())
        stats = _boot_acc(correct, n_boot, rng)
    else:
        raise MetricError(f"unknown task {task!r}; expected one of {sorted(_PRIMARY)}")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(estimate), float(lo), float(hi), 1 - alpha, int(n_boot))


def pool_seed_predictions(
    task: Task, runs: Sequence[tuple[Any, Any, Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pooled predictor from several seeds' test predictions: ``(ids, y, scores)``.

    ``runs`` holds one ``(test_ids, test_y, test_logits)`` per seed. Samples are matched by id (the
    seeds share the test split); each sample's predicted probability (sigmoid for binary, softmax for
    multiclass) is averaged over the seeds, i.e. the scores of the seed ensemble. Binary scores are
    returned as ``[N]`` probabilities, multiclass as ``[N, C]``. Raises when the seeds disagree on a
    sample's label or do not share their test ids.
    """
    from scipy.special import softmax

    if not runs:
        raise MetricError("no predictions to pool")
    ids0 = np.asarray(runs[0][0])
    order0 = np.argsort(ids0, kind="stable")
    ids = ids0[order0]
    y = _labels_1d(runs[0][1])[order0]
    probs = []
    for ids_k, y_k, logits_k in runs:
        ids_k = np.asarray(ids_k)
        o = np.argsort(ids_k, kind="stable")
        if ids_k.shape != ids0.shape or not np.array_equal(ids_k[o], ids):
            raise MetricError("seeds were tested on different samples (test_ids differ); cannot pool them")
        if not np.array_equal(_labels_1d(y_k)[o], y):
            raise MetricError("seeds disagree on the labels of the same test ids")
        lg = np.asarray(logits_k, dtype=np.float64)[o]
        if task == "binary":
            lg = _binary_scores(y, lg, name="logits")
            probs.append(expit(lg))
        else:
            _finite(lg, "logits")
            probs.append(softmax(lg, axis=1))
    return ids, y, np.mean(probs, axis=0)


# --------------------------------------------------------------------------------------------------
# re-exports of bench.stats (threshold choice, operating-point metrics, Holm, paired and seed-level
# bootstraps). Resolved lazily (PEP 562) because bench.stats builds on this module.

_STATS_EXPORTS = frozenset({
    "ECE_BINS", "PUBLISH_DIGITS", "BootstrapDiff", "binary_metrics", "choose_threshold",
    "expected_calibration_error", "holm", "paired_bootstrap_p", "paired_seed_sample_bootstrap_diff_ci",
    "round_sig", "seed_sample_bootstrap_ci", "tied_with_best",
})


def __getattr__(name: str) -> Any:
    if name in _STATS_EXPORTS:
        from bench import stats

        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
