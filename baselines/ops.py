"""Small tensor operations shared by the built-in baselines, where PyTorch's own is slow on CPU.

``Dropout``: ``nn.Dropout`` draws one random number per element for its mask (``bernoulli_``), and
its mask and backward are float tensors; on the 2-core reference machine that is 3.2 ms forward +
backward for a ``[1024, 8, 64]`` activation, and dropout was ~40% of AMC's training step at batch
512. Here the mask comes from 16 random bits per element, cut out of 64-bit draws (a quarter of
the draws), is kept as a bool tensor, and forward and backward are one masked multiply each:
1.4 ms for the same activation. NOTE[DIFF]: the drop probability is quantised to a multiple of
2**-16 (``p = 0.1`` drops with probability 0.100006), and the scale is ``1 / (1 - p_used)``, so
the expectation is kept exactly. Built-in fusions build it instead of ``nn.Dropout``;
``use_fast_dropout(module)`` swaps it in for the ``nn.Dropout`` modules inside PyTorch's own layers
(see ``TransformerEncoderLayer`` below, which AMC uses). On other devices it is ``nn.Dropout``. The masks differ from
``nn.Dropout``'s for the same seed (another draw), so runs are deterministic but not bit-equal to a
model built with ``nn.Dropout``.

``short_softmax``: ``torch.softmax`` over a short last dimension (attention among a handful of tokens)
pays a fixed cost per row on CPU (about 60 ns per row on the 2-core reference machine, so a
``[128, 8, 2, 8, 8]`` map takes ~1 ms forward, ~1.3 ms with backward). The same function written as
``exp(x - max) / sum`` with its own backward (``y * (g - sum(g * y))``) takes ~0.3 ms for both. Same
values to float32 rounding (tests/test_ops.py); on other devices, or rows of more than
``SHORT_ROW`` entries, it is ``torch.softmax``.

``softplus_forward``: ``F.softplus`` on CPU spends its time in ``log1p`` (about 5.5 ns per element on
the reference machine: 19.5 ms for one Mamba mixer's ``dt`` at batch 64 over 424 tokens, a tenth of
the mixer's training step). The same function as ``max(x, 0) + log1p(exp(-|x|))`` with ``log1p(e)``
computed from ``log`` as ``log(1 + e) * e / ((1 + e) - 1)`` (exact to a few ulp; Goldberg 1991,
"What every computer scientist should know about floating-point arithmetic", thm. 4) takes 41% of
the time (8.1 vs 19.9 ms for a ``[424, 64, 128]`` tensor). The CPU Mamba's chunked scan computes its step sizes with it and takes the
gradient with torch's own ``softplus_backward``. Same values to float32 rounding (tests/test_ops.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "SHORT_ROW",
    "Dropout",
    "TransformerEncoderLayer",
    "short_softmax",
    "softplus_forward",
    "use_fast_dropout",
]

# Above this row length torch's CPU kernel is as fast (its per-row cost is amortised).
SHORT_ROW = 32


class _ShortSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = (x - x.amax(dim=-1, keepdim=True)).exp_()
        y.div_(y.sum(dim=-1, keepdim=True))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(dim=-1, keepdim=True))


def short_softmax(x: Tensor) -> Tensor:
    """Softmax over the last dimension; fast on CPU for short rows, ``torch.softmax`` otherwise."""
    if x.device.type != "cpu" or x.shape[-1] > SHORT_ROW or not x.is_floating_point():
        return torch.softmax(x, dim=-1)
    return _ShortSoftmax.apply(x)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask comes from 16-bit slices of 64-bit draws (module docstring); same
    parameters, no state."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or self.p >= 1.0 or self.inplace or x.device.type != "cpu":
            return super().forward(x)
        return _MaskedScale.apply(x, self.p)


class _MaskedScale(torch.autograd.Function):
    """Inverted dropout with a mask from 16-bit slices of 64-bit random draws (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        n = x.numel()
        cut = round(p * 65536)  # drop where the 16-bit draw (uniform on [0, 65536)) is below cut
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        keep = bits.view(torch.int16)[:n].view(x.shape).ge(cut - 32768)
        ctx.scale = 65536.0 / (65536 - cut)
        ctx.save_for_backward(keep)
        return torch.mul(x, keep).mul_(ctx.scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        (keep,) = ctx.saved_tensors
        return torch.mul(g, keep).mul_(ctx.scale), None


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Dropout`` inside ``module`` by :class:`Dropout` (in place); returns it."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace))
    return module


def softplus_forward(x: Tensor) -> Tensor:
    """``F.softplus(x)`` (beta 1, threshold 20) without autograd, from ``log`` instead of the slow
    ``log1p`` (see the module docstring). Above the threshold, where torch returns ``x``, this gives
    ``x + exp(-x)``: the same in float32, within 1e-9 relative in float64."""
    e = x.abs().neg_().exp_()  # exp(-|x|), in (0, 1]
    u = e + 1
    d = u - 1  # exact (Sterbenz); 0 where e is below half an ulp of 1
    y = torch.log(u).mul_(e).div_(d)  # log1p(e) to a few ulp
    y = torch.where(d == 0, e, y)  # log1p(e) = e to float32 precision there
    return y.add_(x.clamp(min=0))


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (same parameters and state_dict) whose self-attention block uses
    :func:`short_softmax` and :class:`Dropout` on CPU.

    PyTorch's multi-head attention with dropout goes through its generic path on CPU (a softmax paying
    its per-row cost over rows of a handful of tokens, a ``bernoulli_`` mask): 10.8 ms forward +
    backward for AMC's ``[512, 8, 64]``, 8 heads, on the reference machine; this block takes 7.4 ms.
    The other dropouts become :class:`Dropout` too. With an attention or padding mask, off the CPU, or
    when PyTorch takes its inference fast path, it is PyTorch's own computation.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        use_fast_dropout(self)
        self.attn_dropout = Dropout(self.self_attn.dropout)

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                  is_causal: bool = False) -> Tensor:
        mha = self.self_attn
        if (attn_mask is not None or key_padding_mask is not None or is_causal or x.device.type != "cpu"
                or not mha.batch_first or not mha._qkv_same_embed_dim or mha.in_proj_bias is None
                or mha.bias_k is not None):
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        b, n, d = x.shape
        h = mha.num_heads
        dh = d // h
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(b, n, 3, h, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, h, N, dh]
        attn = short_softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)))
        out = (self.attn_dropout(attn) @ v).transpose(1, 2).reshape(b, n, d)
        return self.dropout1(mha.out_proj(out))
