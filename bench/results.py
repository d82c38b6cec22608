"""Typed results and run directories.

Layout under ``--out`` (default ``runs/``)::

    <out>/<suite>/
        suite.json            the resolved suite (budget applied) and provenance of the data
        runs/<run_id>/        one per (protocol, tabular encoder, fusion, strategy, seed)
            config.json       the run spec and the hyper-parameters it trained with
            report.json       RunReport: metrics, params, GMac, latency, provenance, versions
            predictions.npz   test (and validation) ids, labels and logits
            DONE              written last; a run directory without it is incomplete and re-run
        results.csv           one row per finished run (rebuilt from run directories)
        leaderboard.md        rendered from results.csv alone

Everything is written to a temporary file and renamed, so an interrupted suite never leaves a
half-written report behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULT_COLUMNS = [
    "suite", "suite_version", "budget", "dataset", "data_source", "data_version", "data_checksum",
    "protocol", "image_encoder", "tabular_encoder", "fusion", "strategy", "seed", "metric", "test_value",
    "val_value", "params_fusion", "params_total", "gmac_fusion", "gmac_total", "gmac_uncounted",
    "latency_ms_p50", "latency_ms_p90", "fusion_latency_ms_p50", "device", "lr", "weight_decay", "rconf",
    "epochs_run", "train_seconds", "bench_version", "git_commit",
    # binary tasks: the operating point chosen on validation (Youden's J) and the metrics it gives on test
    "kind", "threshold", "test_sensitivity", "test_specificity", "test_balanced_accuracy", "test_auprc", "test_brier",
    "test_ece", "test_single_class",
]


@dataclass(frozen=True)
class CostColumn:
    """One cost of a method, defined once for every output: ``key`` is its column in ``results.csv``, its
    field in ``leaderboard.json`` (per method) and in the statistics frame the plots read; ``header`` is
    its column in ``leaderboard.md`` (columns that share a header are one cell, formatted by
    :func:`cost_cells`); ``axis`` labels it when a Pareto plot uses it."""

    key: str
    header: str
    axis: str = ""


def _cell_params(v) -> str:
    return "–" if v is None or v != v else f"{v / 1e6:.2f}"


def _cell_gmac(v) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:.4f}" if v < 0.1 else f"{v:.3f}"


#: the costs beside every metric, in table order (see :class:`CostColumn`)
COST_COLUMNS = (
    CostColumn("params_fusion", "Params fusion (M)"),
    CostColumn("params_total", "Params total (M)"),
    CostColumn("gmac_fusion", "GMac fusion"),
    CostColumn("gmac_total", "GMac total", axis="GMac (total, log scale)"),
    CostColumn("latency_ms_p50", "Latency p50 / p90 (ms)", axis="latency p50 at batch 1 (ms, log scale)"),
    CostColumn("latency_ms_p90", "Latency p50 / p90 (ms)"),
    CostColumn("fusion_latency_ms_p50", "Fusion latency p50 (ms)"),
)
COST_KEYS = tuple(c.key for c in COST_COLUMNS)


def cost_headers() -> list[str]:
    """The markdown headers of the cost columns (a shared header once)."""
    return list(dict.fromkeys(c.header for c in COST_COLUMNS))


def cost_cells(row: Any) -> list[str]:
    """The markdown cells of one method's costs, in :func:`cost_headers` order."""
    def val(key):
        v = getattr(row, key, None)
        return None if v is None or v != v else float(v)

    p50, p90, fus = val("latency_ms_p50"), val("latency_ms_p90"), val("fusion_latency_ms_p50")
    return [_cell_params(val("params_fusion")), _cell_params(val("params_total")), _cell_gmac(val("gmac_fusion")),
            _cell_gmac(val("gmac_total")), f"{p50:.2f} / {p90:.2f}" if p50 is not None else "–",
            f"{fus:.3f}" if fus is not None else "–"]


@dataclass(frozen=True)
class RunSpec:
    suite: str
    protocol: str
    image_encoder: str
    tabular_encoder: str
    fusion: str
    strategy: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.protocol}__{self.tabular_encoder}__{self.fusion}__{self.strategy}__seed{self.seed}"


@dataclass
class RunReport:
    spec: RunSpec
    suite_version: int
    budget: str
    metric: str
    test: dict[str, float]
    val: dict[str, float]
    hyperparameters: dict[str, Any]
    profile: dict[str, Any]
    provenance: dict[str, Any]
    training: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    #: missingness protocols: {protocol: {test rate: metrics}} — the run tested under every test condition
    sweep: dict[str, dict[str, dict]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: what produced the run (:mod:`bench.fingerprint`); empty in reports written before fingerprints
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        s, p = self.spec, self.profile
        return {
            "suite": s.suite, "suite_version": self.suite_version, "budget": self.budget,
            "dataset": self.provenance.get("dataset"), "data_source": self.provenance.get("source"),
            "data_version": self.provenance.get("version"), "data_checksum": self.provenance.get("checksum"),
            "protocol": s.protocol, "image_encoder": s.image_encoder, "tabular_encoder": s.tabular_encoder,
            "fusion": s.fusion, "strategy": s.strategy, "seed": s.seed, "metric": self.metric,
            "test_value": self.test["value"], "val_value": self.val.get("value"),
            "params_fusion": p.get("params_fusion"), "params_total": p.get("params_total"),
            "gmac_fusion": p.get("gmac_fusion"), "gmac_total": p.get("gmac_total"),
            "gmac_uncounted": ";".join(sorted(set(p.get("uncounted_ops_total", {})) | set(p.get("uncounted_ops_fusion", {})))),
            "latency_ms_p50": p.get("latency_p50_ms"), "latency_ms_p90": p.get("latency_p90_ms"),
            "fusion_latency_ms_p50": p.get("fusion_latency_p50_ms"), "device": p.get("device"),
            "lr": self.hyperparameters.get("lr"), "weight_decay": self.hyperparameters.get("weight_decay"),
            "rconf": self.hyperparameters.get("rconf"), "epochs_run": self.training.get("epochs_run"),
            "train_seconds": self.training.get("seconds"), "bench_version": self.environment.get("bench_version"),
            "git_commit": self.environment.get("git_commit"),
            "kind": self.training.get("kind", "fusion"),
            **{c: self.test.get("at_threshold", {}).get(c.removeprefix("test_")) for c in (
                "threshold", "test_sensitivity", "test_specificity", "test_balanced_accuracy", "test_auprc",
                "test_brier", "test_ece")},
            "test_single_class": self.test.get("at_threshold", {}).get("predicts_single_class"),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunReport:
        d = dict(d)
        d["spec"] = RunSpec(**d["spec"])
        if not d.get("fingerprint"):  # written before fingerprints: render as before, byte for byte
            d.pop("fingerprint", None)
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["fingerprint"]:
            del d["fingerprint"]
        return d


#: the pending renames of :func:`staged_writes` (root, [(tmp, final)]), or None outside one
_STAGE: contextvars.ContextVar[tuple[Path, list] | None] = contextvars.ContextVar("bench_stage", default=None)


@contextlib.contextmanager
def staged_writes(root: Path):
    """Atomic writes under ``root`` become visible together when the block ends, or not at all.

    Inside the block :func:`atomic_write_text` / :func:`atomic_write_bytes` to a path under ``root``
    write a temporary file beside it; the renames happen after the block succeeds (one rendering of a
    leaderboard: ``results.csv``, ``leaderboard.md``, ``leaderboard.json``, figures). If the block
    raises, the temporary files are removed and the previous outputs stay as they were, consistent.
    """
    if _STAGE.get() is not None:  # nested: the outer block commits
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _STAGE.set((Path(root).resolve(), pending))
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _STAGE.reset(token)
    for tmp, final in pending:
        os.replace(tmp, final)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = _STAGE.get()
    staged = stage is not None and Path(path).resolve().is_relative_to(stage[0])
    tmp = path.with_name(path.name + (".staged" if staged else ".tmp"))
    tmp.write_bytes(data)
    if staged:
        stage[1][:] = [(t, f) for t, f in stage[1] if t != tmp] + [(tmp, path)]
    else:
        os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    _write(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _write(path, data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_dir(out: Path, spec: RunSpec) -> Path:
    return out / spec.suite / "runs" / spec.run_id


FAILED = "FAILED"


def record_failure(path: Path, spec: RunSpec, exc: BaseException) -> str:
    """Mark a run as failed (``FAILED``: spec, error, reason, traceback tail); a rerun retries it."""
    import traceback

    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip().rstrip(":")
    path.mkdir(parents=True, exist_ok=True)
    if (path / "DONE").exists():
        (path / "DONE").unlink()
    atomic_write_json(path / FAILED, {
        "spec": asdict(spec), "error": type(exc).__name__, "reason": reason,
        "traceback": traceback.format_exception(exc)[-6:],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return reason


FINGERPRINT_FILE = "fingerprint.json"
#: where unreadable run directories and files are moved (under the suite directory / the cache)
CORRUPT_DIR = "corrupt"


def stored_fingerprint(path: Path) -> dict:
    """The fingerprint a run directory was written with (``{}`` when it has none or it is unreadable)."""
    try:
        fp = json.loads((path / FINGERPRINT_FILE).read_text())
        return fp if isinstance(fp, dict) else {}
    except (OSError, ValueError):
        return {}


def is_done(path: Path, fingerprint: dict | None = None) -> bool:
    """``DONE`` and ``report.json`` exist; with ``fingerprint``, the run was also made by the same
    budget, data, suite definition, plug-ins and bench version (:mod:`bench.fingerprint`)."""
    if not ((path / "DONE").exists() and (path / "report.json").exists()):
        return False
    return fingerprint is None or stored_fingerprint(path).get("digest") == fingerprint.get("digest")


# ------------------------------------------------------------------------ which runs a rendering reads
#: run ids the leaderboard of this invocation is made of (:func:`selected_runs`), or None for all
_SELECTED: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("bench_selected", default=None)


@contextlib.contextmanager
def selected_runs(run_ids):
    """Inside the block, :func:`load_reports` and :func:`load_failures` read only these run ids (this
    invocation's plan), whatever else an earlier invocation left in the same ``--out``."""
    token = _SELECTED.set(None if run_ids is None else frozenset(run_ids))
    try:
        yield
    finally:
        _SELECTED.reset(token)


def _run_dirs(suite_dir: Path, run_ids=None) -> list[Path]:
    ids = _SELECTED.get() if run_ids is None else frozenset(run_ids)
    dirs = sorted(d for d in (suite_dir / "runs").glob("*") if d.is_dir())
    return dirs if ids is None else [d for d in dirs if d.name in ids]


# ------------------------------------------------------------------ unreadable files: named, set aside
def warn(msg: str) -> None:
    print(f"bench: warning: {msg}", file=sys.stderr, flush=True)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:160].rstrip(": ")


def set_aside(path: Path, corrupt_dir: Path) -> Path:
    """Move ``path`` (a file or a run directory) into ``corrupt_dir``; returns where it went."""
    corrupt_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dest = corrupt_dir / f"{path.name}.{stamp}"
    n = 1
    while dest.exists():
        dest, n = corrupt_dir / f"{path.name}.{stamp}.{n}", n + 1
    shutil.move(str(path), str(dest))
    return dest


def check_json(path: Path) -> Any:
    return json.loads(path.read_text())


def check_npz(path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            z[k]  # reads and CRC-checks every member


def check_torch_file(path: Path) -> None:
    """A ``torch.save`` file (a zip archive): its directory and every member's CRC, without unpickling."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} fails its CRC check")


def _check_run(d: Path) -> tuple[str, BaseException] | None:
    """The first unreadable file of a run directory and why, else None."""
    checks = [("report.json", lambda p: RunReport.from_dict(check_json(p))), ("config.json", check_json),
              (FINGERPRINT_FILE, check_json), ("predictions.npz", check_npz), ("fusion_head.pt", check_torch_file)]
    if not (d / "DONE").exists():
        checks = [(FAILED, check_json)]
    for name, check in checks:
        if (d / name).exists():
            try:
                check(d / name)
            except Exception as exc:  # noqa: BLE001 - any failure to read is the same problem
                return name, exc
    return None


def check_suite_dir(suite_dir: Path, run_ids=None, *, say=warn) -> int:
    """Find every unreadable file of a suite directory before anything reads it; returns how many.

    A run directory with a truncated or garbage ``report.json``, ``predictions.npz``, ``config.json``,
    ``fingerprint.json``, ``fusion_head.pt`` or ``FAILED`` is moved to ``<suite>/corrupt/`` (its run is
    redone by the next ``bench run``); a finished run whose test metric is not finite is turned into a
    failed run (retried too); an unreadable ``suite.json`` or saved search is moved aside (both are
    rewritten). Each gets one line through ``say``; the rest of the suite and its leaderboard go on.
    """
    suite_dir = Path(suite_dir)
    corrupt = suite_dir / CORRUPT_DIR
    n = 0
    for d in _run_dirs(suite_dir, run_ids):
        bad = _check_run(d)
        if bad is not None:
            dest = set_aside(d, corrupt)
            say(f"{d / bad[0]} is unreadable ({_why(bad[1])}); moved the run to {dest}, the next `bench run` redoes it")
            n += 1
            continue
        if (d / "DONE").exists() and (d / "report.json").exists():
            test = check_json(d / "report.json").get("test", {})
            value = test.get("value") if isinstance(test, dict) else None
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                (d / "DONE").unlink()
                atomic_write_json(d / FAILED, {
                    "spec": check_json(d / "report.json")["spec"], "error": "NonFiniteMetric",
                    "reason": f"NonFiniteMetric: test metric is {value!r}",
                    "traceback": [], "created": datetime.now(UTC).isoformat(timespec="seconds")})
                say(f"{d / 'report.json'} has a non-finite test metric ({value!r}); recorded the run as failed, "
                    "the next `bench run` retries it")
                n += 1
    for f in [suite_dir / "suite.json", *sorted((suite_dir / "search").glob("*.json"))]:
        if f.is_file():
            try:
                check_json(f)
            except Exception as exc:  # noqa: BLE001
                dest = set_aside(f, corrupt)
                say(f"{f} is unreadable ({_why(exc)}); moved it to {dest} (it is rewritten by the next `bench run`)")
                n += 1
    return n


def check_cache(root: Path, *, say=warn) -> int:
    """Move unreadable pretraining, feature and importance caches (``<cache>/pretrain|features/*.pt``,
    ``<cache>/importance/*.json``) to ``<cache>/corrupt/``, one line each; they are recomputed. Returns how many."""
    n = 0
    for f in sorted([*(root / "pretrain").glob("*.pt"), *(root / "features").glob("*.pt"),
                     *(root / "importance").glob("*.json")]):
        try:
            check_json(f) if f.suffix == ".json" else check_torch_file(f)
        except Exception as exc:  # noqa: BLE001
            dest = set_aside(f, root / CORRUPT_DIR)
            say(f"cache file {f} is unreadable ({_why(exc)}); moved it to {dest}, it is recomputed")
            n += 1
    return n


_RENDERING: contextvars.ContextVar[bool] = contextvars.ContextVar("bench_rendering", default=False)


def rendering_active() -> bool:
    return _RENDERING.get()


@contextlib.contextmanager
def rendering(suite_dir: Path, run_ids=None):
    """One rendering of a suite's leaderboard: unreadable files are named and set aside first
    (:func:`check_suite_dir`), only ``run_ids`` are read (when given), and every output under the suite
    directory is written together when the rendering succeeds, or none of them (:func:`staged_writes`)."""
    check_suite_dir(Path(suite_dir), run_ids)
    token = _RENDERING.set(True)
    try:
        with selected_runs(run_ids), staged_writes(suite_dir):
            yield
    finally:
        _RENDERING.reset(token)


def load_failures(suite_dir: Path, run_ids=None) -> list[dict]:
    """Failed runs (``FAILED`` without a later ``DONE``) of a suite directory (of :func:`selected_runs`)."""
    out = []
    for d in _run_dirs(suite_dir, run_ids):
        if (d / FAILED).exists() and not is_done(d):
            try:
                out.append(check_json(d / FAILED))
            except (OSError, ValueError) as exc:
                warn(f"{d / FAILED} is unreadable ({_why(exc)}); left out of the leaderboard")
    return out


def write_run(path: Path, report: RunReport, config: dict, predictions: dict[str, np.ndarray],
              fingerprint: dict | None = None) -> None:
    if path.exists() and (path / "DONE").exists():
        (path / "DONE").unlink()
    if (path / FAILED).exists():
        (path / FAILED).unlink()
    path.mkdir(parents=True, exist_ok=True)
    if fingerprint is not None:
        report.fingerprint = fingerprint
        atomic_write_json(path / FINGERPRINT_FILE, fingerprint)
    atomic_write_json(path / "config.json", config)
    tmp = path / "predictions.tmp.npz"
    np.savez_compressed(tmp, **predictions)
    os.replace(tmp, path / "predictions.npz")
    atomic_write_json(path / "report.json", report.to_dict())
    atomic_write_text(path / "DONE", report.created + "\n")


def load_reports(suite_dir: Path, run_ids=None) -> list[RunReport]:
    """Finished runs of a suite directory (of ``run_ids`` / :func:`selected_runs` when given); a report
    that cannot be read is named in one line and left out."""
    reports = []
    for d in _run_dirs(suite_dir, run_ids):
        if is_done(d):
            try:
                reports.append(RunReport.from_dict(check_json(d / "report.json")))
            except Exception as exc:  # noqa: BLE001
                warn(f"{d / 'report.json'} is unreadable ({_why(exc)}); left out of the leaderboard")
    return reports


# What a run writes into a checkout (published leaderboards) does not make the code that ran "dirty".
GENERATED_PATHS = ("leaderboards", "runs")


def git_commit(root: Path | None = None) -> str:
    """The checkout's commit (12 hex digits), ``-dirty`` when tracked files other than generated
    outputs (:data:`GENERATED_PATHS`) differ from it; ``unknown`` outside git."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        exclude = [f":(exclude){p}" for p in GENERATED_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, Any]:
    import torch

    from bench import __version__

    versions = {}
    for mod in ("torch", "torchvision", "timm", "rtdl_revisiting_models", "optuna", "fvcore", "captum", "numpy", "sklearn"):
        try:
            from importlib import metadata

            dist = {"sklearn": "scikit-learn"}.get(mod, mod)
            versions[mod] = metadata.version(dist)
        except Exception:
            versions[mod] = None
    return {
        "bench_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "libraries": versions,
    }


def backfill_reports(suite_dir: Path) -> int:
    """Add to finished runs' reports what the current code writes and older code did not, derived only
    from what each run stored; returns the number of reports changed. Predictions and every metric
    already in a report are left as they are.

    * ``test.acc`` / ``test.balanced_acc`` at the run's decision rule: binary, the validation-chosen
      threshold's figures already in ``test.at_threshold`` (older code's figures at a fixed logit 0 are
      kept as ``acc_at_logit_0`` / ``balanced_acc_at_logit_0``); multiclass, argmax of the stored test logits
      (:func:`bench.metrics.evaluate`, whose accuracy must equal the report's, else the run is left alone).
    * ``training.pretraining`` on a reference row fitted on a pair's image features: that pair's record,
      from a network run of the same suite.
    """
    from bench.metrics import evaluate

    runs = [d for d in sorted((suite_dir / "runs").glob("*")) if is_done(d)]
    reports = {d: json.loads((d / "report.json").read_text()) for d in runs}
    pretraining = {}
    for r in reports.values():
        p = r.get("training", {}).get("pretraining")
        if p and "epochs_run" in r.get("training", {}):
            pretraining.setdefault(r["spec"]["tabular_encoder"], p)
    changed = 0
    for d, r in reports.items():
        test, training = r.get("test", {}), r.get("training", {})
        new_test, new_training = dict(test), dict(training)
        op = test.get("at_threshold") or {}
        if "balanced_accuracy" in op and test.get("balanced_acc") != op["balanced_accuracy"]:
            if "balanced_acc" in test:  # older code's figures at a fixed logit 0, kept under their own name
                new_test.update(acc_at_logit_0=test.get("acc"), balanced_acc_at_logit_0=test["balanced_acc"])
            new_test.update(acc=op["accuracy"], balanced_acc=op["balanced_accuracy"])
        elif "balanced_acc" not in test and test.get("metric") == "acc" and (d / "predictions.npz").exists():
            with np.load(d / "predictions.npz", allow_pickle=False) as z:
                again = evaluate("multiclass", z["test_y"], z["test_logits"])
            if abs(again["value"] - test["value"]) < 1e-12:
                new_test["balanced_acc"] = again["balanced_acc"]
        pair = training.get("image_features_from")
        if pair and "pretraining" not in training and pair in pretraining:
            new_training["pretraining"] = pretraining[pair]
        if new_test != test or new_training != training:
            atomic_write_json(d / "report.json", {**r, "test": new_test, "training": new_training})
            changed += 1
    return changed
