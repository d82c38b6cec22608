"""Developer sessions. `nox -s tests` is what CI runs (see .ci/run and the README)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests on CPU (fast, deterministic)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "bench", "baselines", "tests", "noxfile.py")


@nox.session(python="3.11")
def bench_smoke(session: nox.Session) -> None:
    """The main job at the `smoke` budget: every method, tiny data, a leaderboard in about a minute."""
    session.install("-e", ".")
    out = session.create_tmp()
    session.run("python", "-m", "bench", "run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--out", out,
                "--no-progress", env={"BENCH_CACHE": f"{out}/cache"})
    session.run("python", "-m", "bench", "run", "--suite", "dvm-complete", "--budget", "smoke", "--out", out,
                "--no-progress", env={"BENCH_CACHE": f"{out}/cache"})


@nox.session(python="3.11")
def perf(session: nox.Session) -> None:
    """Benchmarks on this machine, printed and saved as JSON: nox -s perf [-- --quick --out perf.json]."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", "perf", *(session.posargs or ["--out", "perf.json"]))


@nox.session(python="3.11")
def leaderboard(session: nox.Session) -> None:
    """Re-render every published leaderboard from its committed results; fails unless identical (text byte for byte, figures
    pixel for pixel up to anti-aliasing: bench.publish.same_figure)."""
    session.install("-e", ".")
    session.run("python", "-m", "bench.publish", *session.posargs)
