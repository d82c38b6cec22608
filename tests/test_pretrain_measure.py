"""The held-out contrastive measure of pretraining against its chance levels (ln B for ITC, 1/B for top-1)."""

import math

import numpy as np
import torch
from torch import nn

from bench.api import EncoderOutput
from bench.pretrain import ITC_MARGIN, TOP1_FACTOR, heldout_contrastive, learned


class Constant(nn.Module):
    """An encoder that has learned nothing: the same embedding for every sample."""

    d_out = 4

    def forward(self, x, *_):
        z = torch.ones(x.shape[0], self.d_out)
        return EncoderOutput(z[:, None], z)


class Identity(nn.Module):
    """An encoder that sees the sample's identity code exactly (the image and table carry the same code)."""

    d_out = 8

    def forward(self, x, *_):
        z = x.reshape(x.shape[0], -1)[:, : self.d_out].float()
        return EncoderOutput(z[:, None], z)


def _data(n=64, d=8, seed=0):
    codes = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    images = codes[:, None, None, :]  # [n, 1, 1, d]: the code, as a one-row "image"
    return images, codes, np.zeros((n, 0), dtype=np.int64)


def test_an_encoder_that_learned_nothing_sits_at_chance():
    images, x_num, x_cat = _data()
    rows = np.arange(64)
    out = heldout_contrastive(Constant(), Constant(), nn.Identity(), nn.Identity(), images, x_num, x_cat, rows,
                              batch_size=16, temperature=0.1, device="cpu")
    assert out["batches"] == 4
    assert out["itc"] == pytest_approx(math.log(16))
    assert out["top1"] == pytest_approx(1 / 16)  # ties go to the first candidate: one hit per batch
    assert not learned({**out, "batch_size": 16})


def test_matched_encoders_beat_chance_by_the_margin():
    images, x_num, x_cat = _data()
    rows = np.arange(64)
    out = heldout_contrastive(Identity(), Identity(), nn.Identity(), nn.Identity(), images, x_num, x_cat, rows,
                              batch_size=16, temperature=0.1, device="cpu")
    assert out["top1"] == 1.0 and out["itc"] < math.log(16) - ITC_MARGIN
    assert learned({**out, "batch_size": 16})


def test_the_rule_is_either_criterion():
    b = 128
    assert learned({"itc": math.log(b) - ITC_MARGIN, "top1": 0.0, "batch_size": b})
    assert learned({"itc": math.log(b), "top1": TOP1_FACTOR / b, "batch_size": b})
    assert not learned({"itc": math.log(b) - ITC_MARGIN + 1e-3, "top1": (TOP1_FACTOR - 1) / b, "batch_size": b})
    assert not learned({"itc": None, "top1": None, "batch_size": b})


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5)


def test_a_shared_image_encoder_stays_fixed_while_another_tabular_encoder_aligns(tmp_path, monkeypatch):
    """pretrain.image_encoder: shared — the anchor pair trains jointly; the next pair trains only its table side."""
    from bench.pretrain import EncoderSpec, pretrain_pair, shared_image

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    n, d = 96, 6
    x_num = rng.normal(size=(n, d)).astype(np.float32)
    images = np.clip(0.5 + 0.2 * rng.normal(size=(n, 1, 16, 16)), 0, 1).astype(np.float32)
    x_cat = np.zeros((n, 0), dtype=np.int64)
    image = EncoderSpec("image_encoder", "timm", {"model_name": "resnet10t", "in_chans": 1, "image_size": 16})
    common = {"n_num": d, "cat_cardinalities": []}
    cfg = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "temperature": 0.1, "projection_dim": 8}
    kw = dict(images=images, x_num=x_num, x_cat=x_cat, train_idx=np.arange(64), image_spec=image, cfg=cfg, seed=0,
              data_checksum="t", heldout_idx=np.arange(64, 96))
    a_img, _, a_info = pretrain_pair(tabular_spec=EncoderSpec("tabular_encoder", "mlp", {**common, "d_block": 16}), **kw)
    share = shared_image(a_img, a_info, cfg)
    before = {k: v.clone() for k, v in a_img.state_dict().items()}
    tab_spec = EncoderSpec("tabular_encoder", "ft_transformer", {**common, "d_token": 8, "n_heads": 1})
    torch.manual_seed(0)
    untrained = tab_spec.build().state_dict()
    img, tab, info = pretrain_pair(tabular_spec=tab_spec, image_from=share, **kw)
    for k, v in img.state_dict().items():  # the image side is the anchor's, bit for bit
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, untrained[k]) for k, v in tab.state_dict().items())  # the table side learned
    assert info["image_key"] == a_info["cache_key"] != info["cache_key"]
    assert info["heldout"]["itc"] is not None and info["heldout"]["batches"] == 2
    again = pretrain_pair(tabular_spec=tab_spec, image_from=share, **kw)[2]  # cached, same key
    assert again["cached"] and again["cache_key"] == info["cache_key"]
    joint = pretrain_pair(tabular_spec=tab_spec, **kw)[2]  # the joint pair is another cache entry
    assert joint["cache_key"] != info["cache_key"] and joint["image_key"] == joint["cache_key"]


def test_held_out_reconstruction_is_one_for_a_perfect_decoder_and_zero_for_one_that_learned_nothing():
    from bench.pretrain import TabularDecoder, heldout_reconstruction

    _, x_num, _ = _data(n=64, d=8)
    x_cat = np.random.default_rng(1).integers(0, 3, size=(64, 1))
    train, rows = np.arange(32), np.arange(32, 64)
    perfect = TabularDecoder(8, 8, [3])
    with torch.no_grad():
        perfect.num.weight.copy_(torch.eye(8))
        perfect.num.bias.zero_()
    out = heldout_reconstruction(perfect, Identity(), x_num, x_cat, train, rows, "cpu")
    assert out["numeric_r2"] == pytest_approx(1.0)
    assert out["rows"] == 32 and 0.0 <= out["categorical_accuracy"] <= 1.0
    nothing = TabularDecoder(4, 8, [3])
    with torch.no_grad():
        nothing.num.weight.zero_()
        nothing.num.bias.copy_(torch.as_tensor(x_num[train].mean(0)))
    assert abs(heldout_reconstruction(nothing, Constant(), x_num, x_cat, train, rows, "cpu")["numeric_r2"]) < 0.2


def test_reconstruction_and_supervised_terms_train_and_report_held_out_measures(tmp_path, monkeypatch):
    """pretrain.reconstruct / pretrain.supervised: their held-out measures land in info; they change the cache key."""
    import pytest

    from bench.pretrain import EncoderSpec, pretrain_cache_path, pretrain_pair

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    n, d = 96, 6
    x_num = rng.normal(size=(n, d)).astype(np.float32)
    x_cat = rng.integers(0, 2, size=(n, 1)).astype(np.int64)
    y = (x_num[:, 0] + 0.5 * rng.normal(size=n) > 0.8).astype(np.int64)
    images = np.clip(0.5 + 0.2 * rng.normal(size=(n, 1, 16, 16)), 0, 1).astype(np.float32)
    image = EncoderSpec("image_encoder", "timm", {"model_name": "resnet10t", "in_chans": 1, "image_size": 16})
    tab = EncoderSpec("tabular_encoder", "mlp", {"n_num": d, "cat_cardinalities": [2], "d_block": 16})
    base = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "temperature": 0.1, "projection_dim": 8}
    cfg = {**base, "reconstruct": {"weight": 1.0}, "supervised": {"weight": 0.5, "heads": ["image", "tabular", "joint"]}}
    kw = dict(images=images, x_num=x_num, x_cat=x_cat, train_idx=np.arange(64), image_spec=image, tabular_spec=tab,
              seed=0, data_checksum="t", heldout_idx=np.arange(64, 96))
    with pytest.raises(ValueError, match="labels"):
        pretrain_pair(cfg=cfg, **kw)
    _, _, info = pretrain_pair(cfg=cfg, labels=y, n_classes=2, **kw)
    rec, sup = info["reconstruction"], info["supervised"]
    assert rec["weight"] == 1.0 and rec["split"] == "validation" and rec["rows"] == 32
    assert np.isfinite(rec["numeric_r2"]) and 0.0 <= rec["categorical_accuracy"] <= 1.0
    assert sup["heads"] == ["image", "tabular", "joint"] and sup["chance"] == 0.5
    assert all(0.0 <= sup[k] <= 1.0 for k in sup["heads"])
    assert info["heldout"]["itc"] is not None
    plain = pretrain_cache_path("t", image, tab, base, 0, heldout=True)
    assert plain.stem != info["cache_key"]  # another objective, another cache entry
