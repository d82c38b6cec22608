"""Log every run of a suite to MLflow (``bench run --mlflow [URI]``): a :class:`~bench.hooks.RunHooks` user.

One MLflow experiment per suite (its name), one MLflow run per bench run (named by its run id):

* tags: the run's spec (protocol, tabular encoder, fusion, strategy, seed), dataset provenance,
  bench version and git commit;
* parameters: the searched hyper-parameters and the fusion's settings;
* metrics: the validation metric after every epoch (``val_<metric>``, step = epoch), and at the end
  every numeric test and validation figure of the report (``test_auc``, ``test_balanced_acc``,
  ``test_at_threshold_brier``, ``val_value``, ...);
* artifacts: ``report.json``, ``config.json`` and ``predictions.npz`` from the run directory.

A failed run is ended with status ``FAILED`` and its reason as a tag. The default store is an SQLite
database and an artifact folder beside the suite's results (``<out>/mlflow.db``,
``<out>/mlartifacts``): MLflow 3 refuses new file stores (``./mlruns``) unless told otherwise.
Browse it with ``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``. MLflow is an optional
extra (``pip install -e '.[mlflow]'``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.hooks import RunHooks
from bench.results import RunReport, RunSpec

__all__ = ["MLflowHooks", "default_tracking_uri"]

ARTIFACTS = ("report.json", "config.json", "predictions.npz")


def default_tracking_uri(out: Path) -> str:
    """``sqlite:///<out>/mlflow.db`` (absolute), the store ``--mlflow`` without a URI writes."""
    return f"sqlite:///{(Path(out) / 'mlflow.db').resolve()}"


def _flat(prefix: str, d: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of a nested dict as ``prefix_key_subkey`` (booleans and NaN left out)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        name = f"{prefix}_{k}"
        if isinstance(v, dict):
            out.update(_flat(name, v))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
    return out


class MLflowHooks(RunHooks):
    """Log runs to the MLflow tracking store at ``tracking_uri``, in the experiment ``experiment``."""

    def __init__(self, tracking_uri: str, experiment: str, *, artifact_location: str | None = None):
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise ConfigError("--mlflow needs the optional MLflow package: pip install -e '.[mlflow]'") from exc
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        self._active: dict[str, str] = {}  # bench run id -> MLflow run id

    @classmethod
    def for_suite(cls, suite_name: str, out: Path, uri: str | None = None) -> MLflowHooks:
        """The hooks ``bench run --mlflow [URI]`` uses: ``uri`` or the SQLite store beside the results."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        artifacts = (out / "mlartifacts").resolve().as_uri() if uri is None else None
        return cls(uri or default_tracking_uri(out), suite_name, artifact_location=artifacts)

    def run_start(self, spec: RunSpec, params: dict[str, Any]) -> None:
        tags = {"bench.run_id": spec.run_id, **{f"bench.{k}": str(v) for k, v in spec.__dict__.items()}}
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=spec.run_id, tags=tags)
        self._active[spec.run_id] = run.info.run_id
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in sorted(params.items())])

    def epoch_end(self, spec: RunSpec, epoch: int, metrics: dict[str, float]) -> None:
        run_id = self._active.get(spec.run_id)
        if run_id is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.client.log_metric(run_id, k, float(v), step=int(epoch))

    def run_end(self, spec: RunSpec, report: RunReport, run_dir: Path) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self._active.pop(spec.run_id, None)
        if run_id is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in {**_flat("test", report.test), **_flat("val", report.val)}.items()]
        prov, env = report.provenance, report.environment
        tags = [RunTag(f"bench.{k}", str(v)) for k, v in {
            "dataset": prov.get("dataset"), "data_source": prov.get("source"), "data_version": prov.get("version"),
            "bench_version": env.get("bench_version"), "git_commit": env.get("git_commit"),
            "budget": report.budget}.items() if v is not None]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        for name in ARTIFACTS:
            if (Path(run_dir) / name).exists():
                self.client.log_artifact(run_id, str(Path(run_dir) / name))
        self.client.set_terminated(run_id, status="FINISHED")

    def run_failed(self, spec: RunSpec, reason: str, run_dir: Path) -> None:
        run_id = self._active.pop(spec.run_id, None)
        if run_id is None:  # failed before it started (its search failed): record it anyway
            run_id = self.client.create_run(self.experiment_id, run_name=spec.run_id,
                                            tags={"bench.run_id": spec.run_id}).info.run_id
        self.client.set_tag(run_id, "bench.failure", reason[:500])
        self.client.set_terminated(run_id, status="FAILED")

    def close(self) -> None:
        for run_id in self._active.values():  # interrupted mid-run
            self.client.set_terminated(run_id, status="KILLED")
        self._active.clear()
