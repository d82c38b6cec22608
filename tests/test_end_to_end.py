"""The main job end to end at the `smoke` budget: every fusion, encoder, strategy and protocol, tiny data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main
from bench.leaderboard import write_leaderboard
from bench.results import RESULT_COLUMNS

# two of the paper's three and AMC (the most involved); cross-attention and the other fusions run end to
# end in test_missingness.py and the CI-sized suite of .ci/run, and through the conformance kit
FUSIONS = ["concat", "amf", "amc"]


@pytest.fixture(scope="module")
def ol3i_smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    rc = main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--out", str(out), "--no-progress",
               "--fusion", *FUSIONS])
    assert rc == 0
    return out / "ol3i-incomplete"


def test_the_run_says_where_its_wall_time_went(ol3i_smoke):
    from bench.pipeline import STAGES

    t = json.loads((ol3i_smoke / "timings.json").read_text())
    stages = t["stages"]
    assert set(STAGES) <= set(stages) and all(v >= 0 for k, v in stages.items() if k in STAGES)
    for stage in ("pretraining", "features", "probes", "latency profiles", "final fits", "leaderboard"):
        assert stages[stage] > 0, stage  # the smoke suite runs every one of them
    assert abs(sum(stages.values()) - t["wall_seconds"]) < 0.01


def test_results_table_complete(ol3i_smoke):
    everything = pd.read_csv(ol3i_smoke / "results.csv")
    assert list(everything.columns) == RESULT_COLUMNS
    assert everything.test_balanced_accuracy.notna().all() and everything.threshold.notna().all()
    df = everything[everything.kind == "fusion"]
    # 3 fusions x 3 tabular encoders x 2 strategies x 2 protocols x 2 seeds
    assert len(df) == 72 and set(df.fusion) == set(FUSIONS)
    assert set(df.protocol) == {"complete", "incomplete-tabular"}
    assert set(df.strategy) == {"frozen", "trainable"}
    assert (df.data_source == "synthetic").all() and (df.metric == "auc").all()
    assert df.test_value.between(0, 1).all()
    assert (df.params_fusion > 0).all() and (df.params_total > df.params_fusion).all()
    assert (df.gmac_fusion > 0).all() and (df.latency_ms_p50 > 0).all()
    assert df.device.str.startswith("cpu").all()


def test_leaderboard_is_rebuilt_from_run_directories(ol3i_smoke, tmp_path):
    before = (ol3i_smoke / "results.csv").read_text()
    write_leaderboard(ol3i_smoke, publish_to=tmp_path)
    assert (ol3i_smoke / "results.csv").read_text() == before
    md = (tmp_path / "ol3i-incomplete.md").read_text()
    assert "SYNTHETIC" in md and "drop" in md and "Rconf" in md and "commit" in md


def test_rerun_skips_finished_runs(ol3i_smoke):
    """A rerun of a finished suite trains nothing and renders the same leaderboard."""
    reports = sorted(ol3i_smoke.glob("runs/*/report.json"))
    stamps = {p: p.stat().st_mtime_ns for p in reports}
    results = (ol3i_smoke / "results.csv").read_text()
    assert main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--out", str(ol3i_smoke.parent),
                 "--no-progress", "--fusion", *FUSIONS]) == 0
    assert {p: p.stat().st_mtime_ns for p in reports} == stamps
    assert (ol3i_smoke / "results.csv").read_text() == results


@pytest.mark.slow
def test_a_rerun_of_a_finished_suite_keeps_its_reference_rows(tmp_path, monkeypatch):
    """The leaderboard of a rerun that has nothing to do still holds the classical models and ceilings:
    the plan names every run the leaderboard reads, not only those this invocation wrote (before the plan
    drove execution, a finished pair was skipped whole and its reference rows left out)."""
    from bench.pipeline import run_suite
    from bench.suite import load_suite

    suite = load_suite("ol3i-incomplete", budget="smoke", fusions=["concat"], tabular_encoders=["mlp"],
                       strategies=["frozen"])
    suite.budget["reference"] = {"classical": True}
    first = run_suite(suite, out=tmp_path, progress=False)
    results = (first.suite_dir / "results.csv").read_text()
    kinds = pd.read_csv(first.suite_dir / "results.csv").kind
    assert set(kinds) == {"fusion", "baseline", "ceiling"}
    from bench.plan import plan_suite

    assert all(t.done for t in plan_suite(suite, out=tmp_path) if t.kind != "render")
    monkeypatch.setattr("bench.pipeline.ig_importance", None)  # the ranking comes from the cache
    again = run_suite(suite, out=tmp_path, progress=False)
    assert sorted(again.run_ids) == sorted(first.run_ids) and len(again.run_ids) == len(kinds)
    assert (again.suite_dir / "results.csv").read_text() == results
    assert again.stage_seconds["final fits"] == again.stage_seconds["pretraining"] == 0


def test_incomplete_protocol_masks_the_top_feature(ol3i_smoke):
    meta = json.loads((ol3i_smoke / "suite.json").read_text())
    top = meta["importance"]["ranking"][0]
    assert top in meta["protocols"]["incomplete-tabular"]


def test_dvm_complete_multiclass(tmp_path):
    rc = main(["run", "--suite", "dvm-complete", "--budget", "smoke", "--out", str(tmp_path), "--no-progress",
               "--tabular", "mlp", "ft_mamba", "--strategy", "frozen"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "dvm-complete" / "results.csv")
    assert {"image_only", "tabular_only"} <= set(df[df.kind == "baseline"].fusion)
    df = df[df.kind == "fusion"]
    assert (df.metric == "acc").all() and len(df) == 3 * 2 * 2  # 3 fusions, 2 encoders, 2 seeds
    assert "101 classes" in (tmp_path / "dvm-complete" / "leaderboard.md").read_text()


def test_dry_run_lists_the_plan_and_what_is_done(ol3i_smoke, tmp_path, capsys):
    """`bench run --dry-run`: the finished suite's fits are done; an empty folder has everything pending;
    nothing is trained or written."""
    from bench.plan import plan_suite
    from bench.suite import load_suite

    args = ["--suite", "ol3i-incomplete", "--budget", "smoke", "--no-progress", "--fusion", *FUSIONS]
    assert main(["run", *args, "--out", str(ol3i_smoke.parent), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "| fit |" in printed and "dry run: nothing trained, no run written" in printed
    suite = load_suite("ol3i-incomplete", budget="smoke", fusions=FUSIONS)
    done = plan_suite(suite, out=ol3i_smoke.parent)
    fits = [t for t in done if t.kind == "fit"]
    assert len(fits) == len(list((ol3i_smoke / "runs").glob("*__frozen__seed*"))) * 2 > 0  # frozen + trainable
    assert all(t.done for t in fits) and all(t.done for t in done if t.kind in ("pretrain", "search"))
    fresh = plan_suite(suite, out=tmp_path / "empty")
    assert [t.name for t in fresh if t.kind == "fit"] == [t.name for t in fits]
    assert not any(t.done for t in fresh if t.kind in ("fit", "search"))
    assert main(["run", *args, "--out", str(tmp_path / "empty"), "--dry-run"]) == 0
    assert "executor: this machine: 1 worker process" in capsys.readouterr().out
    assert main(["run", *args, "--out", str(tmp_path / "empty"), "--dry-run", "--backend", "ray",
                 "--ray-address", "10.0.0.9:6379"]) == 0  # the plan does not join the cluster
    assert "executor: Ray at 10.0.0.9:6379: pretraining, encodings, classical models and fits as tasks of 1 CPU" \
        in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()  # a dry run writes nothing


def test_the_plan_finds_finished_reference_rows_by_their_fingerprints(tmp_path):
    """A reference row is done when its directory (bracketed name) holds DONE and the fingerprint it would be
    written with now; the same row written with another fingerprint is pending."""
    from bench.plan import plan_suite
    from bench.reference import reference_rows, reference_spec
    from bench.results import FINGERPRINT_FILE, run_dir
    from bench.suite import load_suite

    suite = load_suite("ol3i-incomplete", budget="smoke", fusions=FUSIONS, tabular_encoders=["mlp"])
    suite.budget["reference"] = {"classical": True}
    fresh = [t for t in plan_suite(suite, out=tmp_path) if t.kind == "reference"]
    assert fresh and not any(t.done for t in fresh) and any("logreg[table]" in t.name for t in fresh)
    from bench.pipeline import data_provenance, load_data, reference_base_fingerprint

    prov = data_provenance(load_data(suite, None))
    row, _, what, _ = reference_rows(None, None)[0]  # logreg[table]
    for seed, digest in zip(suite.seeds, ("now", "old"), strict=True):
        sp, fp = reference_spec(suite, "complete", "resnet10t", None, row, what, seed,
                                reference_base_fingerprint(suite, prov, "complete", "mlp"))
        d = run_dir(tmp_path, sp)
        d.mkdir(parents=True)
        for name in ("DONE", "report.json"):
            (d / name).write_text("{}")
        (d / FINGERPRINT_FILE).write_text(json.dumps(fp if digest == "now" else {**fp, "digest": "other"}))
    task = next(t for t in plan_suite(suite, out=tmp_path) if t.name.startswith(f"{row} · raw / complete"))
    assert not task.done  # one of its two seeds was made otherwise
    sp, fp = reference_spec(suite, "complete", "resnet10t", None, row, what, suite.seeds[1],
                            reference_base_fingerprint(suite, prov, "complete", "mlp"))
    (run_dir(tmp_path, sp) / FINGERPRINT_FILE).write_text(json.dumps(fp))
    task = next(t for t in plan_suite(suite, out=tmp_path) if t.name.startswith(f"{row} · raw / complete"))
    assert task.done


def test_every_report_decides_at_its_validation_threshold(ol3i_smoke):
    """The report's test accuracy is the one at the validation-chosen threshold, never at a fixed 0.5."""
    for report in ol3i_smoke.glob("runs/*/report.json"):
        test = json.loads(report.read_text())["test"]
        op = test["at_threshold"]
        assert op["rule"] == "youden (validation)"
        assert test["balanced_acc"] == op["balanced_accuracy"] and test["acc"] == op["accuracy"]


def test_backfill_adds_the_decision_rule_and_the_pair_pretraining_from_stored_results(tmp_path):
    """Reports of older code get what current code writes, derived from what they stored; nothing else moves."""
    from bench.results import backfill_reports

    def write(name, report):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps(report))
        (d / "DONE").write_text("")
        return d

    op = {"rule": "youden (validation)", "accuracy": 0.7, "balanced_accuracy": 0.65, "threshold": -2.0}
    pre = {"epochs": 6, "heldout": {"itc": 4.1}}
    net = write("complete__mlp__concat__frozen__seed1", {"spec": {"tabular_encoder": "mlp"},
                "test": {"metric": "auc", "value": 0.7, "acc": 0.04, "balanced_acc": 0.5, "at_threshold": op},
                "training": {"epochs_run": 3, "pretraining": pre}})
    ref = write("complete__mlp__logreg[table,image]__frozen__seed1", {"spec": {"tabular_encoder": "mlp"},
                "test": {"metric": "auc", "value": 0.6, "at_threshold": op}, "training": {"image_features_from": "mlp"}})
    assert backfill_reports(tmp_path) == 2
    n, r = (json.loads((d / "report.json").read_text()) for d in (net, ref))
    assert (n["test"]["acc"], n["test"]["balanced_acc"]) == (0.7, 0.65)
    assert (n["test"]["acc_at_logit_0"], n["test"]["balanced_acc_at_logit_0"]) == (0.04, 0.5)
    assert n["test"]["value"] == 0.7 and n["training"] == {"epochs_run": 3, "pretraining": pre}
    assert r["test"]["balanced_acc"] == 0.65 and r["training"]["pretraining"] == pre
    assert backfill_reports(tmp_path) == 0  # nothing left to add
