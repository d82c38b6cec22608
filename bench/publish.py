"""Published leaderboards and the compact results they are rendered from.

``python -m bench run|leaderboard ... --publish`` writes ``leaderboards/<suite>.md`` (+ ``.csv``,
``.json``, PNG figures) and copies the compact results behind them — ``suite.json`` and, per finished
run, ``report.json``, ``config.json``, ``predictions.npz`` and ``DONE`` — to
``leaderboards/results/<suite>/``. Since a leaderboard is a pure function of run directories,

    python -m bench.publish            # or: nox -s leaderboard

re-renders every published leaderboard from those committed results and reports any file whose bytes
changed (exit 1), so a fresh clone can check that what is published is what the results say.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.results import FAILED, is_done

COMPACT_RUN_FILES = ("report.json", "config.json", "predictions.npz", "DONE")
LEADERBOARDS = Path(__file__).resolve().parent.parent / "leaderboards"


def export_compact(suite_dir: Path, dest: Path) -> int:
    """Copy the compact results of ``suite_dir`` to ``dest`` (replacing it); returns the number of runs."""
    if dest.resolve() == suite_dir.resolve():
        return sum(1 for d in (dest / "runs").glob("*") if is_done(d))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    shutil.copy2(suite_dir / "suite.json", tmp / "suite.json")
    n = 0
    for run in sorted((suite_dir / "runs").glob("*")):
        if not is_done(run):
            if (run / FAILED).exists():  # a failed run is part of the leaderboard too
                (tmp / "runs" / run.name).mkdir()
                shutil.copy2(run / FAILED, tmp / "runs" / run.name / FAILED)
            continue
        (tmp / "runs" / run.name).mkdir()
        for name in COMPACT_RUN_FILES:
            if (run / name).exists():
                shutil.copy2(run / name, tmp / "runs" / run.name / name)
        n += 1
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return n


def rebuild(leaderboards: Path = LEADERBOARDS, *, write: bool = True) -> list[str]:
    """Re-render every leaderboard from ``leaderboards/results/*``; the names of files whose bytes differ."""
    from bench.leaderboard import write_leaderboard

    changed: list[str] = []
    suites = sorted(p for p in (leaderboards / "results").glob("*") if (p / "suite.json").exists())
    if not suites:
        raise SystemExit(f"no committed results under {leaderboards / 'results'}; publish a suite with --publish first")
    for src in suites:
        with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
            work, out = Path(tmp) / src.name, Path(tmp) / "out"
            shutil.copytree(src, work)
            out.mkdir()
            write_leaderboard(work, publish_to=out)
            for f in sorted(out.iterdir()):
                if f.is_dir():
                    continue
                target = leaderboards / f.name
                if not target.exists() or target.read_bytes() != f.read_bytes():
                    changed.append(f.name)
                    if write:
                        shutil.copy2(f, target)
        print(f"[bench] {src.name}: re-rendered from {sum(1 for _ in (src / 'runs').glob('*'))} committed runs")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; do not rewrite the published files")
    p.add_argument("--leaderboards", type=Path, default=LEADERBOARDS)
    args = p.parse_args(argv)
    changed = rebuild(args.leaderboards, write=not args.check)
    if changed:
        print(f"[bench] not byte-for-byte identical to the committed results: {', '.join(changed)}", file=sys.stderr)
        return 1
    print("[bench] every published leaderboard is byte-for-byte what its committed results render")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
