"""Adaptive Modulation and Fusion (registered as ``amf``): AMF-MedIT section 3.3, eqs. 1-10 and 14.

Pipeline (per sample, ``z_img`` / ``z_tab`` = the pooled unimodal features):

1. Projector heads (as in the official code: Linear-ReLU-Linear, no BatchNorm)
   ``z'_img = Psi_img(z_img)``: ``D_img -> D_img -> D_out``;
   ``z'_tab = Psi_tab(z_tab)``: ``D_tab -> D_tab -> D_out``.
2. Fixed binary masks from the modality confidence ratio ``R_conf`` (eqs. 5-7):
   ``L_tab = floor(D_out / (1 + R_conf))``, ``L_img = D_out - L_tab``; ``m_img`` = first ``L_img``
   ones, ``m_tab`` = last ``L_tab`` ones. They are buffers (in ``state_dict``, never trained).
3. Fused feature (eq. 8) ``z_fused = m_img * z'_img + m_tab * z'_tab`` (disjoint supports, so this
   is the concatenation of the retained parts) -> one FC layer -> logits.
4. Auxiliary losses, weighted by ``lambda_leakage = lambda_density = 5`` (appendix A.3, eq. 14),
   with density = L1 content / length of the segment it is taken over (eq. 2):
   ``leakage = 1/(2N) sum_j (||m_tab*z'_img||_1 / L_tab + ||m_img*z'_tab||_1 / L_img)``   (eq. 9)
   ``density = 1/N sum_j | ||m_img*z'_img||_1 / L_img - ||m_tab*z'_tab||_1 / L_tab |``  (eq. 10)

Eqs. 9-10 as printed divide by ``D_tab`` / ``D_img``; read with eq. 2 (density = content / length)
and eq. 4 these are the lengths of the masked segments, ``L_tab`` / ``L_img``, which is what the
default ``density_norm="paper"`` uses.

At the paper's setting (D_img 2048, D_tab 64, D_out 2048, binary head) the module has 8,532,033
parameters (AMF-MedIT Table 3: 8.53 M).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.api import Fusion, FusionDims, FusionOutput
from bench.registry import register_fusion

__all__ = ["AMFFusion", "amf_lengths", "amf_losses"]

DENSITY_NORMS = ("paper", "official")


def amf_lengths(d_out: int, rconf: float) -> tuple[int, int]:
    """``(L_img, L_tab)`` of eq. 6; both must be at least 1."""
    rconf = float(rconf)
    if not math.isfinite(rconf) or rconf <= 0:
        raise ValueError(f"the modality confidence ratio rconf must be a positive number, got {rconf!r}")
    l_tab = math.floor(d_out / (1.0 + rconf))
    l_img = d_out - l_tab
    if l_tab < 1 or l_img < 1:
        raise ValueError(
            f"rconf={rconf} with d_out={d_out} gives L_img={l_img}, L_tab={l_tab}; each modality needs at "
            "least one retained dimension: use a larger d_out or an rconf closer to 1"
        )
    return l_img, l_tab


def _masks(d_out: int, rconf: float) -> tuple[Tensor, Tensor]:
    l_img, _ = amf_lengths(d_out, rconf)
    m_img = torch.zeros(d_out)
    m_img[:l_img] = 1.0
    return m_img, 1.0 - m_img


def amf_losses(
    z_img: Tensor, z_tab: Tensor, m_img: Tensor, m_tab: Tensor, density_norm: str = "paper"
) -> dict[str, Tensor]:
    """Unweighted leakage (eq. 9) and density (eq. 10) losses plus the per-batch mean densities.

    ``z_img``, ``z_tab``: transitional features ``[N, D_out]``; ``m_img``, ``m_tab``: binary masks ``[D_out]``.
    """
    if density_norm not in DENSITY_NORMS:
        raise ValueError(f"density_norm must be one of {DENSITY_NORMS}, got {density_norm!r}")
    l_img, l_tab = m_img.sum(), m_tab.sum()
    retained_img = (m_img * z_img).abs().sum(dim=1) / l_img
    # NOTE[DIFF]: density_norm="official" reproduces a known bug of the reference implementation, which
    # divides the retained TABULAR content by L_img instead of L_tab (wrong segment length). The paper
    # (eqs. 2, 4a, 10) defines density as content / length of that segment; "official" is offered only
    # to reproduce the reference code's numbers. The two agree only when L_img == L_tab.
    retained_tab = (m_tab * z_tab).abs().sum(dim=1) / (l_img if density_norm == "official" else l_tab)
    discarded_img = (m_tab * z_img).abs().sum(dim=1) / l_tab  # image content in the tabular positions
    discarded_tab = (m_img * z_tab).abs().sum(dim=1) / l_img  # tabular content in the image positions
    return {
        "leakage": 0.5 * (discarded_img + discarded_tab).mean(),
        "density": (retained_img - retained_tab).abs().mean(),
        "density_img": retained_img.mean(),
        "density_tab": retained_tab.mean(),
        "leakage_img": discarded_img.mean(),
        "leakage_tab": discarded_tab.mean(),
    }


def _projector(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_in), nn.ReLU(), nn.Linear(d_in, d_out))


@register_fusion(
    "amf", summary="AMF-MedIT adaptive modulation: confidence-ratio masks + leakage/density losses"
)
class AMFFusion(Fusion):
    """Adaptive Modulation and Fusion (AMF-MedIT, section 3.3).

    ``d_out`` defaults to ``max(D_img, D_tab)`` of the pooled features: 2048 at the paper's setting
    (ResNet-50 + 64-d tabular), as in the official code, and small for small encoders (CPU runs).
    ``rconf`` is the initial confidence ratio; the harness overrides it through
    :meth:`set_confidence_ratio` with the ratio measured by unimodal probes (appendix A.4).
    """

    needs_tokens = False
    handles_missing = False
    # AMF-MedIT Table 5 ablation values.
    search_space: dict[str, dict] = {
        "rconf": {"type": "categorical", "choices": [0.1, 0.95, 0.97, 1.0]},
    }

    def __init__(
        self,
        *,
        dims: FusionDims,
        n_classes: int,
        d_out: int | None = None,
        rconf: float = 1.0,
        lambda_leakage: float = 5.0,
        lambda_density: float = 5.0,
        density_norm: str = "paper",
    ):
        super().__init__(dims=dims, n_classes=n_classes)
        if density_norm not in DENSITY_NORMS:
            raise ValueError(f"density_norm must be one of {DENSITY_NORMS}, got {density_norm!r}")
        d_out = int(d_out) if d_out is not None else max(dims.image_pooled, dims.tabular_pooled)
        if d_out < 2:
            raise ValueError(f"d_out must be >= 2 (one dimension per modality), got {d_out}")
        self.d_out = d_out
        self.lambda_leakage = float(lambda_leakage)
        self.lambda_density = float(lambda_density)
        self.density_norm = density_norm
        self.image_projector = _projector(dims.image_pooled, d_out)
        self.tabular_projector = _projector(dims.tabular_pooled, d_out)
        self.head = nn.Linear(d_out, n_classes)
        m_img, m_tab = _masks(d_out, rconf)
        # Buffers, not parameters: saved in state_dict (so a checkpoint keeps its masks) but never trained.
        self.register_buffer("mask_img", m_img)
        self.register_buffer("mask_tab", m_tab)
        self.register_buffer("rconf", torch.tensor(float(rconf)))

    @property
    def lengths(self) -> tuple[int, int]:
        """``(L_img, L_tab)`` of the current masks."""
        return int(self.mask_img.sum().item()), int(self.mask_tab.sum().item())

    def set_confidence_ratio(self, rconf: float) -> None:
        """Recompute the masks for a new modality confidence ratio (eqs. 6-7), in place."""
        m_img, m_tab = _masks(self.d_out, rconf)
        with torch.no_grad():
            self.mask_img.copy_(m_img)
            self.mask_tab.copy_(m_tab)
            self.rconf.fill_(float(rconf))

    def fuse(
        self,
        image_tokens: Tensor,
        image_pooled: Tensor,
        tabular_tokens: Tensor,
        tabular_pooled: Tensor,
        image_available: Tensor,
        tabular_available: Tensor,
    ) -> FusionOutput:
        z_img = self.image_projector(image_pooled)
        z_tab = self.tabular_projector(tabular_pooled)
        fused = self.mask_img * z_img + self.mask_tab * z_tab  # eq. 8
        logits = self.head(fused)
        losses = amf_losses(z_img, z_tab, self.mask_img, self.mask_tab, self.density_norm)
        diagnostics = {k: v.detach() for k, v in losses.items()}
        diagnostics.update(
            L_img=self.mask_img.sum().detach(),
            L_tab=self.mask_tab.sum().detach(),
            rconf=self.rconf.detach().clone(),
        )
        return FusionOutput(
            logits=logits,
            aux_losses={
                "leakage": self.lambda_leakage * losses["leakage"],
                "density": self.lambda_density * losses["density"],
            },
            diagnostics=diagnostics,
        )

    def extra_repr(self) -> str:
        l_img, l_tab = self.lengths
        return (
            f"d_out={self.d_out}, rconf={float(self.rconf):.4g}, L_img={l_img}, L_tab={l_tab}, "
            f"density_norm={self.density_norm!r}"
        )
