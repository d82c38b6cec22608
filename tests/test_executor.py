"""Local worker processes for the seeds' final fits (bench.executor, ``bench run --workers N``)."""

from __future__ import annotations

import os

import pytest

from bench.executor import fork_available, run_fits
from bench.hooks import RunHooks
from bench.results import FAILED, RunSpec, record_failure, run_dir

pytestmark = pytest.mark.skipif(not fork_available(), reason="worker processes need fork")


class Recorder(RunHooks):
    def __init__(self):
        self.events = []

    def run_start(self, spec, params):
        self.events.append(("start", spec.seed, params["pid"]))

    def epoch_end(self, spec, epoch, metrics):
        self.events.append(("epoch", spec.seed, epoch, metrics["val_auc"]))

    def run_failed(self, spec, reason, run_dir):
        self.events.append(("failed", spec.seed, reason))


def _specs(n):
    return [RunSpec("s", "complete", "img", "mlp", "concat", "frozen", seed) for seed in range(n)]


def test_fits_run_in_forked_workers_and_their_hook_events_reach_this_process(tmp_path):
    parent = os.getpid()

    def fit(sp, hooks):
        hooks.run_start(sp, {"pid": os.getpid()})
        hooks.epoch_end(sp, 0, {"val_auc": 0.5 + sp.seed / 10})
        if sp.seed == 1:
            raise FloatingPointError("loss is NaN")
        if sp.seed == 2:
            os._exit(3)  # a worker that dies (killed, out of memory) without writing its run
        rd = run_dir(tmp_path, sp)
        rd.mkdir(parents=True)
        (rd / "DONE").write_text("ok\n")

    def on_error(sp, exc, hooks):
        reason = record_failure(run_dir(tmp_path, sp), sp, exc)
        hooks.run_failed(sp, reason, run_dir(tmp_path, sp))

    rec, done = Recorder(), []
    run_fits(_specs(4), fit, workers=2, hooks=rec, on_error=on_error, run_dir_of=lambda sp: run_dir(tmp_path, sp),
             on_done=done.append)
    assert sorted(sp.seed for sp in done) == [0, 1, 2, 3]
    starts = {e[1]: e[2] for e in rec.events if e[0] == "start"}
    assert set(starts) == {0, 1, 2, 3} and parent not in starts.values()  # every fit in a worker process
    assert sorted((e[1], e[3]) for e in rec.events if e[0] == "epoch") == [(0, 0.5), (1, 0.6), (2, 0.7), (3, 0.8)]
    failed = {e[1]: e[2] for e in rec.events if e[0] == "failed"}
    assert set(failed) == {1, 2}
    assert "NaN" in failed[1] and "worker process died (exit code 3)" in failed[2]
    for seed in (0, 3):
        assert (run_dir(tmp_path, _specs(4)[seed]) / "DONE").exists()
    for seed in (1, 2):
        assert (run_dir(tmp_path, _specs(4)[seed]) / FAILED).exists()


def test_one_worker_runs_the_fits_here_in_order():
    order = []
    run_fits(_specs(3), lambda sp, hooks: order.append((sp.seed, os.getpid())), workers=1, hooks=RunHooks(),
             on_error=lambda *a: pytest.fail("no error expected"), run_dir_of=lambda sp: None)
    assert order == [(0, os.getpid()), (1, os.getpid()), (2, os.getpid())]


@pytest.mark.slow
def test_a_suite_with_two_workers_equals_the_sequential_loop_with_one_thread_per_fit(tmp_path):
    import numpy as np
    import torch

    from bench.pipeline import run_suite
    from bench.suite import load_suite

    class Ends(RunHooks):
        def __init__(self):
            self.ends = []

        def run_end(self, spec, report, run_dir):
            self.ends.append((spec.run_id, report.test["value"]))

    suite = load_suite("ol3i-incomplete", budget="smoke", fusions=["concat", "gmu"], tabular_encoders=["mlp"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same threads everywhere: one per fit, and for the shared work in this process
    ends = Ends()
    try:
        seq = run_suite(suite, out=tmp_path / "seq", progress=False)
        par = run_suite(suite, out=tmp_path / "par", progress=False, workers=2, hooks=[ends])
    finally:
        torch.set_num_threads(threads)

    def values(result):
        return {r.spec.run_id: r.test["value"] for r in result.reports if r.training.get("kind") != "reference"}

    assert len(values(seq)) == 2 * 2 * 2 * 2  # protocols x fusions x strategies x seeds
    assert values(par) == values(seq)
    assert sorted(ends.ends) == sorted(values(par).items())  # run_end delivered here, with the written report
    for r in par.reports:  # the predictions too, bit for bit
        a = np.load(tmp_path / "seq" / suite.name / "runs" / r.spec.run_id / "predictions.npz")
        b = np.load(tmp_path / "par" / suite.name / "runs" / r.spec.run_id / "predictions.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_ray_placement_reads_the_cluster_budget_else_the_search_settings():
    from bench.executor import RayPlacement

    assert RayPlacement.from_budget({}, None, use_gpu=False) == RayPlacement(None, 1.0, 0.0, 2)
    search = {"search": {"ray": {"cpus_per_trial": 2, "gpus_per_trial": 0.5, "max_failures": 1}}}
    assert RayPlacement.from_budget(search, "h:1", use_gpu=True) == RayPlacement("h:1", 2.0, 0.5, 1)
    both = {**search, "cluster": {"cpus_per_task": 4, "max_retries": 0}}
    assert RayPlacement.from_budget(both, None, use_gpu=False) == RayPlacement(None, 4.0, 0.0, 0)


def test_a_fit_sent_back_from_a_node_is_written_with_done_last(tmp_path, monkeypatch):
    import os as os_

    from bench.executor import _write_files

    order = []
    real = os_.replace
    monkeypatch.setattr(os_, "replace", lambda a, b: (order.append(os_.path.basename(b)), real(a, b)))
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "FAILED").write_text("{}")  # an earlier failed attempt is cleared
    _write_files(rd, {"DONE": b"t\n", "report.json": b"{}", "sub/head.pt": b"x"})
    assert order[-1] == "DONE" and sorted(order) == ["DONE", "head.pt", "report.json"]
    assert not (rd / "FAILED").exists() and (rd / "sub" / "head.pt").read_bytes() == b"x"


def test_a_whole_memmap_travels_to_a_ray_task_by_path_and_nothing_else_changes(tmp_path):
    import pickle

    import numpy as np

    from bench.executor import memmaps_by_path

    np.save(tmp_path / "images.npy", np.arange(200_000, dtype=np.float32).reshape(100, 2000))
    images = np.load(tmp_path / "images.npy", mmap_mode="r")
    obj = {"images": images, "rows": images[3:5], "plain": np.ones(3)}
    with memmaps_by_path():
        blob = pickle.dumps(obj)
    assert len(blob) < 20_000 < len(pickle.dumps(obj))  # the file name and the view's two rows, not 800 kB
    back = pickle.loads(blob)
    assert str(back["images"].filename) == str(images.filename) and np.array_equal(back["images"], images)
    assert np.array_equal(back["rows"], images[3:5]) and np.array_equal(back["plain"], np.ones(3))
    assert len(pickle.dumps(obj)) > 800_000  # outside the block, memmaps pickle their bytes as before
