"""The CPU Mamba twin against ``mamba_ssm``'s CUDA kernels (runs only where both are available).

On the CPU reference machine these tests skip; on a CUDA machine with the ``cuda`` extra
(``pip install -e '.[cuda]' --no-build-isolation``) they check that :class:`MambaCPU` and
``mamba_ssm.Mamba`` are the same model: identical state_dict keys and shapes, and equal outputs and
parameter gradients for the same weights (the kernels' fused path, with ``causal_conv1d``, and its
unfused path), with the twin run on the CPU in float32 exactly as the CPU machine runs it.
"""

from __future__ import annotations

import pytest
import torch

from baselines.tabular.ft_mamba import FTMamba
from baselines.tabular.mamba_cpu import MambaCPU, mamba_ssm_available

pytestmark = pytest.mark.skipif(not mamba_ssm_available(), reason="needs CUDA and the optional mamba-ssm extra")

# The kernels are built with --use_fast_math and sum in another order than the twin's chunked scan:
# float32 results agree to about 1e-6 relative; these bounds leave a margin of ~100x.
OUT_RTOL, GRAD_RTOL = 1e-4, 1e-3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("fast_path", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("scan", ["chunked", "sequential"])
def test_twin_equals_mamba_ssm_kernels(fast_path: bool, scan: str):
    from mamba_ssm import Mamba

    torch.manual_seed(0)
    kernels = Mamba(d_model=32, d_state=16, d_conv=4, expand=2, use_fast_path=fast_path).cuda()
    twin = MambaCPU(d_model=32, d_state=16, d_conv=4, expand=2, scan=scan)
    ref_sd = kernels.state_dict()
    assert {k: tuple(v.shape) for k, v in twin.state_dict().items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    twin.load_state_dict({k: v.cpu() for k, v in ref_sd.items()}, strict=True)

    x = torch.randn(3, 97, 32)
    w = torch.randn(3, 97, 32)
    y_k = kernels(x.cuda())
    (y_k * w.cuda()).sum().backward()
    y_t = twin(x)
    (y_t * w).sum().backward()

    assert _rel(y_t, y_k) <= OUT_RTOL
    grads_k = dict(kernels.named_parameters())
    for name, p in twin.named_parameters():
        assert _rel(p.grad, grads_k[name].grad) <= GRAD_RTOL, name


def test_ft_mamba_backends_share_weights_and_outputs():
    torch.manual_seed(0)
    gpu = FTMamba(n_num=23, cat_cardinalities=[3, 4], d_token=32, n_blocks=2, backend="cuda").cuda().eval()
    cpu = FTMamba(n_num=23, cat_cardinalities=[3, 4], d_token=32, n_blocks=2, backend="cpu").eval()
    cpu.load_state_dict({k: v.cpu() for k, v in gpu.state_dict().items()}, strict=True)
    x_num, x_cat = torch.randn(5, 23), torch.stack([torch.randint(0, 3, (5,)), torch.randint(0, 4, (5,))], 1)
    with torch.no_grad():
        out_gpu = gpu(x_num.cuda(), x_cat.cuda())
        out_cpu = cpu(x_num, x_cat)
    assert _rel(out_cpu.tokens, out_gpu.tokens) <= OUT_RTOL
    assert _rel(out_cpu.pooled, out_gpu.pooled) <= OUT_RTOL
