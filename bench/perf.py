"""Performance benchmarks of the harness on the current machine (``python -m bench perf``).

Six benchmarks, each a function returning a plain dict of measured figures:

1. :func:`bench_ft_mamba` - FT-Mamba forward+backward throughput on CPU: our chunked scan vs the
   sequential reference scan vs mamba.py's parallel scan (same weights) vs FT-Transformer.
2. :func:`bench_frozen_sweep` - frozen fine-tuning: heads trained on cached features (what the
   harness does) vs a loop re-encoding every epoch with the frozen encoders; and the overhead of
   :func:`bench.train.fit` over a bare PyTorch loop doing the same optimizer steps.
3. :func:`bench_data_path` - random-batch loading from a memory-mapped ``.npy`` image cache vs
   the rate at which a trainable training step consumes batches.
4. :func:`bench_latency` - AMF vs cross-attention fusion modules at the AMF-MedIT setting
   (latency, parameters, GMac).
5. :func:`bench_ft_mamba_cuda` (CUDA machines) - the CPU twin against ``mamba-ssm``'s kernels:
   parity of outputs and gradients, and GPU throughput.
6. ``latency_cuda`` (CUDA machines) - :func:`bench_latency` on the GPU.

Timing: :func:`time.perf_counter` after warm-up; competing variants are run interleaved (A, B,
A, B, ...) in one process and the median over repeats is reported, so a concurrent load on the
machine hits every variant alike. Every number printed or saved is measured in the run; the
reference figures from the AMF-MedIT paper are labelled as such. No figure is asserted on.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.fast_paths import fast_tabular_encoder, image_batch, place_image_encoder

__all__ = ["bench_data_path", "bench_frozen_sweep", "bench_ft_mamba", "bench_image_layout", "bench_latency", "bench_tabular_attention", "main"]

N_FEATURES = 423  # the OL3I EHR table


def _log(msg: str) -> None:
    print(f"[perf] {msg}", file=sys.stderr, flush=True)


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time (s) of each ``fn()``, the functions called in turn ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------------------------------------
# 1. FT-Mamba on CPU


class _MambapyMixer(nn.Module):
    """mamba.py's ``MambaBlock`` (parallel scan) holding the weights of one of our mixers."""

    def __init__(self, ours: nn.Module):
        super().__init__()
        from mambapy.mamba import MambaBlock, MambaConfig

        cfg = MambaConfig(d_model=ours.d_model, n_layers=1, d_state=ours.d_state, expand_factor=ours.expand,
                          d_conv=ours.d_conv, pscan=True)
        self.block = MambaBlock(cfg)
        self.block.load_state_dict(ours.state_dict(), strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def bench_ft_mamba(
    *, n_features: int = N_FEATURES, batch: int = 64, d_token: int = 64, n_blocks: int = 2, d_state: int = 16,
    repeats: int = 3, seed: int = 0,
) -> dict[str, Any]:
    """FT-Mamba forward+backward samples/s: chunked vs sequential vs mamba.py vs FT-Transformer."""
    from bench.registry import get

    torch.manual_seed(seed)
    ft_mamba, ft_transformer = get("tabular_encoder", "ft_mamba"), get("tabular_encoder", "ft_transformer")
    chunked = ft_mamba(n_num=n_features, cat_cardinalities=[], d_token=d_token, n_blocks=n_blocks,
                       d_state=d_state, backend="cpu", scan="chunked")
    sequential = ft_mamba(n_num=n_features, cat_cardinalities=[], d_token=d_token, n_blocks=n_blocks,
                          d_state=d_state, backend="cpu", scan="sequential")
    sequential.load_state_dict(chunked.state_dict(), strict=True)
    eager = copy.deepcopy(chunked)  # the same chunked scan, each chunk as separate eager ops
    for block in eager.blocks:
        block.mixer.fused = False
    mambapy = copy.deepcopy(chunked)
    for block in mambapy.blocks:
        block.mixer = _MambapyMixer(block.mixer)
    models: dict[str, nn.Module] = {"chunked": chunked, "chunked_eager": eager, "sequential": sequential,
                                    "mambapy": mambapy}
    for heads in (8, 1):
        if d_token % heads == 0:
            models[f"ft_transformer_h{heads}"] = ft_transformer(
                n_num=n_features, cat_cardinalities=[], d_token=d_token, n_blocks=n_blocks, n_heads=heads)
    for m in models.values():
        m.train()

    x = torch.randn(batch, n_features)
    # correctness in the same run: the same weights through each scan
    with torch.no_grad():
        ref = sequential(x).tokens
        diffs = {name: float(((models[name](x).tokens - ref).abs().max() / ref.abs().max()).item())
                 for name in ("chunked", "chunked_eager", "mambapy")}
    from baselines.tabular.mamba_cpu import fused_scan_enabled, fused_scan_failure

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            model(x).pooled.square().mean().backward()
        return run

    secs = _interleaved({k: step(m) for k, m in models.items()}, repeats)
    out: dict[str, Any] = {
        "config": {"n_features": n_features, "batch": batch, "d_token": d_token, "n_blocks": n_blocks,
                   "d_state": d_state, "repeats": repeats, "threads": torch.get_num_threads()},
        "seconds_per_step": secs,
        "samples_per_s": {k: batch / v for k, v in secs.items()},
        "chunks_fused": fused_scan_enabled() and fused_scan_failure() is None,
        "fused_failure": fused_scan_failure() if fused_scan_enabled() else "BENCH_FUSED_SCAN=0: not compiled",
        "max_rel_diff_chunked_vs_sequential": diffs["chunked"],
        "max_rel_diff_chunked_eager_vs_sequential": diffs["chunked_eager"],
        "max_rel_diff_mambapy_vs_sequential": diffs["mambapy"],
    }
    sps = out["samples_per_s"]
    out["ratio_chunked_over_mambapy"] = sps["chunked"] / sps["mambapy"]
    out["ratio_chunked_over_sequential"] = sps["chunked"] / sps["sequential"]
    out["ratio_chunked_over_chunked_eager"] = sps["chunked"] / sps["chunked_eager"]
    for heads in (8, 1):
        if f"ft_transformer_h{heads}" in sps:
            out[f"ratio_chunked_over_ft_transformer_h{heads}"] = sps["chunked"] / sps[f"ft_transformer_h{heads}"]
    return out


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def bench_ft_mamba_cuda(
    *, n_features: int = N_FEATURES, batch: int = 64, d_token: int = 64, n_blocks: int = 2, d_state: int = 16,
    steps: int = 20, repeats: int = 5, seed: int = 0,
) -> dict[str, Any]:
    """On a CUDA machine: FT-Mamba on ``mamba_ssm``'s kernels against the CPU twin (same weights).

    Parity: the twin on the CPU in float32 (as the CPU machine runs it) vs the kernels on the GPU,
    tokens and every parameter's gradient (TF32 off). Speed: forward+backward samples/s on the GPU of
    the kernels, the twin moved to the GPU, and FT-Transformer of the same size.
    """
    from baselines.tabular.mamba_cpu import mamba_ssm_available
    from bench.profile import device_description
    from bench.registry import get

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    ft_mamba, ft_transformer = get("tabular_encoder", "ft_mamba"), get("tabular_encoder", "ft_transformer")
    kw = {"n_num": n_features, "cat_cardinalities": [], "d_token": d_token, "n_blocks": n_blocks}
    torch.manual_seed(seed)
    twin = ft_mamba(**kw, d_state=d_state, backend="cpu")
    out: dict[str, Any] = {
        "config": {"n_features": n_features, "batch": batch, "d_token": d_token, "n_blocks": n_blocks,
                   "d_state": d_state, "steps": steps, "repeats": repeats},
        "device": device_description("cuda"),
        "mamba_ssm": None,
    }
    models: dict[str, nn.Module] = {}
    x = torch.randn(batch, n_features)
    if mamba_ssm_available():
        import mamba_ssm

        out["mamba_ssm"] = getattr(mamba_ssm, "__version__", "unknown")
        kernels = ft_mamba(**kw, d_state=d_state, backend="cuda").cuda()
        twin.load_state_dict({k: v.cpu() for k, v in kernels.state_dict().items()}, strict=True)
        old_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            kernels.zero_grad(set_to_none=True)
            twin.zero_grad(set_to_none=True)
            tok_k = kernels(x.cuda()).tokens
            tok_k.square().mean().backward()
            tok_t = twin(x).tokens
            tok_t.square().mean().backward()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
        grads_k = dict(kernels.named_parameters())
        out["max_rel_diff_twin_cpu_vs_kernels_tokens"] = _rel_diff(tok_t, tok_k)
        out["max_rel_diff_twin_cpu_vs_kernels_grads"] = max(
            _rel_diff(p.grad, grads_k[n].grad) for n, p in twin.named_parameters())
        models["mamba_ssm_kernels"] = kernels
    models["twin_on_gpu"] = copy.deepcopy(twin).cuda()
    for heads in (8, 1):
        if d_token % heads == 0:
            models[f"ft_transformer_h{heads}"] = ft_transformer(**kw, n_heads=heads).cuda()
    xg = x.cuda()

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                model.zero_grad(set_to_none=True)
                model(xg).pooled.square().mean().backward()
            torch.cuda.synchronize()
        return run

    for m in models.values():
        m.train()
    secs = _interleaved({k: step(m) for k, m in models.items()}, repeats, warmup=2)
    sps = {k: batch * steps / v for k, v in secs.items()}
    out["samples_per_s"] = sps
    if "mamba_ssm_kernels" in sps:
        out["ratio_kernels_over_twin_on_gpu"] = sps["mamba_ssm_kernels"] / sps["twin_on_gpu"]
        for heads in (8, 1):
            if f"ft_transformer_h{heads}" in sps:
                out[f"ratio_kernels_over_ft_transformer_h{heads}"] = (
                    sps["mamba_ssm_kernels"] / sps[f"ft_transformer_h{heads}"])
    return out


# ------------------------------------------------------------------------------------------------
# 2. frozen sweep: cached features vs re-encoding


def _synthetic(n: int, image_size: int, cache_dir: str):
    from bench.data import fit_preprocessor
    from bench.registry import get

    data = get("dataset", "ol3i-synthetic")(n=n, image_size=image_size, seed=0, cache_dir=cache_dir)
    x_num = fit_preprocessor(data).transform(data.x_num).astype(np.float32)
    return data, x_num


# the cpu budget's tabular encoders (bench/suites/_budgets.yaml)
TABULAR = {"mlp": {}, "ft_transformer": {"d_token": 32, "n_heads": 1},
           "ft_mamba": {"d_token": 32, "d_state": 16, "pooling": "mean"}}


def _encoders(image_size: int, n_num: int, tabular: str = "mlp", tokens: bool = False):
    from bench.registry import get

    torch.manual_seed(0)
    img = place_image_encoder(get("image_encoder", "timm")(model_name="resnet10t", in_chans=1, image_size=image_size))
    tab = fast_tabular_encoder(get("tabular_encoder", tabular)(n_num=n_num, cat_cardinalities=[], **TABULAR[tabular]))
    if hasattr(tab, "tokens_needed"):
        tab.tokens_needed = tokens  # as in the suite: per-feature tokens only when a fusion reads them
    return img, tab


def default_suite_settings() -> tuple[tuple[str, ...], dict[str, dict], int]:
    """The default suite's (``ol3i-incomplete``, cpu budget) fusions in its order, their settings, and
    the batch size it fine-tunes frozen-encoder heads with."""
    from bench.suite import load_suite

    suite = load_suite("ol3i-incomplete", budget="cpu")
    frozen_batch = int(suite.budget["finetune"]["frozen"]["batch_size"])
    return tuple(suite.fusions), dict(suite.budget.get("fusions", {})), frozen_batch


def _sweep_totals(fusion_figures: dict[str, dict], encode_once_s: float) -> tuple[float, float]:
    """(re-encoding fits, one encoding + cached fits) summed over a sweep's fusions, in seconds."""
    b = sum(f["B_reencode_fit_s"] for f in fusion_figures.values())
    return b, encode_once_s + sum(f["A_cached_fit_s"] for f in fusion_figures.values())


def bench_frozen_sweep(
    *, n: int = 2000, image_size: int = 64, epochs: int = 30, batch_size: int | None = None,
    fusions: tuple[str, ...] | None = ("concat", "amf"), seeds: tuple[int, ...] = (2022,), repeats: int = 3,
    lr: float = 1e-3, tabular: str = "mlp", overhead_fusions: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A frozen sweep (every fusion x seed): heads trained on cached features (A, what the harness does)
    vs a loop that re-encodes every epoch with the frozen encoders (B); and ``fit()`` vs a bare loop (C).

    A encodes the train, validation and test rows once (each split in chunks); B encodes the training
    rows again at the start of every epoch's training and the validation rows at the start of every
    validation, in the same chunks, so both train on the same bits and must reach identical test
    metrics. The encoders' one-time start-up is excluded from both (a warm-up call before timing).

    ``fusions=None`` sweeps the default suite's fusions. Each fusion gets what it gets in the suite: the
    pooled tabular vector, or every per-feature token for a fusion that reads them (AMC). A and B use
    the same seed, so the same initial weights and batch order; their test logits are compared. C (the
    harness's overhead, a property of the training loop rather than of the head) runs for
    ``overhead_fusions`` (default: all swept fusions) at the first seed. Fusions are built with the cpu
    budget's settings (e.g. the 64-d cross-attention) and trained with its frozen batch size unless
    ``batch_size`` is given. Test metrics and logits are compared exactly.
    """
    from bench.api import FusionDims, FusionOutput
    from bench.metrics import evaluate
    from bench.pipeline import encode_images, encode_tabular
    from bench.registry import get
    from bench.train import FitConfig, LossConfig, epoch_indices, fit, make_optimizer, predict, task_loss

    suite_fusions, fusion_kwargs, suite_batch_size = default_suite_settings()
    batch_size = suite_batch_size if batch_size is None else int(batch_size)
    fusions = tuple(fusions) if fusions is not None else suite_fusions
    overhead_fusions = fusions if overhead_fusions is None else tuple(overhead_fusions)
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        data, x_num = _synthetic(n, image_size, tmp)
        images = np.asarray(data.images)
    train, val, test = data.indices("train"), data.indices("val"), data.indices("test")
    reads_tokens = {name: bool(getattr(get("fusion", name), "needs_tabular_tokens", False)) for name in fusions}
    any_tokens = any(reads_tokens.values())
    img_enc, tab_enc = _encoders(image_size, x_num.shape[1], tabular, tokens=any_tokens)
    img_enc.eval()
    tab_enc.eval()
    x_cat = np.zeros((len(x_num), 0), np.int64)

    def encode_rows(rows: np.ndarray) -> list[torch.Tensor]:
        """(image tokens, image pooled, tabular tokens, tabular pooled) of ``rows``, in their order."""
        img = encode_images(img_enc, images[rows])  # the harness's cache-building chunks
        tab = encode_tabular(tab_enc, x_num[rows], x_cat[rows], keep_tokens=any_tokens)
        return [*img, *tab]

    # the encoders' one-time start-up (threads, kernel choice, first-touch memory at full chunk size)
    # is timed on neither side
    encode_rows(train[:batch_size])
    splits = {"train": train, "val": val, "test": test}
    t0 = time.perf_counter()  # the sweep encodes once: every fusion and seed reads these tensors
    per_split = {k: encode_rows(rows) for k, rows in splits.items()}
    encode_s = time.perf_counter() - t0
    position = np.empty(len(x_num), np.int64)  # row -> its position within its split
    split_of = np.empty(len(x_num), object)  # row -> its split
    for k, rows in splits.items():
        position[rows], split_of[rows] = np.arange(len(rows)), k

    def forward_from(feats: dict[str, list[torch.Tensor]], model: nn.Module, idx: np.ndarray) -> FusionOutput:
        split = split_of[idx[0]]
        img_tok, img_pool, tab_tok, tab_pool = feats[split]
        at = torch.from_numpy(position[idx])
        tokens = tab_tok[at] if model.needs_tabular_tokens else tab_pool[at][:, None]
        return model(img_tok[at], img_pool[at], tokens, tab_pool[at])

    def forward_cached(model: nn.Module, idx: np.ndarray) -> FusionOutput:
        return forward_from(per_split, model, idx)

    # B: a loop that re-encodes every epoch: the training rows when an epoch's training starts, the
    # validation rows when its validation starts; each split in the same chunks as the one encoding,
    # so the features are the same bits and A and B must give identical test metrics. (It encodes
    # every training row each epoch, also those the epoch's sampler leaves out; a loop re-encoding
    # each batch encodes only the sampled rows, but in other chunks, so its features differ in the
    # last bits and its test AUC can differ where two test logits nearly tie.)
    fresh: dict[str, list[torch.Tensor]] = {}

    def forward_encode(model: nn.Module, idx: np.ndarray) -> FusionOutput:
        split = "train" if model.training else split_of[idx[0]]
        if split not in fresh:
            fresh.clear()  # the other split's features are from the previous phase: encode again
            fresh[split] = encode_rows(splits[split])
        return forward_from(fresh, model, idx)

    loss = LossConfig(name="weighted_ce", sampler=(0.5, 5.0))  # AMF-MedIT A.3
    out: dict[str, Any] = {
        "config": {"n": n, "image_size": image_size, "epochs": epochs, "batch_size": batch_size,
                   "n_train": len(train), "n_val": len(val), "n_test": len(test), "image_encoder": "resnet10t",
                   "tabular_encoder": tabular, "loss": "weighted_ce, sampler (0.5, 5)", "repeats_C": repeats,
                   "seeds": list(seeds), "fusions": list(fusions), "overhead_fusions": list(overhead_fusions)},
        "encode_once_s": encode_s,
        "fusions": {},
    }

    for name in fusions:
        fusion_cls = get("fusion", name)
        dims = FusionDims(image_pooled=img_enc.d_out, image_token=img_enc.d_token, tabular_pooled=tab_enc.d_out,
                          tabular_token=tab_enc.d_token if reads_tokens[name] else tab_enc.d_out,
                          image_tokens=int(img_enc.n_tokens),
                          tabular_tokens=int(tab_enc.n_tokens) if reads_tokens[name] else 1)

        kwargs = dict(fusion_kwargs.get(name, {}))

        def build(seed: int, fusion_cls=fusion_cls, dims=dims, kwargs=kwargs) -> nn.Module:
            torch.manual_seed(seed)
            return fusion_cls(dims=dims, n_classes=1, **kwargs)

        def run_fit(forward, seed: int) -> tuple[float, np.ndarray]:
            model = build(seed)
            cfg = FitConfig(lr=lr, max_epochs=epochs, patience=epochs, batch_size=batch_size, seed=seed)
            t = time.perf_counter()
            fit(model, forward, data.y, train, val, cfg, task=data.task, loss=loss)
            secs = time.perf_counter() - t
            return secs, predict(model, forward_cached, test)

        per_seed = []
        for seed in seeds:
            _log(f"frozen sweep {name} seed {seed}: A (cached) then B (re-encode), {epochs} epochs each")
            a_s, a_logits = run_fit(forward_cached, seed)
            b_s, b_logits = run_fit(forward_encode, seed)
            per_seed.append({"seed": seed, "A_s": a_s, "B_s": b_s,
                             "auc_A": float(evaluate(data.task, data.y[test], a_logits)["value"]),
                             "auc_B": float(evaluate(data.task, data.y[test], b_logits)["value"]),
                             "logits_max_abs_diff": float(np.abs(a_logits - b_logits).max())})
        a_sum, b_sum = sum(r["A_s"] for r in per_seed), sum(r["B_s"] for r in per_seed)
        fig: dict[str, Any] = {
            "reads_tabular_tokens": reads_tokens[name],
            "per_seed": per_seed,
            "A_cached_fit_s": a_sum,
            "A_total_s_incl_encoding": encode_s + a_sum,
            "B_reencode_fit_s": b_sum,
            "speedup_B_over_A_total": b_sum / (encode_s + a_sum),
            "speedup_B_over_A_fit_only": b_sum / a_sum,
            "test_auc_A": statistics.fmean(r["auc_A"] for r in per_seed),
            "test_auc_B": statistics.fmean(r["auc_B"] for r in per_seed),
            "test_auc_abs_diff": max(abs(r["auc_A"] - r["auc_B"]) for r in per_seed),
            "test_logits_max_abs_diff": max(r["logits_max_abs_diff"] for r in per_seed),
        }
        if name in overhead_fusions:
            seed = seeds[0]
            cfg = FitConfig(lr=lr, max_epochs=epochs, patience=epochs, batch_size=batch_size, seed=seed)

            # C: fit() vs a bare loop with the same batches and optimizer steps, on the cached tensors
            def bare(with_val: bool, build=build, seed=seed) -> Callable[[], None]:
                def run() -> None:
                    model = build(seed)
                    torch.manual_seed(seed)
                    rng = np.random.default_rng(seed)
                    opt = make_optimizer(list(model.parameters()), lr=lr)  # as fit() does
                    y_t = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
                    for _ in range(epochs):
                        model.train()
                        order = epoch_indices(train, data.y, loss, rng)
                        for start in range(0, len(order), batch_size):
                            batch = order[start : start + batch_size]
                            if len(batch) < 2 and len(order) > 1:
                                continue
                            o = forward_cached(model, batch)
                            batch_loss = task_loss(o.logits, y_t[batch], data.task, loss)
                            for aux in o.aux_losses.values():
                                batch_loss = batch_loss + aux
                            opt.zero_grad(set_to_none=True)
                            batch_loss.backward()
                            opt.step()
                        if with_val:
                            evaluate(data.task, data.y[val], predict(model, forward_cached, val))
                return run

            def harness(build=build, seed=seed, cfg=cfg) -> None:
                fit(build(seed), forward_cached, data.y, train, val, cfg, task=data.task, loss=loss)

            c = _interleaved({"fit": harness, "bare_with_val": bare(True), "bare_no_val": bare(False)}, repeats)
            fig.update({
                "C_fit_s": c["fit"],
                "C_bare_with_val_s": c["bare_with_val"],
                "C_bare_no_val_s": c["bare_no_val"],
                "overhead_pct_vs_bare_with_val": 100.0 * (c["fit"] / c["bare_with_val"] - 1.0),
                "overhead_pct_vs_bare_no_val": 100.0 * (c["fit"] / c["bare_no_val"] - 1.0),
            })
        out["fusions"][name] = fig
    b_all, a_all = _sweep_totals(out["fusions"], encode_s)
    out["sweep"] = {"B_reencode_s": b_all, "A_encode_once_plus_cached_s": a_all, "speedup": b_all / a_all,
                    "identical_test_metric": all(f["test_auc_abs_diff"] == 0 for f in out["fusions"].values()),
                    "test_logits_max_abs_diff": max(f["test_logits_max_abs_diff"] for f in out["fusions"].values())}
    return out


# ------------------------------------------------------------------------------------------------
# 3. data path


def bench_data_path(
    *, n: int = 8139, image_size: int = 64, batch: int = 128, n_batches: int = 20, repeats: int = 3, seed: int = 0,
) -> dict[str, Any]:
    """Random 128-batches from a memory-mapped float32 .npy vs a trainable step's consumption rate."""
    from bench.api import FusionDims, MultimodalModel
    from bench.registry import get
    from bench.train import LossConfig, task_loss

    rng = np.random.default_rng(seed)
    img_enc, tab_enc = _encoders(image_size, N_FEATURES)
    dims = FusionDims(image_pooled=img_enc.d_out, image_token=img_enc.d_token, tabular_pooled=tab_enc.d_out,
                      tabular_token=tab_enc.d_out, image_tokens=int(img_enc.n_tokens), tabular_tokens=1)
    model = MultimodalModel(img_enc, tab_enc, get("fusion", "concat")(dims=dims, n_classes=1)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_num = torch.randn(batch, N_FEATURES)
    y = torch.from_numpy(rng.integers(0, 2, batch))
    loss_cfg = LossConfig(name="weighted_ce")

    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        path = Path(tmp) / "images.npy"
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 1, image_size, image_size))
        for i in range(0, n, 1024):
            arr[i : i + 1024] = rng.random((min(1024, n - i), 1, image_size, image_size), dtype=np.float32)
        arr.flush()
        del arr
        mm = np.load(path, mmap_mode="r")
        batches = [np.sort(rng.choice(n, size=batch, replace=False)) for _ in range(n_batches)]
        images = image_batch(mm[batches[0]])  # as the harness feeds a trainable step (bench.fast_paths)

        def load() -> None:
            for idx in batches:
                torch.from_numpy(np.array(mm[idx]))

        def train_step() -> None:
            out = model(images, x_num, None)
            batch_loss = task_loss(out.logits, y, "binary", loss_cfg)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()

        secs = _interleaved({"load": load, "train_step": train_step}, repeats)
    load_sps = batch * n_batches / secs["load"]
    step_sps = batch / secs["train_step"]
    return {
        "config": {"n": n, "image_size": image_size, "batch": batch, "batches_per_repeat": n_batches,
                   "repeats": repeats, "file_mb": n * image_size * image_size * 4 / 2**20,
                   "note": "file freshly written, so mostly in the page cache; model resnet10t + mlp + concat"},
        "load_samples_per_s": load_sps,
        "train_step_samples_per_s": step_sps,
        "ratio_load_over_consume": load_sps / step_sps,
    }


def _encoder_inference(m: torch.nn.Module, x: torch.Tensor):
    """An encoder's output in eval mode without autograd (a timed inference)."""
    m.eval()
    with torch.inference_mode():
        return m(x)


def _encoder_step(m: torch.nn.Module, *x: torch.Tensor) -> None:
    """A timed training step's forward and backward (a loss on the pooled output)."""
    m.train()
    m.zero_grad(set_to_none=True)
    m(*x).pooled.square().mean().backward()


def bench_image_layout(
    *, image_size: int = 64, in_chans: int = 1, eval_batch: int = 256, train_batch: int = 128, repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """The harness's channels-last image encoders on a CPU (:mod:`bench.fast_paths`: weights placed by
    ``place_image_encoder``, batches by ``image_batch``) against PyTorch's default layout: the suites'
    image encoder (resnet10t), inference and a training step, same weights. 1 channel (OL3I) by default."""
    from bench.registry import get

    torch.manual_seed(seed)
    enc = get("image_encoder", "timm")(model_name="resnet10t", in_chans=in_chans, image_size=image_size)
    fast_enc = place_image_encoder(copy.deepcopy(enc), "cpu")
    rng = np.random.default_rng(seed)
    ev = rng.random((eval_batch, in_chans, image_size, image_size), dtype=np.float32)
    tr = rng.random((train_batch, in_chans, image_size, image_size), dtype=np.float32)
    default = {"eval": torch.from_numpy(ev), "train": torch.from_numpy(tr)}
    fast = {"eval": image_batch(ev), "train": image_batch(tr)}

    def infer(m: torch.nn.Module, x: torch.Tensor):
        return _encoder_inference(m, x).pooled

    diff = float((infer(enc, default["eval"]) - infer(fast_enc, fast["eval"])).abs().max())
    secs = _interleaved({"eval_default": lambda: infer(enc, default["eval"]),
                         "eval_channels_last": lambda: infer(fast_enc, fast["eval"]),
                         "train_default": lambda: _encoder_step(enc, default["train"]),
                         "train_channels_last": lambda: _encoder_step(fast_enc, fast["train"])}, repeats)
    return {
        "config": {"model": "resnet10t", "image_size": image_size, "in_chans": in_chans, "eval_batch": eval_batch,
                   "train_batch": train_batch, "repeats": repeats, "weights": "channels-last (place_image_encoder)"},
        "samples_per_s": {"eval_default": eval_batch / secs["eval_default"],
                          "eval_channels_last": eval_batch / secs["eval_channels_last"],
                          "train_default": train_batch / secs["train_default"],
                          "train_channels_last": train_batch / secs["train_channels_last"]},
        "ratio_eval": secs["eval_default"] / secs["eval_channels_last"],
        "ratio_train": secs["train_default"] / secs["train_channels_last"],
        "pooled_max_abs_diff": diff,
    }


def bench_tabular_attention(
    *, n_num: int = 423, d_token: int = 32, n_heads: int = 1, eval_batch: int = 256, train_batch: int = 128,
    repeats: int = 5, seed: int = 0,
) -> dict[str, Any]:
    """FT-Transformer with the harness's fused attention (:func:`bench.fast_paths.fast_tabular_encoder`)
    against rtdl's own, at the ``cpu`` budget's setting (423 features, d_token 32, 1 head, attention
    dropout 0): inference and a training step, same weights; and a training step of rtdl's with its default
    attention dropout (0.15), which the cpu budget turned off."""
    from bench.registry import get

    torch.manual_seed(seed)
    enc = get("tabular_encoder", "ft_transformer")(n_num=n_num, cat_cardinalities=[], d_token=d_token,
                                                   n_heads=n_heads, attention_dropout=0.0)
    fast_enc = fast_tabular_encoder(copy.deepcopy(enc))
    dropout_enc = copy.deepcopy(enc)  # rtdl's default attention dropout (what the cpu budget turned off)
    for m in dropout_enc.modules():
        if hasattr(m, "_n_heads"):
            m.dropout = torch.nn.Dropout(0.15)
    gen = torch.Generator().manual_seed(seed)
    ev, tr = torch.randn(eval_batch, n_num, generator=gen), torch.randn(train_batch, n_num, generator=gen)

    def infer(m: torch.nn.Module, x: torch.Tensor):
        return _encoder_inference(m, x).tokens

    diff = float((infer(enc, ev) - infer(fast_enc, ev)).abs().max())
    secs = _interleaved({"eval_rtdl": lambda: infer(enc, ev), "eval_fused": lambda: infer(fast_enc, ev),
                         "train_rtdl": lambda: _encoder_step(enc, tr), "train_fused": lambda: _encoder_step(fast_enc, tr),
                         "train_rtdl_attention_dropout": lambda: _encoder_step(dropout_enc, tr)}, repeats)
    return {
        "config": {"model": "ft_transformer", "n_num": n_num, "d_token": d_token, "n_heads": n_heads,
                   "attention_dropout": 0.0, "eval_batch": eval_batch, "train_batch": train_batch, "repeats": repeats},
        "samples_per_s": {k: (eval_batch if k.startswith("eval") else train_batch) / v for k, v in secs.items()},
        "ratio_eval": secs["eval_rtdl"] / secs["eval_fused"],
        "ratio_train": secs["train_rtdl"] / secs["train_fused"],
        "ratio_train_vs_attention_dropout": secs["train_rtdl_attention_dropout"] / secs["train_fused"],
        "tokens_max_abs_diff": diff,
    }


# ------------------------------------------------------------------------------------------------
# 4. latency profile


def bench_latency(
    *, batch_sizes: tuple[int, ...] = (1, 8, 32, 128), image_dim: int = 2048, image_tokens: int = 256,
    tab_dim: int = 64, d_model: int = 512, n_layers: int = 2, runs: int = 60, rounds: int = 3, seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """AMF vs cross-attention fusion at the AMF-MedIT setting: p50/p90 latency, params, GMac.

    ``device="cuda"`` times on the GPU (CUDA events) and is skipped where there is none.
    """
    from bench.api import FusionDims
    from bench.profile import count_gmac, count_parameters, device_description, measure_module_latency
    from bench.registry import get

    if device != "cpu" and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    torch.manual_seed(seed)
    dims = FusionDims(image_pooled=image_dim, image_token=image_dim, tabular_pooled=tab_dim, tabular_token=tab_dim,
                      image_tokens=image_tokens, tabular_tokens=1)
    modules = {
        "amf": get("fusion", "amf")(dims=dims, n_classes=1).eval(),
        "cross_attention": get("fusion", "cross_attention")(dims=dims, n_classes=1, d_model=d_model,
                                                            n_layers=n_layers).eval(),
    }

    def inputs(b: int, on: str = "cpu") -> tuple:
        return tuple(t.to(on) for t in (torch.randn(b, image_tokens, image_dim), torch.randn(b, image_dim),
                                        torch.randn(b, 1, tab_dim), torch.randn(b, tab_dim)))

    out: dict[str, Any] = {
        "config": {"image_dim": image_dim, "image_tokens": image_tokens, "tab_dim": tab_dim, "d_model": d_model,
                   "n_layers": n_layers, "rounds": rounds},
        "device": device_description(device),
        "params": {k: count_parameters(m) for k, m in modules.items()},
        "gmac_batch1": {}, "uncounted_ops_batch1": {}, "latency": {},
    }
    for k, m in modules.items():
        g = count_gmac(m, inputs(1))
        out["gmac_batch1"][k] = g.gmac
        out["uncounted_ops_batch1"][k] = g.uncounted_ops
        m.to(device)
    for b in batch_sizes:
        x = inputs(b, device)
        n_runs = max(5, runs // max(1, b // 8))  # fewer runs at large batches (each call is longer)
        per_round = max(3, n_runs // rounds)
        res: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p90": []} for k in modules}
        for r in range(rounds):  # interleaved rounds; median over rounds of each round's percentile
            for k, m in modules.items():
                lat = measure_module_latency(m, x, warmup=2 if r == 0 else 1, runs=per_round)
                res[k]["p50"].append(lat.p50_ms)
                res[k]["p90"].append(lat.p90_ms)
        out["latency"][str(b)] = {
            k: {"p50_ms": statistics.median(v["p50"]), "p90_ms": statistics.median(v["p90"]),
                "runs": per_round * rounds} for k, v in res.items()
        }
    first = str(batch_sizes[0])
    out["ratio_cross_over_amf_p50"] = {
        str(b): out["latency"][str(b)]["cross_attention"]["p50_ms"] / out["latency"][str(b)]["amf"]["p50_ms"]
        for b in batch_sizes
    }
    out["ratio_cross_over_amf_p50_first_batch"] = out["ratio_cross_over_amf_p50"][first]
    return out


# ------------------------------------------------------------------------------------------------
# report

# AMF-MedIT, Table 3 (RTX 4090): latency at batch 1, parameters, GMac of the fusion modules
PAPER = {"cross_ms": 1.54, "amf_ms": 0.12, "cross_params_m": 9.49, "amf_params_m": 8.53,
         "cross_gmac": 3.67, "amf_gmac": 0.0085}


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    av = abs(v)
    if av == 0:
        return "0"
    if av >= 1000:
        return f"{v:,.0f}"
    if av >= 10:
        return f"{v:.1f}"
    if av >= 0.01:
        return f"{v:.3g}"
    return f"{v:.2e}"


def _row(figure: str, value: Any, reference: Any = None, ratio: float | None = None, target: str = "-",
         met: bool | None = None) -> dict[str, Any]:
    return {"figure": figure, "value": value, "reference": reference, "ratio": ratio, "target": target,
            "met": "-" if met is None else ("yes" if met else "no")}


def build_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fm = res.get("ft_mamba")
    if fm:
        s = fm["samples_per_s"]
        rows.append(_row("FT-Mamba chunked, samples/s (vs mamba.py pscan)", s["chunked"], s["mambapy"],
                         fm["ratio_chunked_over_mambapy"], ">= 3", fm["ratio_chunked_over_mambapy"] >= 3))
        rows.append(_row("FT-Mamba chunked, samples/s (vs sequential scan)", s["chunked"], s["sequential"],
                         fm["ratio_chunked_over_sequential"]))
        if "chunked_eager" in s:  # older result files lack it
            fused = "fused by torch.compile" if fm.get("chunks_fused") else "NOT fused: " + str(fm.get("fused_failure"))
            rows.append(_row(f"FT-Mamba chunked ({fused}), samples/s (vs the same chunks as eager ops)",
                             s["chunked"], s["chunked_eager"], fm["ratio_chunked_over_chunked_eager"]))
        for h in (8, 1):
            key = f"ratio_chunked_over_ft_transformer_h{h}"
            if key in fm:
                rows.append(_row(f"FT-Mamba chunked, samples/s (vs FT-Transformer {h} head(s))", s["chunked"],
                                 s[f"ft_transformer_h{h}"], fm[key], ">= 1", fm[key] >= 1))
        d = fm["max_rel_diff_chunked_vs_sequential"]
        rows.append(_row("FT-Mamba chunked vs sequential, max rel diff", d, None, None, "<= 1e-5", d <= 1e-5))
        rows.append(_row("FT-Mamba mamba.py vs sequential, max rel diff", fm["max_rel_diff_mambapy_vs_sequential"]))
    fs = res.get("frozen_sweep")
    if fs:
        # the whole sweep: every fusion x seed re-encoding each epoch vs one shared encoding + cached fits
        sw, cfg = fs["sweep"], fs["config"]
        rows.append(_row(f"frozen sweep, {len(cfg['fusions'])} fusions x {len(cfg['seeds'])} seeds, batch "
                         f"{cfg['batch_size']}: re-encode s (vs encode once + cached fits s)",
                         sw["B_reencode_s"], sw["A_encode_once_plus_cached_s"], sw["speedup"], ">= 20x",
                         sw["speedup"] >= 20))
        pooled = {k: f for k, f in fs["fusions"].items() if not f.get("reads_tabular_tokens")}
        if 0 < len(pooled) < len(fs["fusions"]):  # the same measurements, without the per-feature-token heads
            b_p, a_p = _sweep_totals(pooled, fs["encode_once_s"])
            rows.append(_row(f"  same sweep without the heads that read every tabular token "
                             f"({', '.join(k for k in fs['fusions'] if k not in pooled)})", b_p, a_p, b_p / a_p,
                             ">= 20x", b_p / a_p >= 20))
        rows.append(_row(f"frozen sweep: every test AUC identical, cached vs re-encode (logits max abs diff "
                         f"{sw['test_logits_max_abs_diff']:.1e})", sw["identical_test_metric"], None, None, "equal",
                         sw["identical_test_metric"]))
        for name, f in fs["fusions"].items():
            rows.append(_row(f"{name}: re-encode fit s (vs cached fit only s)", f["B_reencode_fit_s"],
                             f["A_cached_fit_s"], f["speedup_B_over_A_fit_only"]))
            rows.append(_row(f"{name}: test AUC cached (vs re-encode), logits max abs diff "
                             f"{f['test_logits_max_abs_diff']:.1e}", f["test_auc_A"], f["test_auc_B"], None,
                             "equal", f["test_auc_abs_diff"] == 0))
            if "C_fit_s" not in f:
                continue
            ov = f["overhead_pct_vs_bare_with_val"]
            rows.append(_row(f"{name}: fit() s (vs bare loop + val s), overhead %", f["C_fit_s"],
                             f["C_bare_with_val_s"], f["C_fit_s"] / f["C_bare_with_val_s"],
                             f"<= 10% ({ov:+.1f}%)", ov <= 10))
            ov2 = f["overhead_pct_vs_bare_no_val"]
            rows.append(_row(f"{name}: fit() s (vs bare loop, no val s), overhead %", f["C_fit_s"],
                             f["C_bare_no_val_s"], f["C_fit_s"] / f["C_bare_no_val_s"], f"info ({ov2:+.1f}%)"))
    dp = res.get("data_path")
    if dp:
        r = dp["ratio_load_over_consume"]
        rows.append(_row("mmap batch loading, samples/s (vs train step samples/s)", dp["load_samples_per_s"],
                         dp["train_step_samples_per_s"], r, ">= 3", r >= 3))
    il = res.get("image_layout")
    if il:
        s = il["samples_per_s"]
        chans = il["config"].get("in_chans", 1)
        for what, label in (("eval", "inference"), ("train", "training step")):
            r = il[f"ratio_{what}"]
            rows.append(_row(f"resnet10t {label}, {chans}-channel, channels-last weights + batches (bench.fast_paths), "
                             "samples/s (vs default layout)", s[f"{what}_channels_last"], s[f"{what}_default"], r,
                             "> 1", r > 1))
        d = il["pooled_max_abs_diff"]
        rows.append(_row("resnet10t channels-last vs default layout, pooled features max abs diff", d, None, None,
                         "<= 1e-4", d <= 1e-4))
    ta = res.get("tabular_attention")
    if ta:
        s = ta["samples_per_s"]
        for what, label in (("eval", "inference"), ("train", "training step")):
            r = ta[f"ratio_{what}"]
            rows.append(_row(f"FT-Transformer {label}, fused attention (bench.fast_paths), samples/s (vs rtdl's)",
                             s[f"{what}_fused"], s[f"{what}_rtdl"], r, "> 1", r > 1))
        r = ta["ratio_train_vs_attention_dropout"]
        rows.append(_row("FT-Transformer training step, fused attention without attention dropout (cpu budget), "
                         "samples/s (vs rtdl's with dropout 0.15)", s["train_fused"], s["train_rtdl_attention_dropout"],
                         r, "info"))
        d = ta["tokens_max_abs_diff"]
        rows.append(_row("FT-Transformer fused vs rtdl attention, output tokens max abs diff", d, None, None,
                         "<= 1e-4", d <= 1e-4))
    fc = res.get("ft_mamba_cuda")
    if fc and "skipped" not in fc:
        s = fc["samples_per_s"]
        if fc["mamba_ssm"]:
            for what in ("tokens", "grads"):
                d = fc[f"max_rel_diff_twin_cpu_vs_kernels_{what}"]
                rows.append(_row(f"GPU: FT-Mamba twin (CPU, fp32) vs mamba-ssm kernels, {what} max rel diff", d,
                                 None, None, "<= 1e-4" if what == "tokens" else "<= 1e-3",
                                 d <= (1e-4 if what == "tokens" else 1e-3)))
            rows.append(_row("GPU: FT-Mamba mamba-ssm kernels, samples/s (vs twin on the GPU)",
                             s["mamba_ssm_kernels"], s["twin_on_gpu"], fc["ratio_kernels_over_twin_on_gpu"]))
            for h in (8, 1):
                if f"ft_transformer_h{h}" in s:
                    rows.append(_row(f"GPU: FT-Mamba mamba-ssm kernels, samples/s (vs FT-Transformer {h} head(s))",
                                     s["mamba_ssm_kernels"], s[f"ft_transformer_h{h}"],
                                     fc[f"ratio_kernels_over_ft_transformer_h{h}"]))
        else:
            rows.append(_row("GPU: FT-Mamba twin on the GPU, samples/s (mamba-ssm not installed)", s["twin_on_gpu"]))
    for key, where in (("latency", ""), ("latency_cuda", "GPU: ")):
        lt = res.get(key)
        if lt and "skipped" not in lt:
            _latency_rows(rows, lt, where)
    return rows


def _latency_rows(rows: list[dict[str, Any]], lt: dict[str, Any], where: str) -> None:
    for b, per in lt["latency"].items():
        rows.append(_row(f"{where}cross-attn p50 ms at batch {b} (vs AMF p50 ms)",
                         per["cross_attention"]["p50_ms"], per["amf"]["p50_ms"], lt["ratio_cross_over_amf_p50"][b],
                         "paper ~12.8x at b=1" if b == "1" else "-"))
        rows.append(_row(f"{where}cross-attn p90 ms at batch {b} (vs AMF p90 ms)", per["cross_attention"]["p90_ms"],
                         per["amf"]["p90_ms"], per["cross_attention"]["p90_ms"] / per["amf"]["p90_ms"]))
    if where:  # parameters and GMac do not depend on the device: given once
        return
    pc, pa = lt["params"]["cross_attention"] / 1e6, lt["params"]["amf"] / 1e6
    rows.append(_row("cross-attn params M (vs AMF params M)", pc, pa, pc / pa,
                     f"paper {PAPER['cross_params_m']} vs {PAPER['amf_params_m']}"))
    gc, ga = lt["gmac_batch1"]["cross_attention"], lt["gmac_batch1"]["amf"]
    rows.append(_row("cross-attn GMac b=1 (vs AMF GMac)", gc, ga, gc / ga if ga else None,
                     f"paper {PAPER['cross_gmac']} vs {PAPER['amf_gmac']}"))


def format_table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    body = [[r["figure"], _fmt(r["value"]), _fmt(r["reference"]), _fmt(r["ratio"]), r["target"], r["met"]]
            for r in rows]
    return tabulate(body, headers=["figure", "value", "reference", "ratio", "target", "met"])


SIZES = {
    "full": {
        "ft_mamba": {"batch": 64, "d_token": 64, "repeats": 5},
        # the suite's setting: 64 px resnet10t + the cpu budget's FT-Transformer over all 423 features,
        # every fusion of the default suite, its frozen batch size (512) and max_epochs (20); 1,000
        # samples, so that an epoch has more than one training batch; C for two heads
        "frozen_sweep": {"n": 1000, "image_size": 64, "epochs": 20, "repeats": 3, "tabular": "ft_transformer",
                         "fusions": None, "seeds": (2022,), "overhead_fusions": ("concat", "amf")},
        "data_path": {"n": 8139, "image_size": 64, "n_batches": 20, "repeats": 5},
        "image_layout": {"image_size": 64, "repeats": 5},
        "tabular_attention": {"repeats": 5},
        "latency": {"batch_sizes": (1, 8, 32, 128), "runs": 30, "rounds": 3},
        "ft_mamba_cuda": {"batch": 64, "d_token": 64, "steps": 20, "repeats": 5},
        "latency_cuda": {"batch_sizes": (1, 8, 32, 128), "runs": 60, "rounds": 3, "device": "cuda"},
    },
    "quick": {
        "ft_mamba": {"batch": 16, "d_token": 32, "repeats": 2},
        "frozen_sweep": {"n": 300, "image_size": 32, "epochs": 3, "batch_size": 64, "repeats": 2},
        "data_path": {"n": 2000, "image_size": 64, "n_batches": 5, "repeats": 3},
        "image_layout": {"image_size": 64, "eval_batch": 64, "train_batch": 32, "repeats": 2},
        "tabular_attention": {"eval_batch": 64, "train_batch": 32, "repeats": 2},
        "latency": {"batch_sizes": (1, 8), "runs": 30, "rounds": 3},
        "ft_mamba_cuda": {"batch": 16, "d_token": 32, "steps": 5, "repeats": 2},
        "latency_cuda": {"batch_sizes": (1, 8), "runs": 30, "rounds": 3, "device": "cuda"},
    },
}

BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "ft_mamba": bench_ft_mamba,
    "frozen_sweep": bench_frozen_sweep,
    "data_path": bench_data_path,
    "image_layout": bench_image_layout,
    "tabular_attention": bench_tabular_attention,
    "latency": bench_latency,
    # on a CUDA machine only (each returns {"skipped": ...} elsewhere)
    "ft_mamba_cuda": bench_ft_mamba_cuda,
    "latency_cuda": bench_latency,
}


def run_all(quick: bool = False, sizes: dict[str, dict] | None = None,
            only: list[str] | None = None) -> dict[str, Any]:
    from bench.allocator import describe as describe_allocator
    from bench.profile import cpu_features, device_description

    sizes = sizes or SIZES["quick" if quick else "full"]
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    results: dict[str, Any] = {}
    for name, fn in BENCHMARKS.items():
        if only and name not in only:
            continue
        _log(f"{name} ...")
        t0 = time.perf_counter()
        results[name] = fn(**sizes[name])
        results[name]["wall_s"] = time.perf_counter() - t0
        _log(f"{name} done in {results[name]['wall_s']:.1f} s")
    return {
        "machine": {"device": device_description("cpu"), "cpu": cpu_features(),
                    "gpu": device_description("cuda") if torch.cuda.is_available() else None,
                    "platform": platform.platform(),
                    "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                    "allocator": describe_allocator()},
        "load_average_1_5_15_at_end": list(os.getloadavg()),
        "load_average_1_5_15_at_start": load_start,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "wall_s": time.perf_counter() - t_start,
        "results": results,
        "table": build_rows(results),
        "paper_reference": {"source": "AMF-MedIT Table 3 (RTX 4090), fusion modules at batch 1", **PAPER},
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench perf", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="perf.json", help="where to save the figures as JSON (default perf.json)")
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute instead of ~10")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run these benchmarks only (of: {', '.join(BENCHMARKS)})")
    args = parser.parse_args(argv)
    report = run_all(quick=args.quick, only=args.only)
    load = ", ".join(f"{x:.2f}" for x in report["load_average_1_5_15_at_start"])
    gpu = f" and {report['machine']['gpu']}" if report["machine"]["gpu"] else ""
    print(f"bench perf on {report['machine']['device']}{gpu}, torch {report['torch']}, {report['date']}"
          f"{' (quick)' if args.quick else ''}; load average at start {load} (other processes share the CPU); "
          f"allocator: {report['machine']['allocator']}")
    cpu = report["machine"]["cpu"]
    print(f"CPU: {cpu['vendor'] or '?'} {cpu['model']}, {cpu['logical_cpus']} logical CPUs; ISA {' '.join(cpu['isa']) or '?'}; "
          f"caches {', '.join(f'{k} {v}' for k, v in cpu['caches'].items()) or '?'}; torch kernels {cpu['torch_capability'] or '?'}")
    print(format_table(report["table"]))
    print(f"total {report['wall_s']:.0f} s; figures saved to {args.out}")
    out = Path(args.out)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
