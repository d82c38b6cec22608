"""One method's training on one encoder pair and training setting: the objective its search calls, the
final fit of each seed (the search's trial or another pair's identical fit taken where it is the same
computation), and the run directory each seed writes (test predictions under every test condition,
validation logits, the decision threshold, encoder change, report)."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bench.api import FusionOutput, MultimodalModel, modalities_read, zero_missing
from bench.errors import ConfigError
from bench.executor import process_info
from bench.fast_paths import image_batch
from bench.features import Features, _device_of, build_fusion, encode_tabular, fusion_dims
from bench.fingerprint import run_fingerprint
from bench.hooks import HookList, RunHooks
from bench.imputation import parse_variant
from bench.metrics import evaluate, primary_metric
from bench.protocols import NO_MISSINGNESS, Condition, apply_cells, availability, cell_mask
from bench.registry import get
from bench.results import RunReport, RunSpec, run_dir, write_run
from bench.stats import decision_metrics
from bench.suite import Suite
from bench.train import FitConfig, LossConfig, fit, predict

if TYPE_CHECKING:
    from bench.pipeline import EncoderPair, Prepared, TrainSetting

HEAD_FILE = "fusion_head.pt"  # a frozen run's fusion head, which a warm-started trainable run loads


@dataclass
class DataState:
    """What a forward pass reads: frozen features (or raw inputs) and availability, for all n samples.

    ``tab_rows`` maps a sample index to its row in the tabular tensors, so a test condition can
    re-encode only the test rows. Availability arrays are None when nothing is missing.
    """

    tab_pooled: torch.Tensor | None = None
    tab_tokens: torch.Tensor | None = None
    tab_rows: np.ndarray | None = None
    x_num: torch.Tensor | None = None
    x_cat: torch.Tensor | None = None
    image_available: np.ndarray | None = None
    tabular_available: np.ndarray | None = None


def _fit_key(hp: dict, seed: int) -> str:
    return json.dumps({"hp": hp, "seed": int(seed)}, sort_keys=True, default=str)


@dataclass
class Training:
    """What every method of one invocation trains with (made once by :class:`SuiteRun`)."""

    prep: Prepared
    loss: LossConfig
    budget: dict
    n_out: int  # 1 for a binary task, else the number of classes
    out: Path  # the --out directory run directories go under
    importance: dict | None = None  # the importance ranking (cells masked by importance read it)
    needs_tab_tokens: bool = False  # a fusion of the suite reads every tabular token: they are encoded
    shared_fits: dict | None = None  # pretrain.image_encoder shared: image-only fits by share_key, else None


class _RunContext:
    """Everything one (training setting, encoder pair, fusion, strategy) needs to train for a seed: its search's
    objective and its seeds' final fits. ``warm_from``: (--out, the frozen run spec) whose head, at the same
    seed, starts a trainable run."""

    def __init__(self, training: Training, pair: EncoderPair, feats: Features, setting: TrainSetting,
                 fusion_name: str, strategy: str, rconf: float, warm_from: tuple[Path, RunSpec] | None = None):
        prep = training.prep
        self.prep, self.feats, self.setting, self.proto = prep, feats, setting, setting.proto
        self.img_enc, self.tab_enc = pair.img_enc, pair.tab_enc
        self.fusion_cls = get("fusion", parse_variant(fusion_name)[0])
        self.fusion_name, self.n_out = fusion_name, training.n_out
        self.dims = fusion_dims(pair.img_enc, pair.tab_enc, self.fusion_cls)
        self.fusion_kwargs = dict(training.budget.get("fusions", {}).get(parse_variant(fusion_name)[0], {}))
        self.rconf, self.strategy, self.loss = rconf, strategy, training.loss
        self.cfg = training.budget["finetune"][strategy]
        self.warm_from = warm_from
        self.out = training.out
        self.images = prep.data.images
        self.device = _device_of(pair.img_enc)
        self.importance = training.importance
        self.needs_tab_tokens = training.needs_tab_tokens
        self.n = prep.data.n
        self.names = list(prep.tab.num_names) + list(prep.tab.cat_names)
        self.base = DataState(tab_pooled=feats.tab_pooled, tab_tokens=feats.tab_tokens, tab_rows=None,
                              image_available=prep.data.image_available,  # real missing images (None: all present)
                              x_num=torch.as_tensor(self.proto.x_num), x_cat=torch.as_tensor(self.proto.x_cat))
        self.has_cat = self.proto.x_cat.shape[1] > 0
        self.fit_state = self.base
        # frozen heads share the pair's cache of test-condition features; a trainable run re-encodes
        self.test_states: dict = pair.test_states if strategy == "frozen" else {}
        self.search_fits: dict[str, tuple] = {}  # the search's frozen fits by (configuration, seed): see final_train
        # pairs sharing one image encoder: an image-only fit is made once for all of them (see share_key)
        self.image_key: str | None = pair.pinfo.get("image_key") if training.shared_fits is not None else None
        self.shared_fits: dict[str, tuple] = training.shared_fits if training.shared_fits is not None else {}
        self.fusion_reads_tab_tokens = bool(getattr(self.fusion_cls, "needs_tabular_tokens", False))

    def describe(self) -> str:
        cond = self.setting.train_cond
        if cond.kind == "none":
            return self.proto.describe()
        return f"{self.setting.label}: {cond.kind} missing at rate {cond.rate:g} in training and validation"

    # ------------------------------------------------------------------ missingness -> data states
    def _state(self, cond: Condition, seed: int, rows: np.ndarray, role: str, start: DataState) -> DataState:
        state = dataclasses.replace(start)
        if cond.kind in ("image", "tabular"):
            avail = availability(self.n, rows, cond, seed, role)
            real = self.base.image_available  # real missing images stay missing; tabular stays where no image
            if real is not None:
                avail = avail & real if cond.kind == "image" else avail | ~real
            setattr(state, f"{cond.kind}_available", avail)
        elif cond.kind == "cells" and cond.rate > 0:
            mask = cell_mask(self.n, rows, self.names, cond, seed, role,
                             self.importance["ranking"] if self.importance else None)
            x_num, x_cat = apply_cells(self.proto.x_num, self.proto.x_cat, self.prep.tab, mask)
            if self.strategy == "frozen":  # re-encode only these rows, with tokens only for a fusion that reads them
                toks, pooled = encode_tabular(self.tab_enc, x_num[rows], x_cat[rows],
                                              self.needs_tab_tokens and self.fusion_reads_tab_tokens)
                state.tab_pooled, state.tab_tokens = pooled, toks
                state.tab_rows = np.full(self.n, -1, dtype=np.int64)
                state.tab_rows[rows] = np.arange(len(rows))
            else:
                state.x_num, state.x_cat = torch.as_tensor(x_num), torch.as_tensor(x_cat)
        return state

    def prepare_fit(self, seed: int) -> None:
        """The training/validation data of this seed: the setting's training missingness on train + val rows."""
        rows = np.concatenate([self.prep.train, self.prep.val])
        self.fit_state = self._state(self.setting.train_cond, seed, rows, "fit", self.base)

    def test_state(self, cond: Condition, seed: int) -> DataState:
        key = (self.proto.describe(), cond, seed, self.fusion_reads_tab_tokens)
        if key in self.test_states:
            return self.test_states[key]
        state = self._state(cond, seed, self.prep.test, "test", self.base)
        if state.tab_tokens is None or state.tab_tokens is self.base.tab_tokens:  # per-feature tokens: too big to keep
            self.test_states[key] = state
        return state

    # the forward used by fit/predict: model + sample indices -> FusionOutput
    def forward_with(self, state: DataState):
        def forward(model: nn.Module, idx: np.ndarray) -> FusionOutput:
            dev = self.device
            ia = None if state.image_available is None else torch.as_tensor(state.image_available[idx]).to(dev)
            ta = None if state.tabular_available is None else torch.as_tensor(state.tabular_available[idx]).to(dev)
            if self.strategy == "frozen":
                f = self.feats
                rows = idx if state.tab_rows is None else state.tab_rows[idx]
                tab_pooled = state.tab_pooled[rows]
                tab_tok = state.tab_tokens[rows] if state.tab_tokens is not None and model.needs_tabular_tokens \
                    else tab_pooled[:, None]
                img_tok, img_pooled = f.image_tokens[idx], f.image_pooled[idx]
                if ia is not None:
                    img_tok, img_pooled = zero_missing(img_tok, ia), zero_missing(img_pooled, ia)
                if ta is not None:
                    tab_tok, tab_pooled = zero_missing(tab_tok, ta), zero_missing(tab_pooled, ta)
                return model(img_tok, img_pooled, tab_tok, tab_pooled, ia, ta)
            images = image_batch(self.images[idx], dev)
            return model(images, state.x_num[idx].to(dev), state.x_cat[idx].to(dev) if self.has_cat else None, ia, ta)
        return forward

    def forward(self, model: nn.Module, idx: np.ndarray) -> FusionOutput:
        return self.forward_with(self.fit_state)(model, idx)

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

    def train(self, hp: dict, seed: int, max_epochs: int | None = None, on_epoch=None):
        self.prepare_fit(seed)
        model = self.build(hp, seed)
        cfg = FitConfig(lr=float(hp["lr"]), weight_decay=float(hp.get("weight_decay", 0.0)),
                        max_epochs=int(max_epochs or self.cfg["max_epochs"]), patience=int(self.cfg["patience"]),
                        batch_size=int(self.cfg["batch_size"]), seed=seed,
                        max_steps_per_epoch=self.cfg.get("max_steps_per_epoch"))
        res = fit(model, self.forward, self.prep.data.y, self.prep.train, self.prep.val, cfg,
                  task=self.prep.data.task, loss=self.loss, on_epoch=on_epoch)
        return model, res

    def objective(self, hp: dict, seed: int, on_epoch=None) -> float:
        """Train on the training split; the best validation metric (``on_epoch(epoch, val)`` after each epoch).

        A frozen-feature trial's fit is kept (:meth:`final_train` takes it instead of repeating it)."""
        t0 = time.perf_counter()
        model, res = self.train(hp, seed, on_epoch=on_epoch)
        if self.strategy == "frozen":  # a fusion head: small enough to keep until the seeds' final fits
            self.search_fits[_fit_key(hp, seed)] = (model, res, round(time.perf_counter() - t0, 2))
        return res.best_val

    def share_key(self, hp: dict, seed: int) -> str | None:
        """What a fit of a model that reads the image alone depends on, when the encoder pairs share one image
        encoder (``pretrain.image_encoder: shared``): the image encoder, the method, strategy, configuration,
        seed and the training missingness, not the pair's tabular encoder nor the protocol's table. Pairs
        with equal keys make the same fit (same features or encoder, labels, initialisation and batches),
        which :meth:`final_train` then takes instead of repeating it. None: no such sharing."""
        if self.image_key is None or modalities_read(self.fusion_cls) != ("image",):
            return None
        cond = self.setting.train_cond
        return json.dumps({"image": self.image_key, "method": self.fusion_name, "strategy": self.strategy,
                           "hp": hp, "seed": int(seed), "train": [cond.kind, cond.rate, cond.label],
                           "kwargs": self.fusion_kwargs}, sort_keys=True, default=str)

    def final_train(self, hp: dict, seed: int, on_epoch=None, run_id: str | None = None):
        """``(model, fit result, seconds, reused)`` for a seed's final fit; ``reused`` says whose fit it is
        when it was not trained here (None when it was).

        The search trial of this configuration at this seed, run by this process on this setting, is the
        same computation as the final fit (same data, initialisation, batches and epochs; the search seed
        is the suite's first seed), so its fit is taken instead of being repeated (its epochs are replayed to
        ``on_epoch``, ``seconds`` is what it cost). So is the fit of another pair's run with the same
        :meth:`share_key` (an image-only head on a shared image encoder). Anything else trains here.
        """
        share = self.share_key(hp, seed)
        kept = self.search_fits.pop(_fit_key(hp, seed), None)
        reused = "the search's trial with this configuration and seed (the same computation)" if kept else None
        if kept is None and share is not None and share in self.shared_fits:
            *kept, source = self.shared_fits[share]
            reused = (f"run {source}'s fit (the same computation: this model reads only the image, and the "
                      "pairs share one image encoder)")
        if kept is not None:
            self.prepare_fit(seed)
            model, res, seconds = kept
            for row in res.history if on_epoch is not None else ():
                if "val" in row:
                    on_epoch(row["epoch"], row["val"])
        else:
            t0 = time.perf_counter()
            model, res = self.train(hp, seed, on_epoch=on_epoch)
            seconds = round(time.perf_counter() - t0, 2)
        if share is not None and share not in self.shared_fits:
            self.shared_fits[share] = (model, res, seconds, run_id)
        return model, res, seconds, reused

    def __getstate__(self) -> dict:
        """Pickled for remote search trials (Ray): a frozen-feature run leaves the raw images behind."""
        state = dict(self.__dict__)
        state["search_fits"] = state["shared_fits"] = {}  # fits kept by this process stay here
        if self.strategy == "frozen":
            data = copy.copy(self.prep.data)
            data.images = data.images[:0]
            state["prep"], state["images"] = dataclasses.replace(self.prep, data=data), data.images
        if "test_states" in state:  # a cache of test-condition features: a search trial never tests
            state["test_states"] = {}
        return state


class FinalFit:
    """``fit(spec, hooks)`` for :func:`bench.executor.run_fits`: :func:`_final_run` with the rest bound."""

    def __init__(self, ctx: _RunContext, *args) -> None:
        self.ctx, self.args = ctx, args

    def __call__(self, sp: RunSpec, hooks: RunHooks) -> None:
        _final_run(self.ctx, sp, *self.args, hooks)

    def inputs(self, sp: RunSpec) -> dict[str, bytes]:
        """The files under ``--out`` this seed's fit reads: the frozen head a warm-started run loads."""
        if self.ctx.warm_from is None:
            return {}
        out, frozen = self.ctx.warm_from
        head = run_dir(out, dataclasses.replace(frozen, seed=sp.seed)) / HEAD_FILE
        return {str(head.relative_to(out)): head.read_bytes()} if head.exists() else {}

    def relocated(self, out: Path) -> FinalFit:
        """The same fit, reading its inputs from and writing its run directory under ``out``."""
        ctx = copy.copy(self.ctx)
        ctx.out = out
        if ctx.warm_from is not None:
            ctx.warm_from = (out, ctx.warm_from[1])
        return FinalFit(ctx, *self.args)


def _final_run(ctx: _RunContext, sp: RunSpec, best: dict, search_info: dict, suite: Suite, prov: dict, env: dict,
               profile: dict, pinfo: dict, probes: dict, warm: bool, hooks: RunHooks | None = None) -> None:
    """Fit one seed with the searched hyper-parameters, test it under every condition, write its run directory."""
    prep, data = ctx.prep, ctx.prep.data
    hooks = hooks or HookList()
    hooks.run_start(sp, {**best, "rconf": ctx.rconf, **ctx.fusion_kwargs})
    val_name = f"val_{primary_metric(data.task)}"
    model, fit_res, seconds, reused = ctx.final_train(
        best, sp.seed, on_epoch=lambda epoch, val: hooks.epoch_end(sp, epoch, {val_name: val}), run_id=sp.run_id)
    rd = run_dir(ctx.out, sp)
    if sp.strategy == "frozen":  # the head a warm-started trainable run starts from
        rd.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, rd / HEAD_FILE)
    # binary logits are stored and evaluated on the data's own prevalence: the class weights and the
    # sampler's known shift is taken off (LossConfig.logit_offset); a constant, so AUC and thresholds keep
    offset = ctx.loss.logit_offset() if data.task == "binary" else 0.0
    val_logits = fit_res.best_val_logits - np.float32(offset)

    def predict_test(state) -> np.ndarray:
        return predict(model, ctx.forward_with(state), prep.test) - np.float32(offset)

    ids = data.ids if data.ids is not None else np.arange(data.n)
    arrays = {"test_ids": np.asarray(ids)[prep.test].astype(str), "test_y": data.y[prep.test],
              "val_y": data.y[prep.val], "val_logits": val_logits}
    if ctx.fit_state.image_available is not None:
        arrays["fit_image_available"] = ctx.fit_state.image_available
    if ctx.fit_state.tabular_available is not None:
        arrays["fit_tabular_available"] = ctx.fit_state.tabular_available
    sweep: dict[str, dict[str, dict]] = {}
    headline = complete = None  # complete: the test without missingness, shared by every protocol's rate 0
    for proto_name, cond in ctx.setting.evals:
        state = ctx.test_state(cond, sp.seed)
        if cond.rate == 0 and complete is not None:
            metrics, logits = complete
        else:
            logits = predict_test(state)
            metrics = evaluate(data.task, data.y[prep.test], logits)
            if cond.rate == 0:
                complete = (metrics, logits)
        sweep.setdefault(proto_name, {})[cond.label] = metrics
        tag = f"{proto_name}@test={cond.label}"
        arrays[f"test_logits__{tag}"] = logits
        for modality in ("image", "tabular"):
            avail = getattr(state, f"{modality}_available")
            if avail is not None:
                arrays[f"test_{modality}_available__{tag}"] = avail[prep.test]
        if ctx.setting.report_eval == (proto_name, cond):
            headline = (metrics, logits)
    if headline is None:  # complete / incomplete-tabular data, no missingness at test
        if complete is None:
            logits = predict_test(ctx.test_state(NO_MISSINGNESS, sp.seed))
            complete = (evaluate(data.task, data.y[prep.test], logits), logits)
        headline = complete
    test, arrays["test_logits"] = headline
    val = evaluate(data.task, data.y[prep.val], val_logits)
    encoder_change = {}
    if sp.strategy == "trainable":  # did end-to-end training move the encoders, and what did it do to validation?
        encoder_change = {"encoder_change": {
            # an encoder the model never runs (a single-modality head's other one) is not trained: None
            "image_relative_l2": relative_change(ctx.img_enc, model.image_encoder) if model.reads("image") else None,
            "tabular_relative_l2": (relative_change(ctx.tab_enc, model.tabular_encoder)
                                    if model.reads("tabular") else None),
            "val_first_epoch": fit_res.history[0]["val"] if fit_res.history and "val" in fit_res.history[0] else None,
            "val_best": fit_res.best_val}}
    # the decision rule (binary: a threshold) is chosen on validation, never on test
    test = {**test, **decision_metrics(data.task, data.y[prep.val], val_logits, data.y[prep.test], arrays["test_logits"])}
    report = RunReport(
        spec=sp, suite_version=suite.version, budget=suite.budget_name, metric=test["metric"],
        test=test, val=val, hyperparameters={**best, "rconf": ctx.rconf, **ctx.fusion_kwargs},
        profile=profile, provenance=prov,
        training={"epochs_run": fit_res.epochs_run, "best_epoch": fit_res.best_epoch, "seconds": seconds,
                  "history": fit_res.history, "search": search_info,
                  **({"fit": reused} if reused else {}), "pretraining": pinfo, "probes": probes,
                  "protocol": ctx.describe(), "warm_start": "frozen head of the same seed" if warm else "none",
                  "kind": getattr(get("fusion", parse_variant(sp.fusion)[0]), "role", "fusion"),
                  "logit_offset_removed": offset, **encoder_change},
        environment={**env, **process_info()}, sweep=sweep)
    write_run(rd, report, {"spec": sp.__dict__, "hyperparameters": report.hyperparameters,
                           "budget": suite.budget, "loss": suite.loss}, arrays,
              fingerprint=run_fingerprint(suite, prov, sp))
    hooks.run_end(sp, report, rd)


def relative_change(before: nn.Module, after: nn.Module) -> float:
    """||theta_after - theta_before|| / ||theta_before|| over every floating-point parameter and buffer."""
    a, b = before.state_dict(), after.state_dict()
    num = den = 0.0
    for k, v in a.items():
        if v.is_floating_point():
            num += float((b[k].detach().cpu().double() - v.detach().cpu().double()).pow(2).sum())
            den += float(v.detach().cpu().double().pow(2).sum())
    return float(np.sqrt(num / den)) if den > 0 else float("nan")
