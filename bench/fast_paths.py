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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["NUMERICS", "image_batch", "place_image_encoder"]

#: What the fast paths change in a result's float32 rounding; part of every run fingerprint and pretraining key.
NUMERICS = "cpu-image-encoder-channels-last-v1"


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
