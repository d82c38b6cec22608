"""Small tensor operations shared by the built-in baselines, where PyTorch's own is slow on CPU.

``Dropout``: ``nn.Dropout`` draws its mask with ``bernoulli_``, about 4.6 ns per element on the 2-core
reference machine (2.5 ms for a ``[1024, 8, 64]`` activation, 40% of AMC's training step at batch
512); a uniform draw compared with ``p`` is the same Bernoulli(1 - p) mask for half the cost.
Built-in fusions build it instead of ``nn.Dropout``; ``use_fast_dropout(module)`` swaps it in for
the ``nn.Dropout`` modules inside PyTorch's own layers (AMC's ``nn.TransformerEncoderLayer``). On
other devices it is ``nn.Dropout``. The masks differ from ``nn.Dropout``'s for
the same seed (another draw), so runs are deterministic but not bit-equal to a model built with
``nn.Dropout``.

``short_softmax``: ``torch.softmax`` over a short last dimension (attention among a handful of tokens)
pays a fixed cost per row on CPU (about 60 ns per row on the 2-core reference machine, so a
``[128, 8, 2, 8, 8]`` map takes ~1 ms forward, ~1.3 ms with backward). The same function written as
``exp(x - max) / sum`` with its own backward (``y * (g - sum(g * y))``) takes ~0.3 ms for both. Same
values to float32 rounding (tests/test_ops.py); on other devices, or rows of more than
``SHORT_ROW`` entries, it is ``torch.softmax``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["SHORT_ROW", "Dropout", "short_softmax", "use_fast_dropout"]

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
    """``nn.Dropout`` whose CPU mask is ``rand >= p`` (see the module docstring); same parameters, no state."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or self.p >= 1.0 or self.inplace or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 0 or 1 / (1 - p)
        return x * keep


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Dropout`` inside ``module`` by :class:`Dropout` (in place); returns it."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace))
    return module
