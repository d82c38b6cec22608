"""The experimental pipeline of AMF-MedIT (sections 3-4, appendix A) as a reusable harness.

For one suite::

    data (real, or the synthetic replica) -> preprocessing fitted on the training split
    -> importance ranking by integrated gradients (for the incomplete-tabular protocol)
    for each tabular encoder:
        contrastive pretraining of (image encoder, tabular encoder)        [cached on disk]
        for each protocol:
            frozen features of every split, computed once                   [in memory]
            Rconf from frozen unimodal probes (appendix A.4)
            for each fusion x strategy:
                learning-rate search on validation (Optuna, first seed)
                final fits for every seed -> test predictions -> run directory
    results.csv + leaderboard.md (a pure function of the run directories)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.api import FusionDims, FusionOutput, MultimodalModel
from bench.data.base import MultimodalData
from bench.errors import ConfigError, DataError
from bench.importance import ig_importance
from bench.metrics import evaluate
from bench.pretrain import EncoderSpec, cache_root, pretrain_pair, pretrain_steps
from bench.protocols import AppliedProtocol, PreparedTabular, apply_protocol
from bench.registry import get
from bench.results import (
    RunReport,
    RunSpec,
    atomic_write_json,
    environment,
    is_done,
    load_reports,
    run_dir,
    write_run,
)
from bench.search.optuna_search import search_hyperparameters
from bench.suite import Suite
from bench.train import FitConfig, LossConfig, fit, predict

log = logging.getLogger(__name__)

PRETRAIN_SEED = 2022  # AMF-MedIT A.3: hyper-parameters are chosen with the fixed seed 2022
HEAD_FILE = "fusion_head.pt"


def _say(msg: str) -> None:
    tqdm.write(msg)


# ----------------------------------------------------------------------------------------- data
def load_data(suite: Suite, data_root: str | None) -> MultimodalData:
    """The suite's real dataset when a root is given (or its env var is set), else the synthetic replica."""
    ds = suite.dataset
    opts = dict(suite.budget.get("data", {}))
    env_var = f"BENCH_{ds['name'].upper().replace('-', '_')}_ROOT"
    root = data_root or os.environ.get(env_var)
    if root:
        if not Path(root).exists():
            raise DataError(f"data root {root!r} does not exist; pass --data-root DIR with the {ds['name']} files or unset {env_var}")
        loader = get("dataset", ds["name"])
        real_opts = {k: v for k, v in opts.items() if k != "n"}
        return loader(root=root, **real_opts)
    fallback = ds.get("fallback")
    if not fallback:
        raise DataError(f"suite {suite.name!r} needs the {ds['name']} files: pass --data-root DIR or set {env_var}")
    _say(f"[bench] real {ds['name']} data not configured (--data-root or {env_var}); "
         f"using the synthetic replica '{fallback}' — results are labelled synthetic")
    return get("dataset", fallback)(seed=0, **opts)


@dataclass
class Prepared:
    data: MultimodalData
    tab: PreparedTabular
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def prepare(data: MultimodalData) -> Prepared:
    from bench.data.preprocess import fit_preprocessor

    if data.y.dtype.kind == "f" and not np.isfinite(data.y).all():
        raise DataError("labels contain NaN; drop or fix those rows before running")
    train, val, test = data.indices("train"), data.indices("val"), data.indices("test")
    for name, idx in (("train", train), ("val", val), ("test", test)):
        if len(idx) == 0:
            raise DataError(f"the {name} split is empty; check the split column of the dataset")
    if data.task == "binary":
        for name, idx in (("train", train), ("val", val), ("test", test)):
            if len(np.unique(data.y[idx])) < 2:
                raise DataError(f"the {name} split has a single class; AUC is undefined — use a larger sample")
    pre = fit_preprocessor(data)
    x_num = pre.transform(data.x_num).astype(np.float32)
    x_cat = data.x_cat.astype(np.int64)
    modes = np.array([np.bincount(x_cat[train, j]).argmax() for j in range(x_cat.shape[1])], dtype=np.int64)
    tab = PreparedTabular(x_num, x_cat, list(data.num_names), list(data.cat_names),
                          x_num[train].mean(0).astype(np.float32), modes)
    return Prepared(data, tab, train, val, test)


# ------------------------------------------------------------------------------------- features
@dataclass
class Features:
    image_tokens: torch.Tensor
    image_pooled: torch.Tensor
    tab_pooled: torch.Tensor
    tab_tokens: torch.Tensor | None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for but CUDA is not available; use --device cpu")
    return torch.device(device)


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def encode_images(encoder: nn.Module, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    encoder.eval()
    dev = _device_of(encoder)
    toks, pooled = [], []
    for i in range(0, len(images), batch_size):
        out = encoder(torch.from_numpy(np.array(images[i : i + batch_size], dtype=np.float32)).to(dev))
        toks.append(out.tokens.clone())
        pooled.append(out.pooled.clone())
    return torch.cat(toks), torch.cat(pooled)


@torch.inference_mode()
def encode_tabular(encoder: nn.Module, x_num: np.ndarray, x_cat: np.ndarray, keep_tokens: bool, batch_size: int = 512):
    encoder.eval()
    dev = _device_of(encoder)
    toks, pooled = [], []
    for i in range(0, len(x_num), batch_size):
        xc = torch.as_tensor(x_cat[i : i + batch_size]).to(dev) if x_cat.shape[1] else None
        out = encoder(torch.as_tensor(x_num[i : i + batch_size]).to(dev), xc)
        pooled.append(out.pooled.clone())
        if keep_tokens:
            toks.append(out.tokens.clone())
    return (torch.cat(toks) if keep_tokens else None), torch.cat(pooled)


def cached_features(key: dict, device: torch.device, compute, *args) -> tuple:
    """``compute(*args)``'s tensors, stored under ``$BENCH_CACHE/features/<content key>.pt`` the first time."""
    digest = hashlib.sha256(json.dumps({**key, "v": 1}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_root() / "features" / f"{digest}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return tuple(None if t is None else t.to(device) for t in saved)
    out = compute(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(tuple(None if t is None else t.cpu() for t in out), tmp)
    os.replace(tmp, path)
    return out


# --------------------------------------------------------------------------------------- models
def fusion_dims(img_enc: nn.Module, tab_enc: nn.Module, fusion_cls) -> FusionDims:
    all_tab = bool(getattr(fusion_cls, "needs_tabular_tokens", False))
    return FusionDims(
        image_pooled=img_enc.d_out, image_token=img_enc.d_token, tabular_pooled=tab_enc.d_out,
        tabular_token=tab_enc.d_token if all_tab else tab_enc.d_out,
        image_tokens=int(getattr(img_enc, "n_tokens", 1)),
        tabular_tokens=int(getattr(tab_enc, "n_tokens", 1)) if all_tab else 1,
    )


def build_fusion(name: str, dims: FusionDims, n_classes: int, kwargs: dict, rconf: float | None):
    fusion = get("fusion", name)(dims=dims, n_classes=n_classes, **kwargs)
    if rconf is not None:
        fusion.set_confidence_ratio(float(rconf))
    return fusion


def confidence_ratio(metric_image: float, metric_tabular: float, *, floor: float = 1e-3, bounds=(0.05, 20.0)) -> float:
    """Rconf = Confidence(image) / Confidence(tabular) (eq. 3), each measured by a frozen probe.

    A probe can score 0 (e.g. accuracy on a tiny multi-class sample); both metrics are floored at
    ``floor`` and the ratio clipped to ``bounds`` so that AMF keeps at least a few dimensions per
    modality instead of failing.
    """
    ratio = max(metric_image, floor) / max(metric_tabular, floor)
    return float(min(max(ratio, bounds[0]), bounds[1]))


def unimodal_probe(features: torch.Tensor, prep: Prepared, loss: LossConfig, cfg: dict, seed: int, lr: float = 1e-3) -> float:
    """Frozen encoder + linear head; returns the validation metric (appendix A.4)."""
    data = prep.data
    torch.manual_seed(seed)
    probe = nn.Linear(features.shape[1], 1 if data.task == "binary" else data.n_classes).to(features.device)
    res = fit(probe, lambda m, idx: FusionOutput(m(features[idx])), data.y, prep.train, prep.val,
              FitConfig(lr=lr, max_epochs=int(cfg["max_epochs"]), patience=int(cfg["patience"]), batch_size=256, seed=seed),
              task=data.task, loss=loss)
    return res.best_val


# ------------------------------------------------------------------------------------- the suite
@dataclass
class SuiteResult:
    suite_dir: Path
    reports: list[RunReport]
    seconds: float


def run_suite(
    suite: Suite,
    *,
    out: Path,
    data_root: str | None = None,
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> SuiteResult:
    t_start = time.perf_counter()
    dev = resolve_device(device)
    env = environment()
    suite_dir = out / suite.name
    data = load_data(suite, data_root)
    prov = {"dataset": data.provenance.dataset, "source": data.provenance.source, "version": data.provenance.version,
            "checksum": data.provenance.checksum, "protocol_note": data.provenance.protocol_note}
    prep = prepare(data)
    loss = LossConfig.from_dict(suite.loss)
    if data.task != "binary" and loss.name != "ce":
        raise ConfigError(f"suite {suite.name!r}: loss {loss.name!r} needs a binary task; {data.provenance.dataset} is {data.task}")
    n_out = 1 if data.task == "binary" else data.n_classes
    budget = suite.budget
    _say(f"[bench] suite {suite.name} v{suite.version} | budget {suite.budget_name} | data {prov['dataset']} "
         f"({prov['source']}, {prov['version']}, n={data.n}, image {data.image_shape}) | seeds {suite.seeds}")

    # importance ranking for incomplete-tabular protocols
    importance = None
    if any(p["name"] == "incomplete-tabular" and p.get("mask", {}).get("by", "importance") == "importance"
           for p in suite.protocols):
        icfg = budget.get("importance", {})
        model_name = icfg.get("model", "resnet")
        _say(f"[bench] feature importance: integrated gradients of a supervised {model_name} on the training split")
        importance = ig_importance(
            x_num=prep.tab.x_num, x_cat=prep.tab.x_cat, names=prep.tab.num_names + prep.tab.cat_names,
            y=data.y, train_idx=prep.train, val_idx=prep.val, task=data.task, n_classes=data.n_classes,
            model_name=model_name, model_kwargs=suite.tabular_config(model_name), loss=loss, cfg=icfg, seed=PRETRAIN_SEED)
        top = ", ".join(f"{k} {v:.1%}" for k, v in list(importance["scores"].items())[:3])
        _say(f"[bench]   most important: {top}")
    protocols = {p["name"]: apply_protocol(p, prep.tab, importance["ranking"] if importance else None) for p in suite.protocols}

    atomic_write_json(suite_dir / "suite.json", {
        "suite": suite.name, "version": suite.version, "budget": suite.budget_name, "budget_config": budget,
        "seeds": suite.seeds, "tabular_encoders": suite.tabular_encoders, "fusions": suite.fusions,
        "strategies": suite.strategies, "protocols": {k: v.describe() for k, v in protocols.items()},
        "provenance": prov, "importance": importance, "environment": env, "loss": suite.loss,
        "search": budget.get("search", {}),
    })

    image_cfg = suite.image_config()
    image_name = suite.image_encoder.get("name", "timm")
    image_label = image_cfg.get("model_name", image_name)
    image_spec = EncoderSpec("image_encoder", image_name,
                             {**image_cfg, "in_chans": data.image_shape[0], "image_size": data.image_shape[-1]})
    runs_total = (len(suite.tabular_encoders) * len(protocols) * len(suite.fusions) * len(suite.strategies) * len(suite.seeds))
    bar = tqdm(total=runs_total, desc=f"{suite.name} runs", unit="run", disable=not progress, dynamic_ncols=True)
    profiles: dict[tuple[str, str], dict] = {}
    # fusions that read every tabular token (not only the pooled one) need them encoded and cached
    needs_tab_tokens = any(getattr(get("fusion", f), "needs_tabular_tokens", False) for f in suite.fusions)

    for tab_name in suite.tabular_encoders:
        pending = [RunSpec(suite.name, p, image_label, tab_name, f, s, seed) for p in protocols
                   for f in suite.fusions for s in suite.strategies for seed in suite.seeds]
        if not force and all(is_done(run_dir(out, sp)) for sp in pending):
            bar.update(len(pending))  # every run of this encoder pair is finished: nothing to load
            continue
        tab_spec = EncoderSpec("tabular_encoder", tab_name, {
            **suite.tabular_config(tab_name), "n_num": len(prep.tab.num_names),
            "cat_cardinalities": list(data.cat_cardinalities)})
        pcfg = budget["pretrain"]
        pbar = tqdm(total=pretrain_steps(len(prep.train), pcfg), desc=f"pretrain {image_label}+{tab_name}", unit="step",
                    disable=not progress, leave=False, dynamic_ncols=True)
        img_enc, tab_enc, pinfo = pretrain_pair(
            images=data.images, x_num=prep.tab.x_num, x_cat=prep.tab.x_cat, train_idx=prep.train,
            image_spec=image_spec, tabular_spec=tab_spec, cfg=pcfg, seed=PRETRAIN_SEED,
            data_checksum=prov["checksum"], device=dev, progress=pbar)
        pbar.close()
        _say(f"[bench] pretrained {image_label}+{tab_name}: ITC {pinfo.get('first_itc_loss')} -> "
             f"{pinfo.get('final_itc_loss')} ({'cache' if pinfo['cached'] else str(pinfo['seconds']) + ' s'})")
        img_tokens = img_pooled = None  # image features do not depend on the protocol: encode once
        if hasattr(tab_enc, "tokens_needed"):  # no fusion reads all tabular tokens: skip computing them
            tab_enc.tokens_needed = needs_tab_tokens

        for proto_name, proto in protocols.items():
            specs_left = [
                RunSpec(suite.name, proto_name, image_label, tab_name, f, s, seed)
                for f in suite.fusions for s in suite.strategies for seed in suite.seeds]
            if not force and all(is_done(run_dir(out, sp)) for sp in specs_left):
                bar.update(len(specs_left))
                continue
            # frozen features: computed once per (encoder checkpoint, dataset, protocol), cached on disk
            if img_tokens is None:
                img_tokens, img_pooled = cached_features(
                    {"encoders": pinfo["cache_key"], "data": prov["checksum"], "modality": "image"},
                    dev, encode_images, img_enc, data.images)
            tab_tokens, tab_pooled = cached_features(
                {"encoders": pinfo["cache_key"], "data": prov["checksum"], "modality": "tabular",
                 "protocol": proto.describe(), "tokens": needs_tab_tokens},
                dev, encode_tabular, tab_enc, proto.x_num, proto.x_cat, needs_tab_tokens)
            feats = Features(img_tokens, img_pooled, tab_pooled, tab_tokens)

            # Rconf from frozen unimodal probes (appendix A.4)
            probe_cfg = budget.get("probes", {"max_epochs": 50, "patience": 10})
            m_img = unimodal_probe(img_pooled, prep, loss, probe_cfg, PRETRAIN_SEED)
            m_tab = unimodal_probe(tab_pooled, prep, loss, probe_cfg, PRETRAIN_SEED)
            rconf = confidence_ratio(m_img, m_tab)
            override = suite.raw.get("rconf", "measured")
            if override != "measured":  # a suite may fix Rconf, e.g. the paper's ablation values (4.6.1)
                rconf = float(override)
            _say(f"[bench] {tab_name} / {proto.describe()}: unimodal probes (val) image {m_img:.4f}, "
                 f"tabular {m_tab:.4f} -> Rconf {rconf:.3f}{'' if override == 'measured' else ' (fixed by the suite)'}")
            probes = {"image_val": m_img, "tabular_val": m_tab, "rconf": rconf}

            for fusion_name in suite.fusions:
                fusion_cls = get("fusion", fusion_name)
                fusion_kwargs = dict(budget.get("fusions", {}).get(fusion_name, {}))
                dims = fusion_dims(img_enc, tab_enc, fusion_cls)
                key = (tab_name, fusion_name)
                if key not in profiles:
                    profiles[key] = _profile(img_enc, tab_enc, fusion_name, dims, n_out, fusion_kwargs, rconf, data,
                                             budget.get("latency", {}))
                for strategy in suite.strategies:
                    specs = [RunSpec(suite.name, proto_name, image_label, tab_name, fusion_name, strategy, seed)
                             for seed in suite.seeds]
                    todo = [sp for sp in specs if force or not is_done(run_dir(out, sp))]
                    bar.update(len(specs) - len(todo))
                    if not todo:
                        continue
                    warm = strategy == "trainable" and budget["finetune"]["trainable"].get("warm_start") == "frozen"
                    # a warm-started run loads the head of the frozen run with the same spec and seed
                    warm_from = (out, RunSpec(suite.name, proto_name, image_label, tab_name, fusion_name, "frozen", 0)) if warm else None
                    ctx = _RunContext(prep, feats, proto, img_enc, tab_enc, fusion_name, dims, n_out, fusion_kwargs,
                                      rconf, strategy, loss, budget, warm_from)
                    # one search per (tabular encoder, fusion, strategy[, protocol]), saved in the suite
                    # directory; with per_protocol false the first protocol's choice is reused
                    search_cfg = budget.get("search", {})
                    search_key = (tab_name, fusion_name, strategy, proto_name if search_cfg.get("per_protocol", True) else "*")
                    search_file = suite_dir / "search" / ("__".join(search_key).replace("*", "all") + ".json")
                    if search_file.exists() and not force:
                        saved = json.loads(search_file.read_text())
                        best, search_info = saved["best"], saved["info"]
                    else:
                        best, search_info = search_hyperparameters(
                            ctx.objective, fusion_cls=fusion_cls, strategy=strategy, budget=search_cfg,
                            seed=suite.seeds[0])
                        atomic_write_json(search_file, {"best": best, "info": {**search_info, "protocol": proto_name}})
                    bar.set_postfix_str(f"{tab_name}/{fusion_name}/{strategy}/{proto_name}")
                    for sp in todo:
                        t0 = time.perf_counter()
                        model, fit_res = ctx.train(best, sp.seed)
                        rd = run_dir(out, sp)
                        if strategy == "frozen":  # the head a warm-started trainable run starts from
                            rd.mkdir(parents=True, exist_ok=True)
                            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, rd / HEAD_FILE)
                        test_logits = predict(model, ctx.forward, prep.test, 256)
                        val_logits = fit_res.best_val_logits
                        test = evaluate(data.task, data.y[prep.test], test_logits)
                        val = evaluate(data.task, data.y[prep.val], val_logits)
                        report = RunReport(
                            spec=sp, suite_version=suite.version, budget=suite.budget_name, metric=test["metric"],
                            test=test, val=val, hyperparameters={**best, "rconf": rconf, **fusion_kwargs},
                            profile=profiles[key], provenance=prov,
                            training={"epochs_run": fit_res.epochs_run, "best_epoch": fit_res.best_epoch,
                                      "seconds": round(time.perf_counter() - t0, 2), "history": fit_res.history,
                                      "search": search_info, "pretraining": pinfo, "probes": probes,
                                      "protocol": proto.describe(),
                                      "warm_start": "frozen head of the same seed" if warm else "none"},
                            environment=env)
                        ids = data.ids if data.ids is not None else np.arange(data.n)
                        write_run(rd, report, {"spec": sp.__dict__, "hyperparameters": report.hyperparameters,
                                                              "budget": budget, "loss": suite.loss},
                                  {"test_ids": np.asarray(ids)[prep.test].astype(str), "test_y": data.y[prep.test],
                                   "test_logits": test_logits, "val_y": data.y[prep.val], "val_logits": val_logits})
                        bar.update(1)
    bar.close()
    from bench.leaderboard import write_leaderboard

    reports = load_reports(suite_dir)
    write_leaderboard(suite_dir, expected_seeds=suite.seeds)
    return SuiteResult(suite_dir, reports, time.perf_counter() - t_start)


def _profile(img_enc, tab_enc, fusion_name, dims, n_out, fusion_kwargs, rconf, data, latency_cfg) -> dict:
    from bench.profile import profile_model

    fusion = build_fusion(fusion_name, dims, n_out, fusion_kwargs, rconf)
    model = MultimodalModel(copy.deepcopy(img_enc), copy.deepcopy(tab_enc), fusion.to(_device_of(img_enc))).eval()
    example = {
        "images": torch.from_numpy(np.array(data.images[:1], dtype=np.float32)),
        "x_num": torch.zeros(1, len(data.num_names)),
        "x_cat": torch.zeros(1, len(data.cat_names), dtype=torch.long) if data.cat_names else None,
    }
    rep = profile_model(model, example, runs=int(latency_cfg.get("runs", 100)), warmup=int(latency_cfg.get("warmup", 10)))
    return rep.to_dict()


class _RunContext:
    """Everything one (protocol, encoder pair, fusion, strategy) needs to train for a seed."""

    def __init__(self, prep, feats, proto: AppliedProtocol, img_enc, tab_enc, fusion_name, dims, n_out,
                 fusion_kwargs, rconf, strategy, loss, budget, warm_from: tuple[Path, RunSpec] | None = None):
        self.prep, self.feats, self.proto = prep, feats, proto
        self.img_enc, self.tab_enc = img_enc, tab_enc
        self.fusion_name, self.dims, self.n_out = fusion_name, dims, n_out
        self.fusion_kwargs, self.rconf, self.strategy, self.loss = fusion_kwargs, rconf, strategy, loss
        self.cfg = budget["finetune"][strategy]
        self.warm_from = warm_from  # (out, frozen run spec): whose head (at the same seed) starts this run
        self.images = prep.data.images
        self.device = _device_of(img_enc)
        self.x_num_t = torch.as_tensor(proto.x_num)
        self.x_cat_t = torch.as_tensor(proto.x_cat)
        self.has_cat = proto.x_cat.shape[1] > 0

    # the forward used by fit/predict: model + sample indices -> FusionOutput
    def forward(self, model: nn.Module, idx: np.ndarray) -> FusionOutput:
        if self.strategy == "frozen":
            f = self.feats
            tab_tok = f.tab_tokens[idx] if f.tab_tokens is not None and model.needs_tabular_tokens else f.tab_pooled[idx][:, None]
            return model(f.image_tokens[idx], f.image_pooled[idx], tab_tok, f.tab_pooled[idx])
        dev = self.device
        images = torch.as_tensor(np.asarray(self.images[idx])).to(dev)
        return model(images, self.x_num_t[idx].to(dev), self.x_cat_t[idx].to(dev) if self.has_cat else None)

    def build(self, hp: dict, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        fusion_hp = {k: v for k, v in hp.items() if k not in ("lr", "weight_decay")}
        fusion = build_fusion(self.fusion_name, self.dims, self.n_out, {**self.fusion_kwargs, **fusion_hp}, self.rconf)
        if self.warm_from is not None:
            out, frozen = self.warm_from
            head = run_dir(out, dataclasses.replace(frozen, seed=seed)) / HEAD_FILE
            if not head.exists():
                raise ConfigError(f"warm start needs the frozen run's head {str(head)!r}, which is missing; "
                                  "re-run the frozen strategy (--force) first")
            fusion.load_state_dict(torch.load(head, map_location="cpu", weights_only=True))
        if self.strategy == "frozen":
            return fusion.to(self.device)
        return MultimodalModel(copy.deepcopy(self.img_enc), copy.deepcopy(self.tab_enc), fusion).to(self.device)

    def train(self, hp: dict, seed: int, max_epochs: int | None = None):
        model = self.build(hp, seed)
        cfg = FitConfig(lr=float(hp["lr"]), weight_decay=float(hp.get("weight_decay", 0.0)),
                        max_epochs=int(max_epochs or self.cfg["max_epochs"]), patience=int(self.cfg["patience"]),
                        batch_size=int(self.cfg["batch_size"]), seed=seed,
                        max_steps_per_epoch=self.cfg.get("max_steps_per_epoch"))
        res = fit(model, self.forward, self.prep.data.y, self.prep.train, self.prep.val, cfg,
                  task=self.prep.data.task, loss=self.loss)
        return model, res

    def objective(self, hp: dict, seed: int) -> float:
        return self.train(hp, seed)[1].best_val
