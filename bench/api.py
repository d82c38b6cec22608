"""The contracts every plug-in implements. Built-ins in ``baselines/`` use exactly this API.

Tabular encoder
    ``forward(x_num [B, n_num] float, x_cat [B, n_cat] long | None) -> EncoderOutput``.
    Constructor keyword-only: ``(*, n_num, cat_cardinalities, **hyperparameters)``.
    Must set ``self.d_out`` (pooled width) and ``self.d_token`` (token width), and ``self.n_tokens``
    unless it emits one token (the harness sizes fusions with it).

Image encoder
    ``forward(images [B, C, H, W]) -> EncoderOutput`` with tokens = the final feature map
    flattened to ``[B, H'W', C']`` and pooled = its global average ``[B, C']``.
    Constructor keyword-only: ``(*, in_chans, image_size, **hyperparameters)``.
    Must set ``self.d_out`` and ``self.d_token``, and ``self.n_tokens`` unless it emits one token.

Encoders are plain ``nn.Module`` subclasses; like fusions they may declare the class attributes
``search_space`` and ``conformance_kwargs`` (a small configuration for ``bench check-plugin``).

Fusion
    ``forward(image_tokens, image_pooled, tabular_tokens, tabular_pooled,
    image_available=None, tabular_available=None) -> FusionOutput``.
    Constructor keyword-only: ``(*, dims: FusionDims, n_classes, **hyperparameters)``.
    Class attributes declare what it needs: ``needs_tokens`` (token sequences, not only pooled
    vectors of the image), ``needs_tabular_tokens`` (all tabular tokens, not only the pooled one),
    ``handles_missing`` (accepts availability masks with ``False`` entries) and ``reads`` (the
    modalities its output depends on; default both: a single-modality baseline names one, and
    :class:`MultimodalModel` then skips the other encoder, which is placeholder zeros for it).

    Availability masks are boolean ``[B]`` tensors; ``False`` = that modality is missing for the
    sample. The harness then hands zeros in that modality's tensors, but a fusion must not rely on
    them: its output for a sample may not depend on the content of a missing modality (the
    conformance kit checks this), and at least one modality is always available.

Positional tensor arguments (rather than a dataclass) keep every fusion traceable by fvcore.

Dataset
    A callable ``loader(*, root=None, image_size=64, cache_dir=None, **options) -> MultimodalData``
    (:class:`DatasetLoader`), registered with ``@register_dataset("name")`` or the entry point group
    ``bench.datasets``; ``bench run --dataset name`` runs any suite on it and ``bench check-plugin
    name --kind dataset`` checks it. It must accept and ignore unknown options (synthetic replicas
    read ``n`` and ``seed``), return images float32 ``[n, 1 or 3, image_size, image_size]`` in [0, 1]
    (zeros where ``image_available`` is False: real missing images), ``x_num`` float32 with NaN for
    missing values, ``x_cat`` int64 codes in ``[0, cardinality)``, ``y`` int64 class indices, a
    train / val / test ``split`` (each patient in one split), ``ids``, and a :class:`Provenance`
    (``source`` real | synthetic, a checksum of what was loaded); bad data raises
    :class:`~bench.errors.DataError` with one line naming the problem and the fix. Do not fit
    anything on the data: the harness fits preprocessing on the training split. The shared helpers
    are :mod:`bench.data.images` (PNG/JPEG/TIFF/DICOM/NIfTI/.npy, CT windowing, resizing),
    :mod:`bench.data.tabular` (tables, column typing) and :mod:`bench.data.base` (data root, cache);
    without Python, a YAML-described table does the same (``datasets/table.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from bench.data.base import MultimodalData, Provenance

__all__ = ["DatasetLoader", "EncoderOutput", "Fusion", "FusionDims", "FusionOutput", "MultimodalData",
           "MultimodalModel", "Provenance", "modalities_read", "zero_missing"]


class DatasetLoader(Protocol):
    """The dataset contract (see the module docstring): keyword options in, :class:`MultimodalData` out."""

    def __call__(self, *, root: str | Path | None = None, image_size: int = 64, cache_dir: str | Path | None = None,
                 **options) -> MultimodalData: ...


class EncoderOutput(NamedTuple):
    tokens: Tensor  # [B, N, d_token]
    pooled: Tensor  # [B, d_out]


@dataclass(frozen=True)
class FusionDims:
    image_pooled: int
    image_token: int
    tabular_pooled: int
    tabular_token: int
    image_tokens: int = 1  # number of image tokens (H'W'), for fusions that size position embeddings
    tabular_tokens: int = 1


@dataclass
class FusionOutput:
    logits: Tensor  # [B, n_classes] (n_classes = 1 for a binary task)
    aux_losses: dict[str, Tensor] = field(default_factory=dict)  # already weighted; added to the task loss
    diagnostics: dict[str, Tensor] = field(default_factory=dict)  # detached, per batch, for reports


class Fusion(nn.Module):
    """Base class of fusion modules. Subclasses implement :meth:`fuse`."""

    needs_tokens: ClassVar[bool] = False
    #: False (default): the harness hands the tabular *pooled* vector as a single token (the paper's
    #: "tabular token", and it spares caching [n, n_features + 1, d] per sample); True: all tokens.
    needs_tabular_tokens: ClassVar[bool] = False
    handles_missing: ClassVar[bool] = False
    #: The modalities whose tensors the output depends on (the conformance kit checks the claim); a
    #: model with this fusion never runs the encoder of a modality left out (its tensors are zeros).
    reads: ClassVar[tuple[str, ...]] = ("image", "tabular")
    #: Hyper-parameters a search may tune, as data: name -> optuna-style spec.
    search_space: ClassVar[dict[str, dict]] = {}
    #: Keyword arguments that make a small instance for the conformance kit (``bench check-plugin``)
    #: and the registry-parametrized tests; empty = the constructor's defaults.
    conformance_kwargs: ClassVar[dict] = {}

    def __init__(self, *, dims: FusionDims, n_classes: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes!r}")
        self.dims = dims
        self.n_classes = n_classes

    def forward(
        self,
        image_tokens: Tensor,
        image_pooled: Tensor,
        tabular_tokens: Tensor,
        tabular_pooled: Tensor,
        image_available: Tensor | None = None,
        tabular_available: Tensor | None = None,
    ) -> FusionOutput:
        batch = image_pooled.shape[0]
        if image_available is None:
            image_available = torch.ones(batch, dtype=torch.bool, device=image_pooled.device)
        if tabular_available is None:
            tabular_available = torch.ones(batch, dtype=torch.bool, device=image_pooled.device)
        if not self.handles_missing:
            missing = [m for m, a in (("image", image_available), ("tabular", tabular_available)) if not bool(a.all())]
            if missing:
                raise ValueError(
                    f"{type(self).__name__} cannot take a missing modality ({' and '.join(missing)} missing for "
                    "some samples); pick an imputation protocol or a fusion with handles_missing=True"
                )
        return self.fuse(image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available, tabular_available)

    def fuse(
        self,
        image_tokens: Tensor,
        image_pooled: Tensor,
        tabular_tokens: Tensor,
        tabular_pooled: Tensor,
        image_available: Tensor,
        tabular_available: Tensor,
    ) -> FusionOutput:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement fuse()")

    def set_confidence_ratio(self, rconf: float) -> None:
        """Called by the harness with the measured modality confidence ratio (AMF, appendix A.4).

        Fusions that do not use it ignore it.
        """


def modalities_read(fusion: type | nn.Module) -> tuple[str, ...]:
    """``Fusion.reads`` of a fusion class or instance; both modalities for a module that does not declare it."""
    return tuple(getattr(fusion, "reads", ("image", "tabular")))


class MultimodalModel(nn.Module):
    """image encoder + tabular encoder + fusion; what the *trainable* strategy optimises end to end.

    An encoder whose modality the fusion does not read (``Fusion.reads``) is kept (its weights are
    the pair's) but never run: its tensors reach the fusion as zeros, so a single-modality baseline
    costs what its one encoder costs (training, latency, FLOPs).
    """

    def __init__(self, image_encoder: nn.Module, tabular_encoder: nn.Module, fusion: Fusion):
        super().__init__()
        self.image_encoder = image_encoder
        self.tabular_encoder = tabular_encoder
        self.fusion = fusion

    def reads(self, modality: str) -> bool:
        """Whether the fusion's output depends on ``modality`` (``image`` or ``tabular``)."""
        return modality in modalities_read(self.fusion)

    def unread_encoders(self) -> list[nn.Module]:
        """The encoders this model never runs (see the class docstring)."""
        return [enc for modality, enc in (("image", self.image_encoder), ("tabular", self.tabular_encoder))
                if not self.reads(modality)]

    def _placeholder(self, modality: str, like: Tensor) -> tuple[Tensor, Tensor]:
        """Zero ``(tokens, pooled)`` of the shapes the fusion was built for, for an unread modality."""
        d, batch = self.fusion.dims, like.shape[0]
        if modality == "image":
            shape_tok, width = (d.image_tokens, d.image_token), d.image_pooled
        elif self.fusion.needs_tabular_tokens:
            shape_tok, width = (d.tabular_tokens, d.tabular_token), d.tabular_pooled
        else:
            shape_tok, width = (1, d.tabular_pooled), d.tabular_pooled
        zeros = like.new_zeros((batch, *shape_tok), dtype=torch.float32)
        return zeros, like.new_zeros((batch, width), dtype=torch.float32)

    def forward(
        self,
        images: Tensor,
        x_num: Tensor,
        x_cat: Tensor | None = None,
        image_available: Tensor | None = None,
        tabular_available: Tensor | None = None,
    ) -> FusionOutput:
        if self.reads("image"):
            img = self.image_encoder(images)
            img_tokens, img_pooled = img.tokens, img.pooled
        else:
            img_tokens, img_pooled = self._placeholder("image", x_num)
        if self.reads("tabular"):
            tab = self.tabular_encoder(x_num, x_cat)
            tab_tokens = tab.tokens if self.fusion.needs_tabular_tokens else tab.pooled[:, None, :]
            tab_pooled = tab.pooled
        else:
            tab_tokens, tab_pooled = self._placeholder("tabular", images)
        # a missing modality reaches the fusion as its mask, with zeros in its tensors
        if image_available is not None:
            img_tokens, img_pooled = zero_missing(img_tokens, image_available), zero_missing(img_pooled, image_available)
        if tabular_available is not None:
            tab_tokens, tab_pooled = zero_missing(tab_tokens, tabular_available), zero_missing(tab_pooled, tabular_available)
        return self.fusion(img_tokens, img_pooled, tab_tokens, tab_pooled, image_available, tabular_available)


def zero_missing(x: Tensor, available: Tensor) -> Tensor:
    """``x`` with the rows of unavailable samples set to zero (and cut from the graph)."""
    if bool(available.all()):
        return x
    return torch.where(available.view((-1,) + (1,) * (x.dim() - 1)), x, torch.zeros((), dtype=x.dtype, device=x.device))
