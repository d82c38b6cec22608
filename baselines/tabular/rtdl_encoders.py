"""Tabular encoders from "Revisiting Deep Learning Models for Tabular Data" (Gorishniy et al., 2021).

Built on the ``rtdl_revisiting_models`` package (pinned 0.0.2): its ``MLP``, ``ResNet``,
``FTTransformerBackbone``, ``LinearEmbeddings`` and ``CategoricalEmbeddings`` are used as they are;
these wrappers only turn them into ``bench`` tabular encoders (see :mod:`bench.api`): no output
head, and an :class:`~bench.api.EncoderOutput` of tokens and a pooled vector.

Defaults follow AMF-MedIT (appendix A.3): MLP and ResNet with 2 blocks of width 256, FT-Transformer
with 2 blocks and d_token 64; ``search_space`` holds the widths the paper tried.
"""

from __future__ import annotations

from typing import ClassVar

import rtdl_revisiting_models as rtdl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.checks import check_dropout, check_positive, check_positive_int
from bench.api import EncoderOutput
from bench.registry import register_tabular_encoder

__all__ = ["FTTransformerEncoder", "FeatureEmbeddings", "MLPEncoder", "ResNetEncoder", "check_tabular_inputs"]

#: AMF-MedIT appendix A.3: candidate D_tab for MLP and ResNet ...
BLOCK_WIDTHS = [128, 256, 512, 1024]
#: ... and for FT-Transformer and FT-Mamba.
TOKEN_WIDTHS = [32, 64, 96, 128, 256, 384]


# --------------------------------------------------------------------------------------------
# Shared argument and input checks.
# --------------------------------------------------------------------------------------------


def check_feature_args(n_num: int, cat_cardinalities: list[int]) -> list[int]:
    """Validate ``(n_num, cat_cardinalities)``; returns the cardinalities as a list of ints."""
    if isinstance(n_num, bool) or not isinstance(n_num, int) or n_num < 0:
        raise ValueError(f"n_num must be a non-negative integer, however: {n_num=!r}")
    cards = list(cat_cardinalities)
    for i, card in enumerate(cards):
        if isinstance(card, bool) or not isinstance(card, int) or card < 1:
            raise ValueError(
                f"cat_cardinalities must contain only positive integers, however: cat_cardinalities[{i}]={card!r}"
            )
    if n_num == 0 and not cards:
        raise ValueError(f"at least one feature is needed, however: {n_num=}, cat_cardinalities={cards}")
    return cards


def check_tabular_inputs(x_num: Tensor, x_cat: Tensor | None, n_num: int, n_cat: int) -> Tensor | None:
    """Check the encoder inputs against the constructor's features; returns ``x_cat`` (None if n_cat == 0)."""
    if x_num.ndim != 2 or x_num.shape[1] != n_num:
        raise ValueError(f"x_num must be [batch, {n_num}], however: x_num.shape={tuple(x_num.shape)}")
    if n_cat == 0:
        if x_cat is not None and (x_cat.ndim != 2 or x_cat.shape[1] != 0):
            raise ValueError(
                f"the encoder was built without categorical features, however: x_cat.shape={tuple(x_cat.shape)}"
            )
        return None
    if x_cat is None:
        raise ValueError(f"the encoder was built with {n_cat} categorical features, however: x_cat=None")
    if x_cat.ndim != 2 or tuple(x_cat.shape) != (x_num.shape[0], n_cat):
        raise ValueError(
            f"x_cat must be [batch={x_num.shape[0]}, {n_cat}], however: x_cat.shape={tuple(x_cat.shape)}"
        )
    if x_cat.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"x_cat must hold integer category codes, however: {x_cat.dtype=}")
    return x_cat.long()


def one_hot_concat(x_num: Tensor, x_cat: Tensor | None, cards: list[int]) -> Tensor:
    """``[x_num, one_hot(x_cat[:, 0]), one_hot(x_cat[:, 1]), ...]`` as one float matrix."""
    if x_cat is None:
        return x_num
    parts = [x_num] + [F.one_hot(x_cat[:, i], card).to(x_num.dtype) for i, card in enumerate(cards)]
    return torch.cat(parts, dim=1)


class FeatureEmbeddings(nn.Module):
    """FT-Transformer's feature tokenizer: one token per feature, plus a [CLS] token.

    Numeric feature j -> ``x_j * W_j + b_j`` (rtdl ``LinearEmbeddings``); categorical feature j ->
    a lookup-table row plus a per-feature bias (rtdl ``CategoricalEmbeddings(bias=True)``); the
    [CLS] token (rtdl's ``_CLSEmbedding``, same initialisation) goes first or last.
    Output ``[B, 1 + n_num + n_cat, d_token]``.
    """

    def __init__(self, n_num: int, cat_cardinalities: list[int], d_token: int, cls_position: str):
        super().__init__()
        if cls_position not in ("first", "last"):
            raise ValueError(f"cls_position must be 'first' or 'last', however: {cls_position=}")
        self.cls_position = cls_position
        self.cls_embedding = rtdl._CLSEmbedding(d_token)
        self.cont_embeddings = rtdl.LinearEmbeddings(n_num, d_token) if n_num > 0 else None
        self.cat_embeddings = (
            rtdl.CategoricalEmbeddings(cat_cardinalities, d_token, True) if cat_cardinalities else None
        )

    def forward(self, x_num: Tensor, x_cat: Tensor | None) -> Tensor:
        parts = []
        if self.cont_embeddings is not None:
            parts.append(self.cont_embeddings(x_num))
        if self.cat_embeddings is not None:
            parts.append(self.cat_embeddings(x_cat))
        cls = self.cls_embedding(x_num.shape[:1])
        parts = [cls, *parts] if self.cls_position == "first" else [*parts, cls]
        return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------------------------
# MLP and ResNet: one token.
# --------------------------------------------------------------------------------------------


@register_tabular_encoder("mlp")
class MLPEncoder(nn.Module):
    """MLP (Gorishniy et al., 2021, section 3.1) over numeric + one-hot categorical features.

    ``pooled`` is the last block's output (Linear-ReLU-Dropout, width ``d_block``); ``tokens`` is
    that vector as one token.
    """

    search_space: ClassVar[dict[str, dict]] = {"d_block": {"type": "categorical", "choices": BLOCK_WIDTHS}}
    conformance_kwargs: ClassVar[dict] = {"d_block": 32}  # small instance for `bench check-plugin`

    def __init__(
        self,
        *,
        n_num: int,
        cat_cardinalities: list[int],
        n_blocks: int = 2,
        d_block: int = 256,
        dropout: float = 0.0,
    ) -> None:
        cards = check_feature_args(n_num, cat_cardinalities)
        check_positive_int(n_blocks=n_blocks, d_block=d_block)
        check_dropout(dropout=dropout)
        super().__init__()
        self.n_num = n_num
        self.cat_cardinalities = cards
        self.mlp = rtdl.MLP(
            d_in=n_num + sum(cards), d_out=None, n_blocks=n_blocks, d_block=d_block, dropout=dropout
        )
        self.d_out = d_block
        self.d_token = d_block
        self.n_tokens = 1

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> EncoderOutput:
        x_cat = check_tabular_inputs(x_num, x_cat, self.n_num, len(self.cat_cardinalities))
        pooled = self.mlp(one_hot_concat(x_num, x_cat, self.cat_cardinalities))
        return EncoderOutput(pooled[:, None, :], pooled)


@register_tabular_encoder("resnet")
class ResNetEncoder(nn.Module):
    """ResNet (Gorishniy et al., 2021, section 3.2) over numeric + one-hot categorical features.

    ``pooled`` is the residual stream after the last block, passed through the BatchNorm that rtdl's
    head applies first (the head's ReLU and Linear are left out); ``tokens`` is it as one token.
    """

    search_space: ClassVar[dict[str, dict]] = {"d_block": {"type": "categorical", "choices": BLOCK_WIDTHS}}
    conformance_kwargs: ClassVar[dict] = {"d_block": 32}  # small instance for `bench check-plugin`

    def __init__(
        self,
        *,
        n_num: int,
        cat_cardinalities: list[int],
        n_blocks: int = 2,
        d_block: int = 256,
        d_hidden_multiplier: float = 2.0,
        dropout1: float = 0.0,
        dropout2: float = 0.0,
    ) -> None:
        cards = check_feature_args(n_num, cat_cardinalities)
        check_positive_int(n_blocks=n_blocks, d_block=d_block)
        check_positive(d_hidden_multiplier=d_hidden_multiplier)
        check_dropout(dropout1=dropout1, dropout2=dropout2)
        if int(d_block * d_hidden_multiplier) < 1:
            raise ValueError(
                f"d_block * d_hidden_multiplier must be >= 1, however: {d_block=}, {d_hidden_multiplier=}"
            )
        super().__init__()
        self.n_num = n_num
        self.cat_cardinalities = cards
        self.resnet = rtdl.ResNet(
            d_in=n_num + sum(cards),
            d_out=None,
            n_blocks=n_blocks,
            d_block=d_block,
            d_hidden_multiplier=d_hidden_multiplier,
            dropout1=dropout1,
            dropout2=dropout2,
        )
        self.normalization = nn.BatchNorm1d(d_block)
        self.d_out = d_block
        self.d_token = d_block
        self.n_tokens = 1

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> EncoderOutput:
        x_cat = check_tabular_inputs(x_num, x_cat, self.n_num, len(self.cat_cardinalities))
        pooled = self.normalization(self.resnet(one_hot_concat(x_num, x_cat, self.cat_cardinalities)))
        return EncoderOutput(pooled[:, None, :], pooled)


# --------------------------------------------------------------------------------------------
# FT-Transformer: one token per feature + [CLS].
# --------------------------------------------------------------------------------------------


@register_tabular_encoder("ft_transformer")
class FTTransformerEncoder(nn.Module):
    """FT-Transformer (Gorishniy et al., 2021, section 3.3): feature tokenizer + Transformer blocks.

    As in rtdl, [CLS] is the first token. ``tokens`` are all output tokens
    ``[B, 1 + n_num + n_cat, d_token]`` and ``pooled`` the [CLS] one, both after the LayerNorm that
    rtdl's head applies first (the head's ReLU and Linear are left out). ``pooled`` equals what
    rtdl's ``FTTransformerBackbone`` computes for [CLS] (its last block attends from [CLS] only,
    which gives the same [CLS] output); the other tokens of the last block are computed too.
    Dropout defaults are rtdl's ``FTTransformer.get_default_kwargs(n_blocks=2)``.
    """

    search_space: ClassVar[dict[str, dict]] = {"d_token": {"type": "categorical", "choices": TOKEN_WIDTHS}}
    conformance_kwargs: ClassVar[dict] = {"d_token": 16, "n_heads": 2}

    def __init__(
        self,
        *,
        n_num: int,
        cat_cardinalities: list[int],
        d_token: int = 64,
        n_blocks: int = 2,
        n_heads: int = 8,
        attention_dropout: float = 0.15,
        ffn_d_hidden_multiplier: float = 4 / 3,
        ffn_dropout: float = 0.05,
        residual_dropout: float = 0.0,
    ) -> None:
        cards = check_feature_args(n_num, cat_cardinalities)
        check_positive_int(d_token=d_token, n_blocks=n_blocks, n_heads=n_heads)
        check_positive(ffn_d_hidden_multiplier=ffn_d_hidden_multiplier)
        check_dropout(
            attention_dropout=attention_dropout, ffn_dropout=ffn_dropout, residual_dropout=residual_dropout
        )
        if d_token % n_heads:
            raise ValueError(f"d_token must be a multiple of n_heads, however: {d_token=}, {n_heads=}")
        super().__init__()
        self.n_num = n_num
        self.cat_cardinalities = cards
        self.embeddings = FeatureEmbeddings(n_num, cards, d_token, cls_position="first")
        self.backbone = rtdl.FTTransformerBackbone(
            d_out=None,
            n_blocks=n_blocks,
            d_block=d_token,
            attention_n_heads=n_heads,
            attention_dropout=attention_dropout,
            ffn_d_hidden_multiplier=ffn_d_hidden_multiplier,
            ffn_dropout=ffn_dropout,
            residual_dropout=residual_dropout,
        )
        self.normalization = nn.LayerNorm(d_token)
        self.d_out = d_token
        self.d_token = d_token
        self.n_tokens = 1 + n_num + len(cards)
        #: The harness sets this to False when no fusion reads the tabular token sequence; the last
        #: block then updates only [CLS] (as rtdl itself does) and ``tokens`` is ``pooled[:, None]``.
        #: Pooled outputs are identical either way; it saves ~40% of the encoder's time.
        self.tokens_needed = True

    def tokenize(self, x_num: Tensor, x_cat: Tensor | None = None) -> Tensor:
        """The input tokens ``[B, n_tokens, d_token]``, [CLS] first."""
        x_cat = check_tabular_inputs(x_num, x_cat, self.n_num, len(self.cat_cardinalities))
        return self.embeddings(x_num, x_cat)

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> EncoderOutput:
        x = self.tokenize(x_num, x_cat)
        # rtdl's FTTransformerBackbone.forward, with every token kept in the last block.
        last = len(self.backbone.blocks) - 1
        for i, block in enumerate(self.backbone.blocks):
            residual = x
            if "attention_normalization" in block:
                x = block["attention_normalization"](x)
            if i == last and not self.tokens_needed:
                residual, query = residual[:, :1], x[:, :1]
            else:
                query = x
            x = residual + block["attention_residual_dropout"](block["attention"](query, x))
            residual = x
            x = residual + block["ffn_residual_dropout"](block["ffn"](block["ffn_normalization"](x)))
            x = block["output"](x)
        tokens = self.normalization(x)
        return EncoderOutput(tokens, tokens[:, 0])
