"""Command line: ``python -m bench {list,run,leaderboard,check-plugin,check-data,perf}``.

Every user-input error becomes one line on stderr and exit code 2 (never a traceback); set
``BENCH_DEBUG=1`` to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from bench.errors import BenchError

EPILOG_RUN = """examples:
  python -m bench run --suite ol3i-incomplete                      # CPU default budget, synthetic data if no root
  python -m bench run --suite ol3i-incomplete --data-root /data/ol3i   # the real OL3I release
  python -m bench run --suite ol3i-incomplete --budget paper --seeds 2022 2023 2024 2025 2026
  python -m bench run --suite dvm-complete --fusion amf concat --tabular ft_mamba --out runs/
  python -m bench run --suite ol3i-incomplete --fusion lmf concat amf   # a plug-in next to the built-ins
  python -m bench run --suite ol3i-incomplete --dataset my-cohort.yaml  # your own table + images (datasets/table.md)
"""

EPILOG_CHECK_DATA = """examples:
  python -m bench check-data my-cohort.yaml      # summary + every problem, one line each
exit status: 0 when the data is usable (warnings allowed), 2 when there is an error.
"""

EPILOG_CHECK = """examples:
  python -m bench check-plugin lmf                   # a fusion from an installed package
  python -m bench check-plugin ft_mamba --kind tabular_encoder
exit status: 0 when every check passes, 1 when one fails, 2 for an unknown name.
"""

EPILOG_LIST = """examples:
  python -m bench list                    # everything, by kind
  python -m bench list fusion             # registered fusions
  python -m bench list tabular_encoder 'ft*' --json
"""


def _out_path(value: str) -> Path:
    if not value.strip():  # Path("") is the current folder: refuse rather than write there
        raise argparse.ArgumentTypeError("empty path; give a folder such as runs")
    return Path(value)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 1; e.g. 2")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark harness for image + tabular (EHR) fusion.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list registered plug-ins and suites", epilog=EPILOG_LIST,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("kind", nargs="?", help="image_encoder | tabular_encoder | fusion | dataset | suite | metric | protocol")
    ls.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. 'ft*'")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    run = sub.add_parser("run", help="run a suite and write its leaderboard", epilog=EPILOG_RUN,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--suite", required=True, help="registered suite name or path to a suite YAML")
    run.add_argument("--out", default="runs", type=_out_path, help="output directory (default: runs/)")
    run.add_argument("--seeds", nargs="+", type=int, help="seeds to run (default: the budget's first N of the suite's)")
    run.add_argument("--budget", help="budget preset: smoke | cpu | paper (default: the suite's, usually cpu)")
    run.add_argument("--data-root", help="directory with the real dataset files (else $BENCH_<DATASET>_ROOT, else synthetic)")
    run.add_argument("--dataset", help="run the suite on this dataset instead: a dataset YAML (datasets/table.md) or a "
                                       "registered dataset name; checked first, results under <out>/<suite>@<dataset>")
    run.add_argument("--fusion", nargs="+", dest="fusions",
                     help="run these registered fusions instead of the suite's (plug-ins included)")
    run.add_argument("--tabular", nargs="+", dest="tabular_encoders",
                     help="run these registered tabular encoders instead of the suite's (plug-ins included)")
    run.add_argument("--strategy", nargs="+", dest="strategies", choices=["frozen", "trainable"], help="only these strategies")
    run.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N]")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (tasks by kind, done / pending, their cost) and exit without training")
    run.add_argument("--force", action="store_true", help="re-run finished runs (default: skip run directories with DONE)")
    run.add_argument("--publish", action="store_true", help="also write leaderboards/<suite>.md and .csv in this checkout")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                     help="log every run to MLflow (optional extra): parameters, per-epoch validation metric, final "
                          "metrics, report and predictions; default store sqlite:///<out>/mlflow.db")
    run.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                     help="fit the seeds of each method in N forked processes, the torch threads divided between "
                          "them (default 1: one after another in this process; see the README for measured speeds)")
    run.add_argument("--backend", choices=["optuna", "ray"], default="optuna",
                     help="hyper-parameter search: optuna (this machine, default) | ray (a Ray cluster; pip install -e '.[ray]')")
    run.add_argument("--ray-address", help="Ray cluster to join, e.g. 10.0.0.5:6379 (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--storage", help="where searches persist: optuna: an SQLAlchemy URL (default sqlite:///<out>/<suite>/search/optuna.db); "
                                       "ray: a folder all nodes see or s3://... (default <out>/<suite>/search/ray)")

    chk = sub.add_parser("check-plugin", help="run the conformance kit on a registered fusion or encoder",
                         epilog=EPILOG_CHECK, formatter_class=argparse.RawDescriptionHelpFormatter)
    chk.add_argument("name", help="registered name, e.g. lmf")
    chk.add_argument("--kind", choices=["fusion", "tabular_encoder", "image_encoder", "dataset", "metric", "protocol"],
                     help="needed only when the name is registered under several kinds")
    chk.add_argument("--data-root", help="dataset kind: the folder the adapter reads (else its environment variable)")

    cd = sub.add_parser("check-data", help="check a dataset YAML (table + images) without training",
                        epilog=EPILOG_CHECK_DATA, formatter_class=argparse.RawDescriptionHelpFormatter)
    cd.add_argument("config", help="dataset YAML, e.g. my-cohort.yaml")
    cd.add_argument("--cache-dir", help="where image checks are cached (default $BENCH_CACHE/table)")

    sub.add_parser("profile", add_help=False,
                   help="latency at batch 1/8/32/128, params and GMac of every fusion module and whole model")
    sub.add_parser("perf", add_help=False,
                          help="benchmark this machine: FT-Mamba scan, frozen-feature caching, data path, fusion latency")

    lb = sub.add_parser("leaderboard", help="rebuild results.csv and leaderboard.md from run directories")
    lb.add_argument("suite_dir", type=_out_path, help="e.g. runs/ol3i-incomplete")
    lb.add_argument("--publish", action="store_true", help="also write leaderboards/<suite>.md and .csv")
    lb.add_argument("--metric", nargs="+", default=[], metavar="NAME",
                    help="also report these registered metrics (bench list metric), computed from the stored test "
                         "predictions: finished runs are re-scored without retraining")
    lb.add_argument("--backfill", action="store_true",
                    help="first add to finished runs' reports what the current code writes and older code did not "
                         "(decision-rule accuracies, a reference row's pretraining record), from what each run stored")
    return p


def _cmd_list(args) -> int:
    from bench.registry import KINDS, plugin_errors, registry

    kinds = [args.kind] if args.kind else list(KINDS)
    out = {}
    for kind in kinds:
        reg = registry(kind)
        out[kind] = [{"name": n, "origin": reg.entries[n].origin, "summary": reg.entries[n].summary}
                     for n in reg.names(args.pattern)]
    if args.json:
        print(json.dumps(out if args.kind is None else out[args.kind], indent=2))
        return 0
    width = max([24] + [len(it["name"]) + 2 for items in out.values() for it in items])
    for kind, items in out.items():
        print(f"{kind} ({len(items)}):")
        for it in items:
            origin = "" if it["origin"] == "builtin" else f"  [{it['origin']}]"
            print(f"  {it['name']:<{width}}{it['summary'][:80]}{origin}")
    for name, err in plugin_errors.items():
        print(f"warning: plug-in {name} failed to load: {err}", file=sys.stderr)
    return 0


def _cmd_check_plugin(args) -> int:
    from bench.conformance import format_table, infer_kind, run_checks
    from bench.registry import ENTRY_POINT_GROUPS, plugin_errors, registry

    kind = args.kind or infer_kind(args.name)
    if kind == "dataset":
        from bench.data.checks import check_dataset_plugin

        registry(kind).get(args.name)  # unknown name: one-line error with close matches
        results = check_dataset_plugin(args.name, root=args.data_root)
        print(format_table(kind, args.name, results))
        return 0 if all(r.passed for r in results) else 1
    if args.name not in registry(kind) and f"{ENTRY_POINT_GROUPS[kind]}:{args.name}" not in plugin_errors:
        registry(kind).get(args.name)  # unknown name: one-line error with close matches
    results = run_checks(kind, args.name)
    print(format_table(kind, args.name, results))
    return 0 if all(r.passed for r in results) else 1


def _repo_leaderboards_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "leaderboards"


def _done_stamps(out: Path, plan) -> dict[str, int]:
    """``run id -> DONE's mtime`` of the plan's finished runs."""
    from bench.results import is_done, run_dir

    return {sp.run_id: (run_dir(out, sp) / "DONE").stat().st_mtime_ns for sp in plan if is_done(run_dir(out, sp))}


def _run_counts(out: Path, plan, before: dict[str, int]) -> dict[str, int]:
    """The plan's runs: done by this invocation, skipped (finished earlier), failed, or not run."""
    from bench.results import FAILED, is_done, run_dir

    counts = {"done": 0, "skipped": 0, "failed": 0, "not run": 0}
    for sp in plan:
        d = run_dir(out, sp)
        if is_done(d):
            counts["skipped" if before.get(sp.run_id) == (d / "DONE").stat().st_mtime_ns else "done"] += 1
        else:
            counts["failed" if (d / FAILED).exists() else "not run"] += 1
    return counts


def _summary(counts: dict[str, int], suite_dir: Path, seconds: float) -> str:
    not_run = f", {counts['not run']} not run" if counts["not run"] else ""
    return (f"[bench] {counts['done']} runs done, {counts['skipped']} skipped (finished earlier), {counts['failed']} failed"
            f"{not_run} | {suite_dir} | wall time {seconds:.0f} s | leaderboard: {suite_dir / 'leaderboard.md'}")


def _cmd_check_data(args) -> int:
    from bench.data.checks import check_data_file

    rc = check_data_file(args.config, cache_dir=args.cache_dir)
    if rc:
        print(f"bench: error: {args.config} has errors (listed above); fix them and run check-data again", file=sys.stderr)
    return rc


def _with_dataset(suite, dataset: str):
    """The suite on another dataset: the suite's methods and budget, results under ``<suite>@<dataset>``."""
    import dataclasses

    from bench.data.table import is_table_config, read_spec
    from bench.registry import registry

    if is_table_config(dataset):
        name = read_spec(dataset).name
    else:
        registry("dataset").get(dataset)  # unknown name: one-line error with close matches
        name = dataset
    return dataclasses.replace(suite, name=f"{suite.name}@{name}")


def _dry_run(suite, args) -> int:
    """``bench run --dry-run``: the plan (tasks by kind, done / pending, cost); nothing is trained and no run
    or output folder written (a replica's rendered slices do go to the bench cache, as any load does)."""
    from bench.plan import format_plan, measured_fit_seconds, plan_suite

    t0 = time.perf_counter()
    # --force: every run, search and reference row is made again (a cached pretraining is kept)
    tasks = plan_suite(suite, out=args.out, data_root=args.data_root, dataset=args.dataset, force=args.force)
    print(f"[bench] plan of {suite.name} v{suite.version} | budget {suite.budget_name} | seeds {suite.seeds} | "
          f"{args.out / suite.name}")
    print(format_plan(tasks, measured_fit_seconds(args.out, suite)))
    if args.backend == "ray":
        from bench.executor import RayPlacement

        place = RayPlacement.from_budget(suite.budget, args.ray_address, use_gpu=args.device == "cuda")
        where = (f"Ray at {place.address or '$RAY_ADDRESS or a local instance'}: pretraining, encodings, "
                 "classical models and fits as tasks of "
                 f"{place.cpus:g} CPU{'s' if place.cpus != 1 else ''}{f' + {place.gpus:g} GPU' if place.gpus else ''}"
                 f", {place.max_retries} retries; search trials through Ray Tune")
    else:
        where = (f"this machine: {args.workers} worker process{'es' if args.workers > 1 else ''} for the seeds' fits, "
                 "pretraining, encoding and searches in this process")
    print(f"[bench] executor: {where}")
    pending = sum(not t.done for t in tasks)
    print(f"[bench] {len(tasks)} tasks, {pending} pending; dry run: nothing trained, no run written "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_run(args) -> int:
    from bench.fingerprint import planned_specs
    from bench.pipeline import run_suite
    from bench.preflight import suite_lock
    from bench.suite import load_suite

    suite = load_suite(args.suite, budget=args.budget, seeds=args.seeds, fusions=args.fusions,
                       tabular_encoders=args.tabular_encoders, strategies=args.strategies)
    if args.dataset:
        suite = _with_dataset(suite, args.dataset)
    if args.dry_run:
        return _dry_run(suite, args)
    plan = planned_specs(suite)
    t0 = time.perf_counter()
    suite_dir = args.out / suite.name
    hooks = []
    if args.mlflow is not None:
        from bench.mlflow_hooks import MLflowHooks

        hooks.append(MLflowHooks.for_suite(suite.name, args.out, args.mlflow or None))
    with suite_lock(suite_dir):  # a second `bench run` on this --out and suite refuses
        before = _done_stamps(args.out, plan)
        try:
            result = run_suite(suite, out=args.out, data_root=args.data_root, force=args.force,
                               progress=not args.no_progress, device=args.device, backend=args.backend,
                               storage=args.storage, ray_address=args.ray_address, dataset=args.dataset,
                               hooks=hooks, workers=args.workers)
            plan = planned_specs(suite)  # real missing images found on load turn fusions into imputation variants
        except BenchError as exc:  # e.g. no run finished, so there is no leaderboard: still count them
            counts = _run_counts(args.out, plan, before)
            if counts["failed"] and not counts["done"] + counts["skipped"]:
                print(f"bench: error: {exc}", file=sys.stderr)
                print(_summary(counts, suite_dir, time.perf_counter() - t0))
                return 1
            raise
        if args.publish:
            from bench.leaderboard import write_leaderboard

            write_leaderboard(result.suite_dir, expected_seeds=suite.seeds, publish_to=_repo_leaderboards_dir(),
                              run_ids=result.run_ids or [sp.run_id for sp in plan])  # reference rows too
    md = (result.suite_dir / "leaderboard.md").read_text()
    print(md)
    counts = _run_counts(args.out, plan, before)
    print(_summary(counts, result.suite_dir, time.perf_counter() - t0))
    return 1 if counts["failed"] or counts["not run"] else 0


def _cmd_leaderboard(args) -> int:
    from bench.leaderboard import write_leaderboard

    if not args.suite_dir.is_dir():
        raise BenchError(f"{str(args.suite_dir)!r} is not a directory; pass a suite directory such as runs/ol3i-incomplete")
    if not (args.suite_dir / "runs").is_dir():
        inner = sorted(d for d in args.suite_dir.iterdir() if (d / "runs").is_dir())
        if inner:  # the --out folder rather than one of its suites
            raise BenchError(f"{str(args.suite_dir)!r} holds suites, not runs; pass one of "
                             f"{', '.join(str(d) for d in inner[:5])}")
    if args.metric and args.publish:
        raise BenchError("--metric is for this rendering only; to publish a metric, name it in the suite's "
                         "`metrics:` so the published copy re-renders the same (or drop --publish)")
    if args.metric:
        from bench.registry import registry

        for name in args.metric:
            registry("metric").get(name)  # an unknown name: one line with close matches
    if args.backfill:
        from bench.results import backfill_reports

        print(f"[bench] {backfill_reports(args.suite_dir)} reports backfilled", file=sys.stderr)
    path = write_leaderboard(args.suite_dir, publish_to=_repo_leaderboards_dir() if args.publish else None,
                             metrics=args.metric)
    print(path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from bench.allocator import keep_freed_memory

    keep_freed_memory()  # before the first large tensor; BENCH_MALLOC=system leaves glibc's defaults
    try:
        if argv[:1] == ["profile"]:  # its own argparse, like perf
            from bench.profile_cli import main as profile_main

            return profile_main(argv[1:])
        if argv[:1] == ["perf"]:  # its own argparse (argparse.REMAINDER cannot pass --help through)
            from bench.perf import main as perf_main

            return perf_main(argv[1:])
    except ModuleNotFoundError as exc:  # an optional dependency (e.g. mambapy for `bench perf`) is not installed
        if os.environ.get("BENCH_DEBUG") or not exc.name or exc.name.split(".")[0] in ("bench", "baselines"):
            raise
        print(f"bench: error: `bench {argv[0]}` needs the Python module {exc.name!r}, which is not installed; "
              f"install the test extras (`pip install -e '.[test]'`) or `pip install {exc.name.split('.')[0]}`",
              file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {"list": _cmd_list, "run": _cmd_run, "leaderboard": _cmd_leaderboard, "check-plugin": _cmd_check_plugin,
                    "check-data": _cmd_check_data}
        return commands[args.command](args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; finished runs are kept and skipped on the next run", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line, traceback on demand
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(f"bench: internal error: {type(exc).__name__}: {exc} (set BENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
