"""A frozen search trial at the suite's first seed is that seed's final fit: taken, not repeated.

The search runs every configuration of its grid at ``suite.seeds[0]``; the final fit of the chosen
configuration at that seed would repeat one of those trials exactly, so ``_RunContext.final_train``
takes the trial's fit. Checked end to end: the predictions are bit-identical to refitting.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import bench.method as method
from bench.cli import main
from bench.suites import SUITES_DIR

ARGS = ["--budget", "smoke", "--tabular", "mlp", "--fusion", "concat", "--strategy", "frozen", "--no-progress"]


def _grid_suite(tmp_path):
    doc = yaml.safe_load((SUITES_DIR / "ol3i-incomplete.yaml").read_text())
    doc["protocols"] = [{"name": "complete"}]
    doc["budget_overrides"] = {"smoke": {"search": {"n_configs": 2, "lr": [1.0e-2, 1.0e-3]}}}
    path = tmp_path / "grid-suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _runs(out, only: str = ""):
    """Each run's predictions and report's ``training`` by run id (those whose id contains ``only``)."""
    runs = {}
    for rd in sorted((out / "ol3i-incomplete" / "runs").iterdir()):
        if only not in rd.name:
            continue
        with np.load(rd / "predictions.npz") as z:
            runs[rd.name] = ({k: z[k] for k in z.files}, json.loads((rd / "report.json").read_text())["training"])
    return runs


@pytest.mark.slow
def test_the_search_trial_is_the_first_seeds_final_fit_bit_for_bit(tmp_path, monkeypatch):
    suite = str(_grid_suite(tmp_path))
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "reused"), *ARGS]) == 0
    reused = _runs(tmp_path / "reused")
    keys = iter(range(10**6))  # no trial ever matches a final fit: every seed is trained again
    monkeypatch.setattr(method, "_fit_key", lambda hp, seed: f"never-{next(keys)}")
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "refit"), *ARGS]) == 0
    refit = _runs(tmp_path / "refit")

    assert sorted(reused) == sorted(refit) and len(reused) == 2
    for name, (arrays, training) in reused.items():
        first_seed = name.endswith("seed2022")
        assert ("fit" in training) == first_seed, name  # the search ran at the suite's first seed only
        assert "fit" not in refit[name][1]
        assert training["search"]["distinct_configs"] == 2
        assert training["history"] == refit[name][1]["history"]
        assert sorted(arrays) == sorted(refit[name][0])
        for k, v in arrays.items():
            assert np.array_equal(v, refit[name][0][k]), (name, k)


def test_the_dry_run_counts_the_first_seeds_fit_as_the_search_trial(tmp_path):
    from bench.plan import plan_suite
    from bench.suite import load_suite

    suite = load_suite(str(_grid_suite(tmp_path)), budget="smoke", fusions=["concat"], tabular_encoders=["mlp"],
                       strategies=["frozen"])
    fits = {t.name: t.cost for t in plan_suite(suite, out=tmp_path / "out") if t.kind == "fit"}
    assert fits == {"complete__mlp__concat__frozen__seed2022": 0.0, "complete__mlp__concat__frozen__seed2023": 4.0}
