"""Tabular encoders: the plug-in contract for every registered one, and the Mamba twin's correctness."""

from __future__ import annotations

import math
import sys

import pytest
import rtdl_revisiting_models as rtdl
import torch
import torch.nn.functional as F

from baselines.tabular import mamba_cpu
from baselines.tabular.ft_mamba import FTMamba
from baselines.tabular.mamba_cpu import (
    MambaCPU,
    auto_chunk_size,
    causal_depthwise_conv,
    make_mamba,
    selective_scan_chunked,
    selective_scan_sequential,
)
from baselines.tabular.rtdl_encoders import FTTransformerEncoder
from bench.api import EncoderOutput
from bench.conformance import check_names, run_check
from bench.registry import registry

ENCODERS = registry("tabular_encoder").names()
BUILTINS = {"mlp", "resnet", "ft_transformer", "ft_mamba"}
# (n_num, cat_cardinalities): mixed, numeric only, categorical only
FEATURES = [(7, [3, 5, 2]), (7, []), (0, [3, 4])]
BATCH = 6


def make_inputs(n_num: int, cards: list[int], batch: int = BATCH, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_num = torch.randn(batch, n_num, generator=g)
    x_cat = torch.stack([torch.randint(0, c, (batch,), generator=g) for c in cards], 1) if cards else None
    return x_num, x_cat


def build(name: str, n_num: int, cards: list[int], seed: int = 0, **kwargs):
    if name == "ft_mamba":
        kwargs.setdefault("backend", "cpu")  # inputs here are CPU tensors; mamba_ssm's kernels are CUDA-only
    torch.manual_seed(seed)
    return registry("tabular_encoder").get(name)(n_num=n_num, cat_cardinalities=cards, **kwargs)


# ---------------------------------------------------------------------------------------------
# The contract, for every registered tabular encoder.
# ---------------------------------------------------------------------------------------------


def test_builtins_registered():
    assert BUILTINS <= set(ENCODERS)


@pytest.mark.parametrize(("name", "check"), [(n, c) for n in ENCODERS for c in check_names("tabular_encoder")])
def test_conformance(name, check):
    """The conformance kit (bench/conformance.py): shapes, finiteness, gradients, determinism, state_dict, FLOPs."""
    result = run_check("tabular_encoder", name, check)
    if result.skipped:
        pytest.skip(result.message)
    assert result.passed, result.message


@pytest.mark.parametrize("name", sorted(BUILTINS))
@pytest.mark.parametrize(("n_num", "cards"), FEATURES, ids=["mixed", "numeric", "categorical"])
def test_builtin_default_sizes_keep_the_contract(name, n_num, cards):
    """The kit builds small instances (conformance_kwargs); the defaults honour the contract too."""
    enc = build(name, n_num, cards)
    out = enc(*make_inputs(n_num, cards))
    assert isinstance(out, EncoderOutput)
    assert out.tokens.shape == (BATCH, enc.n_tokens, enc.d_token)
    assert out.pooled.shape == (BATCH, enc.d_out)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_give_every_parameter_a_nonzero_gradient(name):
    """Stricter than the kit, which allows exactly-zero gradients behind zero-initialised layers."""
    n_num, cards = FEATURES[0]
    enc = build(name, n_num, cards)
    out = enc(*make_inputs(n_num, cards))
    g = torch.Generator().manual_seed(1)
    loss = (out.tokens * torch.randn(out.tokens.shape, generator=g)).sum()
    (loss + (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()).backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_bad_arguments_quote_the_value(name):
    cls = registry("tabular_encoder").get(name)
    with pytest.raises(ValueError, match="-3"):
        cls(n_num=-3, cat_cardinalities=[])
    with pytest.raises(ValueError, match=r"cat_cardinalities\[1\]=0"):
        cls(n_num=2, cat_cardinalities=[3, 0])
    with pytest.raises(ValueError, match="at least one feature"):
        cls(n_num=0, cat_cardinalities=[])
    enc = cls(n_num=2, cat_cardinalities=[3])
    with pytest.raises(ValueError, match="x_cat=None"):
        enc(torch.randn(4, 2), None)
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        enc(torch.randn(4, 5), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="dtype"):
        enc(torch.randn(4, 2), torch.zeros(4, 1))


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_empty_categorical_matrix_is_accepted(name):
    enc = build(name, 3, [])
    enc.eval()
    x_num = torch.randn(4, 3)
    assert torch.equal(enc(x_num, None).pooled, enc(x_num, torch.zeros(4, 0, dtype=torch.long)).pooled)


def test_default_sizes_follow_the_paper():
    for name in ("mlp", "resnet"):
        enc = build(name, 5, [])
        assert (enc.d_out, enc.d_token, enc.n_tokens) == (256, 256, 1)
    ft = build("ft_transformer", 5, [2])
    assert (ft.d_out, ft.d_token, ft.n_tokens, len(ft.backbone.blocks)) == (64, 64, 7, 2)
    fm = build("ft_mamba", 5, [2])
    assert (fm.d_out, fm.d_token, fm.n_tokens, len(fm.blocks)) == (64, 64, 7, 2)


# ---------------------------------------------------------------------------------------------
# FT-Transformer: the rtdl model without its head.
# ---------------------------------------------------------------------------------------------


def test_ft_transformer_matches_rtdl():
    n_num, cards = FEATURES[0]
    kwargs = dict(n_blocks=2, attention_n_heads=8, attention_dropout=0.15, ffn_d_hidden=None)
    kwargs |= dict(ffn_d_hidden_multiplier=4 / 3, ffn_dropout=0.05, residual_dropout=0.0)
    torch.manual_seed(0)
    ref = rtdl.FTTransformer(n_cont_features=n_num, cat_cardinalities=cards, d_out=3, d_block=64, **kwargs)
    enc = FTTransformerEncoder(n_num=n_num, cat_cardinalities=cards)
    state = {}
    for key, value in ref.state_dict().items():
        if key.startswith("backbone.output.linear."):
            continue
        if key.startswith("backbone.output.normalization."):
            key = key.replace("backbone.output.", "")
        elif not key.startswith("backbone."):
            key = "embeddings." + key
        state[key] = value
    enc.load_state_dict(state, strict=True)
    ref.eval()
    enc.eval()
    x = make_inputs(n_num, cards)
    out = enc(*x)
    assert torch.equal(out.pooled, out.tokens[:, 0])  # [CLS] first, as in rtdl
    expected = ref(*x)
    got = ref.backbone.output.linear(F.relu(out.pooled))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    enc.tokens_needed = False  # [CLS]-only last block: same pooled output, one token
    lean = enc(*x)
    assert lean.tokens.shape[1] == 1
    torch.testing.assert_close(lean.pooled, out.pooled, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Selective scans.
# ---------------------------------------------------------------------------------------------


def scan_inputs(batch, length, d_inner, d_state, dtype=torch.float32, seed=0, dt_shift=-2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, d_inner, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(batch, length, d_inner, generator=g, dtype=dtype) + dt_shift)
    A = -torch.exp(torch.randn(d_inner, d_state, generator=g, dtype=dtype))
    B = torch.randn(batch, length, d_state, generator=g, dtype=dtype)
    C = torch.randn(batch, length, d_state, generator=g, dtype=dtype)
    D = torch.randn(d_inner, generator=g, dtype=dtype)
    return [x, dt, A, B, C, D]


FUSED_CASES = [(7, 4), (37, 8), (64, None)]  # the fused scan compiles per chunk length: a few cases


@pytest.mark.parametrize(("length", "chunk_size", "fused"), [
    *((n, c, False) for n in (1, 7, 16, 37, 64) for c in (1, 4, 16, None)),
    *((n, c, True) for n, c in FUSED_CASES),
])
def test_chunked_scan_matches_sequential(length, chunk_size, fused):
    args = scan_inputs(3, length, 8, 4)
    for a in args:
        a.requires_grad_(True)
    y_seq = selective_scan_sequential(*args)
    y_chk = selective_scan_chunked(*args, chunk_size=chunk_size, fused=fused)
    torch.testing.assert_close(y_chk, y_seq, rtol=1e-5, atol=1e-5 * y_seq.abs().max().item())
    w = torch.randn(y_seq.shape, generator=torch.Generator().manual_seed(5))
    g_seq = torch.autograd.grad((y_seq * w).sum(), args)
    g_chk = torch.autograd.grad((y_chk * w).sum(), args)
    for name, a, b in zip("x dt A B C D".split(), g_chk, g_seq):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize(("chunk_size", "fused"), [(1, False), (4, False), (None, False), (4, True), (None, True)])
def test_chunked_scan_with_softplus_and_gate_matches_sequential(chunk_size, fused):
    # as mamba_ssm's selective_scan_fn(..., z=z, delta_softplus=True): dt = softplus(delta), y * silu(z)
    x, dt, A, B, C, D = scan_inputs(3, 37, 8, 4)
    g = torch.Generator().manual_seed(7)
    delta = torch.randn(dt.shape, generator=g) * 3 - 3
    z = torch.randn(x.shape, generator=g)
    args = [x, delta, A, B, C, D, z]
    for a in args:
        a.requires_grad_(True)
    y_seq = selective_scan_sequential(*args[:6], z=z, delta_softplus=True)
    ref = (selective_scan_sequential(x, F.softplus(delta), A, B, C, D) * F.silu(z))
    torch.testing.assert_close(y_seq, ref)
    y_chk = selective_scan_chunked(*args[:6], z=z, delta_softplus=True, chunk_size=chunk_size, fused=fused)
    torch.testing.assert_close(y_chk, y_seq, rtol=1e-5, atol=1e-5 * y_seq.abs().max().item())
    w = torch.randn(y_seq.shape, generator=g)
    g_seq = torch.autograd.grad((y_seq * w).sum(), args)
    g_chk = torch.autograd.grad((y_chk * w).sum(), args)
    for name, a, b in zip("x delta A B C D z".split(), g_chk, g_seq):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=name)


def test_chunked_scan_time_major_is_the_transposed_call():
    x, dt, A, B, C, D = scan_inputs(3, 21, 8, 4)
    z = torch.randn(x.shape)
    y = selective_scan_chunked(x, dt, A, B, C, D, z=z, chunk_size=4)
    tm = [t.transpose(0, 1).contiguous() for t in (x, dt, B, C, z)]
    y_tm = selective_scan_chunked(tm[0], tm[1], A, tm[2], tm[3], D, z=tm[4], chunk_size=4, time_major=True)
    assert torch.equal(y_tm.transpose(0, 1), y)
    with pytest.raises(ValueError, match="z must have the shape of x"):
        selective_scan_chunked(x, dt, A, B, C, D, z=z[:, :-1])


@pytest.mark.parametrize("fused", [False, True])
def test_chunked_scan_gradcheck(fused):
    args = scan_inputs(2, 9, 3, 2, dtype=torch.float64)
    for a in args:
        a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *a: selective_scan_chunked(*a, chunk_size=4, fused=fused), args)
    z = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a[:6], z=a[6], delta_softplus=True, chunk_size=4, fused=fused),
        (*args, z))


@pytest.mark.parametrize("fused", [False, True])
def test_chunked_scan_is_stable_for_large_decays(fused):
    # dt*A down to about -1e3 per step: exp of positive numbers would overflow float32
    args = scan_inputs(2, 424, 8, 16, dt_shift=4.0)
    args[2] = args[2] * 30
    for a in args:
        a.requires_grad_(True)
    y = selective_scan_chunked(*args, chunk_size=32, fused=fused)
    grads = torch.autograd.grad(y.square().sum(), args)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(g).all() for g in grads)
    ref = selective_scan_sequential(*[a.detach() for a in args])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)


def test_the_fused_scan_compiles_here(monkeypatch):
    # CI's machine has a C++ compiler: the fused path must really compile, not fall back silently
    monkeypatch.setenv("BENCH_FUSED_SCAN", "1")  # the test suite's default is the eager scan (conftest.py)
    selective_scan_chunked(*scan_inputs(2, 8, 4, 2), chunk_size=4)
    assert mamba_cpu._FusedChunks.failed is None and mamba_cpu._FusedChunks.compiled


def test_the_fused_scan_falls_back_when_compiling_fails(monkeypatch):
    monkeypatch.setenv("BENCH_FUSED_SCAN", "1")
    args = scan_inputs(2, 11, 4, 2)
    ref = selective_scan_chunked(*args, chunk_size=4, fused=False)
    for name, value in (("compiled", {}), ("failed", None), ("probed", False)):
        monkeypatch.setattr(mamba_cpu._FusedChunks, name, value)

    def broken(*_, **__):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore lines")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="could not be compiled .*InvalidCxxCompiler.*eager chunked scan"):
        y = selective_scan_chunked(*args, chunk_size=4)  # fused=None: the probe fails, eager is used
    torch.testing.assert_close(y, ref)
    monkeypatch.setattr(mamba_cpu._FusedChunks, "failed", None)
    with pytest.warns(UserWarning, match="could not be compiled"):  # asked for fused: chunks run uncompiled
        y = selective_scan_chunked(*args, chunk_size=4, fused=True)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_the_environment_can_turn_the_fused_scan_off(monkeypatch):
    monkeypatch.setattr(mamba_cpu._FusedChunks, "compiled", {})
    monkeypatch.setattr(mamba_cpu._FusedChunks, "failed", None)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("nothing may be compiled"))
    args = scan_inputs(2, 11, 4, 2)
    for off in ("0", "off", "false"):
        monkeypatch.setenv("BENCH_FUSED_SCAN", off)
        assert not mamba_cpu.fused_scan_enabled() and not mamba_cpu._FusedChunks.usable(args[0])
        torch.testing.assert_close(selective_scan_chunked(*args, chunk_size=4),
                                   selective_scan_chunked(*args, chunk_size=4, fused=False))
    monkeypatch.setenv("BENCH_FUSED_SCAN", "1")
    assert mamba_cpu.fused_scan_enabled()


def test_past_the_recompile_limit_a_chunk_runs_uncompiled_and_fusion_stays_on(monkeypatch):
    class FailOnRecompileLimitHit(Exception):  # torch._dynamo.exc's, by name
        pass

    def over_the_limit(*_):
        raise FailOnRecompileLimitHit("Hard failure due to fullgraph=True")

    monkeypatch.setattr(mamba_cpu._FusedChunks, "compiled", {"_chunk_forward": over_the_limit,
                                                             "_chunk_backward": over_the_limit})
    monkeypatch.setattr(mamba_cpu._FusedChunks, "failed", None)
    args = scan_inputs(2, 11, 4, 2)
    y = selective_scan_chunked(*args, chunk_size=4, fused=True)
    torch.testing.assert_close(y, selective_scan_chunked(*args, chunk_size=4, fused=False), rtol=1e-5, atol=1e-6)
    assert mamba_cpu._FusedChunks.failed is None


def test_fused_chunk_bounds_are_powers_of_two():
    assert mamba_cpu._fused_bounds(37, 8) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 36), (36, 37)]
    assert mamba_cpu._fused_bounds(424, 8)[-1] == (416, 424) and len(mamba_cpu._fused_bounds(424, 8)) == 53
    assert mamba_cpu._fused_bounds(5, 6) == [(0, 4), (4, 5)]
    assert mamba_cpu._fused_bounds(3, 1) == [(0, 1), (1, 2), (2, 3)]


def test_tiny_adjoints_are_flushed_without_changing_gradients():
    # only the last step is read out (FT-Mamba's CLS): the adjoint decays through the subnormal range
    args = scan_inputs(2, 200, 8, 16, dt_shift=2.0)
    for a in args:
        a.requires_grad_(True)
    w = torch.zeros(2, 200, 8)
    w[:, -1] = 1.0
    grads = {}
    for fused in (False, True):
        y = selective_scan_chunked(*args, chunk_size=8, fused=fused)
        grads[fused] = torch.autograd.grad((y * w).sum(), args)
    ref = torch.autograd.grad((selective_scan_sequential(*args) * w).sum(), args)
    tiny = torch.finfo(torch.float32).tiny
    for got in grads.values():
        for a, b in zip(got, ref):
            assert not ((a != 0) & (a.abs() < tiny)).any()  # no subnormal left in any gradient
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_auto_chunk_size():
    assert auto_chunk_size(64, 128, 16) == 8
    assert auto_chunk_size(1, 8, 4) == 64
    assert auto_chunk_size(4096, 512, 128) == 1


# ---------------------------------------------------------------------------------------------
# MambaCPU: the twin of mamba_ssm.Mamba.
# ---------------------------------------------------------------------------------------------

# mamba_ssm.Mamba(d_model, d_state, d_conv, expand, dt_rank="auto", bias=False, conv_bias=True):
# d_inner = expand * d_model, dt_rank = ceil(d_model / 16).
EXPECTED_SHAPES = {
    (32, 16, 4, 2): {  # d_inner 64, dt_rank 2
        "in_proj.weight": (128, 32),
        "conv1d.weight": (64, 1, 4),
        "conv1d.bias": (64,),
        "x_proj.weight": (34, 64),
        "dt_proj.weight": (64, 2),
        "dt_proj.bias": (64,),
        "A_log": (64, 16),
        "D": (64,),
        "out_proj.weight": (32, 64),
    },
    (40, 8, 3, 1): {  # d_inner 40, dt_rank 3
        "in_proj.weight": (80, 40),
        "conv1d.weight": (40, 1, 3),
        "conv1d.bias": (40,),
        "x_proj.weight": (19, 40),
        "dt_proj.weight": (40, 3),
        "dt_proj.bias": (40,),
        "A_log": (40, 8),
        "D": (40,),
        "out_proj.weight": (40, 40),
    },
}


@pytest.mark.parametrize("config", list(EXPECTED_SHAPES))
def test_state_dict_matches_mamba_ssm(config):
    d_model, d_state, d_conv, expand = config
    m = MambaCPU(d_model, d_state, d_conv, expand)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == EXPECTED_SHAPES[config]


def test_initialisation_matches_mamba_ssm():
    torch.manual_seed(0)
    m = MambaCPU(32, d_state=16)
    a = torch.arange(1, 17, dtype=torch.float32).repeat(64, 1)
    assert torch.equal(m.A_log.data, torch.log(a))
    assert torch.equal(m.D.data, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias.data)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= 2**-0.5
    assert m.A_log._no_weight_decay and m.D._no_weight_decay and m.dt_proj.bias._no_reinit


def mambapy_block(d_model, d_state=16, d_conv=4, expand=2, pscan=True):
    from mambapy.mamba import MambaBlock, MambaConfig

    config = MambaConfig(
        d_model=d_model, n_layers=1, d_state=d_state, expand_factor=expand, d_conv=d_conv, pscan=pscan
    )
    return MambaBlock(config)


@pytest.mark.parametrize("scan", ["chunked", "sequential"])
def test_parity_with_mambapy(scan):
    torch.manual_seed(0)
    ref = mambapy_block(32)
    ours = MambaCPU(32, 16, 4, 2, scan=scan)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 37, 32)
    y_ref, y = ref(x), ours(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    # the parameter gradients agree too
    w = torch.randn(y.shape)
    (y_ref * w).sum().backward()
    (y * w).sum().backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_mambapy_loads_our_state_dict():
    torch.manual_seed(1)
    ours = MambaCPU(24, 8, 3, 2)
    ref = mambapy_block(24, d_state=8, d_conv=3, expand=2)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 20, 24)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["batch_major", "time_major", "time_major_silu"])
def test_causal_depthwise_conv_equals_conv1d(k, bias, layout, monkeypatch):
    import baselines.tabular.mamba_cpu as mc

    monkeypatch.setattr(mc, "CONV_BLOCK_ELEMENTS", 24)  # blocks of 2 time steps: the block seams are tested
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, k, groups=6, padding=k - 1, bias=bias).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    ref = conv(x.transpose(1, 2))[..., :9].transpose(1, 2)
    if layout == "batch_major":
        ours = causal_depthwise_conv(x, conv.weight, conv.bias)
    else:
        silu = layout == "time_major_silu"
        ours = causal_depthwise_conv(x.transpose(0, 1), conv.weight, conv.bias, time_dim=0, silu=silu)
        ours = ours.transpose(0, 1)
        ref = F.silu(ref) if silu else ref
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    for a, b in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(a, b)


def test_causal_depthwise_conv_gradcheck_and_bad_shapes():
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: causal_depthwise_conv(*a, time_dim=0, silu=True), (x, w, b))
    with pytest.raises(ValueError, match="weight"):
        causal_depthwise_conv(x, w[:2], b)
    with pytest.raises(ValueError, match="time_dim"):
        causal_depthwise_conv(x, w, b, time_dim=2)


def test_mamba_is_causal():
    torch.manual_seed(0)
    m = MambaCPU(16, 4)
    x = torch.randn(2, 12, 16)
    x2 = x.clone()
    x2[:, 8] += 1.0
    y, y2 = m(x), m(x2)
    assert torch.equal(y[:, :8], y2[:, :8])
    assert not torch.allclose(y[:, 8:], y2[:, 8:])


def test_mamba_cpu_bad_arguments():
    with pytest.raises(ValueError, match="d_state=0"):
        MambaCPU(8, d_state=0)
    with pytest.raises(ValueError, match="'parallel'"):
        MambaCPU(8, scan="parallel")
    with pytest.raises(ValueError, match=r"\(2, 5, 9\)"):
        MambaCPU(8)(torch.randn(2, 5, 9))


def test_make_mamba_backends(monkeypatch):
    with pytest.raises(ValueError, match="'tpu'"):
        make_mamba(16, backend="tpu")
    assert isinstance(make_mamba(16, 4, 4, 2, backend="cpu"), MambaCPU)
    # auto: CUDA reported available but mamba_ssm does not import -> the CPU twin
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # makes `import mamba_ssm` raise ImportError
    assert isinstance(make_mamba(16, backend="auto"), MambaCPU)
    with pytest.raises(ImportError, match="mamba-ssm"):
        make_mamba(16, backend="cuda")


# ---------------------------------------------------------------------------------------------
# FT-Mamba.
# ---------------------------------------------------------------------------------------------


def test_ft_mamba_cls_is_last():
    n_num, cards = FEATURES[0]
    torch.manual_seed(0)
    enc = FTMamba(n_num=n_num, cat_cardinalities=cards, d_token=16, backend="cpu")
    enc.eval()
    x_num, x_cat = make_inputs(n_num, cards)
    tokens_in = enc.tokenize(x_num, x_cat)
    assert tokens_in.shape == (BATCH, n_num + len(cards) + 1, 16)
    assert torch.equal(tokens_in[:, -1], enc.embeddings.cls_embedding.weight.expand(BATCH, -1))
    out = enc(x_num, x_cat)
    assert torch.equal(out.pooled, out.tokens[:, -1])
    # causal mixing: [CLS] (last) sees the first feature; earlier tokens never see later features
    x_num2 = x_num.clone()
    x_num2[:, 0] += 1.0
    assert not torch.allclose(enc(x_num2, x_cat).pooled, out.pooled)
    x_cat2 = (x_cat + 1) % torch.tensor(cards)
    out2 = enc(x_num, x_cat2)
    assert torch.equal(out2.tokens[:, :n_num], out.tokens[:, :n_num])
    assert not torch.allclose(out2.pooled, out.pooled)


def test_ft_mamba_mean_pooling_sees_every_token_and_keeps_the_tokens():
    n_num, cards = FEATURES[0]
    torch.manual_seed(0)
    cls_enc = FTMamba(n_num=n_num, cat_cardinalities=cards, d_token=16, backend="cpu").eval()
    torch.manual_seed(0)
    mean_enc = FTMamba(n_num=n_num, cat_cardinalities=cards, d_token=16, backend="cpu", pooling="mean").eval()
    x_num, x_cat = make_inputs(n_num, cards)
    a, b = cls_enc(x_num, x_cat), mean_enc(x_num, x_cat)
    assert torch.equal(a.tokens, b.tokens)  # the same network and state_dict: only the pooled vector differs
    assert set(cls_enc.state_dict()) == set(mean_enc.state_dict())
    assert torch.allclose(b.pooled, b.tokens.mean(dim=1))
    assert not torch.allclose(a.pooled, b.pooled)
    with pytest.raises(ValueError, match="'max'"):
        FTMamba(n_num=n_num, cat_cardinalities=cards, pooling="max")


def test_ft_mamba_backend_and_scans():
    n_num, cards = FEATURES[0]
    torch.manual_seed(0)
    enc = FTMamba(n_num=n_num, cat_cardinalities=cards, d_token=16, backend="cpu", norm="layernorm")
    assert enc.backend == "cpu" and all(isinstance(b.mixer, MambaCPU) for b in enc.blocks)
    assert isinstance(enc.norm, torch.nn.LayerNorm)
    assert set(enc.blocks[0].mixer.state_dict()) == set(EXPECTED_SHAPES[(32, 16, 4, 2)])
    enc.eval()
    x = make_inputs(n_num, cards)
    y_chunked = enc(*x).tokens
    for block in enc.blocks:
        block.mixer.scan = "sequential"
    torch.testing.assert_close(enc(*x).tokens, y_chunked, rtol=1e-5, atol=1e-5)
    assert isinstance(FTMamba(n_num=2, cat_cardinalities=[]).norm, torch.nn.RMSNorm)
    with pytest.raises(ValueError, match="'batchnorm'"):
        FTMamba(n_num=2, cat_cardinalities=[], norm="batchnorm")
    with pytest.raises(ValueError, match="d_state=0"):
        FTMamba(n_num=2, cat_cardinalities=[], d_state=0)


def test_ft_mamba_long_sequence_runs():
    # OL3I-sized input (423 numeric features -> 424 tokens), small batch and width
    torch.manual_seed(0)
    enc = FTMamba(n_num=423, cat_cardinalities=[], d_token=16)
    out = enc(torch.randn(2, 423), None)
    assert out.tokens.shape == (2, 424, 16) and torch.isfinite(out.tokens).all()
    out.pooled.square().mean().backward()
    assert math.isfinite(enc.embeddings.cont_embeddings.weight.grad.abs().sum().item())
