"""Fusions that handle a missing modality: masked_attention, late_fusion, gmu, concat_missing_embedding.

Contract (bench/api.py): a sample's output may not depend on the content of its missing modality,
and no gradient may reach a missing modality's inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines.fusion.concat_missing import ConcatMissingEmbeddingFusion
from baselines.fusion.gmu import GMUFusion
from baselines.fusion.late_fusion import LateFusion, availability_weights
from baselines.fusion.masked_attention import MaskedAttentionFusion, modality_dropout_masks
from bench.api import FusionDims
from bench.registry import registry

DIMS = FusionDims(
    image_pooled=12, image_token=10, tabular_pooled=6, tabular_token=8, image_tokens=3, tabular_tokens=5
)
NAMES = ["masked_attention", "late_fusion", "gmu", "concat_missing_embedding"]
# sample 1: image missing; sample 2: tabular missing; the others have both
IMAGE_AVAILABLE = torch.tensor([True, False, True, True, False, True])
TABULAR_AVAILABLE = torch.tensor([True, True, False, True, True, False])
BATCH = IMAGE_AVAILABLE.numel()


def _build(name: str, seed: int = 0, n_classes: int = 3, **kwargs):
    torch.manual_seed(seed)
    cls = registry("fusion").get(name)
    return cls(dims=DIMS, n_classes=n_classes, **{**cls.conformance_kwargs, **kwargs})


def _inputs(seed: int = 1, batch: int = BATCH, image_available=None, tabular_available=None):
    """Random inputs with zeros in the missing modalities (as the harness hands them)."""
    g = torch.Generator().manual_seed(seed)
    it = torch.randn(batch, DIMS.image_tokens, DIMS.image_token, generator=g)
    ip = torch.randn(batch, DIMS.image_pooled, generator=g)
    tt = torch.randn(batch, DIMS.tabular_tokens, DIMS.tabular_token, generator=g)
    tp = torch.randn(batch, DIMS.tabular_pooled, generator=g)
    ia = IMAGE_AVAILABLE if image_available is None else image_available
    ta = TABULAR_AVAILABLE if tabular_available is None else tabular_available
    it, ip = it * ia[:, None, None], ip * ia[:, None]
    tt, tp = tt * ta[:, None, None], tp * ta[:, None]
    return it, ip, tt, tp


def _scramble(inputs, seed: int = 2, scale: float = 1000.0):
    """The same inputs with large random values in every missing modality's tensors."""
    g = torch.Generator().manual_seed(seed)
    it, ip, tt, tp = (x.clone() for x in inputs)
    it[~IMAGE_AVAILABLE] = scale * torch.randn(it[~IMAGE_AVAILABLE].shape, generator=g)
    ip[~IMAGE_AVAILABLE] = scale * torch.randn(ip[~IMAGE_AVAILABLE].shape, generator=g)
    tt[~TABULAR_AVAILABLE] = scale * torch.randn(tt[~TABULAR_AVAILABLE].shape, generator=g)
    tp[~TABULAR_AVAILABLE] = scale * torch.randn(tp[~TABULAR_AVAILABLE].shape, generator=g)
    return it, ip, tt, tp


def test_registered_with_contract():
    for name in NAMES:
        cls = registry("fusion").get(name)
        assert cls.handles_missing, name
    assert MaskedAttentionFusion.needs_tokens and not MaskedAttentionFusion.needs_tabular_tokens  # pooled tabular token (cost)
    assert MaskedAttentionFusion.search_space == {
        "modality_dropout": {"type": "categorical", "choices": [0.0, 0.1, 0.3, 0.5]}
    }
    for cls in (LateFusion, GMUFusion, ConcatMissingEmbeddingFusion):
        assert not cls.needs_tokens and not cls.needs_tabular_tokens


# --------------------------------------------------------------------------------------------------
# The contract, for all four
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", NAMES)
def test_output_ignores_missing_content(name, mode):
    fusion = _build(name)
    fusion.train(mode == "train")  # train: dropout and modality dropout active, same seed for both runs
    inputs = _inputs()
    outs = []
    for x in (inputs, _scramble(inputs), _scramble(inputs, seed=3, scale=1.0)):
        torch.manual_seed(5)
        with torch.no_grad():
            outs.append(fusion(*x, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits)
    assert torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # Sanity: changing an *available* input does change that sample's output.
    it, ip, tt, tp = inputs
    torch.manual_seed(5)
    with torch.no_grad():
        changed = fusion(it + 1.0, ip + 1.0, tt + 1.0, tp + 1.0, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits
    assert not torch.allclose(changed[0], outs[0][0])


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_missing_content_is_harmless(name):
    fusion = _build(name).eval()
    inputs = _inputs()
    it, ip, tt, tp = (x.clone() for x in inputs)
    it[~IMAGE_AVAILABLE] = float("nan")
    ip[~IMAGE_AVAILABLE] = float("inf")
    tt[~TABULAR_AVAILABLE] = float("-inf")
    tp[~TABULAR_AVAILABLE] = float("nan")
    with torch.no_grad():
        base = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits
        assert torch.equal(fusion(it, ip, tt, tp, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits, base)


@pytest.mark.parametrize("name", NAMES)
def test_no_gradient_reaches_missing_inputs(name):
    fusion = _build(name).eval()
    inputs = [x.clone().requires_grad_(True) for x in _scramble(_inputs())]
    out = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE)
    (out.logits.square().sum() + sum(out.aux_losses.values(), torch.zeros(()))).backward()
    it, ip, tt, tp = inputs
    used_image, used_tabular = (it, tt) if fusion.needs_tokens else (ip, tp)
    for x, available in (
        (it, IMAGE_AVAILABLE),
        (ip, IMAGE_AVAILABLE),
        (tt, TABULAR_AVAILABLE),
        (tp, TABULAR_AVAILABLE),
    ):
        if x.grad is not None:
            assert torch.equal(x.grad[~available], torch.zeros_like(x.grad[~available]))
    assert used_image.grad[IMAGE_AVAILABLE].abs().sum() > 0
    assert used_tabular.grad[TABULAR_AVAILABLE].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_single_modality_batches(name):
    fusion = _build(name).eval()
    none = torch.zeros(BATCH, dtype=torch.bool)
    every = torch.ones(BATCH, dtype=torch.bool)
    with torch.no_grad():
        for ia, ta in ((every, none), (none, every)):
            out = fusion(*_inputs(image_available=ia, tabular_available=ta), ia, ta)
            assert out.logits.shape == (BATCH, 3) and torch.isfinite(out.logits).all()
            assert all(torch.isfinite(v).all() and not v.requires_grad for v in out.diagnostics.values())


# --------------------------------------------------------------------------------------------------
# masked_attention
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("update_tabular", [True, False])
def test_masked_attention_equals_run_on_available_tokens_only(update_tabular):
    fusion = _build("masked_attention", update_tabular=update_tabular, n_layers=3).eval()
    inputs = _inputs()
    it, _, tt, _ = inputs
    n_img, n_tab = DIMS.image_tokens, DIMS.tabular_tokens
    image_pos = list(range(3, 3 + n_img))
    tabular_pos = list(range(3 + n_img, 3 + n_img + n_tab))
    with torch.no_grad():
        logits = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits
        sequence = fusion.embed(it, tt)
        for b in range(BATCH):
            if IMAGE_AVAILABLE[b] and TABULAR_AVAILABLE[b]:
                keep = list(range(3 + n_img + n_tab))
            elif TABULAR_AVAILABLE[b]:
                keep = [0, 2, *tabular_pos]  # CLS, tabular modality token, tabular tokens
            else:
                keep = [0, 1, *image_pos]  # CLS, image modality token, image tokens
            n_updated = None if update_tabular else sum(k < 3 + n_img for k in keep)
            alone = fusion.head(fusion.encode(sequence[b : b + 1, keep], None, n_updated))
            torch.testing.assert_close(logits[b : b + 1], alone, rtol=1e-5, atol=1e-6)
        # The test can fail: without the mask the missing tokens do change the result.
        unmasked = fusion.head(fusion.encode(sequence, None, None if update_tabular else 3 + n_img))
        missing = ~(IMAGE_AVAILABLE & TABULAR_AVAILABLE)
        assert not torch.allclose(unmasked[missing], logits[missing], atol=1e-4)
        assert torch.allclose(unmasked[~missing], logits[~missing], atol=1e-6)


def test_modality_dropout_masks():
    n = 4000
    image = torch.rand(n, generator=torch.Generator().manual_seed(100)) < 0.8
    tabular = ~image | (torch.rand(n, generator=torch.Generator().manual_seed(101)) < 0.8)
    both = image & tabular

    torch.manual_seed(0)
    new_image, new_tabular, dropped = modality_dropout_masks(image, tabular, 1.0)
    assert torch.equal(dropped, both)  # p = 1: every fully available sample loses one modality
    assert torch.equal(new_image ^ new_tabular | ~both, torch.ones(n, dtype=torch.bool))
    assert torch.equal(new_image[~both], image[~both]) and torch.equal(new_tabular[~both], tabular[~both])
    assert (new_image | new_tabular).all()
    assert 0.45 < new_image[both].float().mean() < 0.55  # which one: 50/50

    torch.manual_seed(0)
    a = modality_dropout_masks(image, tabular, 0.3)
    torch.manual_seed(0)
    b = modality_dropout_masks(image, tabular, 0.3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # deterministic under a seed
    assert abs(a[2][both].float().mean() - 0.3) < 0.04
    torch.manual_seed(1)
    assert not torch.equal(modality_dropout_masks(image, tabular, 0.3)[2], a[2])
    assert not modality_dropout_masks(image, tabular, 0.0)[2].any()


def test_masked_attention_modality_dropout_train_only_and_seeded():
    n = 64
    ia = torch.ones(n, dtype=torch.bool)
    ta = ia.clone()
    ta[:8] = False
    inputs = _inputs(batch=n, image_available=ia, tabular_available=ta)
    fusion = _build("masked_attention", dropout=0.0, modality_dropout=0.5)
    with torch.no_grad():
        reference = fusion.eval()(*inputs, ia, ta)
        assert reference.diagnostics["modality_dropped"].item() == 0.0
        fusion.train()
        runs = []
        for seed in (3, 3, 4):
            torch.manual_seed(seed)
            runs.append(fusion(*inputs, ia, ta))
        assert torch.equal(runs[0].logits, runs[1].logits)  # same seed, same drops
        assert not torch.equal(runs[0].logits, runs[2].logits)
        dropped_rate = runs[0].diagnostics["modality_dropped"].item()
        assert 0.0 < dropped_rate < 56 / 64
        # Train mode = eval mode run on the availability the regulariser drew.
        torch.manual_seed(3)
        new_ia, new_ta, dropped = modality_dropout_masks(ia, ta, 0.5)
        assert dropped.float().mean().item() == dropped_rate
        changed = (new_ia != ia) | (new_ta != ta)
        expected = fusion.eval()(*inputs, new_ia, new_ta).logits
        torch.testing.assert_close(runs[0].logits, expected)
        assert not torch.allclose(runs[0].logits[changed], reference.logits[changed])
        assert torch.equal(runs[0].logits[~changed], reference.logits[~changed])
        # With the regulariser off, train mode (no other dropout) equals eval mode.
        off = _build("masked_attention", dropout=0.0, modality_dropout=0.0).train()
        off.load_state_dict(fusion.state_dict())
        assert torch.equal(off(*inputs, ia, ta).logits, reference.logits)


@pytest.mark.parametrize(
    "kwargs",
    [{"d_model": 30, "n_heads": 4}, {"n_layers": 0}, {"dropout": 1.0}, {"modality_dropout": 1.5}],
)
def test_masked_attention_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MaskedAttentionFusion(dims=DIMS, n_classes=1, **kwargs)


def test_masked_attention_rejects_wrong_image_token_count():
    fusion = _build("masked_attention").eval()
    it, ip, tt, tp = _inputs()
    with pytest.raises(ValueError, match="image tokens"):
        fusion(it[:, :2], ip, tt, tp)


# --------------------------------------------------------------------------------------------------
# late_fusion, gmu, concat_missing_embedding
# --------------------------------------------------------------------------------------------------


def test_late_fusion_weights_renormalised_over_available():
    fusion = _build("late_fusion", hidden=0).eval()
    with torch.no_grad():
        fusion.weight_logits.copy_(torch.tensor([math.log(3.0), 0.0]))  # softmax: 0.75 / 0.25
    w = availability_weights(fusion.weight_logits, IMAGE_AVAILABLE, TABULAR_AVAILABLE)
    expected_w = torch.tensor([[0.75, 0.25], [0.0, 1.0], [1.0, 0.0], [0.75, 0.25], [0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(w, expected_w)
    inputs = _inputs()
    _, ip, _, tp = inputs
    with torch.no_grad():
        logits = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits
        img, tab = fusion.image_head(ip), fusion.tabular_head(tp)
    expected = expected_w[:, :1] * img + expected_w[:, 1:] * tab
    torch.testing.assert_close(logits, expected)
    assert torch.equal(logits[1], tab[1]) and torch.equal(logits[2], img[2])  # sole modality: weight 1
    out = fusion(*inputs)
    assert out.diagnostics["weight_image"].item() == pytest.approx(0.75)


def test_gmu_gate_forced_to_available_modality():
    fusion = _build("gmu").eval()
    inputs = _inputs()
    _, ip, _, tp = inputs
    with torch.no_grad():
        z = fusion.gate_values(ip, tp, IMAGE_AVAILABLE, TABULAR_AVAILABLE)
        only_image = IMAGE_AVAILABLE & ~TABULAR_AVAILABLE
        only_tabular = TABULAR_AVAILABLE & ~IMAGE_AVAILABLE
        both = IMAGE_AVAILABLE & TABULAR_AVAILABLE
        assert (z[only_image] == 1).all() and (z[only_tabular] == 0).all()
        assert ((z[both] > 0) & (z[both] < 1)).all()
        logits = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits
        h_img, h_tab = torch.tanh(fusion.image_proj(ip)), torch.tanh(fusion.tabular_proj(tp))
        torch.testing.assert_close(logits[only_image], fusion.head(h_img[only_image]))
        torch.testing.assert_close(logits[only_tabular], fusion.head(h_tab[only_tabular]))
        expected_both = fusion.head(z[both] * h_img[both] + (1 - z[both]) * h_tab[both])
        torch.testing.assert_close(logits[both], expected_both)
        out = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE)
        assert out.diagnostics["gate_image"].item() == pytest.approx(z[both].mean().item(), abs=1e-6)


def test_concat_missing_embedding_used_exactly_where_missing():
    fusion = _build("concat_missing_embedding").eval()
    with torch.no_grad():
        fusion.missing_image.normal_()
        fusion.missing_tabular.normal_()
    inputs = _inputs()
    _, ip, _, tp = inputs
    image = torch.where(IMAGE_AVAILABLE[:, None], ip, fusion.missing_image)
    tabular = torch.where(TABULAR_AVAILABLE[:, None], tp, fusion.missing_tabular)
    with torch.no_grad():
        logits = fusion(*inputs, IMAGE_AVAILABLE, TABULAR_AVAILABLE).logits
        torch.testing.assert_close(logits, fusion.head(torch.cat([image, tabular], dim=1)))
        # Where available the embedding plays no part: all-available equals plain concat of the inputs.
        torch.testing.assert_close(fusion(*inputs).logits, fusion.head(torch.cat([ip, tp], dim=1)))

    # Gradients: zero (not None) when nothing is missing, non-zero only for the missing modality.
    fusion.zero_grad(set_to_none=True)
    fusion(*inputs).logits.sum().backward()
    assert torch.equal(fusion.missing_image.grad, torch.zeros(DIMS.image_pooled))
    assert torch.equal(fusion.missing_tabular.grad, torch.zeros(DIMS.tabular_pooled))
    fusion.zero_grad(set_to_none=True)
    image_missing_for_1 = torch.tensor([True, False, True, True, True, True])
    fusion(*inputs, image_missing_for_1, torch.ones(BATCH, dtype=torch.bool)).logits.sum().backward()
    assert fusion.missing_image.grad.abs().sum() > 0
    assert torch.equal(fusion.missing_tabular.grad, torch.zeros(DIMS.tabular_pooled))


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("late_fusion", {"hidden": -1}, "hidden"),
        ("late_fusion", {"dropout": -0.1}, "dropout"),
        ("gmu", {"d_hidden": 0}, "d_hidden"),
        ("gmu", {"dropout": 1.0}, "dropout"),
    ],
)
def test_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        registry("fusion").get(name)(dims=DIMS, n_classes=1, **kwargs)
