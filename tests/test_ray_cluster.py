"""A real two-node Ray cluster on loopback runs small suites with ``--backend ray``: the searches' trials,
the pairs' pretraining and the seeds' final fits on both nodes, and a node killed mid-suite costs no run.

Two ``ray start`` processes (a head and a worker, one CPU each) form the cluster; the suite is the
smoke budget of ol3i-incomplete with its search enlarged to a grid of four learning rates, so each
(fusion) search has four trials and two run at once, one per node. Ray replaces 127.0.0.1 by the
machine's outward address for its own connections, so the nodes use 127.0.0.2 (loopback too, kept
as given) and no traffic leaves the loopback interface.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="Ray is not installed; pip install -e '.[ray]' to run the two-node cluster test"),
    pytest.mark.timeout(300),
]

HOST = "127.0.0.2"
SUITES = Path(__file__).resolve().parent.parent / "bench" / "suites"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _start_node(env: dict, log: Path, *args: str) -> subprocess.Popen:
    """``ray start --block`` in its own process group (its Ray processes die with it); returns once it is up."""
    exe = str(Path(sys.executable).parent / "ray")  # the venv's ray, not one on PATH
    with log.open("w") as fh:
        proc = subprocess.Popen([exe, "start", "--block", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_node(proc)
            pytest.fail(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def _stop_node(proc: subprocess.Popen) -> None:
    """Stop one node that this test started, by its process group (never ``ray stop``, which stops every Ray)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue




def _cluster_env(**extra: str) -> tuple[str, dict, str, list[str]]:
    """(Ray temp folder, the environment, a free head address, the flags both nodes start with)."""
    ray_tmp = tempfile.mkdtemp(prefix="bray")  # short: Ray's socket paths must stay under 107 characters
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", **extra,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats", f"--node-ip-address={HOST}"]
    return ray_tmp, env, f"{HOST}:{_free_port()}", common


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    ray_tmp, env, address, common = _cluster_env()
    port = address.rpartition(":")[2]
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"include: {SUITES / 'ol3i-incomplete.yaml'}\n"
        "budget_overrides:\n"
        "  smoke:\n"
        "    search: {n_trials: 4, lr: [1.0e-2, 3.0e-3, 1.0e-3, 1.0e-4], ray: {cpus_per_trial: 1}}\n")
    out = tmp_path / "runs"
    nodes_started: list[subprocess.Popen] = []
    try:
        t0 = time.perf_counter()
        nodes_started.append(_start_node(env, tmp_path / "head.log", "--head", f"--port={port}",
                                         f"--temp-dir={ray_tmp}", "--include-dashboard=false", *common))
        nodes_started.append(_start_node(env, tmp_path / "worker.log", f"--address={address}", *common))
        started = time.perf_counter() - t0
        run = subprocess.run(
            [sys.executable, "-m", "bench", "run", "--suite", str(suite), "--budget", "smoke", "--tabular", "mlp",
             "--fusion", "concat", "amf", "--strategy", "frozen", "--backend", "ray", "--ray-address", address,
             "--out", str(out), "--no-progress"],
            env=env, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        searches = sorted(p for p in (out / "ol3i-incomplete" / "search").glob("*.json") if not p.name.startswith("_"))
        assert [p.stem for p in searches] == ["mlp__amf__frozen__all", "mlp__concat__frozen__all"]
        nodes = set()
        for path in searches:
            info = json.loads(path.read_text())["info"]
            print(path.stem, json.dumps({k: v for k, v in info.items() if k != "space"}))
            assert info["backend"] == "ray" and info["sampler"] == "grid" and info["pruner"] == "none"  # equal searches: no pruner by default
            assert info["trials"] == 4 and info["address"] == address
            assert sorted(r["params"]["lr"] for r in info["all"]) == [1e-4, 1e-3, 3e-3, 1e-2]
            assert all(r["node_id"] and r["worker"] for r in info["all"])
            nodes |= {r["node_id"] for r in info["all"]}
        assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s): {nodes}"
        reports = list((out / "ol3i-incomplete" / "runs").glob("*/report.json"))
        assert len(reports) == 8  # 2 fusions x 2 protocols x 2 seeds, fitted after the search
        search = json.loads(reports[0].read_text())["training"]["search"]
        assert search["backend"] == "ray" and search["trials"] == 4
        assert "Ray Tune (OptunaSearch) trial(s)" in (out / "ol3i-incomplete" / "leaderboard.md").read_text()
        t_suite = time.perf_counter() - t0 - started

        # the searches persist under the suite's folder: without their summaries, Tuner.restore finds
        # the finished experiments and no trial runs again
        first = {p.stem: json.loads(p.read_text())["info"] for p in searches}
        for p in searches:
            p.unlink()
        shutil.rmtree(out / "ol3i-incomplete" / "runs")
        again = subprocess.run(run.args, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        for p in searches:
            info = json.loads(p.read_text())["info"]
            assert info["resumed"] and info["trials"] == 4
            assert sorted(r["worker"] for r in info["all"]) == sorted(r["worker"] for r in first[p.stem]["all"])
        print(f"cluster up in {started:.1f} s; suite in {t_suite:.1f} s; resumed in "
              f"{time.perf_counter() - t0 - started - t_suite:.1f} s")
    finally:
        for proc in reversed(nodes_started):
            _stop_node(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _reports(suite_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (suite_dir / "runs").glob("*/report.json")
            if (p.parent / "DONE").exists()}


def test_whole_suite_on_the_cluster_survives_a_node_killed_mid_suite(tmp_path):
    """Pretraining, the frozen features, the importance model, the unimodal probes, the reference rows'
    classical models and the final fits are Ray tasks (pretraining and fits on both nodes); the worker node is killed once a few runs are written: those
    runs stay as they were, the lost tasks are retried on the head, the suite completes."""
    ray_tmp, env, address, common = _cluster_env(BENCH_CACHE=str(tmp_path / "cache"))
    port = address.rpartition(":")[2]
    suite = tmp_path / "suite.yaml"  # the smoke budget with the reference rows of the cpu budget
    suite.write_text(f"include: {SUITES / 'ol3i-incomplete.yaml'}\n"
                     "budget_overrides:\n  smoke:\n    reference: {classical: true}\n")
    out = tmp_path / "runs"
    suite_dir = out / "ol3i-incomplete"
    head = worker = None
    try:
        head = _start_node(env, tmp_path / "head.log", "--head", f"--port={port}", f"--temp-dir={ray_tmp}",
                           "--include-dashboard=false", *common)
        worker = _start_node(env, tmp_path / "worker.log", f"--address={address}", *common)
        t0 = time.perf_counter()
        run = subprocess.Popen(
            [sys.executable, "-m", "bench", "run", "--suite", str(suite), "--budget", "smoke",
             "--tabular", "mlp", "ft_transformer", "--fusion", "concat", "amf", "--backend", "ray",
             "--ray-address", address, "--out", str(out), "--no-progress"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        before: dict[str, bytes] = {}
        # kill the worker node once three runs are written and both nodes have written one (the reference
        # rows' classical models, queued first, may hold the worker for a while, longer on a loaded machine),
        # or at the latest when 24 of the 32 are written
        nodes_before: set = set()
        while run.poll() is None and not (len(before) >= 3 and len(nodes_before) == 2 or len(before) >= 24):
            time.sleep(0.5)
            before = {p.parent.name: p.read_bytes() for p in (suite_dir / "runs").glob("*/report.json")
                      if (p.parent / "DONE").exists()}
            nodes_before = {json.loads(b)["environment"].get("ray_node_id") for b in before.values()}
        assert run.poll() is None, "the suite ended before the node could be killed:\n" + run.stdout.read()[-3000:]
        _stop_node(worker)
        killed_at = time.perf_counter() - t0
        log, _ = run.communicate(timeout=420)
        assert run.returncode == 0, log[-4000:]
        every = _reports(suite_dir)
        reports = {k: r for k, r in every.items() if r["training"].get("kind") not in ("baseline", "ceiling")}
        assert len(reports) == 2 * 2 * 2 * 2 * 2, log[-3000:]  # tabular x fusion x protocol x strategy x seed
        assert not list((suite_dir / "runs").glob("*/FAILED")), log[-3000:]
        for run_id, blob in before.items():  # finished before the kill: untouched
            assert (suite_dir / "runs" / run_id / "report.json").read_bytes() == blob
        # reference rows: logistic regression and LightGBM x 2 seeds x 2 protocols on the table and on table +
        # each pair's image features, fitted on the cluster; the ceilings (complete data, nothing fitted)
        baselines = [r for r in every.values() if r["training"].get("kind") == "baseline"]
        assert len(baselines) == 2 * 2 * 2 * 3, log[-3000:]
        assert all(r["environment"].get("ray_node_id") for r in baselines), log[-3000:]
        assert sum(r["training"]["kind"] == "ceiling" for r in every.values()) == 4 * 2
        encoded_on = set(re.findall(r"\[bench\] encoded .* on Ray node (\w+)", log))
        assert encoded_on, "no frozen features were encoded on the cluster:\n" + log[-3000:]
        fit_nodes = {r["environment"].get("ray_node_id") for r in reports.values()}
        pretrained_on = {r["training"]["pretraining"]["trained_on"].get("ray_node_id") for r in reports.values()}
        assert None not in fit_nodes and None not in pretrained_on
        assert len(fit_nodes) == 2, f"fits ran on {fit_nodes} (before the kill: {nodes_before})"
        assert len(pretrained_on) == 2, f"the two pairs pretrained on {pretrained_on}"
        # the driver's smaller stages are Ray tasks too: the importance model and every unimodal probe
        importance = json.loads((suite_dir / "suite.json").read_text())["importance"]
        assert importance["computed_on"].get("ray_node_id"), importance.get("computed_on")
        probed_on = {where.get("ray_node_id") for r in reports.values()
                     for where in r["training"]["probes"]["probed_on"].values()}
        assert probed_on and None not in probed_on, probed_on
        print(f"features encoded on {len(encoded_on)} node(s), classical models fitted on "
              f"{len({r['environment']['ray_node_id'] for r in baselines})}")
        print(f"killed the worker node {killed_at:.0f} s into the suite ({len(before)} runs written); "
              f"suite done in {time.perf_counter() - t0:.0f} s")
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop_node(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
