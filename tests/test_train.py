"""Losses, the imbalance sampler, early stopping, protocols and the search driver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.api import FusionOutput
from bench.errors import ConfigError
from bench.pipeline import confidence_ratio
from bench.pretrain import itc_loss
from bench.protocols import PreparedTabular, apply_protocol
from bench.search.optuna_search import search_hyperparameters
from bench.train import FitConfig, LossConfig, epoch_indices, fit, task_loss


def test_weighted_ce_is_eq_12_with_class_weights():
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    y = torch.tensor([1, 0, 1])
    p = torch.sigmoid(logits.reshape(-1))
    expected = -(2.0 * torch.log(p[0]) + 0.1 * torch.log(1 - p[1]) + 2.0 * torch.log(p[2])) / 3
    got = task_loss(logits, y, "binary", LossConfig(name="weighted_ce", class_weights=(0.1, 2.0)))
    torch.testing.assert_close(got, expected)


def test_focal_loss_down_weights_easy_examples():
    y = torch.tensor([1])
    cfg = LossConfig(name="focal", class_weights=(1.0, 1.0))
    easy, hard = task_loss(torch.tensor([[5.0]]), y, "binary", cfg), task_loss(torch.tensor([[-5.0]]), y, "binary", cfg)
    assert easy < 1e-3 * hard
    assert task_loss(torch.tensor([[0.0]]), y, "binary", cfg) == pytest.approx(0.25 * np.log(2), rel=1e-5)


def test_multiclass_needs_plain_ce():
    with pytest.raises(ConfigError):
        task_loss(torch.zeros(2, 3), torch.tensor([0, 1]), "multiclass", LossConfig(name="weighted_ce"))
    assert task_loss(torch.zeros(2, 3), torch.tensor([0, 1]), "multiclass", LossConfig()) == pytest.approx(np.log(3))


def test_sampler_halves_negatives_and_repeats_positives_five_times():
    y = np.array([0] * 100 + [1] * 10)
    idx = epoch_indices(np.arange(110), y, LossConfig(sampler=(0.5, 5.0)), np.random.default_rng(0))
    assert (y[idx] == 0).sum() == 50 and len(set(idx[y[idx] == 0])) == 50
    assert (y[idx] == 1).sum() == 50 and np.bincount(idx[y[idx] == 1]).max() == 5


def test_the_logit_offset_is_what_class_weights_and_the_sampler_add_to_the_learned_logit():
    """Fit the weighted loss on the sampler's stream; the intercept moves by ln(w1 r1 / (w0 k0))."""
    loss = LossConfig(name="weighted_ce", class_weights=(0.1, 2.0), sampler=(0.5, 5.0))
    assert loss.logit_offset() == pytest.approx(np.log(200))
    assert LossConfig(name="ce").logit_offset() == 0.0
    assert LossConfig(name="ce", sampler=(0.5, 5.0)).logit_offset() == pytest.approx(np.log(10))
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.normal(size=n)
    true_logit = -3.0 + 1.5 * x  # a 7% prevalence, as imbalanced as OL3I's label
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(np.int64)
    idx = epoch_indices(np.arange(n), y, loss, rng)  # one epoch of the sampler: half the negatives, positives x5
    xt, yt = torch.tensor(x[idx], dtype=torch.float64), torch.tensor(y[idx])
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = task_loss(w[0] + w[1] * xt, yt, "binary", loss)
        value.backward()
        return value

    opt.step(closure)
    intercept, slope = w.detach().numpy()
    assert slope == pytest.approx(1.5, abs=0.05)  # the slope is untouched
    assert intercept - loss.logit_offset() == pytest.approx(-3.0, abs=0.05)  # the corrected intercept is the truth


def test_fit_restores_best_validation_weights_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(400, 5)), dtype=torch.float32)
    y = (x[:, 0] + 0.5 * torch.as_tensor(rng.normal(size=400), dtype=torch.float32) > 0).long().numpy()
    tr, va = np.arange(300), np.arange(300, 400)

    def run():
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 1)
        res = fit(model, lambda m, i: FusionOutput(m(x[i])), y, tr, va,
                  FitConfig(lr=0.05, max_epochs=30, patience=3, batch_size=64, seed=1), task="binary", loss=LossConfig())
        return model, res

    (m1, r1), (m2, r2) = run(), run()
    assert r1.best_val > 0.8 and r1.best_val == max(h["val"] for h in r1.history)
    assert r1.epochs_run <= 30 and r1.history == r2.history
    assert torch.equal(m1.weight, m2.weight)


def test_itc_loss_prefers_matching_pairs():
    z = F.normalize(torch.randn(8, 16), dim=-1)
    assert itc_loss(z, z, 0.1) < itc_loss(z, z.roll(1, 0), 0.1)


def test_confidence_ratio_is_guarded():
    assert confidence_ratio(0.7, 0.7) == 1.0
    assert confidence_ratio(0.0, 0.5) == 0.05  # a zero-accuracy probe cannot zero out a modality
    assert confidence_ratio(0.75, 0.0) == 20.0


def _tab():
    x_num = np.array([[1.0, 5.0], [3.0, 7.0]], np.float32)
    x_cat = np.array([[0], [1]])
    return PreparedTabular(x_num, x_cat, ["age_at_scan", "bmi"], ["gender"], np.array([2.0, 6.0], np.float32),
                           np.array([1]))


def test_incomplete_protocol_masks_by_importance_or_name():
    out = apply_protocol({"name": "incomplete-tabular", "mask": {"by": "importance", "top_k": 1}}, _tab(),
                         ["age_at_scan", "bmi", "gender"])
    assert out.masked_features == ["age_at_scan"]
    assert (out.x_num[:, 0] == 2.0).all() and (out.x_num[:, 1] == [5.0, 7.0]).all()
    out = apply_protocol({"name": "incomplete-tabular", "mask": {"by": "names", "features": ["gender"]}}, _tab(), None)
    assert (out.x_cat[:, 0] == 1).all()
    with pytest.raises(ConfigError, match="not a column"):
        apply_protocol({"name": "incomplete-tabular", "mask": {"by": "names", "features": ["height"]}}, _tab(), None)


def test_search_enumerates_small_grids_and_returns_the_best():
    class Fusion:
        search_space = {"weight_decay": {"type": "categorical", "choices": [0.1, 0.0]}}

    seen = []

    def objective(hp, seed, on_epoch=None):
        seen.append(hp)
        return 1.0 - abs(np.log10(hp["lr"]) + 3) - hp["weight_decay"]

    best, info = search_hyperparameters(objective, fusion_cls=Fusion, strategy="frozen",
                                        budget={"n_configs": 6, "lr": [1e-2, 1e-3, 1e-4],
                                                "weight_decay": [0.1, 0.0]}, seed=0)
    assert best == {"lr": 1e-3, "weight_decay": 0.0} and info["backend"] == "optuna" and info["sampler"] == "grid" and len(seen) == 6
    best, info = search_hyperparameters(objective, fusion_cls=Fusion, strategy="trainable",
                                        budget={"trainable_n_trials": 1, "trainable_lr": [1e-4]}, seed=0)
    assert best == {"lr": 1e-4} and info["trials"] == 0
