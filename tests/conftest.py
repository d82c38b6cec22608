import os
import tempfile

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config):
    # Pretraining and dataset caches go to a per-session temp dir, never ~/.cache (module-scoped
    # fixtures run before function-scoped ones, so this is set once for the whole session).
    os.environ["BENCH_CACHE"] = tempfile.mkdtemp(prefix="bench-test-cache-")


@pytest.fixture(autouse=True)
def _no_real_data_env(monkeypatch):
    for var in ("BENCH_OL3I_ROOT", "BENCH_DVM_ROOT"):
        monkeypatch.delenv(var, raising=False)
