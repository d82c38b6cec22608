"""Leaderboard statistics in bench.metrics: DeLong's test, the vectorised bootstrap CI, seed pooling.

References checked here:

* AUCs against scikit-learn's ``roc_auc_score``;
* DeLong's variance/covariance and z against a plain O(n²) implementation of the structural components
  of DeLong, DeLong & Clarke-Pearson (1988) written below (the module uses Sun & Xu's 2014 midranks);
* published values of pROC (Robin et al. 2011) on its ``aSAH`` data (see :data:`ASAH`);
* coverage of the percentile bootstrap (Efron) on simulated binormal data with a known AUC.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from bench.metrics import (
    MetricError,
    _resample_counts,
    _weighted_auc,
    bootstrap_metric_ci,
    delong_covariance,
    delong_test,
    pool_seed_predictions,
)

# --------------------------------------------------------------------------------------------------
# reference implementations and data


def delong_quadratic(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) written out: psi(x, y) = 1 if x > y, 1/2 if equal, 0 else, over all
    case × control pairs; V10 = row means, V01 = column means; S = S10/m + S01/n."""
    v10, v01, aucs = [], [], []
    for s in scores:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = int((y == 1).sum()), int((y == 0).sum())
    return np.array(aucs), np.atleast_2d(np.cov(np.array(v10))) / m + np.atleast_2d(np.cov(np.array(v01))) / n


_CODES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: aSAH (Turck et al. 2010, Intensive Care Med 36:107; shipped with R's pROC): 41 patients with a poor
#: outcome (cases, first) and 72 with a good one (controls), in the data set's row order. The scores are
#: order-preserving integer surrogates of the markers wfns, ndka and s100b, reconstructed from pROC's
#: test fixture ``tests/testthat/helper-deLongPlacementsCpp-expected.R``, which lists the DeLong
#: placement of every case and control for the three markers; placements fix every case-vs-control
#: comparison (>, =, <) and hence the AUC and DeLong's covariance, and these surrogates reproduce all 339
#: published placements exactly (a few are re-checked below).
ASAH = {
    "wfns": "21344441410143314441414134330331144114444000040110110001010023030440013001101011000010100213103004311000201133000",
    "ndka": "bOSZ39IhlhhEWd57U1pdGIMUfQd7nY3Cd3BhKWjIZ086H4Y4cTcakA4N44oPDDc264CR6Xi64NA6RgeFLm4aDHHX2aNAHcHL6DHg8NQiJNAgFVe4T",
    "s100b": "85B7PUS2J42NLRUFUUU2UH04DUFU3F856DU9UIUUP8951QC55131462C268C1B9K4TQB2OQ63431859A114143B43J6G25I21EM5A39521CAQCATR",
}
ASAH_Y = np.r_[np.ones(41, dtype=np.int64), np.zeros(72, dtype=np.int64)]


def asah(marker: str) -> np.ndarray:
    return np.array([_CODES.index(c) for c in ASAH[marker]], dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# AUC and DeLong


@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(ties):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + 0.8 * y
    t = np.round(s) if ties else s
    aucs, _ = delong_covariance(y, [s, t])
    assert aucs[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert aucs[1] == pytest.approx(roc_auc_score(y, t), abs=1e-12)
    r = delong_test(y, s, t)
    assert (r.auc_a, r.auc_b) == (pytest.approx(aucs[0], abs=1e-12), pytest.approx(aucs[1], abs=1e-12))
    assert bootstrap_metric_ci("binary", y, t, n_boot=10).estimate == pytest.approx(roc_auc_score(y, t), abs=1e-12)


@pytest.mark.parametrize("levels", [None, 4])
def test_delong_matches_quadratic_reference(levels):
    """Three correlated predictors, with and without heavy ties (``levels`` distinct values)."""
    rng = np.random.default_rng(1)
    y = (rng.random(250) < 0.3).astype(int)
    base = rng.normal(size=250) + y
    preds = [base + rng.normal(scale=sd, size=250) for sd in (0.3, 0.8, 1.5)]
    if levels:
        preds = [np.digitize(p, np.quantile(p, np.linspace(0, 1, levels + 1)[1:-1])).astype(float) for p in preds]
    aucs, cov = delong_covariance(y, preds)
    ref_aucs, ref_cov = delong_quadratic(y, preds)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-16)
    r = delong_test(y, preds[0], preds[2])
    z = (ref_aucs[0] - ref_aucs[2]) / np.sqrt(ref_cov[0, 0] + ref_cov[2, 2] - 2 * ref_cov[0, 2])
    assert r.z == pytest.approx(z, rel=1e-10)
    assert r.p == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


def test_delong_reproduces_published_pROC_values_on_aSAH():
    """Reference numbers from pROC's own tests: AUCs (``theta``) from
    ``helper-deLongPlacementsCpp-expected.R``, DeLong variances from ``test-var.R`` (``var(r.wfns)``
    etc.) and paired DeLong Z and p from ``test-roc.test.R`` (``roc.test(r.wfns, r.s100b)``,
    ``roc.test(r.wfns, r.ndka)``, ``roc.test(r.ndka, r.s100b)``; the first is the ``roc.test`` help
    page's example, Z = 2.209, p = 0.0272)."""
    y = ASAH_Y
    wfns, ndka, s100b = asah("wfns"), asah("ndka"), asah("s100b")
    # the surrogates reproduce pROC's published placements (case V10, control V01), e.g. the first ones
    x = ndka[y == 1]
    assert ((x[0] > ndka[y == 0]) + 0.5 * (x[0] == ndka[y == 0])).mean() == pytest.approx(0.805555555555556)
    assert ((s100b[y == 1] > s100b[y == 0][0]) + 0.5 * (s100b[y == 1] == s100b[y == 0][0])).mean() == \
        pytest.approx(0.707317073170732)

    aucs, cov = delong_covariance(y, [wfns, ndka, s100b])
    np.testing.assert_allclose(aucs, [0.823678861788618, 0.611957994579946, 0.731368563685637], rtol=1e-12)
    np.testing.assert_allclose(np.diag(cov), [0.00146991470882363, 0.0031908105493913, 0.00266868245717244],
                               rtol=1e-10)
    for a, b, z, p in [(wfns, s100b, 2.20898359144091, 0.0271757822291882),
                       (wfns, ndka, 2.79777591868904, 0.00514557970691098),
                       (ndka, s100b, -1.39077002573558, 0.164295175223054)]:
        r = delong_test(y, a, b)
        assert r.z == pytest.approx(z, rel=1e-10)
        assert r.p == pytest.approx(p, rel=1e-9)
    # pROC: roc.test(r.wfns, r.wfns) gives Z = 0, p = 1
    assert delong_test(y, wfns, wfns)[2:] == (0.0, 1.0)


def test_delong_is_antisymmetric_and_invariant_to_monotone_maps():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    a, b = rng.normal(size=200) + y, rng.normal(size=200) + 0.5 * y
    ab, ba = delong_test(y, a, b), delong_test(y, b, a)
    assert ab.z == pytest.approx(-ba.z) and ab.p == pytest.approx(ba.p)
    assert delong_test(y, 1 / (1 + np.exp(-a)), b).z == pytest.approx(ab.z, rel=1e-12)


def test_delong_decides_sensibly():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.4).astype(int)
    good, bad = rng.normal(size=400) + 2.0 * y, rng.normal(size=400) + 0.2 * y
    r = delong_test(y, good, bad)
    assert r.auc_a > r.auc_b and r.z > 5 and r.p < 1e-6
    assert delong_test(y, good, good).p == 1.0
    # a predictor and a slightly noisy copy of it: not significantly different
    assert delong_test(y, good, good + rng.normal(scale=0.05, size=400)).p > 0.05


def test_delong_type_one_error_is_near_nominal():
    """Two exchangeable predictors (same signal, independent noise): p < 0.05 in about 5% of datasets."""
    rng = np.random.default_rng(4)
    ps = []
    for _ in range(300):
        y = (rng.random(150) < 0.4).astype(int)
        signal = rng.normal(size=150) + y
        ps.append(delong_test(y, signal + rng.normal(size=150), signal + rng.normal(size=150)).p)
    ps = np.array(ps)
    assert 0.01 <= np.mean(ps < 0.05) <= 0.10
    assert 0.35 <= np.mean(ps) <= 0.65  # uniform-ish: mean of U(0, 1) is 0.5


def test_delong_refuses_bad_input():
    with pytest.raises(MetricError, match="only class"):
        delong_test(np.ones(10, dtype=int), np.arange(10.0), np.arange(10.0))
    with pytest.raises(MetricError, match="samples"):
        delong_test(np.array([0, 1, 0, 1]), np.arange(4.0), np.arange(5.0))


# --------------------------------------------------------------------------------------------------
# bootstrap


def test_weighted_auc_equals_auc_of_the_expanded_resample():
    rng = np.random.default_rng(5)
    pos, neg = np.round(rng.normal(1, 1, 40), 1), np.round(rng.normal(0, 1, 60), 1)  # ties on purpose
    cp, cn = _resample_counts(rng, 40, 7), _resample_counts(rng, 60, 7)
    assert (cp.sum(axis=1) == 40).all() and (cn.sum(axis=1) == 60).all()
    got = _weighted_auc(pos, neg, cp, cn)
    for b in range(7):
        s = np.r_[np.repeat(pos, cp[b]), np.repeat(neg, cn[b])]
        y = np.r_[np.ones(40), np.zeros(60)]
        assert got[b] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_auc_ci_covers_the_true_auc():
    """Binormal scores (negatives N(0, 1), positives N(d, 1)) have population AUC Φ(d/√2); the 95%
    percentile interval should cover it in about 95% of 200 simulated datasets."""
    d, m, n = 1.2, 60, 90
    true_auc = norm.cdf(d / np.sqrt(2))
    y = np.r_[np.ones(m, dtype=int), np.zeros(n, dtype=int)]
    covered = 0
    for k in range(200):
        s = np.random.default_rng(1000 + k).normal(size=m + n) + d * y
        ci = bootstrap_metric_ci("binary", y, s, seed=k)
        assert ci.lo <= ci.estimate <= ci.hi and ci.n_boot == 2000 and ci.level == 0.95
        covered += ci.lo <= true_auc <= ci.hi
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_bootstrap_accuracy_ci_covers_the_true_accuracy():
    """Multiclass top-1 accuracy: each sample is right with probability 0.7 (plain resampling)."""
    covered = 0
    for k in range(200):
        rng = np.random.default_rng(2000 + k)
        y = rng.integers(0, 5, 200)
        right = rng.random(200) < 0.7
        pred = np.where(right, y, (y + rng.integers(1, 5, 200)) % 5)
        ci = bootstrap_metric_ci("multiclass", y, np.eye(5)[pred], seed=k)
        assert ci.estimate == pytest.approx(right.mean())
        covered += ci.lo <= 0.7 <= ci.hi
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_bootstrap_is_deterministic_and_stratified():
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(3, dtype=int), np.zeros(97, dtype=int)]  # rare positives: every resample keeps 3
    s = rng.normal(size=100) + y
    a = bootstrap_metric_ci("binary", y, s, seed=7)
    assert a == bootstrap_metric_ci("binary", y, s, seed=7)
    assert a != bootstrap_metric_ci("binary", y, s, seed=8)
    assert 0 <= a.lo <= a.estimate <= a.hi <= 1
    with pytest.raises(MetricError):
        bootstrap_metric_ci("binary", y, s, n_boot=0)
    with pytest.raises(MetricError):
        bootstrap_metric_ci("regression", y, s)


# --------------------------------------------------------------------------------------------------
# pooling seeds


def test_pool_seed_predictions_matches_ids_and_averages_probabilities():
    ids = np.array([f"s{i}" for i in range(6)])
    y = np.array([0, 1, 0, 1, 1, 0])
    l1 = np.array([[-1.0], [2.0], [0.0], [1.0], [-2.0], [0.5]])
    l2 = np.array([[0.0], [1.0], [-1.0], [3.0], [0.0], [-0.5]])
    perm = np.array([3, 0, 5, 1, 4, 2])
    got_ids, got_y, p = pool_seed_predictions("binary", [(ids, y, l1), (ids[perm], y[perm], l2[perm])])
    assert list(got_ids) == sorted(ids) and (got_y == y).all()
    np.testing.assert_allclose(p, (1 / (1 + np.exp(-l1[:, 0])) + 1 / (1 + np.exp(-l2[:, 0]))) / 2)
    _, _, pm = pool_seed_predictions("multiclass", [(ids, y, np.c_[-l1, l1]), (ids, y, np.c_[-l2, l2])])
    assert pm.shape == (6, 2) and np.allclose(pm.sum(axis=1), 1)
    with pytest.raises(MetricError, match="different samples"):
        pool_seed_predictions("binary", [(ids, y, l1), (ids[::-1][:5], y[:5], l2[:5])])
    with pytest.raises(MetricError, match="labels"):
        pool_seed_predictions("binary", [(ids, y, l1), (ids, 1 - y, l2)])
