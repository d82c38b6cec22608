"""``baselines.ops`` (short-row softmax, fast dropout, softplus, encoder layer) and ``bench.allocator``: speed-ups that keep results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from baselines.ops import (
    SHORT_ROW,
    Dropout,
    TransformerEncoderLayer,
    short_softmax,
    softplus_forward,
    use_fast_dropout,
)


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


def test_softplus_forward_matches_torch():
    # the whole float32 range that matters: log1p's small-argument regime (x << 0), where 1 + e rounds
    # to 1 (x < -16.6), both sides of 0, and torch's threshold (x > 20 returns x)
    x = torch.cat([torch.linspace(-120, 120, 20001), torch.tensor([-16.7, -16.5, 0.0, 19.99, 20.0, 20.01])])
    x = torch.cat([x, torch.randn(10000) * 3 - 4])
    ours, ref = softplus_forward(x), torch.nn.functional.softplus(x)
    # relative to each value (softplus(x) > 0 spans ~1e-52 .. 120): a few float32 ulp
    assert ((ours - ref).abs() / ref.abs().clamp_min(1e-38)).max() < 4e-7
    assert torch.equal(ours[x > 20], x[x > 20])
    x64 = torch.randn(50, dtype=torch.float64) * 10
    torch.testing.assert_close(softplus_forward(x64), torch.nn.functional.softplus(x64), rtol=1e-9, atol=0)


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


def test_fast_dropout_is_inverted_dropout_with_the_same_gradient_mask():
    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.randn(400, 500, requires_grad=True)
    y = drop(x)
    zeroed = y == 0
    assert abs(zeroed.float().mean().item() - 0.25) < 0.01  # Bernoulli(0.75) keep mask
    torch.testing.assert_close(y[~zeroed], x[~zeroed] / 0.75)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, (~zeroed).float() / 0.75)
    torch.manual_seed(1)
    a = drop(x)
    torch.manual_seed(1)
    assert torch.equal(a, drop(x))  # deterministic for a seed
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0).train()(x) is x


def test_fast_dropout_quantised_probability_odd_sizes_and_independent_bits():
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)  # not a multiple of 4 elements: the last 64-bit draw is cut
    y = Dropout(0.1).train()(x)
    kept = y != 0
    scale = 65536 / (65536 - round(0.1 * 65536))  # p used: 6554 / 65536 = 0.100006
    assert torch.equal(y[kept], torch.full_like(y[kept], scale))
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.002
    # the four 16-bit slices of one draw are independent: neighbours are dropped together ~p^2 of the time
    dropped = ~kept.flatten()[:1000 * 1000]
    pairs = (dropped[0::4] & dropped[1::4]).float().mean().item()
    assert abs(pairs - 0.01) < 0.002
    assert Dropout(0.5).train()(torch.ones(7, 3)).shape == (7, 3)


def test_use_fast_dropout_swaps_every_plain_dropout_and_keeps_the_state_dict():
    layer = nn.TransformerEncoderLayer(16, 2, 32, 0.1, batch_first=True)
    keys = list(layer.state_dict())
    use_fast_dropout(layer)
    drops = [m for m in layer.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(type(m) is Dropout and m.p == 0.1 for m in drops)
    assert list(layer.state_dict()) == keys


def test_encoder_layer_is_torchs_layer_with_fast_attention():
    torch.manual_seed(0)
    kw = {"d_model": 16, "nhead": 4, "dim_feedforward": 32, "activation": "gelu", "batch_first": True,
          "norm_first": True}
    ref = nn.TransformerEncoderLayer(dropout=0.0, **kw)
    ours = TransformerEncoderLayer(dropout=0.0, **kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 7, 16, requires_grad=True)
    for mode in (True, False):  # training (our attention block) and eval (PyTorch's path)
        ref.train(mode), ours.train(mode)
        y_ref, y = ref(x), ours(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y_ref)
    ref.train(), ours.train()
    grads_ref = torch.autograd.grad(ref(x), [x, *ref.parameters()], g)
    grads = torch.autograd.grad(ours(x), [x, *ours.parameters()], g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    mask = torch.zeros(5, 7, dtype=torch.bool)
    mask[:, -2:] = True  # with a padding mask: PyTorch's own attention
    torch.testing.assert_close(ours(x, src_key_padding_mask=mask), ref(x, src_key_padding_mask=mask))
    drop = TransformerEncoderLayer(dropout=0.1, **kw)
    assert all(type(m) is Dropout for m in drop.modules() if isinstance(m, nn.Dropout))
    assert drop.attn_dropout.p == 0.1
