"""Reference rows (bench/reference.py) when their classical models are fitted elsewhere: a promise in the
memo (what ``--backend ray`` puts there) writes the same rows as a fit in this process, each row names where
it was fitted, and ``fits_needed`` lists exactly the fits whose rows are not written yet."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import numpy as np

from bench.data.ol3i_synthetic import make_ol3i_synthetic
from bench.pipeline import data_provenance, prepare, reference_base_fingerprint
from bench.reference import FITTERS, fits_needed, inputs_digest, reference_inputs, write_reference_runs
from bench.results import environment
from bench.suite import load_suite


def _group(tmp_path, out_name: str) -> dict:
    suite = load_suite("ol3i-incomplete", budget="smoke")
    data = make_ol3i_synthetic(n=240, seed=5, image_size=32, cache_dir=tmp_path / "cache")
    prep, prov = prepare(data), data_provenance(data)
    args = dict(out=tmp_path / out_name, suite=suite, protocol="complete", image_label="resnet10t", data=data,
                prep=prep, x_num=prep.tab.x_num, x_cat=prep.tab.x_cat, image_features=None, pair=None,
                seeds=[2022, 2023], prov=prov, env=environment(),
                base_fingerprint=reference_base_fingerprint(suite, prov, "complete", "mlp"), ceilings=None,
                force=False, say=lambda _msg: None)
    return args


def _rows(out) -> dict[str, tuple[dict, dict]]:
    rows = {}
    for report in sorted(out.rglob("report.json")):
        arrays = np.load(report.parent / "predictions.npz")
        rows[report.parent.name] = (json.loads(report.read_text()), {k: arrays[k] for k in arrays.files})
    return rows


def test_a_promised_fit_writes_the_same_row_as_a_local_fit_and_names_where_it_ran(tmp_path):
    args = _group(tmp_path, "local")
    needed = fits_needed(out=args["out"], suite=args["suite"], protocol="complete", image_label="resnet10t",
                         pair=None, seeds=args["seeds"], base_fingerprint=args["base_fingerprint"], force=False,
                         image_features=None)
    assert sorted(needed) == sorted((m, s) for m in FITTERS for s in (2022, 2023))
    local_ids = write_reference_runs(**args, memo={})
    assert fits_needed(out=args["out"], suite=args["suite"], protocol="complete", image_label="resnet10t", pair=None,
                       seeds=args["seeds"], base_fingerprint=args["base_fingerprint"], force=False,
                       image_features=None) == []  # every row written: nothing left to fit

    # the same group, its fits made "elsewhere" and handed over as promises, as reference_fits_on_ray does
    x, y, split = reference_inputs(args["data"], args["prep"], args["x_num"], args["x_cat"], None)
    digest = inputs_digest(x, y, split, args["data"].task, args["data"].n_classes)
    awaited = []

    def promise(how, seed):
        def wait():
            awaited.append((how, seed))
            scores, info = FITTERS[how](x, y, split, args["data"].task, seed, n_classes=args["data"].n_classes)
            return scores, info, {"host": "elsewhere", "ray_node_id": "n0"}
        return wait

    memo = {(digest, how, seed): promise(how, seed) for how, seed in needed}
    remote_args = {**args, "out": tmp_path / "remote"}
    assert write_reference_runs(**remote_args, memo=memo) == local_ids
    assert sorted(awaited) == sorted(needed)  # each promise awaited once, when its row was written
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "remote")
    assert sorted(local) == sorted(remote) and len(local) == len(needed)
    for run_id, (report, arrays) in local.items():
        r_report, r_arrays = remote[run_id]
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], r_arrays[k])
        assert report["test"] == r_report["test"] and report["hyperparameters"] == r_report["hyperparameters"]
        assert report["environment"]["pid"] > 0 and "ray_node_id" not in report["environment"]  # fitted here
        assert r_report["environment"]["ray_node_id"] == "n0" and r_report["environment"]["host"] == "elsewhere"


def test_a_reference_group_whose_cluster_fit_failed_is_left_out_with_a_warning_and_the_rest_written(capsys):
    from bench.pipeline import SuiteRun

    written = []

    def failed():
        raise RuntimeError("the lightgbm fit (seed 2022) on the Ray cluster failed after up to 2 retries: OOM")

    run = SimpleNamespace(deferred_references=[("table / complete", failed),
                                               ("mlp / complete", lambda: written.append("mlp"))],
                          timed=lambda stage: contextlib.nullcontext())
    SuiteRun.write_deferred_references(run)  # what render_task does before the leaderboard
    assert written == ["mlp"] and run.deferred_references == []
    err = capsys.readouterr().err
    assert "bench: warning: reference rows table / complete not written: the lightgbm fit (seed 2022)" in err
    assert "run the suite again" in err
