"""bench.stats: Youden threshold, metrics at a threshold, Holm, ties with the best method, paired and
two-level (seed × sample) bootstraps.

References checked here: hand-computed values on small examples, scikit-learn's metrics, a brute-force
step-down Holm procedure, and bench.metrics' own test-sample bootstrap (which the one-seed case of the
two-level bootstrap must reproduce exactly).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

import bench.metrics as metrics
from bench.metrics import MetricError, bootstrap_metric_ci, delong_test
from bench.stats import (
    BootstrapDiff,
    _resample_counts_t,
    _weighted_auc_rows,
    binary_metrics,
    choose_threshold,
    expected_calibration_error,
    holm,
    paired_bootstrap_p,
    paired_seed_sample_bootstrap_diff_ci,
    round_sig,
    seed_sample_bootstrap_ci,
    tied_with_best,
)

LN3, LN9 = math.log(3.0), math.log(9.0)


def binormal(n: int, d: float, rng: np.random.Generator, prevalence: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < prevalence).astype(np.int64)
    return y, d * y + rng.normal(size=n)


# --------------------------------------------------------------------------------------------------
# threshold


def test_youden_threshold_on_a_constructed_case_with_ties_in_J():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([-2.0, -1.0, 0.5, 1.5, 0.2, 1.0, 2.0, 3.0])
    # J by hand for t = -2, -1, 0.2, 0.5, 1, 1.5, 2, 3: 0, .25, .5, .25, .5, .25, .5, .25;
    # the maximum 0.5 is reached at 0.2, 1 and 2 and the smallest wins
    assert choose_threshold(y, s) == 0.2
    assert choose_threshold(y, s.reshape(-1, 1), rule="youden") == 0.2


def test_youden_threshold_separable_and_constant():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert choose_threshold(y, [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]) == 1.0  # J = 1 only at t = 1
    # negatives -3 -2 1.5, positives -1 2 3: J = 2/3 at t = -1 (TP 3, TN 2) and t = 2 (TP 2, TN 3)
    assert choose_threshold(y, [-3.0, -2.0, 1.5, -1.0, 2.0, 3.0]) == -1.0
    # one more positive at 4: J(-1) = 2/3 < J(2) = 3/4 + 1 - 1
    assert choose_threshold(np.r_[y, 1], [-3.0, -2.0, 1.5, -1.0, 2.0, 3.0, 4.0]) == 2.0
    assert choose_threshold(y, np.full(6, 0.7)) == 0.7  # uninformative: J = 0, all positive


@pytest.mark.parametrize("seed", range(5))
def test_youden_threshold_maximises_tpr_minus_fpr_like_sklearn_roc_curve(seed):
    rng = np.random.default_rng(seed)
    y, s = binormal(300, 1.0, rng)
    s = np.round(s, 1)  # many ties
    t = choose_threshold(y, s)
    assert t in s
    pred = s >= t
    j = pred[y == 1].mean() + (~pred[y == 0]).mean() - 1
    fpr, tpr, _ = roc_curve(y, s)
    assert j == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    better = [u for u in np.unique(s) if u < t and (s >= u)[y == 1].mean() + (s < u)[y == 0].mean() - 1 >= j - 1e-12]
    assert better == []  # no smaller score reaches the same J


def test_youden_threshold_refuses_degenerate_input():
    with pytest.raises(MetricError, match="only class"):
        choose_threshold([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="empty"):
        choose_threshold([], [])
    with pytest.raises(MetricError, match="NaN"):
        choose_threshold([0, 1], [0.1, np.nan])
    with pytest.raises(MetricError, match="rule"):
        choose_threshold([0, 1], [0.1, 0.2], rule="prevalence")
    with pytest.raises(MetricError, match="samples"):
        choose_threshold([0, 1, 1], [0.1, 0.2])


# --------------------------------------------------------------------------------------------------
# metrics at a threshold

# probabilities .9 .75 .5 .5 .25 .1 .25 .75 as exact logit ties
Y_SMALL = np.array([1, 1, 1, 0, 0, 0, 1, 0])
L_SMALL = np.array([LN9, LN3, 0.0, 0.0, -LN3, -LN9, -LN3, LN3])


def test_binary_metrics_on_a_hand_computed_example():
    m = binary_metrics(Y_SMALL, L_SMALL, 0.0)
    # predicted positive: p >= .5 -> TP 3, FN 1, FP 2, TN 2
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(2 / 4)
    assert m["balanced_accuracy"] == pytest.approx(0.625)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["ppv"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(2 / 3)
    # Brier: squared errors .01 .0625 .25 .25 .0625 .01 .5625 .5625
    assert m["brier"] == pytest.approx(1.77 / 8)
    # ECE: bins 9 {.9: y 1}, 7 {.75: y 1, 0}, 5 {.5: y 1, 0}, 2 {.25: y 0, 1}, 0-1 {.1: y 0}
    assert m["ece"] == pytest.approx((0.1 + 2 * 0.25 + 0 + 2 * 0.25 + 0.1) / 8)
    # AUC: 4 + 3.5 + 2.5 + 1.5 wins of 16 pairs; AP = (1 + 2/3 + 3/5 + 4/7) / 4
    assert m["auc"] == pytest.approx(11.5 / 16)
    assert m["auprc"] == pytest.approx(149 / 210)
    assert m["threshold"] == 0.0 and m["predicts_single_class"] is False
    for k, v in m.items():
        assert type(v) is (bool if k == "predicts_single_class" else float), k


@pytest.mark.parametrize("seed", range(3))
def test_binary_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    y, s = binormal(500, 1.2, rng)
    t = 0.4
    m = binary_metrics(y, s, t)
    pred = (s >= t).astype(int)
    p = 1 / (1 + np.exp(-s))
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["ppv"] == pytest.approx(precision_score(y, pred))
    assert m["npv"] == pytest.approx(precision_score(1 - y, 1 - pred))
    # ECE against a plain loop over 10 equal-width bins
    ece = 0.0
    for k in range(10):
        inb = (p >= k / 10) & ((p < (k + 1) / 10) if k < 9 else (p <= 1))
        if inb.any():
            ece += inb.sum() / y.size * abs(y[inb].mean() - p[inb].mean())
    assert m["ece"] == pytest.approx(ece, abs=1e-12)


def test_binary_metrics_single_class_predictions_and_errors():
    m = binary_metrics(Y_SMALL, L_SMALL, 100.0)
    assert m["predicts_single_class"] is True
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0 and m["balanced_accuracy"] == 0.5
    assert math.isnan(m["ppv"]) and m["npv"] == pytest.approx(0.5)
    assert binary_metrics(Y_SMALL, L_SMALL, -math.inf)["predicts_single_class"] is True
    with pytest.raises(MetricError, match="only class"):
        binary_metrics([1, 1], [0.2, 0.3], 0.0)
    with pytest.raises(MetricError, match="NaN"):
        binary_metrics(Y_SMALL, L_SMALL, math.nan)
    with pytest.raises(MetricError):
        expected_calibration_error([0, 1], [0.2, 1.3])


# --------------------------------------------------------------------------------------------------
# Holm and ties


def test_holm_hand_computed():
    # sorted .005 .01 .03 .04 -> x4 .02, x3 .03, x2 .06, x1 .04 -> running max .02 .03 .06 .06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.3, 0.5, 0.6]), [0.9, 1.0, 1.0])  # capped at 1, monotone
    out = holm([0.01, np.nan, 0.04])  # NaN kept and not counted: m = 2
    np.testing.assert_allclose(out, [0.02, np.nan, 0.04])
    assert holm([]).shape == (0,)
    assert holm(np.array([[0.01, 0.02], [0.5, np.nan]])).shape == (2, 2)
    np.testing.assert_allclose(holm([0.02, 0.02]), [0.04, 0.04])  # ties
    with pytest.raises(MetricError):
        holm([0.1, 1.2])


@pytest.mark.parametrize("seed", range(5))
def test_holm_equals_the_step_down_procedure(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(12) ** 3
    adj = holm(p)
    assert np.all(adj >= p) and np.all(adj <= 1)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    for alpha in (0.01, 0.05, 0.1):
        reject = np.zeros(p.size, bool)  # Holm (1979): reject p(1..k) while p(j) <= alpha / (m - j + 1)
        for j, i in enumerate(order):
            if p[i] > alpha / (p.size - j):
                break
            reject[i] = True
        np.testing.assert_array_equal(adj <= alpha, reject)


def test_tied_with_best_uses_holm():
    assert tied_with_best("A", {"B": 0.03, "C": 0.02}) == {"A"}  # Holm: .04 and .04, both < .05
    # raw .03 < .05, but Holm gives .09 (m = 3): all tied
    assert tied_with_best("A", {"B": 0.04, "C": 0.03, "D": 0.5}) == {"A", "B", "C", "D"}
    assert tied_with_best("A", {"B": np.nan, "C": 0.5, "A": 0.0}) == {"A", "C"}  # NaN: not tied
    assert tied_with_best("A", {}) == {"A"}


def test_tie_marking_on_three_constructed_methods():
    rng = np.random.default_rng(7)
    y, s1 = binormal(400, 1.5, rng, prevalence=0.4)
    scores = {
        "fine": s1,
        "fine-twin": s1 + rng.normal(scale=0.05, size=y.size),  # practically the same predictor
        "poor": 0.3 * y + rng.normal(size=y.size),
    }
    best = max(scores, key=lambda k: roc_auc_score(y, scores[k]))
    pvals = {k: delong_test(y, s, scores[best]).p for k, s in scores.items() if k != best}
    assert best in {"fine", "fine-twin"}
    assert tied_with_best(best, pvals) == {"fine", "fine-twin"}


# --------------------------------------------------------------------------------------------------
# paired bootstrap test on one test set


def test_paired_bootstrap_p_identical_predictors_give_one():
    rng = np.random.default_rng(0)
    y, s = binormal(200, 1.0, rng)
    assert paired_bootstrap_p(y, "auc", s, s, n_boot=300) == 1.0
    assert paired_bootstrap_p(y, "acc", s[:, None], s[:, None], n_boot=300) == 1.0
    assert paired_bootstrap_p(y, lambda yy, ss: balanced_accuracy_score(yy, ss >= 0), s, s, n_boot=100) == 1.0


def test_paired_bootstrap_p_detects_a_clear_difference_and_is_deterministic():
    rng = np.random.default_rng(1)
    y, good = binormal(400, 2.0, rng, prevalence=0.5)
    bad = 0.2 * y + rng.normal(size=y.size)
    p_auc = paired_bootstrap_p(y, "auc", good, bad, n_boot=500, seed=3)
    assert p_auc < 0.01 and delong_test(y, good, bad).p < 0.01
    assert p_auc == paired_bootstrap_p(y, "auc", bad, good, n_boot=500, seed=3)  # two-sided
    assert paired_bootstrap_p(y, "acc", good[:, None], bad[:, None], n_boot=500) < 0.01
    fn = lambda yy, ss: ((ss >= 0)[yy == 1].mean() + (ss < 0)[yy == 0].mean()) / 2  # noqa: E731 balanced acc
    assert paired_bootstrap_p(y, fn, good, bad, n_boot=200) < 0.02
    assert paired_bootstrap_p(y, fn, good, bad, n_boot=200, seed=5) == paired_bootstrap_p(y, fn, good, bad, n_boot=200, seed=5)
    # multiclass top-1 accuracy, plain resampling
    yc = rng.integers(0, 4, 300)
    strong = np.eye(4)[yc] * 3 + rng.normal(size=(300, 4))
    weak = np.eye(4)[yc] * 0.3 + rng.normal(size=(300, 4))
    assert paired_bootstrap_p(yc, "acc", strong, weak, n_boot=500) < 0.01
    with pytest.raises(MetricError, match="unknown metric"):
        paired_bootstrap_p(y, "f1", good, bad)


def test_paired_bootstrap_p_does_not_reject_equally_good_predictors():
    rng = np.random.default_rng(2)
    y, s = binormal(300, 1.0, rng, prevalence=0.5)
    a = s + rng.normal(scale=0.5, size=y.size)
    b = s + rng.normal(scale=0.5, size=y.size)  # same quality, independent noise
    assert paired_bootstrap_p(y, "auc", a, b, n_boot=500) > 0.05


# --------------------------------------------------------------------------------------------------
# two-level bootstrap


def test_weighted_auc_rows_equals_auc_of_expanded_resamples():
    rng = np.random.default_rng(0)
    y, s = binormal(60, 1.0, rng, prevalence=0.4)
    rows = np.stack([np.round(s, 1), np.round(s + rng.normal(size=60), 1)])  # with ties
    pos, neg = rows[:, y == 1], rows[:, y == 0]
    cp, cn = _resample_counts_t(rng, pos.shape[1], 7), _resample_counts_t(rng, neg.shape[1], 7)
    got = _weighted_auc_rows(pos, neg, cp, cn)
    for b in range(7):
        for k in range(2):
            p_, n_ = np.repeat(pos[k], cp[:, b]), np.repeat(neg[k], cn[:, b])
            ref = roc_auc_score(np.r_[np.ones(p_.size), np.zeros(n_.size)], np.r_[p_, n_])
            assert got[b, k] == pytest.approx(ref, abs=1e-12)


def test_seed_sample_ci_with_one_seed_is_the_sample_bootstrap():
    rng = np.random.default_rng(3)
    y, s = binormal(500, 1.0, rng)
    assert seed_sample_bootstrap_ci("binary", y, [s], n_boot=800, seed=11) == bootstrap_metric_ci(
        "binary", y, s, n_boot=800, seed=11
    )
    yc = rng.integers(0, 5, 800)
    lc = np.eye(5)[yc] * 1.5 + rng.normal(size=(800, 5))
    a = seed_sample_bootstrap_ci("multiclass", yc, [lc], n_boot=2000)
    b = bootstrap_metric_ci("multiclass", yc, lc, n_boot=2000)
    assert a.estimate == b.estimate
    assert a.lo == pytest.approx(b.lo, abs=0.01) and a.hi == pytest.approx(b.hi, abs=0.01)


def test_seed_sample_ci_contains_estimate_widens_with_seed_variance_and_is_deterministic():
    rng = np.random.default_rng(4)
    y = (rng.random(1000) < 0.3).astype(np.int64)
    steady = [1.0 * y + rng.normal(size=y.size) for _ in range(4)]
    erratic = [d * y + rng.normal(size=y.size) for d in (0.3, 2.0, 0.3, 2.0)]
    ci_s = seed_sample_bootstrap_ci("binary", y, steady, n_boot=1000, seed=0)
    ci_e = seed_sample_bootstrap_ci("binary", y, erratic, n_boot=1000, seed=0)
    for ci, per in ((ci_s, steady), (ci_e, erratic)):
        assert ci.estimate == pytest.approx(np.mean([roc_auc_score(y, s) for s in per]), abs=1e-12)
        assert ci.lo <= ci.estimate <= ci.hi
        assert ci.level == 0.95 and ci.n_boot == 1000
    assert ci_e.hi - ci_e.lo > 3 * (ci_s.hi - ci_s.lo)
    # the sample level alone is narrower than seed + sample
    one = bootstrap_metric_ci("binary", y, steady[0], n_boot=1000)
    assert ci_s.hi - ci_s.lo < one.hi - one.lo < ci_e.hi - ci_e.lo
    assert seed_sample_bootstrap_ci("binary", y, steady, n_boot=1000, seed=0) == ci_s
    assert seed_sample_bootstrap_ci("binary", y, steady, n_boot=1000, seed=1) != ci_s
    # per-seed arrays as [N, 1] and as a stacked [S, N] array give the same interval
    assert seed_sample_bootstrap_ci("binary", y, [s[:, None] for s in steady], n_boot=1000) == ci_s
    assert seed_sample_bootstrap_ci("binary", y, np.stack(steady), n_boot=1000) == ci_s


def test_seed_sample_ci_multiclass():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 6, 1200)
    per = [np.eye(6)[y] * d + rng.normal(size=(1200, 6)) for d in (1.0, 1.2, 1.4)]
    ci = seed_sample_bootstrap_ci("multiclass", y, per, n_boot=2000, seed=2)
    accs = [np.mean(np.argmax(p, 1) == y) for p in per]
    assert ci.estimate == pytest.approx(np.mean(accs), abs=1e-12)
    assert ci.lo < ci.estimate < ci.hi
    assert seed_sample_bootstrap_ci("multiclass", y, per, n_boot=2000, seed=2) == ci


def test_seed_sample_ci_refuses_bad_input():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8])
    with pytest.raises(MetricError, match="list"):
        seed_sample_bootstrap_ci("binary", y, s)
    with pytest.raises(MetricError, match="at least one seed"):
        seed_sample_bootstrap_ci("binary", y, [])
    with pytest.raises(MetricError, match="only class"):
        seed_sample_bootstrap_ci("binary", [1, 1, 1, 1], [s])
    with pytest.raises(MetricError, match="samples"):
        seed_sample_bootstrap_ci("binary", y, [s, s[:3]])
    with pytest.raises(MetricError, match="unknown task"):
        seed_sample_bootstrap_ci("regression", y, [s])
    with pytest.raises(MetricError, match="n_boot"):
        seed_sample_bootstrap_ci("binary", y, [s], n_boot=0)
    with pytest.raises(MetricError, match="alpha"):
        seed_sample_bootstrap_ci("binary", y, [s], alpha=1.5)
    with pytest.raises(MetricError, match="shape"):
        seed_sample_bootstrap_ci("multiclass", y, [s])


def test_drop_ci_zero_difference_contains_zero():
    rng = np.random.default_rng(6)
    y = (rng.random(800) < 0.4).astype(np.int64)
    a = [y + rng.normal(size=y.size) for _ in range(3)]
    same = paired_seed_sample_bootstrap_diff_ci("binary", y, a, a, n_boot=1000)
    assert isinstance(same, BootstrapDiff)
    assert (same.estimate, same.lo, same.hi, same.p) == (0.0, 0.0, 0.0, 1.0)
    b = [y + rng.normal(size=y.size) for _ in range(3)]  # same quality, other noise: true drop 0
    d = paired_seed_sample_bootstrap_diff_ci("binary", y, a, b, n_boot=1000)
    assert d.lo < 0 < d.hi and d.p > 0.05
    assert d.estimate == pytest.approx(np.mean([roc_auc_score(y, bi) - roc_auc_score(y, ai) for ai, bi in zip(a, b)]))


def test_drop_ci_clear_difference_excludes_zero():
    rng = np.random.default_rng(7)
    y = (rng.random(800) < 0.4).astype(np.int64)
    complete = [1.5 * y + rng.normal(size=y.size) for _ in range(3)]
    incomplete = [c + rng.normal(scale=1.5, size=y.size) for c in complete]  # information lost
    d = paired_seed_sample_bootstrap_diff_ci("binary", y, complete, incomplete, n_boot=1000, seed=4)
    assert d.estimate < 0 and d.hi < 0 and d.p < 0.01
    assert d.lo <= d.estimate <= d.hi and d.level == 0.95 and d.n_boot == 1000
    assert paired_seed_sample_bootstrap_diff_ci("binary", y, complete, incomplete, n_boot=1000, seed=4) == d
    # multiclass
    yc = rng.integers(0, 4, 600)
    comp = [np.eye(4)[yc] * 2 + rng.normal(size=(600, 4)) for _ in range(2)]
    inc = [c + rng.normal(scale=1.5, size=(600, 4)) for c in comp]
    dm = paired_seed_sample_bootstrap_diff_ci("multiclass", yc, comp, inc, n_boot=1000)
    assert dm.estimate < 0 and dm.hi < 0 and dm.p < 0.01
    zm = paired_seed_sample_bootstrap_diff_ci("multiclass", yc, comp, comp, n_boot=1000)
    assert (zm.estimate, zm.lo, zm.hi, zm.p) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(MetricError, match="same seeds"):
        paired_seed_sample_bootstrap_diff_ci("binary", y, complete, incomplete[:2])


# --------------------------------------------------------------------------------------------------
# publishing and re-exports


def test_round_sig():
    assert round_sig(0.123456789) == 0.123457
    assert round_sig(76.9712345) == 76.9712
    assert round_sig(-1234567.0) == -1234570.0
    assert round_sig(1.23456789e-7, 3) == 1.23e-7
    assert round_sig(0.0) == 0.0 and round_sig(math.inf) == math.inf and math.isnan(round_sig(math.nan))


def test_bench_metrics_re_exports_the_new_functions():
    from bench import stats

    for name in stats.__all__:
        assert getattr(metrics, name) is getattr(stats, name)
    with pytest.raises(AttributeError):
        metrics.no_such_function  # noqa: B018
