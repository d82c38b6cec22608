"""Gated Multimodal Unit (registered as ``gmu``): Arevalo et al. 2017, "Gated Multimodal Units for
Information Fusion" (ICLR workshop track), applied to the pooled vectors; see also fusion survey 1.3.2.

    h_img = tanh(W_img x_img),   h_tab = tanh(W_tab x_tab),   z = sigmoid(W_z [x_img; x_tab])
    h = z * h_img + (1 - z) * h_tab   ->   dropout   ->   one linear layer -> logits

``z`` is a vector gate, one value per hidden unit, as in the paper.

Missing modality. NOTE[DIFF]: the GMU paper has no mechanism for a missing modality. Here the gate
is forced to the available modality: ``z = 1`` when only the image is there, ``z = 0`` when only
the tabular data is. The learned gate is used only when both are available. The missing
modality's inputs are also zeroed before any layer, so neither the gate nor ``h`` can depend on
them, and no gradient reaches them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from baselines.checks import WEIGHT_DECAY_SEARCH, check_dropout
from baselines.ops import Dropout
from bench.api import Fusion, FusionDims, FusionOutput, zero_missing
from bench.registry import register_fusion

__all__ = ["GMUFusion"]


@register_fusion(
    "gmu", summary="Gated Multimodal Unit on pooled vectors; gate forced to the available modality"
)
class GMUFusion(Fusion):
    """Gated Multimodal Unit (Arevalo et al. 2017) with the gate forced when a modality is missing."""

    needs_tokens = False
    handles_missing = True
    conformance_kwargs = {"d_hidden": 16}
    search_space: dict[str, dict] = {
        "d_hidden": {"type": "categorical", "choices": [64, 128, 256]},
        "dropout": {"type": "categorical", "choices": [0.0, 0.1, 0.3]},
        "weight_decay": WEIGHT_DECAY_SEARCH,
    }

    def __init__(self, *, dims: FusionDims, n_classes: int, d_hidden: int = 128, dropout: float = 0.1):
        super().__init__(dims=dims, n_classes=n_classes)
        if d_hidden < 1:
            raise ValueError(f"d_hidden must be >= 1, got {d_hidden!r}")
        check_dropout(dropout=dropout)
        self.d_hidden = int(d_hidden)
        self.image_proj = nn.Linear(dims.image_pooled, d_hidden)
        self.tabular_proj = nn.Linear(dims.tabular_pooled, d_hidden)
        self.gate = nn.Linear(dims.image_pooled + dims.tabular_pooled, d_hidden)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(d_hidden, n_classes)

    def gate_values(
        self, image_pooled: Tensor, tabular_pooled: Tensor, image_available: Tensor, tabular_available: Tensor
    ) -> Tensor:
        """``z [B, d_hidden]``: learned where both are available, 1 (image only) or 0 (tabular only)."""
        learned = torch.sigmoid(self.gate(torch.cat([image_pooled, tabular_pooled], dim=-1)))
        forced = image_available[:, None].to(learned.dtype).expand_as(learned)
        both = (image_available & tabular_available)[:, None]
        return torch.where(both, learned, forced)

    def fuse(
        self,
        image_tokens: Tensor,
        image_pooled: Tensor,
        tabular_tokens: Tensor,
        tabular_pooled: Tensor,
        image_available: Tensor,
        tabular_available: Tensor,
    ) -> FusionOutput:
        image_available, tabular_available = image_available.bool(), tabular_available.bool()
        image_pooled = zero_missing(image_pooled, image_available)
        tabular_pooled = zero_missing(tabular_pooled, tabular_available)
        h_img = torch.tanh(self.image_proj(image_pooled))
        h_tab = torch.tanh(self.tabular_proj(tabular_pooled))
        z = self.gate_values(image_pooled, tabular_pooled, image_available, tabular_available)
        h = z * h_img + (1.0 - z) * h_tab  # z is exactly 0 or 1 for one-modality samples
        logits = self.head(self.drop(h))
        both = (image_available & tabular_available).to(z.dtype)
        mean_gate = (z.detach().mean(dim=1) * both).sum() / both.sum().clamp_min(1.0)
        return FusionOutput(logits=logits, diagnostics={"gate_image": mean_gate})

    def extra_repr(self) -> str:
        return f"d_hidden={self.d_hidden}"
