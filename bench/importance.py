"""Tabular feature importance by integrated gradients (AMF-MedIT 4.2.1 and 4.2.4).

A supervised tabular model (a registered tabular encoder + linear head) is trained on the training
split; captum's IntegratedGradients attributes its positive-class logit to each input feature with
the training mean as baseline; absolute attributions are averaged over training samples and
normalised to shares of the total. Categorical features enter this model as their numeric codes
(z-scored) so that every column, binary ones included, gets an attribution.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn

from bench.registry import get
from bench.train import FitConfig, LossConfig, fit


class _Supervised(nn.Module):
    def __init__(self, encoder: nn.Module, n_out: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.d_out, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x, None).pooled)


def ig_importance(
    *,
    x_num: np.ndarray,
    x_cat: np.ndarray,
    names: list[str],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    task: str,
    n_classes: int,
    model_name: str,
    model_kwargs: dict,
    loss: LossConfig,
    cfg: dict,
    seed: int,
) -> dict:
    """Return {"ranking": [names by importance], "scores": {name: share}, "model": ..., "val": metric}."""
    cat = x_cat.astype(np.float32)
    if cat.shape[1]:
        mu, sd = cat[train_idx].mean(0), cat[train_idx].std(0)
        cat = (cat - mu) / np.where(sd > 0, sd, 1)
    x = torch.as_tensor(np.concatenate([x_num, cat], axis=1), dtype=torch.float32)
    torch.manual_seed(seed)
    encoder = get("tabular_encoder", model_name)(n_num=x.shape[1], cat_cardinalities=[], **model_kwargs)
    model = _Supervised(encoder, 1 if task == "binary" else n_classes)

    def forward(m, idx):
        from bench.api import FusionOutput

        return FusionOutput(logits=m(x[idx]))

    result = fit(
        model,
        forward,
        y,
        train_idx,
        val_idx,
        FitConfig(lr=float(cfg.get("lr", 1e-3)), max_epochs=int(cfg["epochs"]), patience=int(cfg.get("patience", 5)),
                  batch_size=int(cfg.get("batch_size", 256)), seed=seed),
        task=task,
        loss=loss,
    )
    model.eval()
    rng = np.random.default_rng(seed)
    sample = train_idx
    if cfg.get("ig_samples") and len(sample) > int(cfg["ig_samples"]):
        sample = np.sort(rng.choice(train_idx, size=int(cfg["ig_samples"]), replace=False))
    inputs = x[sample]
    baseline = x[train_idx].mean(0, keepdim=True).expand_as(inputs)
    ig = IntegratedGradients(model)
    target = 0 if task == "binary" else torch.as_tensor(y[sample])
    attributions = []
    for i in range(0, len(inputs), 128):
        attributions.append(
            ig.attribute(inputs[i : i + 128], baselines=baseline[i : i + 128],
                         target=target if task == "binary" else target[i : i + 128],
                         n_steps=int(cfg.get("ig_steps", 32))).abs().detach()
        )
    imp = torch.cat(attributions).mean(0).numpy()
    share = imp / imp.sum() if imp.sum() > 0 else imp
    order = np.argsort(-share)
    return {
        "ranking": [names[i] for i in order],
        "scores": {names[i]: float(share[i]) for i in order[:20]},
        "model": model_name,
        "val_metric": result.best_val,
        "samples": int(len(sample)),
    }
