"""bench.perf: every benchmark runs at tiny sizes and returns finite positive figures (no timing asserts)."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from bench import perf


def _positive(value, name):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, value)


def _finite_nonneg(value, name):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (name, value)


TINY = {
    "ft_mamba": {"n_features": 12, "batch": 4, "d_token": 8, "n_blocks": 1, "d_state": 4, "repeats": 1},
    "frozen_sweep": {"n": 120, "image_size": 32, "epochs": 1, "batch_size": 32, "repeats": 1},
    "data_path": {"n": 200, "image_size": 32, "batch": 16, "n_batches": 2, "repeats": 1},
    "image_layout": {"image_size": 32, "eval_batch": 4, "train_batch": 4, "repeats": 1},
    "tabular_attention": {"n_num": 12, "d_token": 8, "eval_batch": 4, "train_batch": 4, "repeats": 1},
    "latency": {"batch_sizes": (1, 2), "image_dim": 32, "image_tokens": 4, "tab_dim": 8, "d_model": 16,
                "n_layers": 1, "runs": 3, "rounds": 1},
    "ft_mamba_cuda": {"n_features": 12, "batch": 4, "d_token": 8, "n_blocks": 1, "d_state": 4, "steps": 1,
                      "repeats": 1},
    "latency_cuda": {"batch_sizes": (1, 2), "image_dim": 32, "image_tokens": 4, "tab_dim": 8, "d_model": 16,
                     "n_layers": 1, "runs": 3, "rounds": 1, "device": "cuda"},
}


def test_ft_mamba_figures():
    r = perf.bench_ft_mamba(**TINY["ft_mamba"])
    assert set(r["samples_per_s"]) == {"chunked", "chunked_eager", "sequential", "mambapy", "ft_transformer_h8",
                                           "ft_transformer_h1"}
    for k, v in r["samples_per_s"].items():
        _positive(v, k)
    for k in ("ratio_chunked_over_mambapy", "ratio_chunked_over_sequential",
              "ratio_chunked_over_ft_transformer_h8", "ratio_chunked_over_ft_transformer_h1"):
        _positive(r[k], k)
    # correctness figures are measured, not timed: the scans agree on the same weights
    assert r["max_rel_diff_chunked_vs_sequential"] < 1e-5
    assert r["max_rel_diff_mambapy_vs_sequential"] < 1e-5


def test_frozen_sweep_figures():
    r = perf.bench_frozen_sweep(**TINY["frozen_sweep"])
    _positive(r["encode_once_s"], "encode_once_s")
    assert set(r["fusions"]) == {"concat", "amf"}
    for name, f in r["fusions"].items():
        for k in ("A_cached_fit_s", "A_total_s_incl_encoding", "B_reencode_fit_s", "speedup_B_over_A_total",
                  "speedup_B_over_A_fit_only", "C_fit_s", "C_bare_with_val_s", "C_bare_no_val_s"):
            _positive(f[k], f"{name}.{k}")
        for k in ("test_auc_A", "test_auc_B", "test_auc_abs_diff", "test_logits_max_abs_diff"):
            _finite_nonneg(f[k], f"{name}.{k}")
        for k in ("overhead_pct_vs_bare_with_val", "overhead_pct_vs_bare_no_val"):
            assert math.isfinite(f[k])
    sw = r["sweep"]
    _positive(sw["speedup"], "sweep.speedup")
    assert sw["B_reencode_s"] == sum(f["B_reencode_fit_s"] for f in r["fusions"].values())


def test_frozen_sweep_gives_a_token_reading_fusion_the_per_feature_tokens():
    r = perf.bench_frozen_sweep(n=120, image_size=32, epochs=1, batch_size=32, repeats=1, fusions=("amc", "concat"),
                                seeds=(0, 1), tabular="ft_transformer", overhead_fusions=("concat",))
    amc, concat = r["fusions"]["amc"], r["fusions"]["concat"]
    assert amc["reads_tabular_tokens"] and not concat["reads_tabular_tokens"]
    assert [s["seed"] for s in amc["per_seed"]] == [0, 1]
    assert "C_fit_s" not in amc and "C_fit_s" in concat  # the loop overhead is measured where asked
    assert amc["test_auc_abs_diff"] == 0  # same seed, same batches: the same test metric either way


def test_data_path_figures():
    r = perf.bench_data_path(**TINY["data_path"])
    for k in ("load_samples_per_s", "train_step_samples_per_s", "ratio_load_over_consume"):
        _positive(r[k], k)


def test_image_layout_figures():
    r = perf.bench_image_layout(**TINY["image_layout"])
    for k, v in r["samples_per_s"].items():
        _positive(v, k)
    _positive(r["ratio_eval"], "ratio_eval")
    _positive(r["ratio_train"], "ratio_train")
    assert r["pooled_max_abs_diff"] <= 1e-4  # the same convolutions, to float32 rounding
    rows = [row for row in perf.build_rows({"image_layout": r}) if "channels-last" in row["figure"]]
    assert len(rows) == 3 and rows[0]["met"] in ("yes", "no") and rows[1]["met"] in ("yes", "no")


def test_tabular_attention_figures():
    r = perf.bench_tabular_attention(**TINY["tabular_attention"])
    for k, v in r["samples_per_s"].items():
        _positive(v, k)
    assert r["tokens_max_abs_diff"] <= 1e-4  # the same attention, to float32 rounding
    rows = [row for row in perf.build_rows({"tabular_attention": r}) if "FT-Transformer" in row["figure"]]
    assert len(rows) == 4 and all(row["met"] in ("yes", "no", "-") for row in rows)


def test_fused_attention_is_rtdls_function_and_steps_aside_where_it_is_not():
    import rtdl_revisiting_models as rtdl

    from bench.fast_paths import FusedAttention, fast_tabular_encoder
    from bench.registry import get

    torch.manual_seed(0)
    plain = get("tabular_encoder", "ft_transformer")(n_num=6, cat_cardinalities=[3], d_token=8, n_heads=2,
                                                      attention_dropout=0.0, ffn_dropout=0.0)
    fast = fast_tabular_encoder(copy.deepcopy(plain))
    kinds = [type(m) for m in fast.modules() if isinstance(m, rtdl.MultiheadAttention)]
    assert kinds and all(k is FusedAttention for k in kinds)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x, c = torch.randn(5, 6), torch.randint(0, 3, (5, 1))
    for training in (False, True):  # no dropout anywhere: the same function in both modes
        plain.train(training), fast.train(training)
        torch.testing.assert_close(fast(x, c).tokens, plain(x, c).tokens, atol=1e-5, rtol=1e-5)
    out = fast(x, c).pooled.square().sum()
    out.backward()
    assert all(p.grad is not None for p in fast.parameters())
    # attention dropout active in training: rtdl's own path, so the same random mask as rtdl's
    torch.manual_seed(0)
    plain_d = get("tabular_encoder", "ft_transformer")(n_num=6, cat_cardinalities=[3], d_token=8, n_heads=2,
                                                        attention_dropout=0.5, ffn_dropout=0.0)
    fast_d = fast_tabular_encoder(copy.deepcopy(plain_d)).train()
    plain_d.train()
    torch.manual_seed(1)
    a = plain_d(x, c).tokens
    torch.manual_seed(1)
    assert torch.equal(fast_d(x, c).tokens, a)


def test_image_batches_are_float32_channels_last_on_cpu():
    from bench.fast_paths import image_batch

    arr = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    x = image_batch(arr)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, torch.from_numpy(arr).float())  # the same values, another memory layout
    assert image_batch(torch.zeros(3, 5)).is_contiguous()  # not an image batch: left as it is


def test_image_encoders_are_placed_channels_last_on_cpu_with_unchanged_weights():
    """``place_image_encoder``: 4-d weights channels-last on a CPU, same values; the features agree to rounding."""
    import copy

    from bench.fast_paths import image_batch, place_image_encoder
    from bench.registry import get

    torch.manual_seed(0)
    enc = get("image_encoder", "timm")(model_name="resnet10t", in_chans=1, image_size=32).eval()
    fast = place_image_encoder(copy.deepcopy(enc), "cpu")
    convs = [p for p in fast.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), fast.state_dict().values()))
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    with torch.no_grad():
        diff = (enc(torch.from_numpy(x)).pooled - fast(image_batch(x)).pooled).abs().max()
    assert float(diff) <= 1e-4


def test_latency_figures():
    r = perf.bench_latency(**TINY["latency"])
    assert set(r["latency"]) == {"1", "2"}
    for per in r["latency"].values():
        for m in ("amf", "cross_attention"):
            _positive(per[m]["p50_ms"], m)
            _positive(per[m]["p90_ms"], m)
    for m in ("amf", "cross_attention"):
        _positive(r["params"][m], m)
        _positive(r["gmac_batch1"][m], m)
    _positive(r["ratio_cross_over_amf_p50_first_batch"], "ratio")
    assert r["device"].startswith("cpu")


def test_main_quick_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(perf.SIZES, "quick", TINY)
    out = tmp_path / "sub" / "perf.json"
    assert perf.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert set(report["results"]) == set(perf.BENCHMARKS)
    if not torch.cuda.is_available():  # the GPU sections say why they did not run, and add no rows
        assert report["results"]["ft_mamba_cuda"]["skipped"] == "no CUDA device"
        assert report["results"]["latency_cuda"]["skipped"] == "no CUDA device"
        assert not any(row["figure"].startswith("GPU: ") for row in report["table"])
    for key in ("machine", "torch", "date", "table"):
        assert report[key]
    for row in report["table"]:
        assert set(row) == {"figure", "value", "reference", "ratio", "target", "met"}
        assert row["met"] in ("yes", "no", "-")
        assert row["value"] is not None
    printed = capsys.readouterr().out
    assert "figure" in printed and "met" in printed
    cpu = report["machine"]["cpu"]  # what the CPU figures depend on, recorded beside them
    assert cpu["model"] and cpu["logical_cpus"] >= 1 and set(cpu["isa"]) <= set(perf_isa_flags())
    assert "CPU: " in printed and "ISA" in printed


def perf_isa_flags():
    from bench.profile import ISA_FLAGS

    return ISA_FLAGS


def test_only_runs_the_named_benchmarks(tmp_path, monkeypatch):
    monkeypatch.setitem(perf.SIZES, "quick", TINY)
    out = tmp_path / "perf.json"
    assert perf.main(["--quick", "--only", "data_path", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["results"]) == {"data_path"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_figures():
    r = perf.bench_ft_mamba_cuda(**TINY["ft_mamba_cuda"])
    for k, v in r["samples_per_s"].items():
        _positive(v, k)
    if r["mamba_ssm"]:
        assert r["max_rel_diff_twin_cpu_vs_kernels_tokens"] < 1e-4
    lt = perf.bench_latency(**TINY["latency_cuda"])
    assert lt["device"].startswith("cuda")


def test_gpu_rows():
    # the table's GPU rows, from a result of the shape bench_ft_mamba_cuda returns on a CUDA machine
    fc = {"mamba_ssm": "2.3.2", "samples_per_s": {"mamba_ssm_kernels": 9000.0, "twin_on_gpu": 3000.0,
                                                  "ft_transformer_h8": 4500.0, "ft_transformer_h1": 6000.0},
          "max_rel_diff_twin_cpu_vs_kernels_tokens": 2e-6, "max_rel_diff_twin_cpu_vs_kernels_grads": 3e-3,
          "ratio_kernels_over_twin_on_gpu": 3.0, "ratio_kernels_over_ft_transformer_h8": 2.0,
          "ratio_kernels_over_ft_transformer_h1": 1.5}
    rows = {r["figure"]: r for r in perf.build_rows({"ft_mamba_cuda": fc})}
    assert rows["GPU: FT-Mamba twin (CPU, fp32) vs mamba-ssm kernels, tokens max rel diff"]["met"] == "yes"
    assert rows["GPU: FT-Mamba twin (CPU, fp32) vs mamba-ssm kernels, grads max rel diff"]["met"] == "no"
    assert rows["GPU: FT-Mamba mamba-ssm kernels, samples/s (vs FT-Transformer 1 head(s))"]["ratio"] == 1.5
    without = perf.build_rows({"ft_mamba_cuda": {**fc, "mamba_ssm": None, "samples_per_s": {"twin_on_gpu": 3.0}}})
    assert [r["figure"] for r in without] == ["GPU: FT-Mamba twin on the GPU, samples/s (mamba-ssm not installed)"]


def test_cli_args():
    with pytest.raises(SystemExit):
        perf.main(["--no-such-flag"])
