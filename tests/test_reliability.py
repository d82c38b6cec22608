"""Never a silently wrong leaderboard: run fingerprints, unreadable files set aside, inputs checked up front.

Fast tests use fake run directories (``tests/test_leaderboard_plots.make_suite``, no training); the
end-to-end ones (marked ``slow``) train the smallest smoke suite (MLP x concat, frozen).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.cli import main
from bench.errors import BenchError, ConfigError, DataError
from bench.fingerprint import Fingerprints, describe_change, planned_specs, plugin_identity, reconcile
from bench.preflight import check_out, check_storage, check_writable, suite_lock
from bench.results import (
    FAILED,
    atomic_write_text,
    check_cache,
    load_failures,
    load_reports,
    run_dir,
    staged_writes,
)
from bench.suite import load_suite
from bench.suites import SUITES_DIR
from tests.test_leaderboard_plots import make_suite

SMOKE = ["--budget", "smoke", "--tabular", "mlp", "--fusion", "concat", "--strategy", "frozen", "--no-progress"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "internal error" not in err, err
    return err


# ------------------------------------------------------------------------------ suite and budget schema
def _suite_file(tmp_path: Path, edit) -> Path:
    """A copy of ol3i-incomplete (in another folder than the built-ins) with ``edit(doc)`` applied."""
    doc = yaml.safe_load((SUITES_DIR / "ol3i-incomplete.yaml").read_text())
    edit(doc)
    path = tmp_path / "user" / "my-suite.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _budget_edit(key_path: list[str], value):
    def edit(doc):
        node = doc.setdefault("budget_overrides", {}).setdefault("smoke", {})
        for k in key_path[:-1]:
            node = node.setdefault(k, {})
        node[key_path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.update(fusions="concat"), "fusions must be a list of strings, e.g. [concat, amf], got 'concat'"),
    (lambda d: d.update(seeds="2022"), "seeds must be a list of integers"),
    (lambda d: d.update(version="two"), "version must be an integer >= 1, got 'two'"),
    (lambda d: d["loss"].update(class_weights=[0.1]), "class_weights must be a list of 2 numbers"),
    (lambda d: d.update(fusion=["concat"]), "unknown key 'fusion' (did you mean 'fusions'?)"),
    (_budget_edit(["finetune", "frozen", "max_epoch"], 400), "unknown key 'max_epoch' (did you mean 'max_epochs'?)"),
    (_budget_edit(["finetune", "frozen", "batch_size"], 0), "batch_size must be an integer >= 1, got 0"),
    (_budget_edit(["probes", "max_epochs"], -1), "max_epochs must be an integer >= 1, got -1"),
    (_budget_edit(["pretrain", "lr"], "fast"), "pretrain.lr must be a number > 0"),
    (lambda d: d.update(seeds=[2022, 2022]), "repeats seed 2022"),
    (lambda d: d.update(include="nowhere.yaml"), "includes 'nowhere.yaml'"),
    (lambda d: d.update(budget_overrides={"cpuu": {}}), "unknown budget 'cpuu'"),
])
def test_suite_schema_errors_are_one_line_before_any_data(tmp_path, capsys, edit, expected):
    path = _suite_file(tmp_path, edit)
    t0 = time.perf_counter()
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "out"), *SMOKE]) == 2
    assert time.perf_counter() - t0 < 20
    err = _err(capsys)
    assert expected in err and str(path) in err
    assert not (tmp_path / "out").exists()  # nothing was written: the check came first


def test_include_resolves_among_the_builtin_suites(tmp_path):
    """`include: _budgets.yaml` works from a user's file anywhere (it is not next to it)."""
    path = _suite_file(tmp_path, lambda d: d.update(name="mine"))
    assert not (path.parent / "_budgets.yaml").exists()
    suite = load_suite(str(path), budget="smoke")
    assert suite.budget["finetune"]["frozen"]["max_epochs"] == 4


@pytest.mark.parametrize("seeds, expected", [
    (["7", "7"], "--seeds repeats seed 7"),
    (["-3", "4"], "seed -3 is not an integer in [0, 4294967295]"),
    (["5", str(2**40)], f"seed {2**40} is not an integer"),
    (["7"], "at least two seeds are needed"),
])
def test_cli_seeds_checked_first(tmp_path, capsys, seeds, expected):
    assert main(["run", "--suite", "ol3i-incomplete", "--out", str(tmp_path), *SMOKE, "--seeds", *seeds]) == 2
    assert expected in _err(capsys)


def test_cli_string_seed_and_empty_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--suite", "ol3i-incomplete", "--seeds", "x", "y"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", "--suite", "ol3i-incomplete", "--out", ""])
    assert exc.value.code == 2 and "--out: empty path" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--out is empty"):
        check_out("")


def test_tabular_adds_registered_encoders_like_fusion():
    """`--tabular resnet`: a registered encoder outside ol3i-incomplete's list joins the suite."""
    suite = load_suite("ol3i-incomplete", budget="smoke", tabular_encoders=["resnet", "mlp"])
    assert suite.tabular_encoders == ["resnet", "mlp"]
    with pytest.raises(BenchError, match="unknown tabular_encoder 'mlpp'.*'mlp'"):
        load_suite("ol3i-incomplete", budget="smoke", tabular_encoders=["mlpp"])


def test_builtin_suites_pass_the_schema():
    for name in ("ol3i-incomplete", "ol3i-missing-image", "ol3i-missing-tabular", "dvm-complete"):
        for budget in ("smoke", "cpu", "paper"):
            load_suite(name, budget=budget)


# --------------------------------------------------------------------------------- preflight checks
def test_unwritable_out_cache_and_dead_storage_fail_in_seconds(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "--suite", "ol3i-incomplete", "--out", str(blocker / "out"), *SMOKE]) == 2
    assert "--out" in (err := _err(capsys)) and "not writable" in err
    monkeypatch.setenv("BENCH_CACHE", str(blocker / "cache"))
    assert main(["run", "--suite", "ol3i-incomplete", "--out", str(tmp_path / "o"), *SMOKE]) == 2
    assert "cache folder" in (err := _err(capsys)) and "BENCH_CACHE" in err
    monkeypatch.undo()
    t0 = time.perf_counter()
    assert main(["run", "--suite", "ol3i-incomplete", "--out", str(tmp_path / "o"), *SMOKE,
                 "--storage", "postgresql://me@127.0.0.1:1/bench"]) == 2
    assert time.perf_counter() - t0 < 30
    assert "--storage 'postgresql://me@127.0.0.1:1/bench' is not reachable" in _err(capsys)
    with pytest.raises(ConfigError, match="folder of --storage"):
        check_storage("optuna", f"sqlite:///{blocker}/x/optuna.db")
    check_storage("optuna", f"sqlite:///{tmp_path}/optuna.db")  # fine
    check_writable(tmp_path / "new" / "dir", "--out", "fix")


def test_second_run_on_a_busy_out_refuses(tmp_path, capsys):
    with suite_lock(tmp_path / "ol3i-incomplete"):
        assert main(["run", "--suite", "ol3i-incomplete", "--out", str(tmp_path), *SMOKE]) == 2
        err = _err(capsys)
        assert "is in use by another `bench run` (pid" in err and "another --out" in err
    with suite_lock(tmp_path / "ol3i-incomplete"):  # released
        pass


def test_messages_point_the_right_way(tmp_path, capsys):
    assert main(["list", "fusoin"]) == 2
    err = _err(capsys)
    assert "Did you mean 'fusion'?" in err and "bench list kind" not in err
    make_suite(tmp_path / "out" / "fake")
    assert main(["leaderboard", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "out" / "fake") in _err(capsys)


# ------------------------------------------------------------------------ unreadable files under --out
def test_corrupt_files_are_named_set_aside_and_the_leaderboard_goes_on(tmp_path, capsys):
    root = tmp_path / "fake"
    make_suite(root)
    runs = sorted((root / "runs").iterdir())
    (runs[0] / "report.json").write_text('{"spec": {"suite": "fa')  # truncated
    (runs[1] / "predictions.npz").write_bytes(b"garbage" * 10)
    report = json.loads((runs[2] / "report.json").read_text())
    report["test"]["value"] = float("nan")
    (runs[2] / "report.json").write_text(json.dumps(report))
    (root / "search").mkdir()
    (root / "search" / "mlp__concat__frozen__all.json").write_text("{")
    assert main(["leaderboard", str(root)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("bench: warning: ") for line in err)
    assert any(str(runs[0] / "report.json") in line and "moved the run to" in line for line in err)
    assert any(str(runs[1] / "predictions.npz") in line for line in err)
    assert any("non-finite test metric" in line for line in err)
    assert not runs[0].exists() and not runs[1].exists()
    assert len(list((root / "corrupt").iterdir())) == 3
    failed = json.loads((runs[2] / FAILED).read_text())
    assert failed["error"] == "NonFiniteMetric" and not (runs[2] / "DONE").exists()
    md = (root / "leaderboard.md").read_text()
    assert "## Failed runs" in md and "NonFiniteMetric" in md
    assert {r.spec.run_id for r in load_reports(root)} == {d.name for d in runs[3:]}


def test_unreadable_suite_json_does_not_block_the_leaderboard(tmp_path, capsys):
    root = tmp_path / "fake"
    make_suite(root)
    (root / "suite.json").write_text("not json")
    assert main(["leaderboard", str(root)]) == 0
    assert "suite.json is unreadable" in capsys.readouterr().err


def test_outputs_of_one_rendering_are_written_together_or_not_at_all(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(ValueError), staged_writes(tmp_path):
        atomic_write_text(tmp_path / "a.txt", "new a")
        atomic_write_text(tmp_path / "b.txt", "new b")
        assert (tmp_path / "a.txt").read_text() == "old a"  # nothing visible yet
        raise ValueError("NaN in leaderboard.json")
    assert (tmp_path / "a.txt").read_text() == "old a" and not (tmp_path / "b.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary files left
    with staged_writes(tmp_path):
        atomic_write_text(tmp_path / "a.txt", "new a")
        atomic_write_text(tmp_path / "b.txt", "new b")
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "b.txt").read_text() == "new b"


def test_leaderboard_reads_only_the_runs_it_is_given(tmp_path):
    root = tmp_path / "fake"
    make_suite(root, seeds=(1, 7))
    keep = [d.name for d in (root / "runs").iterdir() if d.name.endswith("seed7") or "trainable" in d.name]
    assert {r.spec.run_id for r in load_reports(root, run_ids=keep)} == set(keep)
    from bench.leaderboard import write_leaderboard

    write_leaderboard(root, expected_seeds=[7], run_ids=keep)
    csv = (root / "results.csv").read_text()
    assert len(csv.strip().splitlines()) == 1 + len(keep)
    assert load_failures(root, run_ids=[]) == []


def test_corrupt_cache_files_are_set_aside(tmp_path, capsys):
    import torch

    (tmp_path / "pretrain").mkdir()
    (tmp_path / "features").mkdir()
    torch.save({"w": torch.zeros(3)}, tmp_path / "pretrain" / "good.pt")
    data = (tmp_path / "pretrain" / "good.pt").read_bytes()
    (tmp_path / "pretrain" / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "features" / "junk.pt").write_bytes(b"\x00" * 64)
    assert check_cache(tmp_path) == 2
    err = capsys.readouterr().err
    assert "cut.pt is unreadable" in err and "junk.pt is unreadable" in err and "PyTorch" not in err
    assert [p.name for p in (tmp_path / "pretrain").iterdir()] == ["good.pt"]
    assert check_cache(tmp_path) == 0


# ------------------------------------------------------------------------------------- fingerprints
PROV = {"dataset": "ol3i-synthetic", "source": "synthetic", "version": "v1", "checksum": "aaaa"}


def test_fingerprint_names_what_changed():
    smoke = load_suite("ol3i-incomplete", budget="smoke", tabular_encoders=["mlp"], fusions=["concat"])
    cpu = load_suite("ol3i-incomplete", budget="cpu", tabular_encoders=["mlp"], fusions=["concat"])
    sp = planned_specs(smoke)[0]
    a = Fingerprints(smoke, PROV)(sp)
    assert a == Fingerprints(smoke, dict(PROV))(sp)  # deterministic
    assert a["plugins"]["fusion"]["distribution"] == "bench" and a["plugins"]["fusion"]["source"]
    assert describe_change(a, Fingerprints(cpu, PROV)(sp)).startswith("budget smoke → cpu")
    real = {**PROV, "dataset": "ol3i", "source": "real", "checksum": "bbbb"}
    assert describe_change(a, Fingerprints(smoke, real)(sp)).startswith(
        "dataset ol3i-synthetic (synthetic, checksum aaaa) → ol3i (real, checksum bbbb)")
    assert "no stored fingerprint" in describe_change({}, a)
    # --seeds, --fusion and --tabular pick runs; they do not change a run's fingerprint
    more = load_suite("ol3i-incomplete", budget="smoke", seeds=[2022, 7], fusions=["amf", "concat"])
    assert Fingerprints(more, PROV)(sp)["digest"] == a["digest"]


def test_an_edited_plugin_changes_its_fingerprint(tmp_path, monkeypatch):
    from bench.registry import registry

    pkg = tmp_path / "my_fusion_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from bench.registry import register_fusion\nfrom .impl import *\n")
    (pkg / "impl.py").write_text(
        "from bench.registry import register_fusion\n"
        "from baselines.fusion.concat import ConcatFusion\n"
        "@register_fusion('edited_test_fusion')\nclass Edited(ConcatFusion):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("my_fusion_pkg")
    try:
        before = plugin_identity("fusion", "edited_test_fusion")
        assert before["module"] == "my_fusion_pkg.impl" and before["distribution"] is None
        (pkg / "helpers.py").write_text("X = 1\n")  # any file of the plug-in's package counts
        after = plugin_identity("fusion", "edited_test_fusion")
        assert after["source"] != before["source"]
        assert describe_change({"digest": "x", "plugins": {"fusion": before}},
                               {"digest": "y", "plugins": {"fusion": after}}) == \
            "fusion 'edited_test_fusion' source edited (my_fusion_pkg.impl)"
    finally:
        del registry("fusion").entries["edited_test_fusion"]


def test_reconcile_sets_aside_runs_made_otherwise(tmp_path):
    suite = load_suite("ol3i-incomplete", budget="smoke", tabular_encoders=["mlp"], fusions=["concat"],
                       strategies=["frozen"])
    specs = planned_specs(suite)
    assert [s.run_id for s in specs] == [
        f"{p}__mlp__concat__frozen__seed{s}" for p in ("complete", "incomplete-tabular") for s in (2022, 2023)]
    fps = Fingerprints(suite, PROV)
    for sp in specs:  # finished runs: two with today's fingerprint, one with another budget's, one with none
        d = run_dir(tmp_path, sp)
        d.mkdir(parents=True)
        (d / "DONE").write_text("x")
        (d / "report.json").write_text("{}")
    for sp in specs[:2]:
        (run_dir(tmp_path, sp) / "fingerprint.json").write_text(json.dumps(fps(sp)))
    other = {**fps(specs[2]), "digest": "other", "budget": {"name": "cpu", "settings": "x"}}
    (run_dir(tmp_path, specs[2]) / "fingerprint.json").write_text(json.dumps(other))
    said = []
    assert reconcile(tmp_path, suite, fps, specs, say=said.append) == 2
    assert [run_dir(tmp_path, sp).exists() for sp in specs] == [True, True, False, False]
    assert len(said) == 2 and any("budget cpu → smoke" in s for s in said)
    assert any("no stored fingerprint" in s for s in said)
    assert len(list((tmp_path / suite.name / "superseded").iterdir())) == 2
    assert reconcile(tmp_path, suite, fps, specs, say=said.append) == 0


# ------------------------------------------------------------------------------- image intensities
def _slices(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    hu = np.full((3, 64, 64), -1000.0, np.float32)
    hu[:, 16:48, 16:48] = rng.normal(40, 30, (3, 32, 32))  # soft tissue
    hu[:, 30:34, 30:34] = 700  # bone
    if kind == "windowed":
        return np.clip((hu + 125) / 400, 0, 1)
    if kind == "offset":
        return (hu + 1024).astype(np.uint16)
    if kind == "offset_int16":
        return (hu + 1024).astype(np.int16)
    if kind == "nan":
        hu[1, 5, 5] = np.nan
    return hu.astype(np.int16) if kind == "int16" else hu


@pytest.mark.parametrize("kind, expected", [
    ("windowed", "slice s0 lies in [0, 1]: it looks already windowed"),
    ("offset", "slice s0 has no value below 0"),
    ("offset_int16", "without the DICOM rescale"),
    ("nan", "slice s1 has 1 non-finite pixel"),
])
def test_ct_intensities_are_checked(kind, expected):
    from bench.data.intensity import check_ct_hu

    with pytest.raises(DataError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        check_ct_hu(_slices(kind), ["s0", "s1", "s2"], "l3_slices.h5")


def test_plausible_ct_and_photos_pass():
    from bench.data.intensity import check_ct_hu, check_photo

    check_ct_hu(_slices("hu"), ["a", "b", "c"], "x")
    check_ct_hu(_slices("int16"), ["a", "b", "c"], "x")
    check_photo(np.zeros((2, 3, 8, 8), np.uint8) + 255, ["a", "b"], "x")
    check_photo(np.full((2, 3, 8, 8), 0.5, np.float32), ["a", "b"], "x")
    with pytest.raises(DataError, match="image b spans"):
        check_photo(np.stack([np.zeros((3, 8, 8)), np.full((3, 8, 8), 300.0)]), ["a", "b"], "x")


def test_windowed_ol3i_release_is_refused_at_load_and_never_cached(tmp_path, capsys):
    """A real-layout OL3I folder whose slices are already in [0, 1]: exit 2 naming the slice; no cache."""
    import h5py
    import pandas as pd

    root = tmp_path / "ol3i"
    root.mkdir()
    ids = [f"p{i:03d}" for i in range(12)]
    with h5py.File(root / "l3_slices.h5", "w") as f:
        for aid in ids:
            f.create_dataset(aid, data=np.full((512, 512), 0.25, np.float32))
    pd.DataFrame({"anon_id": ids, "label_1y": [0, 1] * 6, "set_1y": ["train"] * 6 + ["val"] * 3 + ["test"] * 3,
                  "age": np.arange(12.0)}).to_csv(root / "clinical_data.csv", index=False)
    cache = tmp_path / "cache"
    from bench.registry import get

    with pytest.raises(DataError, match=r"l3_slices.h5: slice p000 lies in \[0.25, 0.25\]"):
        get("dataset", "ol3i")(root=root, image_size=32, cache_dir=cache)
    assert not any(p.suffix == ".npy" for p in cache.rglob("*"))


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_reruns_reuse_only_what_matches_and_the_leaderboard_is_this_plan(tmp_path, capsys):
    out = tmp_path / "out"
    suite_dir = out / "ol3i-incomplete"
    args = ["run", "--out", str(out), *SMOKE]
    assert main([*args, "--suite", "ol3i-incomplete"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("[bench] 4 runs done, 0 skipped (finished earlier), 0 failed")
    fp = json.loads((suite_dir / "runs" / "complete__mlp__concat__frozen__seed2022" / "fingerprint.json").read_text())
    report = json.loads((suite_dir / "runs" / "complete__mlp__concat__frozen__seed2022" / "report.json").read_text())
    assert report["fingerprint"] == fp and fp["budget"]["name"] == "smoke" and fp["dataset"]["source"] == "synthetic"
    assert main([*args, "--suite", "ol3i-incomplete"]) == 0  # nothing changed: everything reused
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("[bench] 0 runs done, 4 skipped")

    # an edited suite file (same name, same version) and other seeds: the changed runs are redone, and
    # the leaderboard holds exactly this invocation's runs
    edited = _suite_file(tmp_path, lambda d: d["loss"].update(sampler=[0.5, 4.0]))
    assert main([*args, "--suite", str(edited), "--seeds", "2023", "7"]) == 0
    captured = capsys.readouterr().out
    assert "made with a different input (suite definition edited)" in captured
    assert captured.strip().splitlines()[-1].startswith("[bench] 4 runs done, 0 skipped")
    rows = (suite_dir / "results.csv").read_text().strip().splitlines()[1:]
    assert sorted({r.split(",")[RESULT_SEED] for r in rows}) == ["2023", "7"] and len(rows) == 4
    assert json.loads((suite_dir / "leaderboard.json").read_text())["seeds_expected"] == [2023, 7]
    assert "mean ± std over seeds [7, 2023]" in (suite_dir / "leaderboard.md").read_text()

    # unreadable files under --out and the cache: named, set aside, their runs redone; exit 0
    runs = suite_dir / "runs"
    (runs / "complete__mlp__concat__frozen__seed7" / "report.json").write_text("{")
    (runs / "incomplete-tabular__mlp__concat__frozen__seed7" / "predictions.npz").write_bytes(b"junk")
    (suite_dir / "suite.json").write_text("")
    pre = sorted((Path(__import__("os").environ["BENCH_CACHE"]) / "pretrain").glob("*.pt"))
    pre[0].write_bytes(pre[0].read_bytes()[:100])
    assert main([*args, "--suite", str(edited), "--seeds", "2023", "7"]) == 0
    err = capsys.readouterr()
    assert err.err.count("is unreadable") >= 4 and "internal error" not in err.err
    assert err.out.strip().splitlines()[-1].startswith("[bench] 2 runs done, 2 skipped")


RESULT_SEED = __import__("bench.results", fromlist=["RESULT_COLUMNS"]).RESULT_COLUMNS.index("seed")


@pytest.mark.slow
def test_failed_runs_make_bench_run_exit_1(tmp_path, capsys):
    from bench.registry import register_fusion, registry
    from tests.test_failures import ExplodingFusion

    register_fusion("exploding_reliability_fusion")(ExplodingFusion)
    try:
        args = ["run", "--suite", "ol3i-incomplete", "--out", str(tmp_path), "--budget", "smoke", "--tabular", "mlp",
                "--strategy", "frozen", "--fusion", "exploding_reliability_fusion", "--no-progress"]
        assert main(args) == 1
        out = capsys.readouterr()
        assert out.out.strip().splitlines()[-1].startswith("[bench] 0 runs done, 0 skipped (finished earlier), 4 failed")
        assert "Traceback" not in out.err
    finally:
        del registry("fusion").entries["exploding_reliability_fusion"]
    assert not math.isnan(0.0)


def test_perf_without_its_optional_dependency_is_one_line(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_mambapy(name, *args, **kwargs):
        if name.startswith("mambapy"):
            raise ModuleNotFoundError("No module named 'mambapy'", name="mambapy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mambapy)
    assert main(["perf", "--quick", "--only", "ft_mamba"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "needs the Python module 'mambapy'" in err and "pip install" in err


def test_lock_is_held_against_another_process(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time; from bench.preflight import suite_lock\n"
            "with suite_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by another `bench run` \\(pid {proc.pid} on "):
            with suite_lock(tmp_path / "s"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with suite_lock(tmp_path / "s"):  # released when its holder dies
        pass
