"""``baselines.ops.short_softmax`` and ``bench.allocator``: speed-ups that must not change results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from baselines.ops import SHORT_ROW, short_softmax


@pytest.mark.parametrize("shape", [(3, 4, 2, 8, 8), (5, 1), (7, 4), (6, SHORT_ROW + 1)])
def test_short_softmax_matches_torch_values_and_gradients(shape):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 4).requires_grad_()
    grad = torch.randn(shape, generator=g)
    ours = short_softmax(x)
    (d_ours,) = torch.autograd.grad(ours, x, grad)
    ref = torch.softmax(x, dim=-1)
    (d_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(d_ours, d_ref, rtol=1e-5, atol=1e-6)


def test_short_softmax_gradcheck_and_large_inputs():
    x = torch.randn(4, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(short_softmax, (x,))
    big = torch.tensor([[1000.0, 999.0, -1000.0]])  # exp would overflow without the max shift
    torch.testing.assert_close(short_softmax(big), torch.softmax(big, dim=-1))


def _allocator(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "from bench.allocator import keep_freed_memory as k; print(k(), k())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          check=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_setting_and_its_opt_out():
    assert _allocator({"BENCH_MALLOC": "keep"}).stdout.split() == ["True", "True"]  # once, then remembered
    assert _allocator({"BENCH_MALLOC": "system"}).stdout.split() == ["False", "False"]
    odd = _allocator({"BENCH_MALLOC": "jemalloc"})
    assert odd.stdout.split() == ["True", "True"] and "BENCH_MALLOC='jemalloc'" in odd.stderr
