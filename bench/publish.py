"""Published leaderboards and the compact results they are rendered from.

``python -m bench run|leaderboard ... --publish`` copies the compact results of a suite — ``suite.json``
and, per finished run, ``report.json``, ``config.json``, ``DONE`` and the run's test and validation
predictions (``predictions.npz`` without the training-time arrays) — to ``leaderboards/results/<suite>/``, then renders
``leaderboards/<suite>.md`` (+ ``.csv``, ``.json``, PNG figures) *from that copy*. Since a leaderboard is
a pure function of run directories,

    python -m bench.publish            # or: nox -s leaderboard

re-renders every published leaderboard from those committed results and reports any file whose bytes
changed (exit 1), so a fresh clone can check that what is published is what the results say.

Precision: every float of a published ``leaderboard.json`` is rounded to
:data:`bench.leaderboard.PUBLISHED_DIGITS` (6) significant digits. Test statistics such as DeLong z and p differ
between CPU vendors in the last bits of a double; the published number promises 6 digits, so the check holds on
any x86-64 CPU (the AMD EPYC and Intel Xeon renderings that disagreed differed from the 16th digit on; the
Xeon's files, rounded so, are what the EPYC renders; ``ol3i-incomplete`` is now rendered on an AMD EPYC, the
other three on an Intel Xeon).

Logits are copied as trained (float32), so every published metric recomputes exactly from the copy.

Figures: the text files (``.md``, ``.csv``, ``.json``) hold every number and are compared byte for byte;
a PNG is compared pixel by pixel and may differ only by anti-aliasing (:func:`same_figure`): matplotlib
lays a figure out with NumPy, whose SIMD code paths differ between CPUs (AVX-512 on the Xeon that renders
the published files, AVX2 on an AMD EPYC) in the last bits of a double, which can move an axis edge by
a fraction of a pixel (measured: 16 of 958,320 pixels of ``dvm-complete-pareto.png``, grey levels
apart by at most 25 of 255). A moved marker, curve or label changes far more and fails the check.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.results import FAILED, atomic_write_bytes, is_done

COMPACT_RUN_FILES = ("report.json", "config.json", "DONE")
PREDICTIONS = "predictions.npz"
LEADERBOARDS = Path(__file__).resolve().parent.parent / "leaderboards"


def export_compact(suite_dir: Path, dest: Path, run_ids: list[str] | None = None) -> int:
    """Copy the compact results of ``suite_dir`` to ``dest`` (replacing it); returns the number of runs.
    ``run_ids``: only these runs (one invocation's plan), whatever else lies in the folder."""
    if dest.resolve() == suite_dir.resolve():
        return sum(1 for d in (dest / "runs").glob("*") if is_done(d))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    shutil.copy2(suite_dir / "suite.json", tmp / "suite.json")
    n = 0
    wanted = None if run_ids is None else set(run_ids)
    for run in sorted((suite_dir / "runs").glob("*")):
        if wanted is not None and run.name not in wanted:
            continue
        if not is_done(run):
            if (run / FAILED).exists():  # a failed run is part of the leaderboard too
                (tmp / "runs" / run.name).mkdir()
                shutil.copy2(run / FAILED, tmp / "runs" / run.name / FAILED)
            continue
        (tmp / "runs" / run.name).mkdir()
        for name in COMPACT_RUN_FILES:
            if (run / name).exists():
                shutil.copy2(run / name, tmp / "runs" / run.name / name)
        if (run / PREDICTIONS).exists():
            atomic_write_bytes(tmp / "runs" / run.name / PREDICTIONS, compact_predictions(run / PREDICTIONS))
        n += 1
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return n


def compact_predictions(path: Path) -> bytes:
    """The test and validation arrays of a run's ``predictions.npz`` (ids, labels, logits and availability
    masks per condition), as stored: validation logits let a reader recompute any threshold, and float32
    multi-class logits recompute every accuracy exactly (float16 missed 7 of DVM's 36 ACCs by 1-2 samples)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {}
        for k in sorted(z.files):
            if not k.startswith(("test_", "val_")):
                continue
            arrays[k] = z[k]  # float32 as trained: every published metric recomputes exactly
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


#: how far two renderings of one figure may differ (see the module docstring): the share of pixels that
#: differ, and the largest difference of a channel, on a 0-1 scale
FIGURE_TOLERANCE = {"pixels": 1e-4, "level": 0.25}


def same_figure(a: bytes, b: bytes) -> bool:
    """Whether two PNGs are the same figure: identical bytes, or the same size with at most
    ``FIGURE_TOLERANCE["pixels"]`` of the pixels differing, each by at most ``FIGURE_TOLERANCE["level"]``."""
    if a == b:
        return True
    from matplotlib.image import imread

    x, y = (np.asarray(imread(io.BytesIO(v), format="png"), dtype=np.float64) for v in (a, b))
    if x.shape != y.shape:
        return False
    diff = np.abs(x - y).max(axis=-1) if x.ndim == 3 else np.abs(x - y)
    return bool((diff > 0).mean() <= FIGURE_TOLERANCE["pixels"] and diff.max() <= FIGURE_TOLERANCE["level"])


def render_from_compact(compact: Path, leaderboards: Path, *, write: bool = True) -> list[str]:
    """Render the leaderboard of the compact results in ``compact`` into ``leaderboards``; the names of
    the files that differ from what is there — text byte for byte, figures by :func:`same_figure` —
    (written unless ``write`` is false)."""
    from bench.leaderboard import write_leaderboard

    changed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        work, out = Path(tmp) / compact.name, Path(tmp) / "out"
        shutil.copytree(compact, work)
        out.mkdir()
        write_leaderboard(work, render_to=out)
        for f in sorted(out.iterdir()):
            if f.is_dir():
                continue
            target = leaderboards / f.name
            if not target.exists():
                same = False
            elif f.suffix == ".png":
                same = same_figure(target.read_bytes(), f.read_bytes())
            else:
                same = target.read_bytes() == f.read_bytes()
            if not same:
                changed.append(f.name)
                if write:
                    atomic_write_bytes(target, f.read_bytes())
    return changed


def rebuild(leaderboards: Path = LEADERBOARDS, *, write: bool = True) -> list[str]:
    """Re-render every leaderboard from ``leaderboards/results/*``; the names of files whose bytes differ."""
    changed: list[str] = []
    suites = sorted(p for p in (leaderboards / "results").glob("*") if (p / "suite.json").exists())
    if not suites:
        raise SystemExit(f"no committed results under {leaderboards / 'results'}; publish a suite with --publish first")
    for src in suites:
        changed += render_from_compact(src, leaderboards, write=write)
        print(f"[bench] {src.name}: re-rendered from {sum(1 for _ in (src / 'runs').glob('*'))} committed runs")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; do not rewrite the published files")
    p.add_argument("--leaderboards", type=Path, default=LEADERBOARDS)
    p.add_argument("--backfill", action="store_true",
                   help="first add to the committed reports what the current code writes and older code did not, "
                        "derived from what each run stored (bench.results.backfill_reports)")
    args = p.parse_args(argv)
    if args.backfill and not args.check:
        from bench.results import backfill_reports

        for src in sorted(p for p in (args.leaderboards / "results").glob("*") if (p / "suite.json").exists()):
            print(f"[bench] {src.name}: {backfill_reports(src)} reports backfilled")
    changed = rebuild(args.leaderboards, write=not args.check)
    if changed:
        print(f"[bench] not what the committed results render: {', '.join(changed)}", file=sys.stderr)
        return 1
    print("[bench] every published leaderboard is what its committed results render "
          "(text byte for byte, figures pixel for pixel up to anti-aliasing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
