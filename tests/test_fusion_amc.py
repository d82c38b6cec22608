"""AMC-specific tests (Peng et al., ICML 2025): differential attention, SMoE, token re-balancing, losses.

The registry-parametrized conformance kit in ``test_fusions.py`` covers shapes, gradients,
determinism, state_dict round trips and missing-modality refusal.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.fusion.amc import (
    AMCFusion,
    DifferentialAttention,
    SparseMoE,
    amc_token_fusion,
    instance_contrastive_loss,
    load_balancing_loss,
    modality_importance,
    replacement_counts,
    token_contrastive_loss,
)
from bench.api import FusionDims
from bench.registry import registry

SMALL = FusionDims(
    image_pooled=32, image_token=32, tabular_pooled=16, tabular_token=16, image_tokens=4, tabular_tokens=10
)
# The harness's setting: resnet 2x2 map of 512-d tokens, FT-Transformer with 423 features + CLS.
HARNESS = FusionDims(
    image_pooled=512, image_token=512, tabular_pooled=32, tabular_token=32, image_tokens=4, tabular_tokens=424
)


def _small(**kwargs) -> AMCFusion:
    torch.manual_seed(0)
    return AMCFusion(dims=SMALL, n_classes=3, **{**AMCFusion.conformance_kwargs, **kwargs})


def _inputs(batch: int = 6, n_tab: int = 10, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, 32, generator=g),
        torch.randn(batch, 32, generator=g),
        torch.randn(batch, n_tab, 16, generator=g),
        torch.randn(batch, 16, generator=g),
    )


# --------------------------------------------------------------------------------------------------
# Differential attention (eqs. 5-6, 10-12)


def _identity_attention(lambda_init: float = 0.1) -> DifferentialAttention:
    attn = DifferentialAttention(d_model=4, n_heads=1, lambda_init=lambda_init)
    with torch.no_grad():
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            lin.weight.copy_(torch.eye(4))
        for p in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            p.zero_()
    return attn


def test_differential_attention_hand_computed():
    # d_model 4, one head: d_head 2, Q1 = K1 = x[:, :2], Q2 = K2 = x[:, 2:], V = x.
    # x = [e1; e2]: Q1 K1^T = I, Q2 K2^T = 0, lambda = e^0 - e^0 + 0.1 = 0.1.
    # softmax(I / sqrt 2) rows = [p, 1-p] with p = sigmoid(1/sqrt 2); softmax(0) = 1/2.
    attn = _identity_attention(0.1)
    assert attn.lam().item() == pytest.approx(0.1)
    x = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    out, amap = attn(x)
    p = 1.0 / (1.0 + math.exp(-1.0 / math.sqrt(2.0)))
    a, b = p - 0.1 * 0.5, (1 - p) - 0.1 * 0.5  # 0.61976, 0.28024
    assert amap.shape == (1, 2, 2)
    assert torch.allclose(amap[0], torch.tensor([[a, b], [b, a]]), atol=1e-6)
    assert a == pytest.approx(0.61976, abs=1e-5)
    # head = A V = [[a, b, 0, 0], [b, a, 0, 0]]; RMSNorm over the head's 4 channels, times 1 - 0.1.
    rms = math.sqrt((a * a + b * b) / 4 + 1e-5)
    expected = 0.9 * torch.tensor([[a, b, 0.0, 0.0], [b, a, 0.0, 0.0]]) / rms
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_differential_attention_lambda_reparameterisation():
    attn = _identity_attention(0.3)
    with torch.no_grad():
        attn.lambda_q1.copy_(torch.tensor([0.5, 1.0]))
        attn.lambda_k1.copy_(torch.tensor([2.0, -0.25]))  # q1 . k1 = 0.75
        attn.lambda_q2.copy_(torch.tensor([1.0, 1.0]))
        attn.lambda_k2.copy_(torch.tensor([0.1, 0.2]))  # q2 . k2 = 0.3
    lam = math.exp(0.75) - math.exp(0.3) + 0.3
    assert attn.lam().item() == pytest.approx(lam, rel=1e-6)
    x = torch.tensor([[[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0]]])
    _, amap = attn(x)
    q1, q2 = x[0, :, :2], x[0, :, 2:]
    ref = torch.softmax(q1 @ q1.T / math.sqrt(2), -1) - lam * torch.softmax(q2 @ q2.T / math.sqrt(2), -1)
    assert torch.allclose(amap[0], ref, atol=1e-6)


def test_differential_attention_multi_head_matches_formula():
    torch.manual_seed(0)
    d, h = 8, 2
    attn = DifferentialAttention(d_model=d, n_heads=h, lambda_init=0.2)
    x = torch.randn(3, 5, d)
    out, amap = attn(x)
    dh = d // (2 * h)
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    lam = attn.lam()
    heads, maps = [], []
    for i in range(h):  # head i owns columns [i*2dh, (i+1)*2dh) = [Q1^i; Q2^i]
        qi, ki = q[..., i * 2 * dh : (i + 1) * 2 * dh], k[..., i * 2 * dh : (i + 1) * 2 * dh]
        a1 = torch.softmax(qi[..., :dh] @ ki[..., :dh].transpose(1, 2) / math.sqrt(dh), -1)
        a2 = torch.softmax(qi[..., dh:] @ ki[..., dh:].transpose(1, 2) / math.sqrt(dh), -1)
        ai = a1 - lam * a2
        maps.append(ai)
        head = ai @ v[..., i * 2 * dh : (i + 1) * 2 * dh]
        heads.append(0.8 * attn.head_norm(head))
    assert torch.allclose(amap, torch.stack(maps).mean(0), atol=1e-6)
    assert torch.allclose(out, attn.out_proj(torch.cat(heads, -1)), atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Sparse mixture of experts (eqs. 13-15)


def test_moe_routes_to_exactly_top_k_experts():
    torch.manual_seed(0)
    moe = SparseMoE(d_model=8, n_experts=5, top_k=2, d_hidden=16)
    x = torch.randn(40, 8)
    gates, idx, dispatch = moe.route(x)
    probs = torch.softmax(moe.router(x), -1)
    assert (dispatch.sum(-1) == 2).all() and ((gates > 0) == dispatch).all()
    # the kept values are the k largest softmax probabilities, not renormalised (eq. 14-15)
    top = probs.topk(2, dim=-1)
    assert torch.equal(torch.sort(idx, -1).values, torch.sort(top.indices, -1).values)
    assert torch.allclose(gates.sum(-1), top.values.sum(-1))
    assert torch.allclose(gates[dispatch], probs[dispatch])
    # y = sum_i R(x)_i f_i(x): only the selected experts contribute
    y, _ = moe(x)
    dense = torch.stack([e(x) for e in moe.experts], dim=1)  # [T, E, d]
    assert torch.allclose(y, (gates.unsqueeze(-1) * dense).sum(1), atol=1e-6)


def test_moe_unused_expert_gets_zero_gradient_not_none():
    torch.manual_seed(0)
    moe = SparseMoE(d_model=4, n_experts=4, top_k=2, d_hidden=8)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0].fill_(5.0)
        moe.router.weight[1].fill_(4.0)
    x = torch.rand(10, 4) + 0.1  # positive: experts 0 and 1 always win
    y, _ = moe(x)
    _, _, dispatch = moe.route(x)
    assert dispatch[:, :2].all() and not dispatch[:, 2:].any()
    y.sum().backward()
    for e in (2, 3):
        for p in moe.experts[e].parameters():
            assert p.grad is not None and not p.grad.any()


def test_load_balancing_loss_minimal_for_uniform_routing():
    e = 4
    eye = torch.eye(e, dtype=torch.bool)
    uniform_dispatch = eye.repeat(3, 1)  # 12 tokens, 3 per expert
    uniform = load_balancing_loss(0.5 * uniform_dispatch.float(), uniform_dispatch)
    assert uniform.item() == pytest.approx(0.0, abs=1e-8)
    skewed_dispatch = torch.zeros(12, e, dtype=torch.bool)
    skewed_dispatch[:, 0] = True
    skewed = load_balancing_loss(0.5 * skewed_dispatch.float(), skewed_dispatch)
    assert skewed.item() > 1.0
    # Uneven gate mass with an even token count is penalised too (the importance term).
    gates = 0.5 * uniform_dispatch.float()
    gates[[0, 4, 8]] *= 1.8  # expert 0's tokens: importance [2.7, 1.5, 1.5, 1.5] -> CV^2 = 0.27 / 3.24
    assert load_balancing_loss(gates, uniform_dispatch).item() == pytest.approx(0.27 / 3.24, rel=1e-4)
    # random routings are never below the uniform one
    torch.manual_seed(0)
    moe = SparseMoE(d_model=8, n_experts=e, top_k=2, d_hidden=8)
    for _ in range(5):
        _, loss = moe(torch.randn(64, 8))
        assert loss.item() >= uniform.item()
    assert load_balancing_loss(torch.ones(5, 1), torch.ones(5, 1, dtype=torch.bool)).item() == 0.0


# --------------------------------------------------------------------------------------------------
# Modality importance and customized token fusion (eqs. 2-4)


def test_modality_importance_hand_computed():
    # one instance, N = 2: image rows max 0.7, 0.5 -> sigma 0.6; tabular rows max 0.3, 0.1 -> sigma 0.2
    attn = torch.tensor(
        [
            [[[0.7, 0.2], [0.4, 0.5]]],
            [[[0.3, 0.1], [0.1, -0.05]]],
        ]
    )
    s, eta = modality_importance(attn)
    assert torch.allclose(eta, torch.tensor([[[0.7, 0.5]], [[0.3, 0.1]]]))
    assert torch.allclose(s, torch.tensor([[0.75], [0.25]]))
    assert torch.equal(replacement_counts(s, 8), torch.tensor([[6], [2]]))  # floor(s N)
    assert torch.equal(replacement_counts(s, 8, "inverse"), torch.tensor([[2], [6]]))
    assert torch.equal(replacement_counts(torch.tensor([[0.49], [0.51]]), 4), torch.tensor([[1], [2]]))
    with pytest.raises(ValueError, match="'nope'"):
        replacement_counts(s, 8, "nope")


def test_token_fusion_two_modalities_hand_computed():
    x = torch.arange(2 * 1 * 4 * 2, dtype=torch.float).view(2, 1, 4, 2)  # [M, B, N, D]
    eta = torch.tensor([[[0.3, 0.1, 0.4, 0.2]], [[0.5, 0.6, 0.05, 0.7]]])
    k = torch.tensor([[2], [1]])
    new, replaced, source = amc_token_fusion(x, eta, k)
    # image: bottom-2 scores at positions 1 and 3 -> tabular tokens 1 and 3; tabular: position 2 -> image token 2
    assert replaced.tolist() == [[[False, True, False, True]], [[False, False, True, False]]]
    assert torch.equal(new[0, 0], torch.stack([x[0, 0, 0], x[1, 0, 1], x[0, 0, 2], x[1, 0, 3]]))
    assert torch.equal(new[1, 0], torch.stack([x[1, 0, 0], x[1, 0, 1], x[0, 0, 2], x[1, 0, 3]]))
    assert (source[0] == 1).all() and (source[1] == 0).all()


def test_token_fusion_replaces_exactly_k_with_best_inter_modal_token():
    torch.manual_seed(0)
    m, b, n, d = 3, 4, 6, 5
    x = torch.randn(m, b, n, d)
    eta = torch.rand(m, b, n)
    k = torch.tensor([[0, 1, 3, 6], [2, 2, 5, 0], [1, 4, 0, 3]])
    new, replaced, _ = amc_token_fusion(x, eta, k)
    assert torch.equal(replaced.sum(-1), k)
    for mi in range(m):
        for bi in range(b):
            bottom = set(eta[mi, bi].argsort()[: int(k[mi, bi])].tolist())
            for ni in range(n):
                if ni in bottom:
                    assert replaced[mi, bi, ni]
                    others = [o for o in range(m) if o != mi]
                    best = max(others, key=lambda o: eta[o, bi, ni].item())  # eq. 4: highest score at n
                    assert torch.equal(new[mi, bi, ni], x[best, bi, ni])
                else:
                    assert not replaced[mi, bi, ni]
                    assert torch.equal(new[mi, bi, ni], x[mi, bi, ni])


# --------------------------------------------------------------------------------------------------
# Two-level contrastive loss (eqs. 7-9)


def test_contrastive_losses_lower_for_aligned_than_shuffled():
    torch.manual_seed(0)
    a = torch.randn(16, 4, 8)
    b = a + 0.1 * torch.randn_like(a)
    shuffled = b[torch.randperm(16)]
    assert instance_contrastive_loss(a, b, 0.1) < instance_contrastive_loss(a, shuffled, 0.1) - 1.0
    assert token_contrastive_loss(a, b, 0.1) < token_contrastive_loss(a, shuffled, 0.1) - 1.0
    # the token level also pairs positions: same instances, tokens permuted within each instance
    positions = b[:, torch.tensor([1, 2, 3, 0])]
    assert token_contrastive_loss(a, b, 0.1) < token_contrastive_loss(a, positions, 0.1) - 1.0


def test_token_contrastive_loss_matches_eq8():
    torch.manual_seed(0)
    a, b = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    t = 0.5
    za, zb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    total = 0.0
    for i in range(3):
        for n in range(2):
            pos = torch.exp((za[i, n] @ zb[i, n]) / t)
            den1 = sum(torch.exp((za[i, n] @ zb[j, k]) / t) for j in range(3) for k in range(2))
            den2 = sum(torch.exp((za[j, k] @ zb[i, n]) / t) for j in range(3) for k in range(2))
            total += -0.5 * torch.log(pos / den1) - 0.5 * torch.log(pos / den2)
    assert token_contrastive_loss(a, b, t).item() == pytest.approx(total.item() / 6, rel=1e-5)
    # groups: negatives only within each group; the mean is over all tokens
    g1 = token_contrastive_loss(a[:2], b[:2], t)
    g2 = token_contrastive_loss(a[2:], b[2:], t)
    assert token_contrastive_loss(a, b, t, group=2).item() == pytest.approx(
        (2 * g1 + g2).item() / 3, rel=1e-5
    )
    assert torch.equal(token_contrastive_loss(a, b, t, group=3), token_contrastive_loss(a, b, t))


def test_instance_contrastive_loss_matches_eq7():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    t = 0.2
    xa, xb = F.normalize(a.mean(1), dim=-1), F.normalize(b.mean(1), dim=-1)
    sim = xa @ xb.T / t
    per = [-0.5 * (sim[i].log_softmax(0)[i] + sim[:, i].log_softmax(0)[i]) for i in range(4)]
    assert instance_contrastive_loss(a, b, t).item() == pytest.approx(
        torch.stack(per).mean().item(), rel=1e-5
    )


# --------------------------------------------------------------------------------------------------
# The fusion module


def test_registered_with_contract():
    cls = registry("fusion").get("amc")
    assert cls is AMCFusion
    assert cls.needs_tokens and cls.needs_tabular_tokens and not cls.handles_missing
    params = inspect.signature(AMCFusion.__init__).parameters
    assert set(AMCFusion.search_space) <= set(params)
    assert set(AMCFusion.conformance_kwargs) <= set(params)
    assert AMCFusion.search_space["n_experts"]["choices"] == [4, 8, 16]
    for key in ("w_instance", "w_token", "w_balance"):
        assert AMCFusion.search_space[key] == {"type": "categorical", "choices": [1.0, 0.1]}


def test_outputs_losses_and_diagnostics():
    fusion = _small(w_instance=2.0, w_token=3.0, w_balance=0.5).train()
    out = fusion(*_inputs())
    assert out.logits.shape == (6, 3)
    assert set(out.aux_losses) == {"contrastive_instance", "contrastive_token", "load_balance"}
    d = out.diagnostics
    for key in ("importance_image", "importance_tabular", "replaced_image", "replaced_tabular"):
        assert key in d and d[key].ndim == 0 and torch.isfinite(d[key]) and not d[key].requires_grad
    assert out.aux_losses["contrastive_instance"].item() == pytest.approx(2.0 * d["loss_instance"].item())
    assert out.aux_losses["contrastive_token"].item() == pytest.approx(3.0 * d["loss_token"].item())
    assert out.aux_losses["load_balance"].item() == pytest.approx(0.5 * d["load_balance"].item())
    assert 0 <= d["importance_image"] <= 1
    assert (d["importance_image"] + d["importance_tabular"]).item() == pytest.approx(1.0, abs=1e-5)
    # two blocks = one AMC step; with M = 2, floor(s N) + floor((1 - s) N) is N - 1 or N per instance
    n = fusion.n_tokens
    assert n - 1 <= (d["replaced_image"] + d["replaced_tabular"]).item() <= n


def test_replacement_happens_between_blocks_only():
    one = _small(n_blocks=1)
    out = one(*_inputs())
    assert out.diagnostics["replaced_image"].item() == 0 and out.diagnostics["replaced_tabular"].item() == 0
    assert (
        out.diagnostics["importance_image"] + out.diagnostics["importance_tabular"]
    ).item() == pytest.approx(1.0)
    three = _small(n_blocks=3)
    d = three(*_inputs()).diagnostics
    total = (d["replaced_image"] + d["replaced_tabular"]).item()
    assert 2 * (three.n_tokens - 1) <= total <= 2 * three.n_tokens  # two AMC steps


def test_token_replacement_changes_the_output():
    fusion = _small().eval()
    inputs = _inputs()
    with torch.no_grad():
        base = fusion(*inputs).logits
        import baselines.fusion.amc as amc

        original = amc.replacement_counts
        try:
            amc.replacement_counts = lambda s, n, rule="paper": torch.zeros_like(s, dtype=torch.long)
            unreplaced = fusion(*inputs)
        finally:
            amc.replacement_counts = original
    assert unreplaced.diagnostics["replaced_image"].item() == 0
    assert not torch.allclose(base, unreplaced.logits)


def test_uses_tokens_not_pooled_and_any_tabular_length():
    fusion = _small().eval()
    it, ip, tt, tp = _inputs()
    with torch.no_grad():
        base = fusion(it, ip, tt, tp).logits
        assert torch.equal(fusion(it, ip * 0, tt, tp * 0).logits, base)
        # (the resamplers layer-normalise their inputs: shifts and scales of a whole token are invisible)
        g = torch.Generator().manual_seed(5)
        assert not torch.allclose(fusion(it + torch.randn(it.shape, generator=g), ip, tt, tp).logits, base)
        assert not torch.allclose(fusion(it, ip, tt + torch.randn(tt.shape, generator=g), tp).logits, base)
        # the resampler gives N tokens whatever the number of input tokens
        it2, ip2, tt2, tp2 = _inputs(n_tab=23)
        assert fusion(it2, ip2, tt2, tp2).logits.shape == (6, 3)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"d_model": 30, "n_heads": 4}, "30"),
        ({"n_tokens": 0}, "0"),
        ({"n_blocks": 0}, "0"),
        ({"n_experts": 2, "top_k": 3}, "3"),
        ({"top_k": 0}, "0"),
        ({"lambda_init": 1.5}, "1.5"),
        ({"temperature": -0.1}, "-0.1"),
        ({"w_token": float("nan")}, "nan"),
        ({"w_balance": -1.0}, "-1.0"),
        ({"dropout": 1.0}, "1.0"),
        ({"k_rule": "max"}, "'max'"),
        ({"token_contrast_group": 1}, "1"),
        ({"resampler_heads": 3}, "3"),
        ({"n_experts": 2.5}, "2.5"),
    ],
)
def test_rejects_bad_hyperparameters(kwargs, bad):
    with pytest.raises(ValueError, match=__import__("re").escape(bad)):
        AMCFusion(dims=SMALL, n_classes=1, **kwargs)


def test_inverse_k_rule_swaps_the_counts():
    paper = _small(k_rule="paper").eval()
    inverse = _small(k_rule="inverse").eval()
    with torch.no_grad():
        dp, di = paper(*_inputs()).diagnostics, inverse(*_inputs()).diagnostics
    # same weights (same seed): same importance before the single AMC step, counts swapped
    assert dp["importance_image"].item() == pytest.approx(di["importance_image"].item())
    assert dp["replaced_image"].item() == pytest.approx(di["replaced_tabular"].item())
    assert dp["replaced_tabular"].item() == pytest.approx(di["replaced_image"].item())


def test_default_size_at_harness_dims():
    torch.manual_seed(0)
    fusion = AMCFusion(dims=HARNESS, n_classes=1)
    assert sum(p.numel() for p in fusion.parameters()) == 489_969
    assert fusion.d_model == 64 and fusion.n_tokens == 8 and fusion.n_blocks == 2
    assert len(fusion.blocks[0].moe.experts) == 8 and fusion.blocks[0].moe.top_k == 2
    assert fusion.blocks[0].attn.n_heads == 8


def test_contrastive_losses_act_on_the_modality_specific_encoders():
    # A.1 / sec. 4.3: the two-level loss is on the modality-specific encoded output, before the blocks.
    fusion = _small()
    out = fusion(*_inputs())
    (out.aux_losses["contrastive_instance"] + out.aux_losses["contrastive_token"]).backward()
    for name, p in fusion.named_parameters():
        reached = p.grad is not None and bool(p.grad.any())
        before_blocks = name.startswith(("resamplers.", "specific.", "pos"))
        assert reached == before_blocks, name


def test_traceable_for_the_profiler():
    from bench.profile import count_gmac

    fusion = _small()
    result = count_gmac(fusion, _inputs())
    assert result.gmac > 0
    assert isinstance(fusion.blocks[0].moe, nn.Module)


def _plain_cross_attention(r, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The resampler's cross-attention written out: every input token projected to keys and values."""
    kv = r.norm_in(tokens)
    b, n_in, _ = kv.shape
    h, n, dh = r.n_heads, r.n_tokens, r.d_model // r.n_heads
    q = r.q_proj(r.norm_q(r.queries)).view(n, h, dh).transpose(0, 1)  # [h, N, dh]
    k = r.k_proj(kv).view(b, n_in, h, dh).permute(0, 2, 1, 3)  # [B, h, L, dh]
    v = r.v_proj(kv).view(b, n_in, h, dh).permute(0, 2, 1, 3)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # [B, h, N, L]
    return r.out_proj((attn @ v).transpose(1, 2).reshape(b, n, r.d_model)), attn


@pytest.mark.parametrize("n_in", [11, 3])  # more input tokens than queries (folded order), fewer (projected)
@pytest.mark.parametrize("heads", [1, 2])
def test_resampler_folded_projections_equal_plain_cross_attention(heads, n_in):
    """For long inputs the resampler folds W_k and the input LayerNorm's affine part into the queries
    and applies W_v after pooling; values and every parameter's gradient equal the plain formula
    (float64), as do those of the projected order it uses for inputs no longer than its queries."""
    torch.manual_seed(0)
    fusion = AMCFusion(dims=SMALL, n_classes=1, **{**AMCFusion.conformance_kwargs, "resampler_heads": heads})
    r = fusion.resamplers["tabular"].double()
    with torch.no_grad():  # a non-trivial input LayerNorm (it starts as the identity)
        r.norm_in.weight.copy_(torch.rand_like(r.norm_in.weight) + 0.5)
        r.norm_in.bias.copy_(torch.randn_like(r.norm_in.bias))
    assert r.n_tokens == 4
    tokens = torch.randn(5, n_in, SMALL.tabular_token, dtype=torch.float64)
    grad = torch.randn(5, r.n_tokens, r.d_model, dtype=torch.float64)
    params = [p for p in r.parameters() if p.requires_grad]
    ours, attn = r.attention(tokens)
    ref, ref_attn = _plain_cross_attention(r, tokens)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-10, atol=1e-12)
    for g_ours, g_ref, p in zip(
        torch.autograd.grad(ours, params, grad, allow_unused=True),
        torch.autograd.grad(ref, params, grad, allow_unused=True),
        params,
        strict=True,
    ):
        if g_ref is None:  # the FFN's parameters: not part of the attention
            assert g_ours is None
            continue
        assert g_ours is not None and p.shape == g_ours.shape
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-11)
