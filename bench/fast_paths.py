"""The harness's CPU speed-ups that are not part of any method, in one place.

Methods (``baselines/``) stay plain ``torch.nn`` modules a researcher can copy; what only makes the
harness faster on a CPU, without changing what a method computes, lives here, and ``bench perf``
measures that it still pays (section ``image_layout``).

``image_batch``: every image batch the harness feeds an image encoder (pretraining, feature encoding,
end-to-end fine-tuning, the latency profile) is float32 in channels-last layout on a CPU, where oneDNN's
NHWC convolutions are faster for multi-channel images (PyTorch picks a convolution's layout from its
input or its weights; the encoders' weights are left as they are). Measured with ``bench perf --only
image_layout`` on the 2 idle Xeon cores (2026-12-04, three runs; resnet10t, 64 x 64 px, 3 channels as in
DVM): 1.07-1.10x for inference at batch 256, 1.03-1.06x for a training step at batch 128; the pooled
features agree to 1e-7. A single-channel batch (OL3I's CT slices) has the same memory layout either
way, so PyTorch keeps its default kernels and nothing changes (bit-identical; 1.07x / 0.98x measured,
noise). Converting the encoder's weights too would also switch single-channel images (1.14x inference, 1.08x training, same machine),
at the price of float32-rounding differences in every OL3I result: not done yet. On other devices the
batch keeps PyTorch's default layout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["image_batch"]


def image_batch(images, device: torch.device | str = "cpu") -> Tensor:
    """``images`` (an array or tensor ``[B, C, H, W]``) as a float32 tensor on ``device``, channels-last on CPU."""
    x = images if isinstance(images, Tensor) else torch.from_numpy(np.asarray(images, dtype=np.float32))
    x = x.to(device=device, dtype=torch.float32)
    if x.device.type == "cpu" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
