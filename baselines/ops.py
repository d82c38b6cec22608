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

``softplus``: ``F.softplus`` on CPU spends its time in ``log1p`` (about 5.5 ns per element on the
reference machine: 19.5 ms for one Mamba mixer's ``dt`` at batch 64 over 424 tokens, a tenth of the
mixer's training step). The same function as ``max(x, 0) + log1p(exp(-|x|))`` with ``log1p(e)``
computed from ``log`` as ``log(1 + e) * e / ((1 + e) - 1)`` (exact to a few ulp; Goldberg 1991,
"What every computer scientist should know about floating-point arithmetic", thm. 4) takes a
quarter of the time; the backward is torch's own ``softplus_backward``. Same values to float32
rounding (tests/test_ops.py); on other devices it is ``F.softplus``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["SHORT_ROW", "Dropout", "short_softmax", "softplus", "softplus_forward", "use_fast_dropout"]

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


def softplus_forward(x: Tensor) -> Tensor:
    """``softplus(x)`` without autograd, from ``log`` instead of the slow ``log1p`` (see above)."""
    e = x.abs().neg_().exp_()  # exp(-|x|), in (0, 1]
    u = e + 1
    d = u - 1  # exact (Sterbenz); 0 where e is below half an ulp of 1
    y = torch.log(u).mul_(e).div_(d)  # log1p(e) to a few ulp
    y = torch.where(d == 0, e, y)  # log1p(e) = e to float32 precision there
    return y.add_(x.clamp(min=0))


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return softplus_forward(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.softplus_backward(g, x, 1.0, 20.0)


def softplus(x: Tensor) -> Tensor:
    """``F.softplus(x)`` (beta 1, threshold 20), faster on CPU float32 (see the module docstring)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return torch.nn.functional.softplus(x)
    return _Softplus.apply(x)
