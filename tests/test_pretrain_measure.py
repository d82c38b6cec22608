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
