"""The conformance kit on every registered fusion and image encoder, plus built-in-specific tests.

The kit (``bench.conformance``, also ``python -m bench check-plugin NAME``) runs on small dimensions
so it takes seconds on CPU; a third-party fusion registered through an entry point is checked the
same way, one test per plug-in x check.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from bench.api import Fusion, FusionDims
from bench.conformance import check_names, run_check
from bench.errors import ConfigError
from bench.registry import registry

SMALL = FusionDims(
    image_pooled=32, image_token=32, tabular_pooled=16, tabular_token=16, image_tokens=4, tabular_tokens=10
)
PAPER = FusionDims(
    image_pooled=2048,
    image_token=2048,
    tabular_pooled=64,
    tabular_token=64,
    image_tokens=256,
    tabular_tokens=1,
)
BATCH = 6
FUSIONS = registry("fusion").names()
IMAGE_ENCODERS = registry("image_encoder").names()


def _assert_conforms(kind: str, name: str, check: str) -> None:
    result = run_check(kind, name, check)
    if result.skipped:
        pytest.skip(result.message)
    assert result.passed, result.message


def _build(name: str, n_classes: int = 1, seed: int = 0, dims: FusionDims = SMALL, **kwargs) -> Fusion:
    torch.manual_seed(seed)
    cls = registry("fusion").get(name)
    return cls(dims=dims, n_classes=n_classes, **{**cls.conformance_kwargs, **kwargs})


def _inputs(seed: int = 123, dims: FusionDims = SMALL, batch: int = BATCH):
    g = torch.Generator().manual_seed(seed)
    image_tokens = torch.randn(batch, dims.image_tokens, dims.image_token, generator=g)
    tabular_tokens = torch.randn(batch, dims.tabular_tokens, dims.tabular_token, generator=g)
    image_pooled = torch.randn(batch, dims.image_pooled, generator=g)
    tabular_pooled = torch.randn(batch, dims.tabular_pooled, generator=g)
    return image_tokens, image_pooled, tabular_tokens, tabular_pooled


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# Conformance kit (bench/conformance.py): every registered fusion x every check, plug-ins included
# --------------------------------------------------------------------------------------------------


def test_builtins_registered():
    assert {"amf", "concat", "cross_attention"} <= set(FUSIONS)


@pytest.mark.parametrize(("name", "check"), [(n, c) for n in FUSIONS for c in check_names("fusion")])
def test_conformance(name, check):
    _assert_conforms("fusion", name, check)


@pytest.mark.parametrize(("name", "check"), [(n, c) for n in IMAGE_ENCODERS for c in check_names("image_encoder")])
def test_image_encoder_conformance(name, check):
    _assert_conforms("image_encoder", name, check)


# --------------------------------------------------------------------------------------------------
# Built-in specifics
# --------------------------------------------------------------------------------------------------


def test_concat_is_one_linear_layer_on_pooled():
    fusion = _build("concat", n_classes=3)
    assert [type(m) for m in fusion.children()] == [nn.Linear]
    it, ip, tt, tp = _inputs()
    expected = fusion.head(torch.cat([ip, tp], dim=1))
    assert torch.allclose(fusion(it, ip, tt, tp).logits, expected)
    # Only pooled vectors matter.
    assert torch.equal(fusion(it * 0, ip, tt * 0, tp).logits, fusion(it, ip, tt, tp).logits)
    assert not fusion.needs_tokens and not fusion.handles_missing


def test_cross_attention_uses_tokens_and_paper_defaults():
    cls = registry("fusion").get("cross_attention")
    assert cls.needs_tokens and not cls.handles_missing
    assert cls.search_space["weight_decay"]["choices"] == [1e-1, 1e-2, 1e-3, 1e-4]
    fusion = _build("cross_attention", n_classes=1).eval()
    it, ip, tt, tp = _inputs()
    with torch.no_grad():
        base = fusion(it, ip, tt, tp).logits
        assert not torch.allclose(fusion(it + 1, ip, tt, tp).logits, base)  # image tokens matter
        assert not torch.allclose(fusion(it, ip, tt + 1, tp).logits, base)  # tabular tokens matter
        assert torch.equal(fusion(it, ip * 0, tt, tp * 0).logits, base)  # pooled vectors do not
    with pytest.raises(ValueError, match="image tokens"):
        fusion(it[:, :3], ip, tt, tp)


def test_cross_attention_pooled_tabular_input():
    fusion = _build("cross_attention", n_classes=2, tabular_input="pooled").eval()
    it, ip, tt, tp = _inputs()
    with torch.no_grad():
        base = fusion(it, ip, tt, tp).logits
        assert torch.equal(fusion(it, ip, tt * 0, tp).logits, base)
        assert not torch.allclose(fusion(it, ip, tt, tp + 1).logits, base)


def test_parameter_counts_at_paper_setting():
    # AMF-MedIT Table 3: AMF 8.53 M, cross-attention 9.49 M (ResNet-50 16x16x2048 map, 64-d tabular token).
    amf = _build("amf", dims=PAPER)
    assert _n_params(amf) == 8_532_033
    xattn = registry("fusion").get("cross_attention")(dims=PAPER, n_classes=1)
    n = _n_params(xattn)
    assert n == 9_627_649
    assert n - xattn.image_pos.numel() == 9_496_577  # without image position embeddings: ~9.49-9.50 M
    assert abs(n / 9.49e6 - 1) < 0.02


# --------------------------------------------------------------------------------------------------
# AMF
# --------------------------------------------------------------------------------------------------

from baselines.fusion.amf import AMFFusion, amf_lengths, amf_losses  # noqa: E402


@pytest.mark.parametrize(
    ("rconf", "l_img", "l_tab"),
    [(1.0, 1024, 1024), (0.95, 998, 1050), (0.97, 1009, 1039), (0.1, 187, 1861), (1.03, 1040, 1008)],
)
def test_amf_lengths_from_rconf(rconf, l_img, l_tab):
    assert amf_lengths(2048, rconf) == (l_img, l_tab)
    assert l_tab == math.floor(2048 / (1 + rconf)) and l_img + l_tab == 2048


def test_amf_masks_are_buffers_and_follow_rconf():
    fusion = AMFFusion(dims=SMALL, n_classes=1, d_out=10, rconf=1.5)  # L_tab = floor(10 / 2.5) = 4
    assert fusion.lengths == (6, 4)
    assert fusion.mask_img.tolist() == [1.0] * 6 + [0.0] * 4
    assert fusion.mask_tab.tolist() == [0.0] * 6 + [1.0] * 4
    names = {n for n, _ in fusion.named_parameters()}
    assert not {"mask_img", "mask_tab", "rconf"} & names
    assert {"mask_img", "mask_tab", "rconf"} <= set(fusion.state_dict())

    fusion.set_confidence_ratio(0.25)  # L_tab = floor(10 / 1.25) = 8
    assert fusion.lengths == (2, 8)
    assert fusion.mask_img.tolist() == [1.0] * 2 + [0.0] * 8
    out = fusion(*_inputs())
    assert out.diagnostics["L_img"].item() == 2 and out.diagnostics["L_tab"].item() == 8
    assert out.diagnostics["rconf"].item() == pytest.approx(0.25)

    # Masks travel with the state_dict.
    other = AMFFusion(dims=SMALL, n_classes=1, d_out=10)
    assert other.lengths == (5, 5)
    other.load_state_dict(fusion.state_dict())
    assert other.lengths == (2, 8)
    with torch.no_grad():
        assert torch.equal(other(*_inputs()).logits, fusion(*_inputs()).logits)


def test_amf_defaults_and_search_space():
    fusion = AMFFusion(dims=SMALL, n_classes=1)
    assert fusion.d_out == 32 and fusion.lengths == (16, 16)
    assert AMFFusion(dims=PAPER, n_classes=1).d_out == 2048
    assert fusion.lambda_leakage == 5.0 and fusion.lambda_density == 5.0
    assert AMFFusion.search_space["rconf"]["choices"] == [0.1, 0.95, 0.97, 1.0]
    assert not AMFFusion.needs_tokens and not AMFFusion.handles_missing


@pytest.mark.parametrize("rconf", [0.0, -1.0, float("nan"), 100.0])
def test_amf_rejects_bad_rconf(rconf):
    with pytest.raises(ValueError):
        AMFFusion(dims=SMALL, n_classes=1, d_out=8, rconf=rconf)
    fusion = AMFFusion(dims=SMALL, n_classes=1, d_out=8)
    with pytest.raises(ValueError):
        fusion.set_confidence_ratio(rconf)
    assert fusion.lengths == (4, 4)  # unchanged after a refused update


def test_amf_rejects_bad_density_norm():
    with pytest.raises(ValueError, match="density_norm"):
        AMFFusion(dims=SMALL, n_classes=1, density_norm="nope")


# Hand-computed example: D_out = 5, rconf = 1.5 -> L_tab = floor(5 / 2.5) = 2, L_img = 3.
#   sample 1: z_img = [1, -2, 3 | 4, -6], z_tab = [2, 0, -1 | 3, 5]
#     retained img 6/3 = 2, retained tab 8/2 = 4 (official: 8/3), discarded img 10/2 = 5, discarded tab 3/3 = 1
#   sample 2: z_img = [0, 0, 3 | 0, 2],   z_tab = [1, 1, 1 | 1, 1]
#     retained img 3/3 = 1, retained tab 2/2 = 1 (official: 2/3), discarded img 2/2 = 1, discarded tab 3/3 = 1
#   leakage = (5 + 1 + 1 + 1) / (2 * 2) = 2
#   density paper    = (|2 - 4| + |1 - 1|) / 2 = 1
#   density official = (|2 - 8/3| + |1 - 2/3|) / 2 = (2/3 + 1/3) / 2 = 0.5
Z_IMG = torch.tensor([[1.0, -2.0, 3.0, 4.0, -6.0], [0.0, 0.0, 3.0, 0.0, 2.0]])
Z_TAB = torch.tensor([[2.0, 0.0, -1.0, 3.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
M_IMG = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
M_TAB = 1.0 - M_IMG


@pytest.mark.parametrize(
    ("density_norm", "density", "density_tab"), [("paper", 1.0, 2.5), ("official", 0.5, (8 / 3 + 2 / 3) / 2)]
)
def test_amf_losses_hand_computed(density_norm, density, density_tab):
    losses = amf_losses(Z_IMG, Z_TAB, M_IMG, M_TAB, density_norm)
    assert losses["leakage"].item() == pytest.approx(2.0)
    assert losses["density"].item() == pytest.approx(density)
    assert losses["density_img"].item() == pytest.approx(1.5)
    assert losses["density_tab"].item() == pytest.approx(density_tab)
    assert losses["leakage_img"].item() == pytest.approx(3.0)
    assert losses["leakage_tab"].item() == pytest.approx(1.0)


@pytest.mark.parametrize(("density_norm", "density"), [("paper", 1.0), ("official", 0.5)])
def test_amf_module_hand_computed(density_norm, density):
    dims = FusionDims(image_pooled=5, image_token=5, tabular_pooled=5, tabular_token=5)
    torch.manual_seed(0)
    fusion = AMFFusion(dims=dims, n_classes=2, d_out=5, rconf=1.5, density_norm=density_norm)
    assert fusion.lengths == (3, 2)
    fusion.image_projector = nn.Identity()  # so z' = z and the example above applies
    fusion.tabular_projector = nn.Identity()
    out = fusion(torch.zeros(2, 1, 5), Z_IMG, torch.zeros(2, 1, 5), Z_TAB)
    fused = torch.tensor([[1.0, -2.0, 3.0, 3.0, 5.0], [0.0, 0.0, 3.0, 1.0, 1.0]])  # eq. 8
    assert torch.allclose(out.logits, fusion.head(fused))
    assert out.aux_losses["leakage"].item() == pytest.approx(5 * 2.0)
    assert out.aux_losses["density"].item() == pytest.approx(5 * density)
    assert out.diagnostics["leakage"].item() == pytest.approx(2.0)
    assert out.diagnostics["density"].item() == pytest.approx(density)


def test_amf_norms_agree_when_lengths_equal():
    z_img, z_tab = torch.randn(4, 8), torch.randn(4, 8)
    m_img = torch.tensor([1.0] * 4 + [0.0] * 4)
    paper = amf_losses(z_img, z_tab, m_img, 1 - m_img, "paper")
    official = amf_losses(z_img, z_tab, m_img, 1 - m_img, "official")
    for key in paper:
        assert torch.equal(paper[key], official[key]), key


def test_amf_fused_is_concatenation_of_retained_parts():
    fusion = AMFFusion(dims=SMALL, n_classes=1, d_out=12, rconf=0.5)  # L_tab = 8, L_img = 4
    _, ip, _, tp = _inputs()
    z_img, z_tab = fusion.image_projector(ip), fusion.tabular_projector(tp)
    fused = torch.cat([z_img[:, :4], z_tab[:, 4:]], dim=1)
    assert torch.allclose(fusion(*_inputs()).logits, fusion.head(fused))


def test_amf_losses_train_the_projectors():
    torch.manual_seed(0)
    fusion = AMFFusion(dims=SMALL, n_classes=1, d_out=16, rconf=0.6)
    opt = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    inputs = _inputs(batch=32)
    first = None
    for _ in range(60):
        out = fusion(*inputs)
        loss = sum(out.aux_losses.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(sum(fusion(*inputs).aux_losses.values())) < 0.5 * first


# --------------------------------------------------------------------------------------------------
# timm image encoder
# --------------------------------------------------------------------------------------------------

from baselines.image import timm_encoder  # noqa: E402
from baselines.image.timm_encoder import TimmImageEncoder  # noqa: E402


def test_timm_registered():
    assert registry("image_encoder").get("timm") is TimmImageEncoder


def test_timm_resnet_like():
    torch.manual_seed(0)
    enc = TimmImageEncoder(model_name="resnet10t", in_chans=1, image_size=64)
    assert enc.training  # the construction dry run leaves the mode alone
    assert (enc.n_tokens, enc.d_token, enc.d_out) == (4, 512, 512)  # 64 / 32 = 2 -> 2x2 map
    enc.eval()
    images = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        out = enc(images)
        fmap = enc.model.forward_features(images)
    assert out.tokens.shape == (3, 4, 512) and out.pooled.shape == (3, 512)
    assert torch.allclose(out.pooled, out.tokens.mean(dim=1))
    assert torch.allclose(out.pooled, fmap.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(out.tokens[:, 1], fmap[:, :, 0, 1])  # row-major flattening of the map


def test_timm_vit_like():
    torch.manual_seed(0)
    enc = TimmImageEncoder(model_name="vit_tiny_patch16_224", in_chans=1, image_size=32).eval()
    assert (enc.n_tokens, enc.d_token, enc.d_out) == (4, 192, 192)  # 32 / 16 = 2 -> 4 patch tokens
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = enc(images)
        feats = enc.model.forward_features(images)
    assert out.tokens.shape == (2, 4, 192) and out.pooled.shape == (2, 192)
    assert torch.equal(out.tokens, feats[:, 1:])  # class token dropped
    assert torch.allclose(out.pooled, feats[:, 0])  # the model's pooling: class token


def test_timm_feeds_fusions():
    torch.manual_seed(0)
    enc = TimmImageEncoder(model_name="resnet10t", in_chans=1, image_size=64)
    img = enc(torch.randn(2, 1, 64, 64))
    dims = FusionDims(
        image_pooled=enc.d_out,
        image_token=enc.d_token,
        tabular_pooled=16,
        tabular_token=16,
        image_tokens=enc.n_tokens,
        tabular_tokens=3,
    )
    for name in ("amf", "concat", "cross_attention"):
        fusion = _build(name, n_classes=2, dims=dims)
        out = fusion(img.tokens, img.pooled, torch.randn(2, 3, 16), torch.randn(2, 16))
        assert out.logits.shape == (2, 2)


def test_timm_unknown_name():
    with pytest.raises(ConfigError) as info:
        TimmImageEncoder(model_name="resnet5O")
    message = str(info.value)
    assert "\n" not in message and "'resnet50'" in message


def test_timm_pretrained_offline_fails_fast(monkeypatch):
    monkeypatch.setattr(timm_encoder, "_weights_cached", lambda name: False)
    monkeypatch.setattr(timm_encoder, "_reachable", lambda host, timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="pretrained weights") as info:
        TimmImageEncoder(model_name="resnet10t", pretrained=True)
    assert "\n" not in str(info.value) and "pretrained=False" in str(info.value)
    assert time.monotonic() - start < 5


def test_timm_weights_cache_probe_is_offline():
    assert isinstance(timm_encoder._weights_cached("resnet10t"), bool)
