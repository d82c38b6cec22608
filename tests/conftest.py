import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Pretraining and dataset caches go to a per-session temp dir, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "bench-cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    for var in ("BENCH_OL3I_ROOT", "BENCH_DVM_ROOT"):
        monkeypatch.delenv(var, raising=False)
    yield


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
