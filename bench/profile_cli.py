"""``python -m bench profile``: latency profiles (batch sweep), parameters and GMac of fusions and whole models.

Two scopes, both measured on this machine and labelled with its device:

* **fusion modules** at the AMF-MedIT Table 3 setting by default (image features 2048-d from a
  16×16 feature map = 256 tokens; a 64-d tabular feature; fusions that read every tabular token get
  424 tokens of 64-d), or at the widths of a budget's encoders (``--dims budget``);
* **whole models** (image encoder + tabular encoder + fusion) built at a suite budget
  (``--budget cpu`` by default: 64×64 slices, ResNet-10t; ``paper``: 512×512, ResNet-50).

Latency: eval mode, ``torch.inference_mode``, warm-up calls, then p50/p90 over the timed calls
(``perf_counter_ns`` on CPU, CUDA events on GPU), at batch sizes 1, 8, 32 and 128 by default; the
number of timed calls shrinks at large batches so that a profile takes minutes, not hours. GMac is
fvcore's count at batch 1 (one multiply-add = 1), with the operators it could not count listed.
The AMF-vs-cross-attention latency ratio at each batch size is printed when both are profiled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

EPILOG = """examples:
  python -m bench profile                                   # every fusion at the AMF paper setting + whole models (cpu budget)
  python -m bench profile --fusion amf cross_attention      # the AMF-MedIT Table 3 comparison, batch 1-128
  python -m bench profile --scope model --budget paper --batch-sizes 1 8
  python -m bench profile --device cuda --out profile.json
"""

PAPER_DIMS = {"image_dim": 2048, "image_tokens": 256, "tab_dim": 64, "tab_tokens": 424}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench profile", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fusion", nargs="+", dest="fusions", help="fusions to profile (default: every registered fusion)")
    p.add_argument("--tabular", default="ft_transformer", help="tabular encoder of the whole models (default: ft_transformer)")
    p.add_argument("--scope", choices=["fusion", "model", "both"], default="both")
    p.add_argument("--dims", choices=["paper", "budget"], default="paper",
                   help="fusion-module input widths: the AMF paper's (2048-d x 256 tokens, 64-d tabular) or the budget's encoders'")
    p.add_argument("--budget", default="cpu", help="budget of the whole models (smoke | cpu | paper; default cpu)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128])
    p.add_argument("--runs", type=int, default=40, help="timed calls at batch <= 8 (fewer at larger batches; default 40)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--out", type=Path, help="also save the figures as JSON")
    return p


def _runs_for(batch: int, runs: int) -> int:
    return max(5, runs // max(1, batch // 8))


def _budget_encoders(budget: str, tabular: str, device: torch.device):
    """Image and tabular encoders as the ol3i suites build them at ``budget`` (random weights)."""
    from bench.registry import get
    from bench.suite import load_suite

    suite = load_suite("ol3i-incomplete", budget=budget)
    image_size = int(suite.budget.get("data", {}).get("image_size", 64))
    torch.manual_seed(0)
    img = get("image_encoder", suite.image_encoder.get("name", "timm"))(
        **{**suite.image_config(), "in_chans": 1, "image_size": image_size})
    tab = get("tabular_encoder", tabular)(n_num=421, cat_cardinalities=[2, 2], **suite.tabular_config(tabular))
    from bench.fast_paths import fast_tabular_encoder, place_image_encoder

    return place_image_encoder(img, device).eval(), fast_tabular_encoder(tab).to(device).eval(), image_size


def _fusion_inputs(dims, batch: int, device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(batch)
    return tuple(t.to(device) for t in (
        torch.randn(batch, dims.image_tokens, dims.image_token, generator=g),
        torch.randn(batch, dims.image_pooled, generator=g),
        torch.randn(batch, dims.tabular_tokens, dims.tabular_token, generator=g),
        torch.randn(batch, dims.tabular_pooled, generator=g)))


def _measure(module, make_inputs, batch_sizes, runs, warmup) -> tuple[dict, Any]:
    from bench.profile import count_gmac, measure_module_latency

    gm = count_gmac(module, make_inputs(1))
    lat = {}
    for b in batch_sizes:
        res = measure_module_latency(module, make_inputs(b), warmup=warmup, runs=_runs_for(b, runs))
        lat[str(b)] = {"p50_ms": res.p50_ms, "p90_ms": res.p90_ms, "runs": res.runs}
    return lat, gm


def profile(args) -> dict[str, Any]:
    from bench.api import FusionDims, MultimodalModel
    from bench.pipeline import build_fusion, fusion_dims, resolve_device
    from bench.profile import count_parameters, device_description
    from bench.registry import get, registry

    dev = resolve_device(args.device)
    names = args.fusions or registry("fusion").names()
    for n in names:
        registry("fusion").get(n)  # unknown name -> one line with suggestions
    out: dict[str, Any] = {"device": device_description(dev), "batch_sizes": args.batch_sizes,
                           "dims": args.dims, "budget": args.budget, "fusion": {}, "model": {},
                           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    img = tab = None
    if args.scope in ("model", "both") or args.dims == "budget":
        img, tab, image_size = _budget_encoders(args.budget, args.tabular, dev)
        out["model_setting"] = {"image_size": image_size, "image_encoder": getattr(img, "model_name", "timm"),
                                "tabular_encoder": args.tabular}
    for name in names:
        cls = get("fusion", name)
        kwargs = dict(load_budget_fusion_kwargs(args.budget, name))  # the budget's widths, for whole models
        if args.scope in ("fusion", "both"):
            if args.dims == "paper":
                all_tab = bool(getattr(cls, "needs_tabular_tokens", False))
                dims = FusionDims(image_pooled=PAPER_DIMS["image_dim"], image_token=PAPER_DIMS["image_dim"],
                                  tabular_pooled=PAPER_DIMS["tab_dim"], tabular_token=PAPER_DIMS["tab_dim"],
                                  image_tokens=PAPER_DIMS["image_tokens"],
                                  tabular_tokens=PAPER_DIMS["tab_tokens"] if all_tab else 1)
                module_kwargs = {}  # the paper setting: each fusion's own defaults (cross-attention d_model 512)
            else:
                dims, module_kwargs = fusion_dims(img, tab, cls), kwargs
            torch.manual_seed(0)
            fusion = build_fusion(name, dims, 1, module_kwargs, rconf=1.0).to(dev).eval()
            print(f"[bench profile] fusion {name} ({dims.image_tokens}x{dims.image_token} image, "
                  f"{dims.tabular_tokens}x{dims.tabular_token} tabular)", file=sys.stderr)
            lat, gm = _measure(fusion, lambda b, d=dims: _fusion_inputs(d, b, dev), args.batch_sizes, args.runs, args.warmup)
            out["fusion"][name] = {"params": count_parameters(fusion), "gmac_batch1": gm.gmac,
                                   "uncounted_ops": sorted(gm.uncounted_ops), "latency": lat}
        if args.scope in ("model", "both"):
            import copy

            if hasattr(tab, "tokens_needed"):
                tab.tokens_needed = bool(getattr(cls, "needs_tabular_tokens", False))
            torch.manual_seed(0)
            fusion = build_fusion(name, fusion_dims(img, tab, cls), 1, kwargs, rconf=1.0)
            model = MultimodalModel(copy.deepcopy(img), copy.deepcopy(tab), fusion).to(dev).eval()
            size = out["model_setting"]["image_size"]

            def model_inputs(b: int, size=size) -> tuple:
                g = torch.Generator().manual_seed(b)
                return (torch.rand(b, 1, size, size, generator=g).to(dev), torch.randn(b, 421, generator=g).to(dev),
                        torch.zeros(b, 2, dtype=torch.long, device=dev))

            print(f"[bench profile] whole model {name} ({size}x{size}, {args.tabular})", file=sys.stderr)
            lat, gm = _measure(model, model_inputs, args.batch_sizes, args.runs, args.warmup)
            out["model"][name] = {"params": count_parameters(model), "params_fusion": count_parameters(fusion),
                                  "gmac_batch1": gm.gmac, "uncounted_ops": sorted(gm.uncounted_ops), "latency": lat}
    if "amf" in out["fusion"] and "cross_attention" in out["fusion"]:
        out["ratio_cross_attention_over_amf_p50"] = {
            b: out["fusion"]["cross_attention"]["latency"][b]["p50_ms"] / out["fusion"]["amf"]["latency"][b]["p50_ms"]
            for b in out["fusion"]["amf"]["latency"]}
    return out


def load_budget_fusion_kwargs(budget: str, fusion: str) -> dict:
    from bench.suite import load_suite

    return load_suite("ol3i-incomplete", budget=budget).budget.get("fusions", {}).get(fusion, {})


def render(res: dict[str, Any]) -> str:
    bs = [str(b) for b in res["batch_sizes"]]
    lines = [f"device: {res['device']} | torch {res['torch']} | {res['date']}"]
    for scope, title in (("fusion", f"Fusion modules ({res['dims']} dims)"), ("model", "Whole models")):
        if not res[scope]:
            continue
        setting = res.get("model_setting", {}) if scope == "model" else {}
        extra = (f" — {setting.get('image_size')}px {setting.get('image_encoder')}, {setting.get('tabular_encoder')}, "
                 f"budget {res['budget']}") if setting else ""
        headers = ["", "Params (M)", "GMac b=1"] + [f"b={b} p50 / p90 (ms)" for b in bs]
        rows = []
        for name, r in res[scope].items():
            rows.append([name, f"{r['params'] / 1e6:.3f}", f"{r['gmac_batch1']:.4f}"]
                        + [f"{r['latency'][b]['p50_ms']:.3f} / {r['latency'][b]['p90_ms']:.3f}" for b in bs])
        lines += ["", title + extra, tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
    ratio = res.get("ratio_cross_attention_over_amf_p50")
    if ratio:
        lines += ["", "cross-attention / AMF latency (p50): "
                  + ", ".join(f"b={b}: {v:.1f}x" for b, v in ratio.items())
                  + " (AMF-MedIT Table 3, RTX 4090, batch 1: 1.54 / 0.12 ms = 12.8x)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.errors import BenchError

    args = _parser().parse_args(argv)
    if any(b < 1 for b in args.batch_sizes) or args.runs < 1 or args.warmup < 0:
        print("bench profile: error: batch sizes and --runs must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    try:
        res = profile(args)
    except BenchError as exc:
        print(f"bench profile: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(render(res))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"[bench profile] saved {args.out}")
    return 0
