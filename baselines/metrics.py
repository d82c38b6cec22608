"""Built-in test metrics: a template for your own.

A metric is a function ``fn(y_true, logits) -> float`` registered with
:func:`bench.registry.register_metric`, which declares the tasks it applies to and whether higher is
better. A suite names extra metrics with ``metrics: [auprc, brier]``, or ``bench leaderboard DIR
--metric NAME`` adds one when rendering; both compute it from the stored test predictions, so finished
runs are re-scored without retraining. ``bench check-plugin NAME --kind metric`` runs the conformance
checks (finite on random scores, order-invariant, perfect scores better than reversed ones in the
declared direction).

Binary logits are ``[N]`` (positive class, before the sigmoid); multiclass logits are ``[N, C]``.
Threshold-free metrics only: a decision threshold is chosen on validation by the harness itself
(:func:`bench.stats.operating_point`) and reported in the leaderboard's *Operating point* section.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_softmax
from sklearn.metrics import average_precision_score, balanced_accuracy_score

from bench.metrics import accuracy, auc, topk_accuracy
from bench.registry import register_metric
from bench.stats import expected_calibration_error


@register_metric("auc", tasks=["binary"], percent=True, label="AUC")
def roc_auc(y: np.ndarray, logits: np.ndarray) -> float:
    """ROC AUC (rank-based; the primary metric of binary suites)."""
    return auc(y, logits.ravel())


@register_metric("acc", tasks=["multiclass"], percent=True, label="top-1 ACC")
def top1_accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    """Top-1 accuracy (argmax; the primary metric of multiclass suites)."""
    return accuracy(y, logits)


@register_metric("top5_acc", tasks=["multiclass"], percent=True, label="top-5 ACC")
def top5_accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    """Top-5 accuracy: the label among the five highest logits."""
    return topk_accuracy(y, logits, 5)


@register_metric("balanced_acc_argmax", tasks=["multiclass"], percent=True, label="balanced ACC (argmax)")
def balanced_accuracy_argmax(y: np.ndarray, logits: np.ndarray) -> float:
    """Mean recall over the classes present, predicting the argmax."""
    return float(balanced_accuracy_score(y, np.argmax(logits, axis=1)))


@register_metric("auprc", tasks=["binary"], percent=True, label="AUPRC")
def area_under_precision_recall(y: np.ndarray, logits: np.ndarray) -> float:
    """Average precision (scikit-learn's step-wise area under the precision-recall curve)."""
    return float(average_precision_score(y, logits.ravel()))


@register_metric("brier", tasks=["binary"], higher_is_better=False, label="Brier")
def brier_score(y: np.ndarray, logits: np.ndarray) -> float:
    """Mean squared error of sigmoid(logit) against the label (Brier 1950)."""
    return float(np.mean((expit(logits.ravel().astype(np.float64)) - y) ** 2))


@register_metric("ece", tasks=["binary"], higher_is_better=False, label="ECE")
def calibration_error(y: np.ndarray, logits: np.ndarray) -> float:
    """Expected calibration error of sigmoid(logit), 10 equal-width bins."""
    return expected_calibration_error(y, expit(logits.ravel().astype(np.float64)))


@register_metric("log_loss", tasks=["binary", "multiclass"], higher_is_better=False, label="log loss")
def negative_log_likelihood(y: np.ndarray, logits: np.ndarray) -> float:
    """Mean negative log-likelihood of the label (binary: of sigmoid(logit))."""
    a = logits.astype(np.float64)
    if a.ndim == 1 or a.shape[1] == 1:
        s = a.ravel()
        return float(np.mean(np.logaddexp(0.0, -s) * y + np.logaddexp(0.0, s) * (1 - y)))
    return float(-np.mean(log_softmax(a, axis=1)[np.arange(len(y)), y]))
