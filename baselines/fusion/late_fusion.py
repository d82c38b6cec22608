"""Late (decision-level) fusion with learned modality weights (registered as ``late_fusion``).

Fusion survey (shared/seeds/fusion-survey.md), sections 1.1 and 1.4.1: a separate predictor
per modality, and their predictions combined by weights that sum to 1. Here:

* one head per modality on its pooled vector: a linear layer, or, with ``hidden > 0``, a
  Linear-ReLU-Dropout-Linear MLP;
* learned modality weights ``w = softmax(a)`` (``a`` starts at 0, so each weight starts at 1/2);
* for each sample the weights are renormalised over its available modalities:
  ``w_m(b) = exp(a_m) avail_m(b) / sum_k exp(a_k) avail_k(b)``, and
  ``logits(b) = sum_m w_m(b) * head_m(x_m(b))``.
  A missing modality's head gets weight 0, and its inputs are zeroed first, so neither its value
  nor its gradient depends on the missing content.

NOTE[DIFF]: the survey's TNF fits its weights on a validation set, and its predictions are
probabilities. Here the weights are trained end to end with the rest of the model, and they
combine logits, because the harness's loss takes logits. For a binary task this is a weighted
geometric mean of the odds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from baselines.checks import WEIGHT_DECAY_SEARCH, check_dropout
from baselines.ops import Dropout
from bench.api import Fusion, FusionDims, FusionOutput, zero_missing
from bench.registry import register_fusion

__all__ = ["LateFusion", "availability_weights"]


def availability_weights(weight_logits: Tensor, image_available: Tensor, tabular_available: Tensor) -> Tensor:
    """Softmax of ``weight_logits [2]`` renormalised over each sample's available modalities: ``[B, 2]``."""
    available = torch.stack([image_available, tabular_available], dim=1)
    scores = weight_logits.expand(available.shape[0], -1).masked_fill(~available, float("-inf"))
    return torch.softmax(scores, dim=1)  # at least one modality per sample is available: no NaN row


def _head(d_in: int, n_classes: int, hidden: int, dropout: float) -> nn.Module:
    if hidden == 0:
        return nn.Linear(d_in, n_classes)
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, n_classes)
    )


@register_fusion(
    "late_fusion", summary="one head per modality; logits mixed by learned weights over available ones"
)
class LateFusion(Fusion):
    """Unimodal heads on pooled vectors, combined by softmax weights renormalised per sample."""

    needs_tokens = False
    handles_missing = True
    conformance_kwargs = {"hidden": 8}
    search_space: dict[str, dict] = {
        "hidden": {"type": "categorical", "choices": [0, 64, 256]},
        "dropout": {"type": "categorical", "choices": [0.0, 0.1, 0.3]},
        "weight_decay": WEIGHT_DECAY_SEARCH,
    }

    def __init__(self, *, dims: FusionDims, n_classes: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__(dims=dims, n_classes=n_classes)
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0 = linear heads), got {hidden!r}")
        check_dropout(dropout=dropout)
        self.hidden = int(hidden)
        self.image_head = _head(dims.image_pooled, n_classes, self.hidden, dropout)
        self.tabular_head = _head(dims.tabular_pooled, n_classes, self.hidden, dropout)
        self.weight_logits = nn.Parameter(torch.zeros(2))  # 0: image, 1: tabular

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
        image_logits = self.image_head(zero_missing(image_pooled, image_available))
        tabular_logits = self.tabular_head(zero_missing(tabular_pooled, tabular_available))
        w = availability_weights(self.weight_logits, image_available, tabular_available)
        # torch.where: a missing modality's term is exactly 0, whatever its head outputs.
        logits = torch.where(image_available[:, None], w[:, :1] * image_logits, 0.0) + torch.where(
            tabular_available[:, None], w[:, 1:] * tabular_logits, 0.0
        )
        global_w = torch.softmax(self.weight_logits.detach(), dim=0)
        return FusionOutput(
            logits=logits, diagnostics={"weight_image": global_w[0], "weight_tabular": global_w[1]}
        )

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"
