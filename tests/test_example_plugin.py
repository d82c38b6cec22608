"""The example plug-in package (examples/bench-fusion-lmf), installed the way a user installs it.

pip builds it with this environment's setuptools into a temporary ``--target`` directory (the project
venv is never touched); subprocesses get that directory on PYTHONPATH, so importlib.metadata sees its
``bench.fusions`` entry point exactly as after ``pip install``. Also: a plug-in whose module is
missing or fails to import is reported by name and breaks nothing else.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import bench.registry as reg
from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bench-fusion-lmf"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(temp dir, environment with the example package on PYTHONPATH)."""
    try:
        import setuptools  # noqa: F401  (--no-build-isolation builds with this environment's setuptools)
    except ImportError:
        pytest.fail("setuptools is not importable; install the test extra: pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("lmf-plugin")
    src = tmp / "src"  # a copy, so the build leaves no build/ or *.egg-info in the checkout
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(site), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(site.glob("bench_fusion_lmf-*.dist-info/entry_points.txt")), "pip wrote no entry points"
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_OL3I_ROOT", "BENCH_DVM_ROOT")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    # caches in the session's temp dir (tests/conftest.py), shared with the end-to-end tests
    env["BENCH_CACHE"] = os.environ.get("BENCH_CACHE") or str(tmp / "cache")
    return tmp, env


def _bench(env: dict[str, str], *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    # cwd = this checkout, so `python -m bench` runs the code under test
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_list_shows_the_plugin_with_its_origin(plugin_env):
    proc = _bench(plugin_env[1], "list", "fusion")
    assert proc.returncode == 0, proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if ln.split()[:1] == ["lmf"]), None)
    assert line is not None, proc.stdout
    assert line.rstrip().endswith("[bench-fusion-lmf]") and "Low-rank Multimodal Fusion" in line
    assert "failed to load" not in proc.stderr


def test_check_plugin_passes(plugin_env):
    proc = _bench(plugin_env[1], "check-plugin", "lmf")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("fusion 'lmf' [bench-fusion-lmf]")
    assert "13 checks: 13 passed, 0 skipped, 0 failed" in proc.stdout


def test_suite_run_puts_the_plugin_next_to_a_builtin(plugin_env):
    tmp, env = plugin_env
    out = tmp / "runs"
    proc = _bench(env, "run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--fusion", "lmf", "concat",
                  "--tabular", "mlp", "--strategy", "frozen", "--out", str(out), "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    board = (out / "ol3i-incomplete" / "leaderboard.md").read_text()
    # the first table (test metric): one row per fusion x tabular encoder, lmf among the built-ins
    lines = board.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = list(itertools.takewhile(lambda ln: ln.startswith("|"), lines[first:]))
    fusions = [row.split("|")[1].strip() for row in table[2:]]  # after the header and its rule
    assert sorted(fusions) == ["concat", "lmf"], table


# --------------------------------------------------------------------------------------------------
# broken plug-ins (in-process: entry points replaced, registries restored afterwards)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def broken_plugins(monkeypatch, tmp_path):
    """Two declared fusions: one whose module does not exist, one whose module raises on import."""
    (tmp_path / "bench_broken_plugin_for_tests.py").write_text(
        "raise ImportError('bench_broken_plugin_for_tests needs a library that is not installed')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        EntryPoint("ghost", "bench_ghost_plugin_for_tests:Fusion", "bench.fusions"),
        EntryPoint("broken", "bench_broken_plugin_for_tests:Fusion", "bench.fusions"),
    ]
    reg.registry("fusion")  # built-ins loaded, then copied so the test's plug-ins vanish afterwards
    monkeypatch.setattr(reg, "_REGISTRIES", {k: reg.Registry(k, dict(r.entries)) for k, r in reg._REGISTRIES.items()})
    monkeypatch.setattr(reg, "plugin_errors", {})
    monkeypatch.setattr(reg, "_loaded", set())
    monkeypatch.setattr(reg, "_iter_entry_points", lambda group: [ep for ep in eps if ep.group == group])


def test_broken_plugins_are_reported_by_name_and_list_still_works(broken_plugins, capsys):
    assert main(["list", "fusion"]) == 0
    out, err = capsys.readouterr()
    names = [ln.split()[0] for ln in out.splitlines()[1:]]
    assert {"amf", "concat", "broken"} <= set(names) and "ghost" not in names  # imported lazily: listed
    assert ("warning: plug-in bench.fusions:ghost failed to load: ImportError: module "
            "'bench_ghost_plugin_for_tests' not found") in err

    assert main(["check-plugin", "broken"]) == 1
    out = capsys.readouterr().out
    assert "fusion 'broken' from bench_broken_plugin_for_tests" in out
    assert "failed to import: ImportError: bench_broken_plugin_for_tests needs a library" in out

    assert main(["check-plugin", "ghost"]) == 1
    assert "fusion 'ghost' failed to load: ImportError: module 'bench_ghost_plugin_for_tests' not found" in capsys.readouterr().out

    assert main(["check-plugin", "amf"]) == 0  # the rest is unaffected
