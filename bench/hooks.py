"""Run lifecycle hooks: what a tracker, a notifier or a dashboard needs to follow a suite.

The executor (``bench.pipeline.run_suite``) calls, for every network run it fits:

* ``run_start(spec, params)`` before training (``params``: the searched hyper-parameters and the
  fusion's settings);
* ``epoch_end(spec, epoch, metrics)`` after each epoch's validation (``{"val_<metric>": value}``);
* ``run_end(spec, report, run_dir)`` once the run directory is written (``report.json``,
  ``predictions.npz``);
* ``run_failed(spec, reason, run_dir)`` when the run (or the search it depends on) failed.

Subclass :class:`RunHooks` and override what you need; pass instances as ``run_suite(...,
hooks=[...])``. A hook that raises is switched off for the rest of the suite with one warning: a
tracker going down never costs a run. :class:`bench.mlflow_hooks.MLflowHooks` (``bench run
--mlflow``) is the built-in user and reads as a template.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.results import RunReport, RunSpec

__all__ = ["HookList", "RunHooks"]


class RunHooks:
    """No-op lifecycle hooks; override the events you need."""

    def run_start(self, spec: RunSpec, params: dict[str, Any]) -> None:
        """Before a run's final fit."""

    def epoch_end(self, spec: RunSpec, epoch: int, metrics: dict[str, float]) -> None:
        """After each training epoch, with its validation metric(s)."""

    def run_end(self, spec: RunSpec, report: RunReport, run_dir: Path) -> None:
        """After the run directory (report, predictions) is written."""

    def run_failed(self, spec: RunSpec, reason: str, run_dir: Path) -> None:
        """When the run, or the search it needs, failed (``run_dir/FAILED`` says why)."""

    def close(self) -> None:
        """At the end of the suite."""


class HookList(RunHooks):
    """Several hooks called in order; one that raises is disabled with a warning, the run goes on."""

    def __init__(self, hooks: Iterable[RunHooks] = ()):
        self.hooks = list(hooks)

    def _call(self, event: str, *args) -> None:
        for hook in list(self.hooks):
            try:
                getattr(hook, event)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must not cost a run
                self.hooks.remove(hook)
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                warnings.warn(f"run hook {type(hook).__name__} failed in {event} ({type(exc).__name__}: {first}); "
                              "it is switched off for the rest of this suite, the runs go on", stacklevel=2)

    def run_start(self, spec: RunSpec, params: dict[str, Any]) -> None:
        self._call("run_start", spec, params)

    def epoch_end(self, spec: RunSpec, epoch: int, metrics: dict[str, float]) -> None:
        self._call("epoch_end", spec, epoch, metrics)

    def run_end(self, spec: RunSpec, report: RunReport, run_dir: Path) -> None:
        self._call("run_end", spec, report, run_dir)

    def run_failed(self, spec: RunSpec, reason: str, run_dir: Path) -> None:
        self._call("run_failed", spec, reason, run_dir)

    def close(self) -> None:
        self._call("close")
