"""Fault tolerance: a suite killed with SIGKILL mid-run resumes without redoing or losing finished runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--tabular", "mlp",
            "--fusion", "concat", "late_fusion", "--strategy", "frozen", "--seeds", "2022", "2023", "2024", "2025",
            "--out", str(out), "--no-progress"]


def _done(out: Path) -> dict[Path, int]:
    return {p.parent: (p.parent / "report.json").stat().st_mtime_ns
            for p in (out / "ol3i-incomplete" / "runs").glob("*/DONE")}


def test_kill_and_resume(tmp_path):
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cmd(tmp_path / "ref"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    total = len(_done(tmp_path / "ref"))
    assert total == 16  # 2 fusions x 2 protocols x 4 seeds

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(out), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and len(_done(out)) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, "the suite finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _done(out)
    assert 3 <= len(finished) < total

    rerun = subprocess.run(_cmd(out), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _done(out)
    assert len(after) == total
    assert all(after[d] == stamp for d, stamp in finished.items()), "a finished run was recomputed"
    cols = ["protocol", "fusion", "seed", "test_value", "val_value"]
    a = pd.read_csv(out / "ol3i-incomplete" / "results.csv")[cols].sort_values(cols[:3]).reset_index(drop=True)
    b = pd.read_csv(tmp_path / "ref" / "ol3i-incomplete" / "results.csv")[cols].sort_values(cols[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
