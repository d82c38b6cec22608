"""FT-Mamba: feature tokenizer + Mamba blocks (AMF-MedIT, section 3.2).

AMF-MedIT, section 3.2: "Following the design of FT-Transformer, we adapt the Mamba architecture
for tabular feature extraction [...] we first separately tokenize the categorical and numerical
tabular features to embeddings and add a [CLS] token at the sequence end. Then a stack of mamba
blocks is used [...] and the final representation of the [CLS] token is used as the original
tabular embedding z_tab." Section 3.2.1: the tokenizer is FT-Transformer's (numeric: a
per-feature linear map with weights and bias; categorical: a lookup table plus a per-feature bias).

Mamba is causal, so only a token at the end has seen every feature: hence [CLS] last.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from baselines.checks import check_dropout, check_positive_int
from baselines.tabular.mamba_cpu import MambaCPU, make_mamba
from baselines.tabular.rtdl_encoders import (
    TOKEN_WIDTHS,
    FeatureEmbeddings,
    check_feature_args,
    check_tabular_inputs,
)
from bench.api import EncoderOutput
from bench.registry import register_tabular_encoder

__all__ = ["FTMamba", "MambaResidualBlock"]


def _norm(kind: str, d: int) -> nn.Module:
    return nn.RMSNorm(d, eps=1e-5) if kind == "rmsnorm" else nn.LayerNorm(d)


class MambaResidualBlock(nn.Module):
    """``x + dropout(mixer(norm(x)))``: the pre-norm residual block around a Mamba mixer."""

    def __init__(self, mixer: nn.Module, d_token: int, norm: str, dropout: float):
        super().__init__()
        self.norm = _norm(norm, d_token)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.mixer(self.norm(x)))


@register_tabular_encoder("ft_mamba")
class FTMamba(nn.Module):
    """FT-Mamba (AMF-MedIT, section 3.2): feature tokenizer + Mamba blocks, [CLS] at the sequence end.

    ``tokens`` are all output tokens ``[B, n_num + n_cat + 1, d_token]`` after the final norm, [CLS]
    last; ``pooled`` is the [CLS] one (``tokens[:, -1]``).

    Hyper-parameters: ``d_token`` (paper 64; searched over appendix A.3's widths), ``n_blocks``
    (paper 2), the Mamba mixer's ``d_state`` / ``d_conv`` / ``expand``, residual ``dropout``, ``norm``
    (``"rmsnorm"`` or ``"layernorm"``), and ``backend``: ``"cuda"`` (``mamba_ssm`` kernels),
    ``"cpu"`` (:class:`~baselines.tabular.mamba_cpu.MambaCPU`, any device, same state_dict) or
    ``"auto"`` (the kernels when CUDA and ``mamba_ssm`` are available). ``scan`` and ``chunk_size``
    tune :class:`MambaCPU` only.

    ``pooling``: ``"cls"`` (the paper: ``pooled`` is the [CLS] token's output) or ``"mean"``, the mean of
    every output token. NOTE[DIFF] ``"mean"`` is Mambular's default pooling (Thielmann et al. 2024, which
    the paper names as its inspiration) and the ``cpu`` budget's choice: with [CLS] last, a causal scan
    reaches the first features only through small step sizes, and 6 epochs of contrastive pretraining
    on the OL3I replica (age, its strongest column, is the first token) left the pair short of chance's
    margin (held-out ITC 4.50 vs ln 128 - 0.5 = 4.35); mean pooling reached 4.21 with the same budget
    (README, *Pretraining*). ``tokens`` are the same either way.

    Normalisation: RMSNorm by default, in the residual blocks and after the last one, because that
    is the Mamba block the paper adopts as published (Gu & Dao's reference ``MixerModel`` with
    ``rms_norm=True``, and mamba.py); FT-Transformer's LayerNorm is available for ablations.
    """

    search_space: ClassVar[dict[str, dict]] = {"d_token": {"type": "categorical", "choices": TOKEN_WIDTHS}}
    # CPU twin: the kit feeds CPU tensors, and mamba_ssm's kernels are CUDA-only
    conformance_kwargs: ClassVar[dict] = {"d_token": 16, "d_state": 8, "backend": "cpu"}

    def __init__(
        self,
        *,
        n_num: int,
        cat_cardinalities: list[int],
        d_token: int = 64,
        n_blocks: int = 2,
        # NOTE[DIFF] The paper does not give d_state in its text; 16 is Mamba's default (and ours:
        # the scan's cost grows linearly with it, which matters on CPU); 128 is the paper-scale setting.
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        # NOTE[DIFF] The paper mentions no dropout inside FT-Mamba; off by default.
        dropout: float = 0.0,
        # NOTE[DIFF] The paper does not say which norm its blocks use; see the class docstring.
        norm: Literal["rmsnorm", "layernorm"] = "rmsnorm",
        backend: Literal["auto", "cpu", "cuda"] = "auto",
        scan: Literal["chunked", "sequential"] = "chunked",
        chunk_size: int | None = None,
        pooling: Literal["cls", "mean"] = "cls",
    ) -> None:
        cards = check_feature_args(n_num, cat_cardinalities)
        check_positive_int(d_token=d_token, n_blocks=n_blocks, d_state=d_state, d_conv=d_conv, expand=expand)
        check_dropout(dropout=dropout)
        if norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', however: {norm=}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', however: {pooling=}")
        if backend not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend must be 'auto', 'cpu' or 'cuda', however: {backend=}")
        super().__init__()
        self.n_num = n_num
        self.cat_cardinalities = cards
        # Section 3.2.1: FT-Transformer's tokenizer, with [CLS] appended at the sequence end.
        self.embeddings = FeatureEmbeddings(n_num, cards, d_token, cls_position="last")
        self.blocks = nn.ModuleList(
            MambaResidualBlock(
                make_mamba(d_token, d_state, d_conv, expand, backend, scan=scan, chunk_size=chunk_size),
                d_token,
                norm,
                dropout,
            )
            for _ in range(n_blocks)
        )
        self.norm = _norm(norm, d_token)
        self.backend = "cpu" if all(isinstance(b.mixer, MambaCPU) for b in self.blocks) else "cuda"
        self.d_out = d_token
        self.d_token = d_token
        self.n_tokens = n_num + len(cards) + 1
        self.pooling = pooling

    def tokenize(self, x_num: Tensor, x_cat: Tensor | None = None) -> Tensor:
        """The input tokens ``[B, n_tokens, d_token]``, [CLS] last."""
        x_cat = check_tabular_inputs(x_num, x_cat, self.n_num, len(self.cat_cardinalities))
        return self.embeddings(x_num, x_cat)

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> EncoderOutput:
        x = self.tokenize(x_num, x_cat)
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        return EncoderOutput(tokens, tokens[:, -1] if self.pooling == "cls" else tokens.mean(dim=1))
