"""Small tensor operations shared by the built-in baselines, where PyTorch's own is slow on CPU.

``short_softmax``: ``torch.softmax`` over a short last dimension (attention among a handful of tokens)
pays a fixed cost per row on CPU (about 60 ns per row on the 2-core reference machine, so a
``[128, 8, 2, 8, 8]`` map takes ~1 ms forward, ~1.3 ms with backward). The same function written as
``exp(x - max) / sum`` with its own backward (``y * (g - sum(g * y))``) takes ~0.3 ms for both. Same
values to float32 rounding (tests/test_ops.py); on other devices, or rows of more than
``SHORT_ROW`` entries, it is ``torch.softmax``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["SHORT_ROW", "short_softmax"]

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
