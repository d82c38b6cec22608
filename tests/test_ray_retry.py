"""Ray Tune: a trial whose worker process dies mid-trial is retried, and the search completes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from bench.api import Fusion

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed (pip install -e '.[ray]')")


class DiesOnce:
    """An objective whose first call kills its own worker process after one reported epoch."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, hp: dict, seed: int, on_epoch=None) -> float:
        value = 0.9 if hp["lr"] == 1e-3 else 0.7
        if on_epoch:
            on_epoch(0, value / 2)
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(17)  # the worker dies mid-trial, as under an OOM kill or a lost node
        if on_epoch:
            on_epoch(1, value)
        return value


def test_a_killed_worker_leads_to_a_retried_trial(tmp_path, monkeypatch):
    import ray
    from ray import cloudpickle

    from bench.search.ray_search import search_hyperparameters

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", short)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=short, log_to_driver=False)
    try:
        marker = tmp_path / "died"
        best, info = search_hyperparameters(
            DiesOnce(str(marker)), fusion_cls=Fusion, strategy="frozen", seed=2022,
            budget={"n_trials": 2, "lr": [1e-3, 1e-4], "fusion_params": [], "pruner": "none"},
            storage_path=str(tmp_path / "tune"), address=None, max_epochs=2)
    finally:
        ray.shutdown()
        shutil.rmtree(short, ignore_errors=True)
    assert marker.exists()  # a worker really died
    assert best["lr"] == 1e-3
    assert info["trials"] == 2 and all(t["state"] == "complete" for t in info["all"])
