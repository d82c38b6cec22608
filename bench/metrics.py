"""Task metrics, seed aggregation and bootstrap confidence intervals.

Conventions
-----------
* Binary tasks: the model emits one logit per sample (``[N]`` or ``[N, 1]``); the primary metric is
  ROC AUC (rank-based, so logits and sigmoid probabilities give the same value). The extras are the
  accuracy at probability threshold 0.5 (``sigmoid(logit) >= 0.5``, i.e. ``logit >= 0``) and the
  balanced accuracy at the same threshold.
* Multiclass tasks: the model emits ``[N, C]`` logits; the primary metric is top-1 accuracy, with
  top-5 accuracy as an extra when ``C >= 5``.
* Metric values are fractions in ``[0, 1]``; :func:`format_mean_std` scales them for tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from scipy.special import expit
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.errors import BenchError

Task = Literal["binary", "multiclass"]

_PRIMARY: dict[str, str] = {"binary": "auc", "multiclass": "acc"}


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


def evaluate(task: Task, y_true: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """All metrics of one evaluation.

    Returns ``{"metric": "auc" | "acc", "value": <primary>, "n": <samples>, ...extras}``; extras are
    ``"acc"`` and ``"balanced_acc"`` (threshold 0.5 on the sigmoid) for binary tasks and
    ``"top5_acc"`` for multiclass tasks with at least 5 classes.
    """
    metric = primary_metric(task)
    y = _labels_1d(y_true)
    if task == "binary":
        s = _binary_scores(y, logits, name="logits")
        _check_binary_labels(y)
        pred = (expit(s) >= 0.5).astype(np.int64)
        return {
            "metric": metric,
            "value": auc(y, s),
            "n": int(y.size),
            "acc": float(np.mean(pred == y)),
            "balanced_acc": float(balanced_accuracy_score(y, pred)),
        }
    a = np.asarray(logits, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise MetricError(f"multiclass logits must have shape [N, C] with C >= 2, got {a.shape}")
    if a.shape[0] != y.shape[0]:
        raise MetricError(f"logits have {a.shape[0]} samples but y_true has {y.shape[0]}")
    if y.min() < 0 or y.max() >= a.shape[1]:
        raise MetricError(f"labels must lie in [0, {a.shape[1]}), found [{y.min()}, {y.max()}]")
    out: dict[str, Any] = {"metric": metric, "value": accuracy(y, a), "n": int(y.size)}
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
