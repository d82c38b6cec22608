"""Masked-attention fusion resilient to a missing modality (registered as ``masked_attention``).

After Caruso, Guarrasi & Soda, "Resilient Vision-Tabular Multimodal Learning under Modality
Missingness" (arXiv:2605.12031; MARIA, arXiv:2412.14810, is the earlier model of the same group):
intermediate fusion by a transformer encoder with *masked self-attention* that excludes missing
tokens and modalities from aggregation and gradient propagation, learnable *modality tokens*, and
a *modality-dropout* regulariser. The review and the abstract give no formulas, so this is one
reading of them:

* Embedding. Image tokens ``[B, Ni, di]`` and tabular tokens ``[B, Nt, dt]`` are projected to
  ``d_model``. Image tokens get learned position embeddings (the flattened map keeps its layout);
  tabular tokens need none (feature tokenisers already give every feature its own embedding).
* Modality tokens: one learnable ``d_model`` vector ``tau_m`` per modality, used twice.
  (a) It *marks* its modality: added to each of that modality's tokens.
  (b) It sits in the sequence as its own token and is masked with its modality, so it is that
  modality's summary slot; the CLS token's attention to ``tau_img`` and ``tau_tab`` is the learned
  weighting of the two unimodal representations. A per-modality, per-channel gain ``g_m`` (starts
  at 1) also scales each modality's projected tokens before the marker is added, so the weighting
  is explicit as well. "Unimodal representations are weighted through learnable modality tokens"
  is read as (a) + (b) + ``g_m``.
* Fusion encoder over ``[CLS; tau_img; tau_tab; image tokens; tabular tokens]``: pre-norm layers
  (self-attention, then a GELU feed-forward block). The key-padding mask hides every token of a
  missing modality, its modality token included, so those tokens get exactly zero attention
  weight and exactly zero gradient. The CLS output goes through a LayerNorm and one linear layer.
  Only the CLS output is used, so the last layer computes the CLS query alone (same result,
  about half the cost). Dropout acts on the residual branches, not on the attention weights, so
  attention runs in torch's fused kernel.
* ``update_tabular`` (default True: a plain encoder, every token updated by every layer). With
  False, the layers before the last update only CLS, the modality tokens and the image tokens;
  tabular tokens are keys/values only. This is cheaper at ~430 tabular tokens (about 1 s instead of
  about 3.5 s for forward+backward at batch 512 on 2 CPU cores), but it is not the paper's encoder.
* Modality dropout (training only): for each sample with both modalities, with probability
  ``modality_dropout`` one of them (image or tabular, 50/50) is marked unavailable for that forward.
  It draws from torch's global RNG, so a ``torch.manual_seed`` makes it reproducible.

A missing modality's inputs are also replaced with zeros before projection. This is because a NaN
in a hidden key gives a NaN score, which an additive ``-inf`` mask cannot remove. The mask does the
exclusion; the tests check that a sample's logits match a run on only its available tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from baselines.checks import check_dropout
from baselines.ops import Dropout
from bench.api import Fusion, FusionDims, FusionOutput, zero_missing
from bench.registry import register_fusion

__all__ = ["MaskedAttentionFusion", "modality_dropout_masks"]


def modality_dropout_masks(
    image_available: Tensor, tabular_available: Tensor, p: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Drop one modality (chosen 50/50) from each fully available sample with probability ``p``.

    Returns the new ``(image_available, tabular_available, dropped)``. Uses torch's global RNG.
    """
    batch = image_available.shape[0]
    both = image_available & tabular_available
    dropped = both & (torch.rand(batch, device=image_available.device) < p)
    drop_image = dropped & (torch.rand(batch, device=image_available.device) < 0.5)
    return image_available & ~drop_image, tabular_available & ~(dropped & ~drop_image), dropped


class _EncoderLayer(nn.Module):
    """Pre-norm transformer layer: masked multi-head self-attention, then a GELU feed-forward block.

    Only the first ``n_queries`` tokens are updated and returned (all of them when ``None``);
    every token the mask allows is a key. Attention goes through ``scaled_dot_product_attention``
    (its fused CPU kernel); dropout acts on the residual branches, not on the attention weights.
    """

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, d_ffn), nn.GELU(), Dropout(dropout), nn.Linear(d_ffn, d_model)
        )
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, attend: Tensor | None, n_queries: int | None = None) -> Tensor:
        """``x [B, L, d]``; ``attend [B, L]`` bool, True = the token may be attended to."""
        d = x.shape[-1]
        h = self.norm_attn(x)
        if n_queries is None:
            q, k, v = self.qkv(h).chunk(3, dim=-1)
            residual = x
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(h[:, :n_queries], w[:d], b[:d])
            k, v = F.linear(h, w[d:], b[d:]).chunk(2, dim=-1)
            residual = x[:, :n_queries]
        mask = None if attend is None else attend[:, None, None, :]
        q, k, v = (t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2) for t in (q, k, v))  # [B, H, L, dh]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = residual + self.drop(self.out(attended.transpose(1, 2).flatten(2)))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


@register_fusion(
    "masked_attention",
    summary="transformer over [CLS; modality tokens; image; tabular] tokens, missing ones masked out",
)
class MaskedAttentionFusion(Fusion):
    """Intermediate fusion by masked self-attention with modality tokens and modality dropout."""

    needs_tokens = True
    # NOTE[DIFF]: the harness hands the tabular modality as its encoder's pooled [CLS] token (as it does
    # for cross-attention, AMF-MedIT's setting) rather than ~424 per-feature tokens: attention over
    # ~430 tokens costs ~3.5 s per batch of 512 on 2 CPU cores, over ~6 tokens milliseconds. The module
    # itself takes any number of tabular tokens; a subclass with needs_tabular_tokens = True gets them all.
    needs_tabular_tokens = False
    handles_missing = True
    conformance_kwargs = {"d_model": 32, "n_heads": 4}
    search_space: dict[str, dict] = {
        "modality_dropout": {"type": "categorical", "choices": [0.0, 0.1, 0.3, 0.5]},
    }

    def __init__(
        self,
        *,
        dims: FusionDims,
        n_classes: int,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        ffn_ratio: float = 2.0,
        modality_dropout: float = 0.3,
        update_tabular: bool = True,
    ):
        super().__init__(dims=dims, n_classes=n_classes)
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"d_model ({d_model!r}) must be a positive multiple of n_heads ({n_heads!r})")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers!r}")
        check_dropout(dropout=dropout)
        if not 0.0 <= modality_dropout <= 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1], got {modality_dropout!r}")
        d_ffn = int(round(ffn_ratio * d_model))
        if d_ffn < 1:
            raise ValueError(f"ffn_ratio must give a positive feed-forward width, got {ffn_ratio!r}")
        # NOTE[DIFF]: the paper does not give the fusion encoder's sizes here; d_model 64, 2 layers, 4 heads
        # and a 2x feed-forward keep it cheap on CPU at ~430 tokens per sample.
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.modality_dropout = float(modality_dropout)
        self.update_tabular = bool(update_tabular)

        self.image_proj = nn.Linear(dims.image_token, d_model)
        self.tabular_proj = nn.Linear(dims.tabular_token, d_model)
        self.image_pos = nn.Parameter(torch.zeros(1, dims.image_tokens, d_model))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.modality_tokens = nn.Parameter(torch.zeros(2, d_model))  # 0: image, 1: tabular
        # NOTE[DIFF]: the per-channel modality gain is this module's reading of "weighted through learnable
        # modality tokens"; the review gives no formula (see the module docstring).
        self.modality_gain = nn.Parameter(torch.ones(2, d_model))
        self.embed_drop = Dropout(dropout)
        self.layers = nn.ModuleList(_EncoderLayer(d_model, n_heads, d_ffn, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)
        for p in (self.image_pos, self.cls_token, self.modality_tokens):
            nn.init.trunc_normal_(p, std=0.02)

    def _project(self, proj: nn.Linear, tokens: Tensor, m: int) -> Tensor:
        """``g_m * (W x + b) + tau_m`` as one affine map (the gain folded into W and b): fewer passes."""
        gain = self.modality_gain[m]
        return F.linear(tokens, proj.weight * gain[:, None], proj.bias * gain + self.modality_tokens[m])

    def embed(self, image_tokens: Tensor, tabular_tokens: Tensor) -> Tensor:
        """The full sequence ``[CLS; tau_img; tau_tab; image tokens; tabular tokens]``, ``[B, 3+Ni+Nt, d]``."""
        if image_tokens.shape[1] != self.image_pos.shape[1]:
            raise ValueError(
                f"masked_attention was built for {self.image_pos.shape[1]} image tokens "
                f"(FusionDims.image_tokens) but got {image_tokens.shape[1]}"
            )
        batch = image_tokens.shape[0]
        image = self._project(self.image_proj, image_tokens, 0) + self.image_pos
        tabular = self._project(self.tabular_proj, tabular_tokens, 1)
        special = torch.cat([self.cls_token, self.modality_tokens[None]], dim=1).expand(batch, -1, -1)
        return self.embed_drop(torch.cat([special, image, tabular], dim=1))

    def encode(self, sequence: Tensor, attend: Tensor | None = None, n_updated: int | None = None) -> Tensor:
        """Run the encoder on ``sequence [B, L, d]``; return the normed CLS output ``[B, d]``.

        ``attend [B, L]`` bool: True = the token may be attended to (``None``: all). ``n_updated``: how
        many leading tokens the layers before the last update (``None``: all); the rest are keys only.
        """
        x = sequence
        for layer in self.layers[:-1]:
            if n_updated is None:
                x = layer(x, attend)
            else:
                x = torch.cat([layer(x, attend, n_updated), x[:, n_updated:]], dim=1)
        return self.norm(self.layers[-1](x, attend, 1)[:, 0])  # only the CLS output is used

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
        dropped = torch.zeros_like(image_available)
        # NOTE[DIFF]: the paper "stochastically removes available modalities" without giving the rule. Here
        # only fully available samples are touched, and exactly one modality is dropped, so no sample is
        # left without input and the given missingness pattern is never changed.
        if self.training and self.modality_dropout > 0:
            image_available, tabular_available, dropped = modality_dropout_masks(
                image_available, tabular_available, self.modality_dropout
            )
        image_tokens = zero_missing(image_tokens, image_available)
        tabular_tokens = zero_missing(tabular_tokens, tabular_available)
        sequence = self.embed(image_tokens, tabular_tokens)
        n_img, n_tab = image_tokens.shape[1], tabular_tokens.shape[1]
        img, tab = image_available[:, None], tabular_available[:, None]
        attend = torch.cat(  # the key-padding mask, as "may attend": a missing modality's tokens are hidden
            [torch.ones_like(img), img, tab, img.expand(-1, n_img), tab.expand(-1, n_tab)], dim=1
        )
        n_updated = None if self.update_tabular else 3 + n_img
        logits = self.head(self.encode(sequence, attend, n_updated))
        return FusionOutput(logits=logits, diagnostics={"modality_dropped": dropped.float().mean().detach()})

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
            f"modality_dropout={self.modality_dropout}, update_tabular={self.update_tabular}"
        )
