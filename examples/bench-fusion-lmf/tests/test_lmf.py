"""Tests of the LMF plug-in: bench's conformance kit (one test per check) and LMF's own algebra.

Run with the package installed next to bench: ``pip install -e . && pytest tests``.
"""

from __future__ import annotations

import pytest
import torch
from bench_fusion_lmf import LowRankFusion

from bench.api import FusionDims
from bench.conformance import check_names, run_check


@pytest.mark.parametrize("check", check_names("fusion"))
def test_bench_conformance(check):
    result = run_check("fusion", "lmf", check)
    if result.skipped:
        pytest.skip(result.message)
    assert result.passed, result.message


def _small(rank: int = 3) -> LowRankFusion:
    dims = FusionDims(image_pooled=5, image_token=5, tabular_pooled=4, tabular_token=4)
    torch.manual_seed(0)
    return LowRankFusion(dims=dims, n_classes=2, rank=rank, d_fused=6, dropout=0.0).eval()


def test_equals_tensor_fusion_with_the_summed_weight_tensor():
    fusion = _small()
    h_img, h_tab = torch.randn(4, 5), torch.randn(4, 4)
    z_img = torch.cat([torch.ones(4, 1), h_img], dim=1)
    z_tab = torch.cat([torch.ones(4, 1), h_tab], dim=1)
    # full weight tensor W[k] = sum_i W_img^(i)[:, k] (x) W_tab^(i)[:, k]: [d_img + 1, d_tab + 1, d_fused]
    weight = torch.einsum("rik,rjk->ijk", fusion.image_factor, fusion.tabular_factor)
    fused = torch.einsum("bi,bj,ijk->bk", z_img, z_tab, weight)  # tensor fusion of the outer product
    with torch.no_grad():
        out = fusion(torch.zeros(4, 1, 5), h_img, torch.zeros(4, 1, 4), h_tab)
        torch.testing.assert_close(out.logits, fusion.head(fused))


def test_missing_modality_enters_as_its_constant_only():
    fusion = _small()
    h_img, h_tab = torch.randn(3, 5), torch.randn(3, 4)
    image_available = torch.tensor([True, False, True])
    with torch.no_grad():
        out = fusion(torch.zeros(3, 1, 5), h_img, torch.zeros(3, 1, 4), h_tab, image_available, None).logits
        h_img[1] = float("nan")  # content of a missing modality never reaches the output
        again = fusion(torch.zeros(3, 1, 5), h_img, torch.zeros(3, 1, 4), h_tab, image_available, None).logits
        zeros = fusion(torch.zeros(3, 1, 5), torch.zeros(3, 5), torch.zeros(3, 1, 4), h_tab).logits
    assert torch.equal(out, again)
    torch.testing.assert_close(out[1], zeros[1])  # missing == all-zero content after the constant 1


@pytest.mark.parametrize("kwargs", [{"rank": 0}, {"d_fused": -1}, {"dropout": 1.0}, {"rank": 2.5}])
def test_bad_arguments(kwargs):
    dims = FusionDims(image_pooled=5, image_token=5, tabular_pooled=4, tabular_token=4)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LowRankFusion(dims=dims, n_classes=1, **kwargs)
