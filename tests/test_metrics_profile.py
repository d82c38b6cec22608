"""bench.metrics and bench.profile: exact metric values, hand-counted multiply-adds, honest reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from bench.api import EncoderOutput, Fusion, FusionDims, FusionOutput, MultimodalModel
from bench.errors import BenchError
from bench.metrics import (
    MetricError,
    accuracy,
    auc,
    bootstrap_ci,
    evaluate,
    format_mean_std,
    mean_std,
    primary_metric,
)
from bench.profile import (
    GmacResult,
    LatencyResult,
    ProfileReport,
    count_gmac,
    count_parameters,
    device_description,
    measure_latency,
    measure_module_latency,
    peak_memory_mb,
    profile_model,
)

# --------------------------------------------------------------------------------------------------
# metrics


def test_auc_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    s = rng.normal(size=300) + y  # informative, with ties-free floats
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # [N, 1] logits give the same value; so do probabilities (AUC is rank-based)
    assert auc(y, s[:, None]) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, 1 / (1 + np.exp(-s))) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_case():
    # positives 0.8, 0.4; negatives 0.1, 0.4, 0.35 -> pairs won: 3 + (1 + 0.5 tie + 1) = 5.5 of 6
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.8, 0.1, 0.4, 0.4, 0.35])
    assert auc(y, s) == pytest.approx(5.5 / 6)
    assert auc([0, 1], [0.0, 1.0]) == 1.0
    assert auc([0, 1], [1.0, 0.0]) == 0.0


def test_auc_single_class_raises_value_error():
    with pytest.raises(ValueError, match="only class 1"):
        auc(np.ones(4, dtype=int), np.arange(4.0))
    with pytest.raises(BenchError):
        auc(np.zeros(4, dtype=int), np.arange(4.0))
    with pytest.raises(MetricError, match="NaN"):
        auc([0, 1], [0.0, float("nan")])


def test_accuracy():
    y = np.array([0, 1, 2, 1])
    logits = np.array([[2.0, 1, 0], [0, 3, 1], [0, 0, 5], [4, 1, 0]])
    assert accuracy(y, logits) == 0.75
    assert accuracy(y, np.array([0, 1, 2, 2])) == 0.75
    # binary [N, 1] logits: logit >= 0 is class 1
    assert accuracy([1, 0, 1], np.array([[0.3], [-2.0], [-0.1]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"\[N, 1\]"):
        accuracy([1, 0], np.array([0.3, -0.2]))


def test_evaluate_binary_and_multiclass():
    y = np.array([0, 0, 1, 1, 1])
    logits = np.array([-1.0, 0.5, 2.0, -0.5, 1.0])
    out = evaluate("binary", y, logits[:, None])
    assert out["metric"] == "auc" == primary_metric("binary")
    assert out["value"] == pytest.approx(roc_auc_score(y, logits))
    assert "acc" not in out and "balanced_acc" not in out  # no accuracy without a chosen threshold
    assert out["n"] == 5
    at0 = evaluate("binary", y, logits[:, None], threshold=0.0)
    assert at0["acc"] == pytest.approx(3 / 5)  # predictions 0 1 1 0 1
    assert at0["balanced_acc"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    at1 = evaluate("binary", y, logits[:, None], threshold=1.0)  # predictions 0 0 1 0 1
    assert at1["acc"] == pytest.approx(4 / 5) and at1["balanced_acc"] == pytest.approx((1 + 2 / 3) / 2)

    rng = np.random.default_rng(1)
    y6 = rng.integers(0, 6, size=50)
    l6 = rng.normal(size=(50, 6))
    out6 = evaluate("multiclass", y6, l6)
    assert out6["metric"] == "acc" == primary_metric("multiclass")
    assert out6["value"] == pytest.approx(np.mean(l6.argmax(1) == y6))
    top5 = np.argsort(-l6, axis=1)[:, :5]
    assert out6["top5_acc"] == pytest.approx(np.mean([y6[i] in top5[i] for i in range(50)]))
    assert "top5_acc" not in evaluate("multiclass", y6 % 3, l6[:, :3])
    pred = l6.argmax(1)  # balanced accuracy: the mean recall of the classes present, at argmax
    recalls = [np.mean(pred[y6 == c] == c) for c in np.unique(y6)]
    assert out6["balanced_acc"] == pytest.approx(np.mean(recalls))
    with pytest.raises(ValueError):
        primary_metric("regression")


def test_mean_std_and_format():
    m, s, n = mean_std([0.7622, 0.7697, 0.7772])
    assert (m, n) == (pytest.approx(0.7697), 3)
    assert s == pytest.approx(np.std([0.7622, 0.7697, 0.7772], ddof=1))
    assert format_mean_std(m, s) == "76.97 ± 0.75"
    m1, s1, n1 = mean_std([0.5])
    assert (m1, n1) == (0.5, 1) and math.isnan(s1)
    assert format_mean_std(m1, s1) == "50.00"
    assert format_mean_std(0.123456, 0.01, scale=1, digits=3) == "0.123 ± 0.010"
    m0, s0, n0 = mean_std([])
    assert n0 == 0 and math.isnan(m0) and math.isnan(s0)


def _delong_se(y: np.ndarray, s: np.ndarray) -> float:
    """Standard error of the AUC from DeLong's structural components (the asymptotic reference)."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


def test_bootstrap_ci_contains_estimate_and_has_expected_width():
    rng = np.random.default_rng(123)
    y = np.r_[np.zeros(250, dtype=int), np.ones(150, dtype=int)]
    s = rng.normal(size=400) + 1.0 * y  # true AUC = Phi(1/sqrt(2)) ~ 0.76
    point = auc(y, s)
    lo, hi = bootstrap_ci(y, s, auc, n_boot=1000, seed=0)
    assert lo < point < hi
    expected = 2 * 1.959964 * _delong_se(y, s)
    assert 0.8 * expected < hi - lo < 1.25 * expected
    # deterministic for a seed
    assert bootstrap_ci(y, s, auc, n_boot=1000, seed=0) == (lo, hi)


def test_bootstrap_ci_stratified_keeps_both_classes():
    # 2 positives out of 40: unstratified resamples would often miss them and AUC would raise
    y = np.r_[np.zeros(38, dtype=int), np.ones(2, dtype=int)]
    s = np.linspace(0, 1, 40)
    seen: list[int] = []

    def metric(yb: np.ndarray, sb: np.ndarray) -> float:
        seen.append(int(yb.sum()))
        return auc(yb, sb)

    lo, hi = bootstrap_ci(y, s, metric, n_boot=200, seed=3)
    assert set(seen) == {2} and len(seen) == 200
    assert lo <= hi


# --------------------------------------------------------------------------------------------------
# multiply-adds


def test_count_parameters():
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert count_parameters(m) == 4 * 3 + 3 + 3 * 2 + 2
    m[0].requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 3 * 2 + 2
    shared = nn.Linear(5, 5)
    assert count_parameters(nn.Sequential(shared, shared)) == 30


def test_count_gmac_linear_exact():
    r = count_gmac(nn.Linear(64, 32), (torch.randn(1, 64),))
    assert isinstance(r, GmacResult)
    assert r.gmac == 64 * 32 / 1e9
    assert r.uncounted_ops == {}


def test_count_gmac_mlp_hand_sum_and_state_restored():
    mlp = nn.Sequential(
        nn.Linear(10, 20), nn.ReLU(), nn.Dropout(0.1), nn.Linear(20, 5), nn.ReLU(), nn.Linear(5, 1)
    )
    mlp.train()
    r = count_gmac(mlp, (torch.randn(3, 10),))
    assert r.gmac == pytest.approx(3 * (10 * 20 + 20 * 5 + 5 * 1) / 1e9, rel=1e-12)
    assert r.uncounted_ops == {}
    assert mlp.training and all(m.training for m in mlp.modules())


class _Attention(nn.Module):
    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)


def test_count_gmac_scaled_dot_product_attention_handle():
    b, h, lq, lk, d, dv = 2, 3, 5, 7, 8, 4
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, dv)
    r = count_gmac(_Attention(), (q, k, v))
    assert r.gmac == pytest.approx((b * h * lq * lk * d + b * h * lq * lk * dv) / 1e9, rel=1e-12)
    assert "aten::scaled_dot_product_attention" not in r.uncounted_ops


def test_count_gmac_multihead_attention_fast_path_is_decomposed():
    e, heads, length = 8, 2, 5
    mha = nn.MultiheadAttention(e, heads, batch_first=True).requires_grad_(False)  # eligible for fast path
    x = torch.randn(1, length, e)
    r = count_gmac(mha, (x, x, x, None, False))
    # in-projection (3 E^2 per token) + QK^T and AV (L^2 E each) + out-projection (E^2 per token)
    expected = length * 3 * e * e + 2 * length * length * e + length * e * e
    assert r.gmac == pytest.approx(expected / 1e9, rel=1e-12)
    assert torch.backends.mha.get_fastpath_enabled()  # restored


class _WithSkippedOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(self.fc(x)) * 2.0


def test_count_gmac_reports_uncounted_ops():
    r = count_gmac(_WithSkippedOps(), (torch.randn(2, 6),))
    assert r.gmac == 2 * 6 * 4 / 1e9
    assert r.uncounted_ops.get("aten::exp") == 1
    assert r.uncounted_ops.get("aten::mul") == 1
    assert "aten::exp" in r.note and "uncounted" in r.note


class _TinyScan(nn.Module):
    """A pure-PyTorch selective scan in the style of a CPU Mamba: loops of elementwise ops/einsum."""

    def __init__(self, d: int = 6, n: int = 4):
        super().__init__()
        self.proj = nn.Linear(d, 2 * d)
        self.a_log = nn.Parameter(torch.zeros(d, n))
        self.to_b = nn.Linear(d, n)

    def forward(self, x: Tensor) -> Tensor:
        u, z = self.proj(x).chunk(2, dim=-1)
        delta = F.softplus(u)
        b = self.to_b(u)
        decay = torch.exp(torch.einsum("bld,dn->bldn", delta, -torch.exp(self.a_log)))
        h = x.new_zeros(x.shape[0], x.shape[2], self.a_log.shape[1])
        ys = []
        for t in range(x.shape[1]):
            h = decay[:, t] * h + torch.einsum("bd,bn->bdn", delta[:, t] * u[:, t], b[:, t])
            ys.append(h.sum(-1))
        return torch.stack(ys, dim=1) * F.silu(z)


def test_count_gmac_pure_pytorch_scan_is_partly_uncounted_not_crashing():
    r = count_gmac(_TinyScan(), (torch.randn(1, 4, 6),))
    assert r.gmac >= 1 * 4 * 6 * 12 / 1e9  # at least the linear projections
    for op in ("aten::exp", "aten::mul", "aten::add", "aten::softplus", "aten::silu"):
        assert r.uncounted_ops.get(op, 0) >= 1, op
    assert r.uncounted_ops["aten::add"] >= 4  # one per time step


# --------------------------------------------------------------------------------------------------
# latency and memory


def test_measure_latency_cpu():
    calls = []
    r = measure_latency(lambda: calls.append(1), device="cpu", warmup=3, runs=7)
    assert isinstance(r, LatencyResult)
    assert len(calls) == 10 and r.runs == 7 and r.warmup == 3
    assert r.method == "perf_counter_ns"
    assert 0 <= r.p50_ms <= r.p90_ms
    assert r.mean_ms >= 0
    assert r.device.startswith("cpu: ") and r.device.endswith(f"({torch.get_num_threads()} threads)")
    with pytest.raises(ValueError):
        measure_latency(lambda: None, device="cpu", runs=0)


def test_measure_latency_runs_under_inference_mode():
    flags = []
    measure_latency(lambda: flags.append(torch.is_inference_mode_enabled()), device="cpu", warmup=1, runs=2)
    assert flags == [True, True, True]


def test_measure_module_latency_records_batch_and_dtype():
    m = nn.Linear(4, 2).train()
    r = measure_module_latency(m, (torch.randn(3, 4),), warmup=1, runs=4)
    assert (r.runs, r.batch_size, r.dtype, r.method) == (4, 3, "float32", "perf_counter_ns")
    assert r.p50_ms <= r.p90_ms
    assert m.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_latency_and_memory_cuda():
    m = nn.Linear(256, 256).cuda()
    x = torch.randn(8, 256, device="cuda")
    r = measure_module_latency(m, (x,), warmup=2, runs=5)
    assert r.method == "cuda_events" and r.runs == 5 and r.device.startswith("cuda: ")
    assert 0 <= r.p50_ms <= r.p90_ms
    peak = peak_memory_mb(lambda: m(x), device="cuda")
    assert peak is not None and peak > 0


def test_device_description_and_cpu_peak_memory():
    assert device_description("cpu").startswith("cpu: ")
    assert peak_memory_mb(lambda: torch.randn(10), device="cpu") is None


# --------------------------------------------------------------------------------------------------
# whole-model profile, on tiny modules that follow bench/api.py


class _TinyImageEncoder(nn.Module):
    def __init__(self, *, in_chans: int, image_size: int, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, kernel_size=2, stride=2)
        self.d_out = self.d_token = width

    def forward(self, images: Tensor) -> EncoderOutput:
        fmap = torch.relu(self.conv(images))  # [B, C', H', W']
        tokens = fmap.flatten(2).transpose(1, 2)  # [B, H'W', C']
        return EncoderOutput(tokens=tokens, pooled=fmap.mean(dim=(2, 3)))


class _TinyTabularEncoder(nn.Module):
    def __init__(self, *, n_num: int, cat_cardinalities: list[int], width: int = 3):
        super().__init__()
        self.num = nn.Linear(n_num, width)
        self.cat = nn.ModuleList(nn.Embedding(c, width) for c in cat_cardinalities)
        self.d_out = self.d_token = width

    def forward(self, x_num: Tensor, x_cat: Tensor | None) -> EncoderOutput:
        tokens = [self.num(x_num)]
        if x_cat is not None:
            tokens += [emb(x_cat[:, i]) for i, emb in enumerate(self.cat)]
        tok = torch.stack(tokens, dim=1)
        return EncoderOutput(tokens=tok, pooled=tok.mean(dim=1))


class _ConcatFusion(Fusion):
    def __init__(self, *, dims: FusionDims, n_classes: int):
        super().__init__(dims=dims, n_classes=n_classes)
        self.head = nn.Linear(dims.image_pooled + dims.tabular_pooled, n_classes)
        self.aux = nn.Linear(dims.image_pooled, 1)

    def fuse(
        self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available, tabular_available
    ):
        aux = self.aux(image_pooled).pow(2).mean()  # training-time extra, not part of the logits
        return FusionOutput(
            logits=self.head(torch.cat([image_pooled, tabular_pooled], dim=1)), aux_losses={"aux": aux}
        )


def _tiny_model() -> MultimodalModel:
    image = _TinyImageEncoder(in_chans=1, image_size=8)
    tabular = _TinyTabularEncoder(n_num=5, cat_cardinalities=[3, 4])
    dims = FusionDims(image_pooled=4, image_token=4, tabular_pooled=3, tabular_token=3, image_tokens=16)
    return MultimodalModel(image, tabular, _ConcatFusion(dims=dims, n_classes=2))


def _example() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randn(1, 1, 8, 8, generator=g),
        "x_num": torch.randn(1, 5, generator=g),
        "x_cat": torch.tensor([[2, 1]]),
    }


def test_count_gmac_fusion_output_counts_logits_path_only():
    model = _tiny_model()
    fusion = model.fusion
    args = (torch.randn(1, 16, 4), torch.randn(1, 4), torch.randn(1, 3, 3), torch.randn(1, 3), None, None)
    r = count_gmac(fusion, args)
    assert r.gmac == (4 + 3) * 2 / 1e9


def test_profile_model_tiny():
    torch.manual_seed(0)
    model = _tiny_model().train()
    report = profile_model(model, _example(), runs=3, warmup=1)
    assert isinstance(report, ProfileReport)
    assert model.training  # state restored

    conv = 1 * 4 * 2 * 2 * 16  # out_ch * in_ch * k * k * (4x4 output positions)
    tab = 5 * 3
    head = (4 + 3) * 2
    assert report.gmac_fusion == head / 1e9
    assert report.gmac_total == pytest.approx((conv + tab + head) / 1e9, rel=1e-12)
    assert report.params_fusion == count_parameters(model.fusion) == (7 * 2 + 2) + (4 + 1)
    assert report.params_total == count_parameters(model) == report.params_trainable_total
    # mean-pooling and stacking are reductions/elementwise: reported, not silently zero
    assert report.uncounted_ops_total.get("aten::mean", 0) >= 1
    assert report.uncounted_ops_fusion == {}
    assert report.latency_p50_ms <= report.latency_p90_ms
    assert report.fusion_latency_p50_ms <= report.fusion_latency_p90_ms
    assert report.batch_size == 1 and report.dtype == "float32" and report.runs == 3
    assert report.latency_method == "perf_counter_ns" and report.device.startswith("cpu: ")
    assert report.peak_memory_mb is None
    d = json.loads(json.dumps(report.to_dict()))
    assert d["gmac_fusion"] == report.gmac_fusion and d["uncounted_ops_total"] == report.uncounted_ops_total


def test_profile_model_without_x_cat():
    model = _tiny_model()
    ex = _example()
    del ex["x_cat"]
    report = profile_model(model, ex, runs=2, warmup=0)
    assert report.gmac_total == pytest.approx((1 * 4 * 2 * 2 * 16 + 5 * 3 + 7 * 2) / 1e9, rel=1e-12)


def test_single_modality_model_never_runs_the_other_encoder():
    """``Fusion.reads``: an image-only model skips the tabular encoder (training, latency, FLOPs, parameters)."""
    from baselines.fusion.unimodal import ImageOnly, TabularOnly

    dims = FusionDims(image_pooled=4, image_token=4, tabular_pooled=3, tabular_token=3, image_tokens=16)
    for cls, unread in ((ImageOnly, "tabular"), (TabularOnly, "image")):
        torch.manual_seed(0)
        model = MultimodalModel(_TinyImageEncoder(in_chans=1, image_size=8),
                                _TinyTabularEncoder(n_num=5, cat_cardinalities=[3, 4]), cls(dims=dims, n_classes=2))
        calls = []
        getattr(model, f"{unread}_encoder").register_forward_hook(lambda *a, c=calls: c.append(1))
        ex = _example()
        out = model(**ex).logits
        assert not calls
        read = model.image_encoder(ex["images"]).pooled if unread == "tabular" else \
            model.tabular_encoder(ex["x_num"], ex["x_cat"]).pooled
        assert torch.equal(out, model.fusion.head(read))
        rep = profile_model(model, ex, runs=3, warmup=1)
        assert not calls
        other = getattr(model, f"{unread}_encoder")
        assert rep.params_total == count_parameters(model) - count_parameters(other)
