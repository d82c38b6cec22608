"""Leaderboard Statistics table, leaderboard.json and the Pareto figure, on fake run directories
(RunReports + predictions written with bench.results.write_run; no training)."""

from __future__ import annotations

import io
import json
import typing
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from bench.leaderboard import LeaderboardJSON, MethodJSON, write_leaderboard
from bench.plots import PLOT_COLUMNS, pareto_front, pareto_png
from bench.results import RunReport, RunSpec, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_TEST = 240
#: fusion -> (signal strength, total GMac, latency ms); "slow_good" is best but costliest
METHODS = {"weak": (0.3, 0.010, 2.0), "fair": (1.0, 0.020, 4.0), "slow_good": (2.0, 0.080, 9.0)}


def _logits(task: str, y: np.ndarray, signal: float, rng: np.random.Generator) -> np.ndarray:
    if task == "binary":
        return (signal * (2 * y - 1) + rng.normal(scale=1.5, size=y.size))[:, None].astype(np.float32)
    logits = rng.normal(size=(y.size, 4))
    logits[np.arange(y.size), y] += signal * 1.5
    return logits.astype(np.float32)


def make_suite(root, task: str = "binary", seeds=(0, 1), incomplete: str | None = "fair") -> dict:
    """A fake suite: METHODS × {frozen, trainable} × seeds, with ``incomplete`` missing its last seed
    in the frozen strategy. Returns the predictions written, keyed by (fusion, strategy, seed)."""
    name = root.name
    rng = np.random.default_rng(0)
    y = (rng.random(N_TEST) < 0.4).astype(np.int64) if task == "binary" else rng.integers(0, 4, N_TEST)
    ids = np.array([f"id{i:04d}" for i in range(N_TEST)])
    (root).mkdir(parents=True, exist_ok=True)
    (root / "suite.json").write_text(json.dumps({"suite": name, "seeds": list(seeds)}))
    metric = "auc" if task == "binary" else "acc"
    written = {}
    for fusion, (signal, gmac, lat) in METHODS.items():
        for strategy in ("frozen", "trainable"):
            for seed in seeds:
                if fusion == incomplete and strategy == "frozen" and seed == seeds[-1]:
                    continue
                r = np.random.default_rng([zlib.crc32(f"{fusion}/{strategy}".encode()), seed])
                logits = _logits(task, y, signal, r)
                perm = r.permutation(N_TEST)  # runs need not store samples in the same order
                value = roc_auc_score(y, logits[:, 0]) if task == "binary" else float((logits.argmax(1) == y).mean())
                spec = RunSpec(suite=name, protocol="complete", image_encoder="resnet10t", tabular_encoder="mlp",
                               fusion=fusion, strategy=strategy, seed=seed)
                report = RunReport(
                    spec=spec, suite_version=1, budget="smoke", metric=metric,
                    test={"metric": metric, "value": value, "n": N_TEST}, val={"metric": metric, "value": value},
                    hyperparameters={"lr": 1e-3, "weight_decay": 0.0},
                    profile={"params_fusion": 1000, "params_total": 50_000, "gmac_fusion": gmac / 10,
                             "gmac_total": gmac, "latency_p50_ms": lat, "latency_p90_ms": lat * 1.1,
                             "fusion_latency_p50_ms": lat / 10, "device": "cpu: test"},
                    provenance={"dataset": "fake", "source": "synthetic", "version": "v1", "checksum": "c0ffee"},
                    training={"epochs_run": 1, "seconds": 0.1},
                    environment={"bench_version": "0.1.0", "git_commit": "abc123"},
                    created="2026-01-01T00:00:00+00:00")
                write_run(root / "runs" / spec.run_id, report, {"spec": spec.run_id},
                          {"test_ids": ids[perm], "test_y": y[perm], "test_logits": logits[perm],
                           "val_y": y[:10], "val_logits": logits[:10]})
                written[(fusion, strategy, seed)] = (y, logits)
    return written


def _section(md: str, title: str) -> list[list[str]]:
    body = md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in body.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


@pytest.fixture(scope="module")
def binary_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "fake"
    written = make_suite(root)
    pub = tmp_path_factory.mktemp("published")
    write_leaderboard(root, expected_seeds=[0, 1], publish_to=pub)
    return root, pub, written


def test_statistics_table(binary_suite):
    root, _, written = binary_suite
    md = (root / "leaderboard.md").read_text()
    assert "## Test AUC (%)" in md and "## Statistics" in md
    assert "averaged over the method's seeds" in md and "DeLong" in md and "Sun & Xu 2014" in md
    rows = {(r[1], r[3]): r for r in _section(md, "Statistics")}
    assert len(rows) == 6
    assert [r[10] for k, r in rows.items() if k[1] == "slow_good"] == ["ref (best)", "ref (best)"]
    # the weak method is clearly worse than the best on 240 samples; both are pooled over 2 seeds
    assert float(rows[("frozen", "weak")][10]) < 0.001
    assert rows[("frozen", "fair")][5] == "1/2†" and rows[("trainable", "fair")][5] == "2/2"
    assert "† fewer finished seeds" in md.split("## Statistics", 1)[1]
    # the incomplete cell of the main table stays flagged too
    assert "(1/2 seeds)†" in md
    # pooled AUC = AUC of the per-sample probability averaged over seeds, inside its CI
    y, l0 = written[("weak", "trainable", 0)]
    _, l1 = written[("weak", "trainable", 1)]
    pooled = roc_auc_score(y, (1 / (1 + np.exp(-l0[:, 0])) + 1 / (1 + np.exp(-l1[:, 0]))) / 2)
    row = rows[("trainable", "weak")]
    assert float(row[8]) == pytest.approx(pooled * 100, abs=0.006)
    lo, hi = (float(v) for v in row[9].strip("[]").split(","))
    assert lo <= float(row[8]) <= hi
    assert "![AUC (%) vs GMac and latency, with Pareto fronts](fake-pareto.png)" in md


def test_leaderboard_json_schema(binary_suite):
    root, pub, _ = binary_suite
    data = json.loads((root / "leaderboard.json").read_text())
    assert (pub / "fake.json").read_text() == (root / "leaderboard.json").read_text()
    assert set(data) == set(LeaderboardJSON.__required_keys__)  # other_metrics only when a suite names metrics
    assert set(typing.get_type_hints(LeaderboardJSON)) - set(data) == {"other_metrics"}
    assert data["schema_version"] == 2 and data["task"] == "binary" and data["metric"] == "auc"
    assert data["seeds_expected"] == [0, 1] and data["figures"] == ["fake-pareto.png"]
    assert data["provenance"]["checksum"] == "c0ffee" and data["environment"]["git_commit"] == "abc123"
    assert data["statistics"]["ci"] == {"method": "percentile bootstrap over test samples", "level": 0.95,
                                        "n_boot": 2000, "seed": 0, "stratified": True}
    keys = typing.get_type_hints(MethodJSON)
    csv = pd.read_csv(root / "results.csv")
    assert len(data["methods"]) == 6
    for m in data["methods"]:
        assert set(m) == set(keys)
        for k in ("test_mean", "pooled", "ci_low", "ci_high", "gmac_total", "latency_ms_p50"):
            assert isinstance(m[k], float)
        assert isinstance(m["complete"], bool) and isinstance(m["n_test"], int) and m["n_test"] == N_TEST
        assert m["ci_low"] <= m["pooled"] <= m["ci_high"]
        sel = csv[(csv.fusion == m["fusion"]) & (csv.strategy == m["strategy"])]
        assert m["test_mean"] == pytest.approx(sel.test_value.mean()) and m["n_seeds"] == len(sel)
        assert m["complete"] == (m["n_seeds"] == 2)
        if m["fusion"] == "slow_good":
            assert m["delong_p"] is None and m["delong_reference"] == "slow_good · mlp"
        else:
            assert 0 <= m["delong_p"] <= 1 and m["delong_z"] < 0


def test_pareto_png_written_valid_and_deterministic(binary_suite, tmp_path):
    root, pub, _ = binary_suite
    png = (root / "fake-pareto.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and (pub / "fake-pareto.png").read_bytes() == png
    with Image.open(io.BytesIO(png)) as im:
        im.verify()
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size[0] >= 1000 and im.size[1] >= 600
    # rendered again from the same run directories: byte-for-byte the same figure
    write_leaderboard(root, expected_seeds=[0, 1], publish_to=tmp_path)
    assert (tmp_path / "fake-pareto.png").read_bytes() == png


def test_pareto_front():
    cost = np.array([1.0, 2.0, 2.0, 3.0, 4.0, np.nan, 0.5])
    value = np.array([0.70, 0.80, 0.75, 0.78, 0.90, 0.99, 0.60])
    assert pareto_front(cost, value).tolist() == [True, True, False, False, True, False, True]
    assert pareto_front(np.array([1.0, 1.0]), np.array([0.5, 0.5])).tolist() == [True, False]


def test_pareto_png_direct_is_deterministic_and_handles_missing_costs():
    methods = pd.DataFrame({
        "fusion": ["a", "b", "c"], "tabular_encoder": ["mlp"] * 3, "strategy": ["frozen"] * 3,
        "protocol": ["complete"] * 3, "mean": [0.7, 0.8, 0.75], "std": [0.01, np.nan, 0.02],
        "complete": [True, True, False], "gmac_total": [0.1, np.nan, 0.05], "latency_ms_p50": [1.0, 2.0, 0.5]})
    a = pareto_png(methods[PLOT_COLUMNS], "t", "AUC (%)")
    assert a.startswith(PNG_MAGIC) and a == pareto_png(methods[PLOT_COLUMNS], "t", "AUC (%)")


def test_multiclass_statistics_have_ci_but_no_delong(tmp_path):
    root = tmp_path / "fakemc"
    make_suite(root, task="multiclass", incomplete=None)
    write_leaderboard(root)
    md = (root / "leaderboard.md").read_text()
    rows = _section(md, "Statistics")
    assert len(rows) == 6 and all(r[9].startswith("[") and r[7].startswith("[") for r in rows)
    assert "Seed ensemble top-1 ACC (%)" in md and "paired bootstrap" in md
    data = json.loads((root / "leaderboard.json").read_text())
    assert data["task"] == "multiclass" and data["statistics"]["delong"] is None
    assert all(m["delong_p"] is None for m in data["methods"])  # ties by a paired bootstrap, not DeLong
    assert (root / "fakemc-pareto.png").read_bytes().startswith(PNG_MAGIC)
