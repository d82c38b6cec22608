"""Frozen features and the models built on them: encoding a pair's images and tables once (cached by
content key), the fusion a method trains, and the frozen unimodal probes behind Rconf (AMF-MedIT eq. 3,
appendix A.4)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bench.api import FusionDims, FusionOutput
from bench.errors import ConfigError
from bench.fast_paths import image_batch
from bench.imputation import ImputedFusion, parse_variant
from bench.pretrain import cache_root
from bench.registry import get
from bench.train import EVAL_BATCH, FitConfig, LossConfig, fit

if TYPE_CHECKING:
    from bench.pipeline import Prepared


@dataclass
class Features:
    image_tokens: torch.Tensor
    image_pooled: torch.Tensor
    tab_pooled: torch.Tensor
    tab_tokens: torch.Tensor | None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for but CUDA is not available; use --device cpu")
    return torch.device(device)


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def encode_images(encoder: nn.Module, images: np.ndarray, batch_size: int = EVAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    encoder.eval()
    dev = _device_of(encoder)
    toks, pooled = [], []
    for i in range(0, len(images), batch_size):
        out = encoder(image_batch(images[i : i + batch_size], dev))
        toks.append(out.tokens.clone())
        pooled.append(out.pooled.clone())
    return torch.cat(toks), torch.cat(pooled)


@torch.inference_mode()
def encode_tabular(encoder: nn.Module, x_num: np.ndarray, x_cat: np.ndarray, keep_tokens: bool, batch_size: int = EVAL_BATCH):
    encoder.eval()
    dev = _device_of(encoder)
    toks, pooled = [], []
    for i in range(0, len(x_num), batch_size):
        xc = torch.as_tensor(x_cat[i : i + batch_size]).to(dev) if x_cat.shape[1] else None
        out = encoder(torch.as_tensor(x_num[i : i + batch_size]).to(dev), xc)
        pooled.append(out.pooled.clone())
        if keep_tokens:
            toks.append(out.tokens.clone())
    return (torch.cat(toks) if keep_tokens else None), torch.cat(pooled)


def features_cache_path(key: dict) -> Path:
    """Where the frozen features named by ``key`` (encoder checkpoint, data, modality, protocol) are cached."""
    digest = hashlib.sha256(json.dumps({**key, "v": 1}, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "features" / f"{digest}.pt"


def store_features(path: Path, out: tuple) -> None:
    """Write features to their cache path atomically (several suites, or Ray's results, may share one cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    torch.save(tuple(None if t is None else t.cpu() for t in out), tmp)
    os.replace(tmp, path)


def cached_features(key: dict, device: torch.device, compute, *args) -> tuple:
    """``compute(*args)``'s tensors, stored under ``$BENCH_CACHE/features/<content key>.pt`` the first time."""
    path = features_cache_path(key)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return tuple(None if t is None else t.to(device) for t in saved)
    out = compute(*args)
    store_features(path, out)
    return out


# --------------------------------------------------------------------------------------- models
def fusion_dims(img_enc: nn.Module, tab_enc: nn.Module, fusion_cls) -> FusionDims:
    all_tab = bool(getattr(fusion_cls, "needs_tabular_tokens", False))
    return FusionDims(
        image_pooled=img_enc.d_out, image_token=img_enc.d_token, tabular_pooled=tab_enc.d_out,
        tabular_token=tab_enc.d_token if all_tab else tab_enc.d_out,
        image_tokens=int(getattr(img_enc, "n_tokens", 1)),
        tabular_tokens=int(getattr(tab_enc, "n_tokens", 1)) if all_tab else 1,
    )


def build_fusion(name: str, dims: FusionDims, n_classes: int, kwargs: dict, rconf: float | None):
    """A registered fusion by name, or an imputation variant ``<name>+zero`` / ``<name>+mean``."""
    base, impute = parse_variant(name)
    fusion = get("fusion", base)(dims=dims, n_classes=n_classes, **kwargs)
    if impute:
        fusion = ImputedFusion(fusion, impute)
    if rconf is not None:
        fusion.set_confidence_ratio(float(rconf))
    return fusion


def confidence_ratio(metric_image: float, metric_tabular: float, *, floor: float = 1e-3, bounds=(0.05, 20.0)) -> float:
    """Rconf = Confidence(image) / Confidence(tabular) (eq. 3), each measured by a frozen probe.

    A probe can score 0 (e.g. accuracy on a tiny multi-class sample); both metrics are floored at
    ``floor`` and the ratio clipped to ``bounds`` so that AMF keeps at least a few dimensions per
    modality instead of failing.
    """
    ratio = max(metric_image, floor) / max(metric_tabular, floor)
    return float(min(max(ratio, bounds[0]), bounds[1]))


def unimodal_probe(features: torch.Tensor, prep: Prepared, loss: LossConfig, cfg: dict, seed: int, lr: float = 1e-3) -> float:
    """Frozen encoder + linear head; returns the validation metric (appendix A.4)."""
    data = prep.data
    return probe_metric(features, data.y, prep.train, prep.val, data.task, data.n_classes, loss, cfg, seed, lr=lr)


def probe_metric(features: torch.Tensor, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, task: str,
                 n_classes: int, loss: LossConfig, cfg: dict, seed: int, lr: float = 1e-3) -> float:
    """:func:`unimodal_probe` from the arrays it reads (what a Ray task is sent: no images, no table)."""
    torch.manual_seed(seed)
    probe = nn.Linear(features.shape[1], 1 if task == "binary" else n_classes).to(features.device)
    res = fit(probe, lambda m, idx: FusionOutput(m(features[idx])), y, train_idx, val_idx,
              FitConfig(lr=lr, max_epochs=int(cfg["max_epochs"]), patience=int(cfg["patience"]), batch_size=256, seed=seed),
              task=task, loss=loss)
    return res.best_val


def probe_encoded(encode, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, task: str, n_classes: int,
                  loss: LossConfig, cfg: dict, seed: int, *encode_args) -> float:
    """:func:`probe_metric` on the pooled features ``encode(*encode_args)`` computes (:func:`encode_images` or
    :func:`encode_tabular`): a randomly initialised encoder's probe, encoded where it is fitted."""
    return probe_metric(encode(*encode_args)[1], y, train_idx, val_idx, task, n_classes, loss, cfg, seed)
