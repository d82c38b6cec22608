"""Single-modality heads (registered as ``image_only`` and ``tabular_only``): the baselines of every table.

The same head as ``concat`` (one linear layer on pooled features, Hager et al. 2023) on one modality's
pooled vector, trained through the same search, seeds and strategies as every fusion, on the same
encoders. If no fusion beats both, fusion did not help. ``role = "baseline"`` keeps them out of the
fusion ranking and labels their rows in the leaderboard.
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.api import Fusion, FusionDims, FusionOutput
from bench.registry import register_fusion

__all__ = ["ImageOnly", "TabularOnly"]


class _SingleModality(Fusion):
    """One linear layer on one modality's pooled vector; the other modality is ignored."""

    role = "baseline"
    modality = "image"
    needs_tokens = False
    handles_missing = False
    search_space: dict[str, dict] = {}

    def __init__(self, *, dims: FusionDims, n_classes: int):
        super().__init__(dims=dims, n_classes=n_classes)
        width = dims.image_pooled if self.modality == "image" else dims.tabular_pooled
        self.head = nn.Linear(width, n_classes)

    def fuse(self, image_tokens: Tensor, image_pooled: Tensor, tabular_tokens: Tensor, tabular_pooled: Tensor,
             image_available: Tensor, tabular_available: Tensor) -> FusionOutput:
        return FusionOutput(logits=self.head(image_pooled if self.modality == "image" else tabular_pooled))


@register_fusion("image_only", summary="baseline: one linear layer on the pooled image vector (table ignored)")
class ImageOnly(_SingleModality):
    """Image-only head: logits from the pooled image features alone."""

    modality = "image"
    reads = ("image",)


@register_fusion("tabular_only", summary="baseline: one linear layer on the pooled tabular vector (image ignored)")
class TabularOnly(_SingleModality):
    """Tabular-only head: logits from the pooled tabular features alone."""

    modality = "tabular"
    reads = ("tabular",)
