"""The harness's CPU speed-ups that are not part of any method, in one place.

Methods (``baselines/``) stay plain ``torch.nn`` modules a researcher can copy; what only makes the
harness faster on a CPU, without changing what a method computes, lives here, and ``bench perf``
measures that it still pays (section ``image_layout``).

``image_batch``: every image batch the harness feeds an image encoder (pretraining, feature encoding,
end-to-end fine-tuning, the latency profile) is float32 in channels-last layout on a CPU. oneDNN's
convolutions run faster on NHWC data (PyTorch picks the layout of a convolution from its input, so
the encoder's weights need not change): ``resnet10t`` at 64 x 64 px, one thread, measured on the
2-core Xeon (2026-12-03), 1.59x for inference (batch 256) and 1.54x for a training step (batch 128).
The values are those of the same convolutions to float32 rounding (another kernel, another order of
summation): runs are deterministic, but not bit-equal to the contiguous layout. On other devices the
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
