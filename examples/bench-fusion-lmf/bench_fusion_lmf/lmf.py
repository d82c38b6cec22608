"""Low-rank Multimodal Fusion (LMF; Liu et al., "Efficient Low-rank Multimodal Fusion with
Modality-Specific Factors", ACL 2018), for two modalities: the pooled image and tabular vectors.

Tensor fusion (Zadeh et al. 2017) appends a constant 1 to each modality vector, ``z_m = [1, h_m]``,
and maps the outer product ``z_img (x) z_tab`` to ``d_fused`` with a weight tensor ``W``. LMF
factorises ``W`` into ``rank`` modality-specific factors ``W_m^(i)`` of shape ``[d_m + 1, d_fused]``::

    fused = sum_{i=1..rank} (z_img W_img^(i)) * (z_tab W_tab^(i))      (elementwise product)
    logits = head(dropout(fused))                                      (one linear layer)

which equals tensor fusion with ``W = sum_i W_img^(i) (x) W_tab^(i)`` at a cost linear in the widths.
The constant 1 keeps the unimodal terms: ``z_img W_img^(i)`` contains the row ``W_img^(i)[0]``, so
the product holds the tabular projection scaled by it (and vice versa) besides the bimodal term.

Missing modalities: a missing modality enters as ``[1, 0, ..., 0]`` (its content is *replaced* with
zeros, not multiplied by a mask, so NaN or any other content cannot leak), i.e. only through its
constant entry; the sample is then scored by the other modality's unimodal term alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.api import Fusion, FusionDims, FusionOutput

__all__ = ["LowRankFusion"]


class LowRankFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al. 2018): rank-r modality factors, elementwise product, linear head."""

    needs_tokens = False  # pooled vectors are enough
    needs_tabular_tokens = False
    handles_missing = True  # a missing modality contributes only its constant 1
    # The rank is LMF's main hyper-parameter. A suite tunes it when its budget lists it under
    # `search: {fusion_params: [rank]}`; otherwise the default (8) is used.
    search_space = {"rank": {"type": "categorical", "choices": [4, 8, 16]}}
    conformance_kwargs = {"rank": 4, "d_fused": 16}

    def __init__(
        self,
        *,
        dims: FusionDims,
        n_classes: int,
        rank: int = 8,
        d_fused: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__(dims=dims, n_classes=n_classes)
        for name, value in (("rank", rank), ("d_fused", d_fused)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LowRankFusion: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"LowRankFusion: dropout must be in [0, 1), got {dropout!r}")
        self.rank, self.d_fused = rank, d_fused
        # W_m^(i) stacked over the rank: [rank, d_m + 1, d_fused]; row 0 multiplies the constant 1.
        self.image_factor = nn.Parameter(torch.empty(rank, dims.image_pooled + 1, d_fused))
        self.tabular_factor = nn.Parameter(torch.empty(rank, dims.tabular_pooled + 1, d_fused))
        nn.init.xavier_normal_(self.image_factor)  # as the authors' implementation
        nn.init.xavier_normal_(self.tabular_factor)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_fused, n_classes)

    @staticmethod
    def _with_constant(x: Tensor, available: Tensor) -> Tensor:
        """``[1, x]`` for available samples, ``[1, 0, ..., 0]`` for missing ones."""
        x = torch.where(available[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        return torch.cat([torch.ones_like(x[:, :1]), x], dim=1)

    def fuse(
        self,
        image_tokens: Tensor,
        image_pooled: Tensor,
        tabular_tokens: Tensor,
        tabular_pooled: Tensor,
        image_available: Tensor,
        tabular_available: Tensor,
    ) -> FusionOutput:
        z_img = self._with_constant(image_pooled, image_available)  # [B, d_img + 1]
        z_tab = self._with_constant(tabular_pooled, tabular_available)  # [B, d_tab + 1]
        p_img = torch.einsum("bd,rdk->brk", z_img, self.image_factor)  # [B, rank, d_fused]
        p_tab = torch.einsum("bd,rdk->brk", z_tab, self.tabular_factor)
        fused = (p_img * p_tab).sum(dim=1)  # [B, d_fused]
        logits = self.head(self.dropout(fused))
        return FusionOutput(logits=logits, diagnostics={"fused_norm": fused.detach().norm(dim=1).mean()})

    def extra_repr(self) -> str:
        return f"rank={self.rank}, d_fused={self.d_fused}"
