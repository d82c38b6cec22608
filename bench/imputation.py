"""Imputation variants: let a fusion that cannot take a missing modality run under missingness.

The survey's imputation baselines (zero / mean imputation) are applied at the level the fusion sees:
the missing modality's encoder outputs (tokens and pooled vector) are replaced by zeros or by the
mean of that modality's *available* training features, and the wrapped fusion then receives
all-available masks. A suite turns them on with ``impute: [zero, mean]``; each fusion whose
``handles_missing`` is False then runs once per variant, labelled ``<fusion>+zero`` / ``<fusion>+mean``.

NOTE[DIFF]: the mean is a cumulative average over every available row seen in training mode (as
BatchNorm's ``momentum=None``), so with frozen features it is the mean of the training epochs' rows
(the class-balancing sampler's mix of the training split) rather than the plain training-split mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.api import Fusion, FusionDims, FusionOutput
from bench.errors import ConfigError

IMPUTATIONS = ("zero", "mean")


def variant_label(fusion: str, impute: str | None) -> str:
    return fusion if not impute else f"{fusion}+{impute}"


def parse_variant(label: str) -> tuple[str, str | None]:
    """``"concat+mean"`` -> ``("concat", "mean")``; a plain name -> ``(name, None)``."""
    base, sep, impute = label.rpartition("+")
    if sep and impute in IMPUTATIONS:
        return base, impute
    return label, None


class ImputedFusion(Fusion):
    """``inner`` fusion behind zero or mean imputation of a missing modality's features."""

    handles_missing = True

    def __init__(self, inner: Fusion, mode: str):
        if mode not in IMPUTATIONS:
            raise ConfigError(f"unknown imputation {mode!r}; choose from {list(IMPUTATIONS)}")
        if inner.handles_missing:
            raise ConfigError(f"{type(inner).__name__} handles missing modalities itself; it needs no imputation")
        super().__init__(dims=inner.dims, n_classes=inner.n_classes)
        self.inner = inner
        self.mode = mode
        self.needs_tokens = inner.needs_tokens
        self.needs_tabular_tokens = inner.needs_tabular_tokens
        d: FusionDims = inner.dims
        shapes = {"image_tokens": (d.image_tokens, d.image_token), "image_pooled": (d.image_pooled,),
                  "tabular_tokens": (d.tabular_tokens, d.tabular_token), "tabular_pooled": (d.tabular_pooled,)}
        for name, shape in shapes.items():
            self.register_buffer(f"mean_{name}", torch.zeros(shape))
        self.register_buffer("seen_image", torch.zeros((), dtype=torch.long))
        self.register_buffer("seen_tabular", torch.zeros((), dtype=torch.long))

    def set_confidence_ratio(self, rconf: float) -> None:
        self.inner.set_confidence_ratio(rconf)

    def _fill(self, name: str, x: Tensor, available: Tensor, seen_name: str) -> Tensor:
        mean = getattr(self, f"mean_{name}")
        if self.mode == "mean" and self.training and x.shape[1:] == mean.shape:
            rows = x.detach()[available]
            if len(rows):
                seen = getattr(self, seen_name)
                total = seen + len(rows)
                mean.mul_(seen / total).add_(rows.sum(0) / total)
        if bool(available.all()):
            return x
        if self.mode == "zero" or x.shape[1:] != mean.shape:
            fill = torch.zeros_like(x)
        else:
            fill = mean.to(x.dtype).expand_as(x)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return torch.where(available.view(shape), x, fill)

    def fuse(self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available, tabular_available) -> FusionOutput:
        image_tokens = self._fill("image_tokens", image_tokens, image_available, "seen_image")
        image_pooled = self._fill("image_pooled", image_pooled, image_available, "seen_image")
        tabular_tokens = self._fill("tabular_tokens", tabular_tokens, tabular_available, "seen_tabular")
        tabular_pooled = self._fill("tabular_pooled", tabular_pooled, tabular_available, "seen_tabular")
        if self.mode == "mean" and self.training:  # counts advance after both of a modality's tensors used them
            self.seen_image += int(image_available.sum())
            self.seen_tabular += int(tabular_available.sum())
        return self.inner(image_tokens, image_pooled, tabular_tokens, tabular_pooled)
