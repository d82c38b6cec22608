"""Concatenation fusion (registered as ``concat``).

Hager et al. 2023, as used by AMF-MedIT section 4.2.3: the pooled unimodal feature vectors are
concatenated and fed into one fully connected layer for classification. Nothing else.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.api import Fusion, FusionDims, FusionOutput
from bench.registry import register_fusion

__all__ = ["ConcatFusion"]


@register_fusion("concat", summary="pooled image and tabular vectors concatenated -> one linear layer")
class ConcatFusion(Fusion):
    """Concatenation of pooled features followed by a single linear layer (Hager et al. 2023)."""

    needs_tokens = False
    handles_missing = False
    search_space: dict[str, dict] = {}

    def __init__(self, *, dims: FusionDims, n_classes: int):
        super().__init__(dims=dims, n_classes=n_classes)
        self.head = nn.Linear(dims.image_pooled + dims.tabular_pooled, n_classes)

    def fuse(
        self,
        image_tokens: Tensor,
        image_pooled: Tensor,
        tabular_tokens: Tensor,
        tabular_pooled: Tensor,
        image_available: Tensor,
        tabular_available: Tensor,
    ) -> FusionOutput:
        return FusionOutput(logits=self.head(torch.cat([image_pooled, tabular_pooled], dim=-1)))
