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

import json
import os
import platform
import subprocess
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
]


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
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunReport:
        d = dict(d)
        d["spec"] = RunSpec(**d["spec"])
        return cls(**d)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


def is_done(path: Path) -> bool:
    return (path / "DONE").exists() and (path / "report.json").exists()


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


def load_failures(suite_dir: Path) -> list[dict]:
    """Failed runs (``FAILED`` without a later ``DONE``) of a suite directory."""
    out = []
    for d in sorted((suite_dir / "runs").glob("*")):
        if (d / FAILED).exists() and not is_done(d):
            out.append(json.loads((d / FAILED).read_text()))
    return out


def write_run(path: Path, report: RunReport, config: dict, predictions: dict[str, np.ndarray]) -> None:
    if path.exists() and (path / "DONE").exists():
        (path / "DONE").unlink()
    if (path / FAILED).exists():
        (path / FAILED).unlink()
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / "config.json", config)
    tmp = path / "predictions.tmp.npz"
    np.savez_compressed(tmp, **predictions)
    os.replace(tmp, path / "predictions.npz")
    atomic_write_json(path / "report.json", asdict(report))
    atomic_write_text(path / "DONE", report.created + "\n")


def load_reports(suite_dir: Path) -> list[RunReport]:
    reports = []
    for d in sorted((suite_dir / "runs").glob("*")):
        if is_done(d):
            reports.append(RunReport.from_dict(json.loads((d / "report.json").read_text())))
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
