"""Metrics as a registry kind: built-ins pass the conformance kit, a plug-in metric declares its direction,
and a suite (or ``bench leaderboard --metric``) re-scores finished runs from their stored predictions."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bench.registry as reg
from bench.cli import main
from bench.conformance import run_checks
from bench.leaderboard import write_leaderboard
from bench.metrics import get_metric, metric_label
from bench.results import RunReport, RunSpec, run_dir, write_run


@pytest.mark.parametrize("name", reg.list_names("metric"))
def test_builtin_metrics_pass_the_conformance_kit(name):
    results = run_checks("metric", name)
    assert [r.name for r in results] == ["load", "finite", "order_invariant", "direction"]
    assert all(r.passed and not r.skipped for r in results), [(r.name, r.message) for r in results]


def test_a_plugin_metric_declares_its_direction_and_the_kit_catches_a_wrong_one(monkeypatch):
    monkeypatch.setattr(reg, "_REGISTRIES", {k: reg.Registry(k, dict(r.entries)) for k, r in reg._REGISTRIES.items()})
    reg.registry("metric")

    @reg.register_metric("mean_abs_error", tasks=["binary"], higher_is_better=False, label="MAE")
    def mae(y, logits):
        """Mean absolute error of sigmoid(logit)."""
        return float(np.mean(np.abs(1 / (1 + np.exp(-logits)) - y)))

    @reg.register_metric("mae_claims_higher", tasks=["binary"], higher_is_better=True)
    def mae_wrong(y, logits):
        return mae(y, logits)

    m = get_metric("mean_abs_error")
    assert m.heading == "MAE ↓" and m(np.array([0, 1]), np.array([-50.0, 50.0])) == pytest.approx(0.0)
    assert all(r.passed for r in run_checks("metric", "mean_abs_error"))
    wrong = {r.name: r for r in run_checks("metric", "mae_claims_higher")}
    assert not wrong["direction"].passed and "declares higher is better" in wrong["direction"].message


def test_metric_labels_come_from_the_registry():
    assert metric_label("auc") == "AUC (%)" and metric_label("acc") == "top-1 ACC (%)"
    assert metric_label("not-a-metric") == "not-a-metric"


def test_looking_up_a_metric_imports_no_model_code():
    code = ("import sys; from bench.metrics import get_metric; get_metric('brier'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _toy_suite(tmp_path, metrics=None):
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.int64)
    out = tmp_path / "runs"
    truth = {}
    for fusion, noise in (("sharp", 0.3), ("blurry", 2.0)):
        for seed in (1, 2):
            logits = (2 * y - 1) + np.random.default_rng(seed).normal(0, noise, y.size)
            sp = RunSpec("toy", "complete", "img", "enc", fusion, "frozen", seed)
            test = {"metric": "auc", "value": float(get_metric("auc")(y, logits)), "n": int(y.size)}
            rep = RunReport(spec=sp, suite_version=1, budget="smoke", metric="auc", test=test, val={"value": 0.5},
                            hyperparameters={}, profile={}, training={"kind": "fusion"},
                            provenance={"dataset": "toy", "source": "synthetic", "version": "t", "checksum": "c"})
            write_run(run_dir(out, sp), rep, {}, {"test_ids": np.arange(y.size).astype(str), "test_y": y,
                                                  "test_logits": logits[:, None]})
            truth[(fusion, seed)] = logits
    meta = {"suite": "toy", "seeds": [1, 2], **({"metrics": metrics} if metrics else {})}
    (out / "toy" / "suite.json").write_text(json.dumps(meta))
    return out / "toy", y, truth


def test_a_suite_names_metrics_and_every_output_reports_them(tmp_path):
    suite_dir, y, truth = _toy_suite(tmp_path, metrics=["brier", "auprc"])
    md = write_leaderboard(suite_dir).read_text()
    section = md.split("## Other metrics")[1]
    assert "Brier ↓" in section and "AUPRC (%) ↑" in section
    brier = {f: [get_metric("brier")(y, truth[(f, s)]) for s in (1, 2)] for f in ("sharp", "blurry")}
    row = next(ln for ln in section.splitlines() if "| sharp " in ln)
    assert get_metric("brier").format(brier["sharp"]) in row
    csv = pd.read_csv(suite_dir / "results.csv")
    got = csv.set_index(["fusion", "seed"])["test_brier"]
    assert got[("blurry", 2)] == pytest.approx(brier["blurry"][1], rel=1e-12)
    lb = json.loads((suite_dir / "leaderboard.json").read_text())
    sharp = next(e for e in lb["other_metrics"] if e["fusion"] == "sharp")
    assert sharp["brier"]["higher_is_better"] is False and sharp["brier"]["n_seeds"] == 2
    assert sharp["brier"]["mean"] == pytest.approx(np.mean(brier["sharp"]), rel=1e-5)
    assert sharp["brier"]["mean"] < next(e for e in lb["other_metrics"] if e["fusion"] == "blurry")["brier"]["mean"]


def test_leaderboard_command_rescores_finished_runs_with_a_named_metric(tmp_path, capsys):
    suite_dir, _, _ = _toy_suite(tmp_path)
    assert "## Other metrics" not in write_leaderboard(suite_dir).read_text()
    assert main(["leaderboard", str(suite_dir), "--metric", "log_loss"]) == 0
    assert "log loss ↓" in capsys.readouterr().out
    assert main(["leaderboard", str(suite_dir), "--metric", "log_los"]) == 2
    assert "Did you mean 'log_loss'" in capsys.readouterr().err
    assert main(["leaderboard", str(suite_dir), "--metric", "brier", "--publish"]) == 2
    assert "name it in the suite's `metrics:`" in capsys.readouterr().err


def test_a_suite_metric_of_another_task_is_refused_before_training(tmp_path, capsys):
    from pathlib import Path

    suites = Path(__file__).resolve().parent.parent / "bench" / "suites"
    suite = tmp_path / "s.yaml"
    suite.write_text(f"include: {suites / 'ol3i-incomplete.yaml'}\nmetrics: [top5_acc]\n")
    assert main(["run", "--suite", str(suite), "--budget", "smoke", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "metric 'top5_acc' is for multiclass tasks" in err and not list((tmp_path / "o").rglob("DONE"))
    suite.write_text(f"include: {suites / 'ol3i-incomplete.yaml'}\nmetrics: [brierr]\n")
    assert main(["run", "--suite", str(suite), "--budget", "smoke", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "Did you mean 'brier'" in capsys.readouterr().err


def test_costs_are_defined_once_for_every_output():
    from bench.leaderboard import MethodJSON
    from bench.plots import _COSTS
    from bench.results import COST_KEYS, RESULT_COLUMNS, cost_cells, cost_headers

    assert set(COST_KEYS) <= set(RESULT_COLUMNS) and set(COST_KEYS) <= set(MethodJSON.__annotations__)
    assert [k for k, _ in _COSTS] == ["gmac_total", "latency_ms_p50"]
    row = pd.Series({"params_fusion": 1.5e6, "params_total": np.nan, "gmac_fusion": 0.01, "gmac_total": 0.2,
                     "latency_ms_p50": 1.0, "latency_ms_p90": 2.5, "fusion_latency_ms_p50": np.nan})
    assert cost_cells(row) == ["1.50", "–", "0.0100", "0.200", "1.00 / 2.50", "–"]
    assert len(cost_cells(row)) == len(cost_headers())
