import os
import shutil
import tempfile

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


_TEST_CACHE: str | None = None


def pytest_configure(config):
    # Pretraining and dataset caches go to a per-session temp dir, never ~/.cache (module-scoped
    # fixtures run before function-scoped ones, so this is set once for the whole session).
    global _TEST_CACHE
    _TEST_CACHE = os.environ["BENCH_CACHE"] = tempfile.mkdtemp(prefix="bench-test-cache-")
    # FT-Mamba's CPU twin runs its eager chunked scan here: with the fused one compiled for every shape the
    # small suites sweep, test_end_to_end's smoke suite took 858 s on a 2-core AMD EPYC, 234 s without. The fused path has
    # its own tests (tests/test_tabular_encoders.py), which turn it back on.
    os.environ.setdefault("BENCH_FUSED_SCAN", "0")


def pytest_unconfigure(config):
    """The session's cache goes with the session (pretrained weights and rendered slices: hundreds of MB)."""
    if _TEST_CACHE:
        shutil.rmtree(_TEST_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_real_data_env(monkeypatch):
    for var in ("BENCH_OL3I_ROOT", "BENCH_DVM_ROOT"):
        monkeypatch.delenv(var, raising=False)
