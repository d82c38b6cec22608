"""The harness's CPU speed-ups that are not part of any method, in one place.

Methods (``baselines/``) stay plain ``torch.nn`` modules a researcher can copy; what only makes the
harness faster on a CPU, without changing what a method computes, lives here, and ``bench perf``
measures that it still pays (section ``image_layout``).

Channels-last image encoders on a CPU. ``image_batch``: every image batch the harness feeds an image
encoder (pretraining, feature encoding, end-to-end fine-tuning, the latency profile) is float32 in
channels-last layout on a CPU; ``place_image_encoder``: every image encoder the harness places on a
CPU has its 4-d weights in channels-last layout too. oneDNN's NHWC convolutions are then used for
every image, single-channel included (PyTorch picks a convolution's layout from its input *or* its
weights, and a one-channel batch has the same memory layout either way, so the batch alone changes
nothing for OL3I's CT slices). Same function; float32 rounding differs (pooled features agree to
4.5e-8 in ``bench perf --only image_layout`` on an AMD EPYC), so ``NUMERICS`` enters every run fingerprint and pretraining cache key: results and weights
made with the other layout are never reused silently. Measured with ``bench perf --only image_layout``
(resnet10t, 64 x 64 px, 1 channel as in OL3I, inference at batch 256, a training step at batch 128),
see the README's *Performance* section for the figures on each machine. On other devices both keep
PyTorch's default layout.

Fused attention in FT-Transformer. ``fast_tabular_encoder``: every tabular encoder the harness builds
(``EncoderSpec.build``) has its rtdl ``MultiheadAttention`` modules computing softmax(QK^T / sqrt(d))V
with ``F.scaled_dot_product_attention`` (PyTorch's fused kernel) instead of rtdl's three tensors of
``[B, heads, n_tokens, n_tokens]``; over OL3I's 424 tokens those tensors are a large part of the encoder's time.
Same function, same parameters and state_dict; float32 rounding differs (``NUMERICS``). Where it would
not be the same function it steps aside: attention dropout active (training with ``attention_dropout >
0``: rtdl's own path, so the dropout mask is rtdl's), key compression (Linformer), or a ``torch.jit``
trace (FLOP counting counts rtdl's matmuls). Measured with ``bench perf --only tabular_attention``
(see the README's *Performance* section).
"""

from __future__ import annotations

import numpy as np
import rtdl_revisiting_models as rtdl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NUMERICS", "fast_tabular_encoder", "image_batch", "place_image_encoder"]

#: What the fast paths change in a result's float32 rounding; part of every run fingerprint and pretraining key.
NUMERICS = "cpu-image-encoder-channels-last-v1+tabular-attention-sdpa-v1"


def image_batch(images, device: torch.device | str = "cpu") -> Tensor:
    """``images`` (an array or tensor ``[B, C, H, W]``) as a float32 tensor on ``device``, channels-last on CPU."""
    x = images if isinstance(images, Tensor) else torch.from_numpy(np.asarray(images, dtype=np.float32))
    x = x.to(device=device, dtype=torch.float32)
    if x.device.type == "cpu" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def place_image_encoder(module: torch.nn.Module, device: torch.device | str = "cpu") -> torch.nn.Module:
    """``module`` (an image encoder) moved to ``device``; on a CPU its 4-d weights in channels-last layout.

    In place, like ``Module.to``: call it before an optimizer is made for the module's parameters."""
    module = module.to(device)
    if torch.device(device).type == "cpu":
        module = module.to(memory_format=torch.channels_last)
    return module


class FusedAttention(rtdl.MultiheadAttention):
    """rtdl's ``MultiheadAttention`` (same parameters) whose attention is ``F.scaled_dot_product_attention``
    where that is the same function (module docstring); rtdl's own forward otherwise."""

    def forward(self, x_q: Tensor, x_kv: Tensor) -> Tensor:
        dropout_active = self.dropout is not None and self.training and self.dropout.p > 0
        if dropout_active or self.key_compression is not None or torch.jit.is_tracing():
            return super().forward(x_q, x_kv)
        q, k, v = self.W_q(x_q), self.W_k(x_kv), self.W_v(x_kv)
        h = self._n_heads
        b, n_q, n_kv = q.shape[0], q.shape[1], k.shape[1]
        q = q.view(b, n_q, h, -1).transpose(1, 2)
        k = k.view(b, n_kv, h, -1).transpose(1, 2)
        v = v.view(b, n_kv, h, -1).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n_q, -1)
        return self.W_out(x) if self.W_out is not None else x


def fast_tabular_encoder(module: nn.Module) -> nn.Module:
    """``module`` (a tabular encoder) with every rtdl ``MultiheadAttention`` inside it a :class:`FusedAttention`
    (in place: the class changes, the parameters and state_dict stay); returns it."""
    for m in module.modules():
        if type(m) is rtdl.MultiheadAttention:
            m.__class__ = FusedAttention
    return module
