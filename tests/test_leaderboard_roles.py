"""Ties with the best (Holm-adjusted DeLong), roles, the sensitivity check and the operating point, on a
constructed suite whose answer is known."""

import json

import numpy as np

from bench.leaderboard import method_statistics, results_frame, write_leaderboard
from bench.results import RunReport, RunSpec, run_dir, write_run
from bench.stats import operating_point

N, SEEDS = 400, (1, 2)


def _write(out, fusion, tab, kind, seed, logits, y, val_logits, y_val):
    from bench.metrics import evaluate

    sp = RunSpec("toy", "complete", "img", tab, fusion, "frozen", seed)
    test = {**evaluate("binary", y, logits), "at_threshold": operating_point(y_val, val_logits, y, logits)}
    rep = RunReport(spec=sp, suite_version=1, budget="smoke", metric="auc", test=test,
                    val=evaluate("binary", y_val, val_logits), hyperparameters={}, profile={},
                    provenance={"dataset": "toy", "source": "synthetic", "version": "t", "checksum": "c"},
                    training={"kind": kind})
    write_run(run_dir(out, sp), rep, {}, {"test_ids": np.arange(len(y)).astype(str), "test_y": y,
                                          "test_logits": logits[:, None], "val_y": y_val, "val_logits": val_logits})


def _suite(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(N) < 0.3).astype(np.int64)
    y_val = (rng.random(N) < 0.3).astype(np.int64)
    signal, signal_val = y + rng.normal(0, 0.6, N), y_val + rng.normal(0, 0.6, N)
    out = tmp_path / "runs"
    for seed in SEEDS:
        noise = np.random.default_rng(seed).normal(0, 0.05, N)
        _write(out, "good", "enc", "fusion", seed, signal + noise, y, signal_val, y_val)           # best
        _write(out, "twin", "enc", "fusion", seed, signal + 2 * noise + 0.01, y, signal_val, y_val)  # tied
        _write(out, "weak", "enc", "fusion", seed, y + rng.normal(0, 3.0, N), y, signal_val, y_val)  # worse
        _write(out, "image_only", "enc", "baseline", seed, y + rng.normal(0, 2.0, N), y, signal_val, y_val)
        _write(out, "ceiling[bayes]", "raw", "ceiling", seed, 10.0 * y + 0.0, y, 10.0 * y_val, y_val)
    (out / "toy" / "suite.json").write_text(json.dumps({"suite": "toy", "seeds": list(SEEDS)}))
    return out / "toy"


def test_ties_holm_roles_and_sensitivity(tmp_path):
    suite_dir = _suite(tmp_path)
    stats = method_statistics(results_frame(suite_dir), suite_dir, len(SEEDS), n_boot=200).set_index("fusion")
    assert stats.loc["good", "tied"] and stats.loc["twin", "tied"]
    assert not stats.loc["weak", "tied"] and not stats.loc["image_only", "tied"]
    assert stats.loc["weak", "p_holm"] >= stats.loc["weak", "p_vs_best"]  # Holm never lowers a p-value
    assert stats.loc["ceiling[bayes]", "role"] == "ceiling" and not stats.loc["ceiling[bayes]", "tied"]
    assert stats.loc["ceiling[bayes]", "pooled"] == 1.0  # the ceiling is shown but never the reference
    assert stats.loc["good", "reference"] in ("good · enc", "twin · enc")
    lo, hi = stats.loc["good", "mean_ci_low"], stats.loc["good", "mean_ci_high"]
    assert lo <= stats.loc["good", "mean"] <= hi
    best_fusion = stats[stats["sens_p"].notna()]
    assert len(best_fusion) == 1 and best_fusion["sens_p"].iloc[0] < 0.05  # fusion beats the single modality

    md = write_leaderboard(suite_dir, expected_seeds=list(SEEDS)).read_text()
    assert "| good " in md and "**" in md.split("| good ")[1].split("\n")[0]
    assert "**" not in md.split("| weak ")[1].split("\n")[0]
    assert "Does fusion help?" in md and "Operating point" in md
    data = json.loads((suite_dir / "leaderboard.json").read_text())
    roles = {m["fusion"]: (m["role"], m["tied_with_best"]) for m in data["methods"]}
    assert roles["weak"] == ("fusion", False) and roles["ceiling[bayes]"] == ("ceiling", False)


def test_operating_point_uses_validation_only():
    rng = np.random.default_rng(1)
    y_val = (rng.random(300) < 0.1).astype(int)
    val = y_val * 2.0 + rng.normal(0, 1, 300) + 5.0  # logits shifted by +5, as class weights do
    y = (rng.random(300) < 0.1).astype(int)
    test = y * 2.0 + rng.normal(0, 1, 300) + 5.0
    op = operating_point(y_val, val, y, test)
    assert op["threshold"] > 4.0  # found on validation, far from logit 0
    assert not op["predicts_single_class"] and 0.5 < op["balanced_accuracy"] <= 1.0
    shuffled = operating_point(y_val, val, rng.permutation(y), test)
    assert shuffled["threshold"] == op["threshold"]  # test labels never move the threshold
