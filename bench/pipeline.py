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

The loops are not written here: :func:`bench.plan.plan_suite` lists them as typed tasks and
:func:`bench.executor.execute_plan` runs the pending ones, each by the :class:`SuiteRun` method of its kind.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.api import MultimodalModel
from bench.data.base import MultimodalData
from bench.errors import ConfigError, DataError
from bench.executor import (
    RayPlacement,
    encode_on_ray,
    execute_plan,
    jobs_on_ray,
    pretrain_on_ray,
    reference_fits_on_ray,
    run_fits,
    tasks_to_run,
)
from bench.fast_paths import image_batch, place_image_encoder
from bench.features import (
    Features,
    _device_of,
    build_fusion,
    cached_features,
    confidence_ratio,
    encode_images,
    encode_tabular,
    features_cache_path,
    fusion_dims,
    probe_encoded,
    probe_metric,
    resolve_device,
)
from bench.fingerprint import planned_specs, reconcile, run_fingerprint, search_stem
from bench.hooks import HookList, RunHooks
from bench.importance import ig_importance
from bench.imputation import parse_variant
from bench.method import FinalFit, Training, _RunContext
from bench.preflight import preflight
from bench.pretrain import (
    EncoderSpec,
    SharedImage,
    cache_root,
    pretrain_cache_path,
    pretrain_pair,
    pretrain_steps,
    shared_image,
)
from bench.protocols import (
    NO_MISSINGNESS,
    AppliedProtocol,
    Condition,
    PreparedTabular,
    apply_protocol,
    get_protocol,
    missingness_plan,
)
from bench.reference import fits_needed, inputs_digest, reference_inputs, write_reference_runs
from bench.registry import get
from bench.results import (
    RunReport,
    RunSpec,
    atomic_write_json,
    environment,
    is_done,
    load_reports,
    record_failure,
    run_dir,
    warn,
)
from bench.search import check_backend, default_storage, describe, run_search
from bench.suite import Suite
from bench.train import LossConfig

log = logging.getLogger(__name__)

PRETRAIN_SEED = 2022  # AMF-MedIT A.3: hyper-parameters are chosen with the fixed seed 2022


def _say(msg: str) -> None:
    tqdm.write(msg)


# ----------------------------------------------------------------------------------------- data
def load_data(suite: Suite, data_root: str | None, dataset: str | None = None) -> MultimodalData:
    """``dataset`` (a dataset YAML or a registered name, checked first) when given; else the suite's real
    dataset when a root is given (or its env var is set), else the synthetic replica."""
    ds = suite.dataset
    opts = dict(suite.budget.get("data", {}))
    if dataset:
        from bench.data.checks import load_checked

        data = load_checked(dataset, root=data_root, options=opts, say=_say)
        if data.image_available is not None:  # real missing images: fusions run as for missing-image protocols
            suite.real_missing = ("image",)
        return data
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


def reference_base_fingerprint(suite: Suite, prov: dict, setting: str, tab_name: str) -> dict:
    """What a reference row's fingerprint starts from: the suite's run fingerprint (budget, data, bench)."""
    if "concat" not in {base for _, base, _ in suite.fusion_variants()[0]}:
        return {"digest": prov["checksum"]}
    image_label = suite.image_config().get("model_name", suite.image_encoder.get("name", "timm"))
    return run_fingerprint(suite, prov, RunSpec(suite.name, setting, image_label, tab_name, "concat", "frozen", 0))


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def data_provenance(data: MultimodalData) -> dict:
    """What a run records of its dataset (and what its fingerprint holds)."""
    p = data.provenance
    return {"dataset": p.dataset, "source": p.source, "version": p.version, "checksum": p.checksum,
            "protocol_note": p.protocol_note}


def image_encoder_spec(suite: Suite, data: MultimodalData) -> EncoderSpec:
    return EncoderSpec("image_encoder", suite.image_encoder.get("name", "timm"),
                       {**suite.image_config(), "in_chans": data.image_shape[0], "image_size": data.image_shape[-1]})


def tabular_encoder_spec(suite: Suite, prep: Prepared, name: str) -> EncoderSpec:
    return EncoderSpec("tabular_encoder", name, {**suite.tabular_config(name), "n_num": len(prep.tab.num_names),
                                                 "cat_cardinalities": list(prep.data.cat_cardinalities)})


# ------------------------------------------------------------------------------ training settings


@dataclass
class TrainSetting:
    """One set of runs: the data they train on, the missingness at training, and what they are tested under.

    ``label`` is the run spec's protocol: ``complete`` / ``incomplete-tabular`` for the AMF-MedIT
    protocols, ``missing-image@train=0.3`` and the like for a missingness protocol trained at a rate
    above 0. Training at rate 0 of any missingness protocol is training on complete data, so those
    runs are shared with the ``complete`` runs and evaluated under every protocol's test rates.
    """

    label: str
    proto: AppliedProtocol
    train_cond: Condition = NO_MISSINGNESS
    evals: list[tuple[str, Condition]] = dataclasses.field(default_factory=list)  # (protocol name, test condition)
    report_eval: tuple[str, Condition] | None = None  # the condition whose test metric is the run's headline


def train_settings(suite: Suite, tab: PreparedTabular, importance: dict | None) -> dict[str, TrainSetting]:
    ranking = importance["ranking"] if importance else None
    settings: dict[str, TrainSetting] = {}
    for spec in suite.protocols:
        plan = missingness_plan(spec)
        if plan is None:
            settings.setdefault(spec["name"], TrainSetting(spec["name"], apply_protocol(spec, tab, ranking)))
            continue
        for p in plan.train_rates:
            label = "complete" if p == 0 else plan.run_protocol(p)
            st = settings.setdefault(label, TrainSetting(label, apply_protocol({"name": "complete"}, tab, ranking),
                                                         NO_MISSINGNESS if p == 0 else plan.condition(p)))
            rates = sorted(set(plan.test_rates) | {p})
            st.evals += [(plan.name, plan.condition(q)) for q in rates]
            if p > 0:
                st.report_eval = (plan.name, plan.condition(p))
    return settings


def protocol_data_key(proto: AppliedProtocol, tab: PreparedTabular) -> str:
    """What a protocol's feature cache and probes are keyed by: ``complete`` when it trains on the
    complete table itself, its description when it masks columns, else its description and a hash of
    the data it made (a plug-in protocol that transforms values, e.g. adds noise)."""
    if proto.x_num is tab.x_num and proto.x_cat is tab.x_cat:
        return "complete"
    if proto.masked_features:
        return proto.describe()
    digest = hashlib.sha256(np.ascontiguousarray(proto.x_num).tobytes() + np.ascontiguousarray(proto.x_cat).tobytes())
    return f"{proto.describe()} #{digest.hexdigest()[:12]}"


def importance_key(suite: Suite, prov: dict, prep: Prepared, loss: LossConfig) -> str:
    """What the importance ranking depends on: the data (checksum), its preprocessed training and
    validation rows and their labels, the importance model (its registered source included) and settings,
    the loss, the seed, and the source of the code that fits and attributes (bench/importance.py,
    bench/train.py)."""
    from bench import __version__, importance, train
    from bench.fingerprint import plugin_identity

    icfg = suite.budget.get("importance", {})
    model_name = icfg.get("model", "resnet")
    y = np.asarray(prep.data.y)
    rows = np.concatenate([prep.train, prep.val])
    h = hashlib.sha256()
    for a in (prep.train, prep.val, y[prep.train], y[prep.val]):  # the rows and labels it is fitted on
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    for a in (prep.tab.x_num[rows], prep.tab.x_cat[rows]):  # as preprocessed (the preprocessor's code included)
        h.update(np.ascontiguousarray(a).tobytes())
    code = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (importance, train))).hexdigest()[:16]
    blob = json.dumps({"data": prov["checksum"], "splits": h.hexdigest()[:16], "cfg": icfg, "model": model_name,
                       "kwargs": suite.tabular_config(model_name), "loss": dataclasses.asdict(loss),
                       "source": plugin_identity("tabular_encoder", model_name)["source"], "code": code,
                       "seed": PRETRAIN_SEED, "bench": __version__, "v": 2}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def importance_cache_path(key: str) -> Path:
    return cache_root() / "importance" / f"{key}.json"


def cached_importance(key: str, compute, *, force: bool = False) -> dict:
    """The importance ranking stored under ``key`` in the bench cache, else ``compute()`` stored there
    (a suite run again, or resumed, does not refit the importance model; ``force``: computed again)."""
    from bench.results import CORRUPT_DIR, _json_default, atomic_write_text, set_aside, warn

    path = importance_cache_path(key)
    if path.is_file() and not force:
        try:
            found = json.loads(path.read_text())
            if isinstance(found, dict) and "ranking" in found:
                return found
        except (OSError, ValueError):
            pass
        dest = set_aside(path, cache_root() / CORRUPT_DIR)
        warn(f"cache file {path} is unreadable; moved it to {dest}, it is recomputed")

    text = json.dumps(compute(), default=_json_default)  # key order kept: scores stay ranked
    try:
        atomic_write_text(path, text)
    except OSError as exc:  # a read-only cache: computed again next time
        log.warning("cannot write the importance cache %s (%s)", path, exc)
    return json.loads(text)  # exactly what a later run reads back from the cache


def needs_importance(suite: Suite) -> bool:
    """Whether a protocol of the suite reads the importance ranking (computed on the training split)."""
    return any(get_protocol(p["name"]).needs_importance(p) for p in suite.protocols)


# ------------------------------------------------------------------------------------- the suite
@dataclass
class SuiteResult:
    suite_dir: Path
    reports: list[RunReport]
    seconds: float
    run_ids: list[str] = dataclasses.field(default_factory=list)  # this invocation's runs, reference rows included
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # where the wall time went


STAGES = ("importance", "pretraining", "features", "probes", "reference rows", "latency profiles", "searches",
          "final fits", "leaderboard")


def run_suite(
    suite: Suite,
    *,
    out: Path,
    data_root: str | None = None,
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
    backend: str = "optuna",
    storage: str | None = None,
    ray_address: str | None = None,
    dataset: str | None = None,
    hooks: Sequence[RunHooks] = (),
    workers: int = 1,
) -> SuiteResult:
    """Run every method of ``suite``; searches go to ``backend`` (optuna | ray), kept in ``storage``.

    ``hooks``: :class:`bench.hooks.RunHooks` told when each run starts, after each of its epochs, when
    it ends or fails (e.g. :class:`bench.mlflow_hooks.MLflowHooks`). ``workers`` > 1: the seeds' final
    fits run in that many forked processes, the torch threads divided between them (:mod:`bench.executor`).
    ``backend`` ray: the searches' trials, the pairs' pretraining, the frozen features, the classical models
    of the reference rows and the seeds' final fits are Ray tasks on the cluster
    (:class:`bench.executor.RayPlacement`); probes and latency profiles run here.

    The suite is planned, then executed: :func:`bench.plan.plan_suite` lists its typed tasks (importance,
    pretrain, encode, probe, reference, profile, search, fit, render) with the keys of the outputs each
    reads, and :func:`bench.executor.execute_plan` runs the pending ones in order, each by the
    :class:`SuiteRun` method of its kind (:meth:`SuiteRun.handlers`), loading the finished ones that a
    pending task reads. ``bench run --dry-run`` prints the same plan without executing it.
    """
    from bench.plan import Loaded, plan_suite

    t_start = time.perf_counter()
    run = SuiteRun(suite, out=out, data_root=data_root, force=force, progress=progress, device=device,
                   backend=backend, storage=storage, ray_address=ray_address, dataset=dataset, hooks=hooks,
                   workers=workers)
    tasks = plan_suite(suite, out=out, loaded=Loaded(run.data, run.prep, run.prov), force=force)
    run.pretrain_on_cluster(tasks)
    run.encode_on_cluster(tasks)
    execute_plan(tasks, run.handlers(), on_skip=run.skipped)
    return run.finish(t_start)


@dataclass
class EncoderPair:
    """One pretrained encoder pair and what its protocols share: the image features (encoded once), the
    randomly initialised encoders (for the probes' baseline), the probes by protocol data and the
    frozen test-condition features."""

    tab_name: str
    img_enc: nn.Module
    tab_enc: nn.Module
    pinfo: dict
    init_img: nn.Module
    init_tab: nn.Module
    img_tokens: torch.Tensor | None = None
    img_pooled: torch.Tensor | None = None
    probes: dict[str, dict] = dataclasses.field(default_factory=dict)
    test_states: dict = dataclasses.field(default_factory=dict)


class SuiteRun:
    """One invocation of a suite, stage by stage (see :func:`run_suite`): what every stage reads (the
    suite, its data and settings, where runs are written) and what the stages share (the shared image
    encoder, the image probes, the latency profiles, the searches run, the reference rows written)."""

    def __init__(self, suite: Suite, *, out: Path, data_root: str | None, force: bool, progress: bool, device: str,
                 backend: str, storage: str | None, ray_address: str | None, dataset: str | None,
                 hooks: Sequence[RunHooks], workers: int) -> None:
        self.stage_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.hooks = HookList(hooks)
        check_backend(backend, storage, ray_address)
        if backend == "ray" and workers > 1:
            raise ConfigError("--workers is for this machine's processes; with --backend ray the fits already spread over "
                              "the cluster: drop --workers (or use --backend optuna)")
        preflight(suite, out, backend=backend, storage=storage)  # --out, cache, storage, unreadable files: before any data
        self.suite, self.out, self.force, self.workers = suite, out, force, workers
        self.backend, self.storage, self.ray_address = backend, storage, ray_address
        self.dev = dev = resolve_device(device)
        self.env = environment()
        self.suite_dir = out / suite.name
        self.data = data = load_data(suite, data_root, dataset)
        self.prov = prov = data_provenance(data)
        # what each run is made with now; a finished run made otherwise is set aside and run again
        reconcile(out, suite, lambda sp: run_fingerprint(suite, prov, sp), planned_specs(suite), force=force, say=_say)
        self.prep = prep = prepare(data)
        self.loss = LossConfig.from_dict(suite.loss)
        if data.task != "binary" and self.loss.name != "ce":
            raise ConfigError(f"suite {suite.name!r}: loss {self.loss.name!r} needs a binary task; {data.provenance.dataset} is {data.task}")
        self.n_out = 1 if data.task == "binary" else data.n_classes
        for name in suite.metrics:  # a metric of another task would fail only when the leaderboard is rendered
            if data.task not in get("metric", name).tasks:
                raise ConfigError(f"suite {suite.name!r}: metric {name!r} is for {'/'.join(get('metric', name).tasks)} "
                                  f"tasks; {data.provenance.dataset} is {data.task}: drop it from the suite's metrics")
        self.budget = budget = suite.budget
        self.placement = RayPlacement.from_budget(budget, ray_address, dev.type == "cuda") if backend == "ray" else None
        _say(f"[bench] suite {suite.name} v{suite.version} | budget {suite.budget_name} | data {prov['dataset']} "
             f"({prov['source']}, {prov['version']}, n={data.n}, image {data.image_shape}) | seeds {suite.seeds}")
        self.variants, refused = suite.fusion_variants()
        for name, why in refused.items():
            _say(f"[bench] refused {name}: {why}")

        # importance ranking for incomplete-tabular and importance-ranked missing-cells protocols
        self.importance = None
        if needs_importance(suite):
            icfg = budget.get("importance", {})
            model_name = icfg.get("model", "resnet")
            _say(f"[bench] feature importance: integrated gradients of a supervised {model_name} on the training split")
            with self.timed("importance"):
                ikw = dict(x_num=prep.tab.x_num, x_cat=prep.tab.x_cat, names=prep.tab.num_names + prep.tab.cat_names,
                           y=data.y, train_idx=prep.train, val_idx=prep.val, task=data.task, n_classes=data.n_classes,
                           model_name=model_name, model_kwargs=suite.tabular_config(model_name), loss=self.loss,
                           cfg=icfg, seed=PRETRAIN_SEED)
                self.importance = cached_importance(importance_key(suite, prov, prep, self.loss), lambda: (
                    ig_importance(**ikw) if self.placement is None else self.importance_on_cluster(ikw)), force=force)
            top = ", ".join(f"{k} {v:.1%}" for k, v in list(self.importance["scores"].items())[:3])
            _say(f"[bench]   most important: {top}")
        self.settings = settings = train_settings(suite, prep.tab, self.importance)
        plans = [pl for pl in (missingness_plan(p) for p in suite.protocols) if pl is not None]

        atomic_write_json(self.suite_dir / "suite.json", {
            "suite": suite.name, "version": suite.version, "budget": suite.budget_name, "budget_config": budget,
            "seeds": suite.seeds, "tabular_encoders": suite.tabular_encoders, "fusions": [v[0] for v in self.variants],
            "refused": refused, "strategies": suite.strategies, **({"metrics": suite.metrics} if suite.metrics else {}),
            "protocols": {**{k: v.proto.describe() for k, v in settings.items() if v.train_cond.kind == "none"
                             and k not in {pl.name for pl in plans}},
                          **{pl.name: pl.describe() for pl in plans}},
            "missingness": [{"name": pl.name, "kind": pl.kind, "flavour": pl.flavour, "train_rates": pl.train_rates,
                             "test_rates": pl.test_rates} for pl in plans],
            "provenance": prov, "importance": self.importance, "environment": self.env, "loss": suite.loss,
            "search": {**budget.get("search", {}), **describe(backend, budget.get("search", {}))},
        })

        self.image_spec = image_encoder_spec(suite, data)
        self.image_label = self.image_spec.kwargs.get("model_name", self.image_spec.name)
        self.runs_per_pair = len(settings) * len(self.variants) * len(suite.strategies) * len(suite.seeds)
        self.bar = tqdm(total=len(suite.tabular_encoders) * self.runs_per_pair, desc=f"{suite.name} runs", unit="run",
                        disable=not progress, dynamic_ncols=True)
        self.progress = progress
        # fusions that read every tabular token (not only the pooled one) need them encoded and cached
        self.needs_tab_tokens = any(getattr(get("fusion", base), "needs_tabular_tokens", False)
                                    for _, base, _ in self.variants)
        self.searched: set[str] = set()  # the searches (stems) run by this invocation
        # reference rows (bench.reference): classical models on the table (+ each pair's image features), ceilings
        self.reference_groups: set[tuple] = set()  # (setting, pair or None) whose reference rows are written
        self.contexts: dict[tuple, _RunContext] = {}  # by method (pair, setting, fusion, strategy): search + fits
        self.run_ids: list[str] = []  # the plan's runs and reference rows: what the leaderboard reads
        self.ceilings = synthetic_ceilings(data)
        self.pcfg = budget["pretrain"]
        self.anchor = self.pcfg.get("anchor", "mlp")
        self.shares_image = self.pcfg.get("image_encoder", "per_pair") == "shared"
        self.shared: list[SharedImage] = []  # pretrain.image_encoder: shared -> [the anchor's] once it is pretrained
        self.image_probes: dict[str, float] = {}  # image probe's validation metric by image encoder (key | random-init)
        self.shared_fits: dict[str, tuple] = {}  # fits that do not depend on the pair (_RunContext.share_key)
        self.reference_memo: dict = {}  # classical models' scores by their inputs (bench.reference)
        self.deferred_references: list[tuple[str, Callable[[], Any]]] = []  # on Ray: written once fitted
        self.training = Training(prep, self.loss, budget, self.n_out, out, self.importance, self.needs_tab_tokens,
                                 self.shared_fits if self.shares_image else None)

    def importance_on_cluster(self, kwargs: dict) -> dict:
        """On Ray, the importance model is fitted and attributed on the cluster; the ranking records where."""
        jobs = {"the importance model": (functools.partial(ig_importance, **kwargs), ())}
        [(ranking, where)] = jobs_on_ray(jobs, self.placement, "fitting", "fitted", say=_say).values()
        return {**ranking, "computed_on": where}

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the wall time of the block to ``stage`` (reported at the end of the run and in ``timings.json``)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] += time.perf_counter() - t0

    # ---------------------------------------------------------------------------------------- runs
    def spec_of(self, setting: str, tab_name: str, label: str, strategy: str, seed: int) -> RunSpec:
        return RunSpec(self.suite.name, setting, self.image_label, tab_name, label, strategy, seed)

    def is_finished(self, sp: RunSpec) -> bool:
        return not self.force and is_done(run_dir(self.out, sp), run_fingerprint(self.suite, self.prov, sp))

    def record_failed(self, sp: RunSpec, exc: BaseException, run_hooks: RunHooks) -> None:
        """A fit that raised (a broken plug-in, a NaN loss, out of memory): recorded; the suite goes on."""
        reason = record_failure(run_dir(self.out, sp), sp, exc)
        run_hooks.run_failed(sp, reason, run_dir(self.out, sp))
        _say(f"[bench] run {sp.run_id} failed: {reason}")

    # --------------------------------------------------------------------------------- pretraining
    def pretrain_job(self, tab_name: str) -> tuple[dict, Path]:
        """:func:`pretrain_pair`'s arguments for one pair, and where its checkpoint is cached."""
        data, prep = self.data, self.prep
        image_from = None
        if self.shares_image and tab_name != self.anchor:
            if not self.shared:
                a_img, _, a_info = self.pretrain(self.anchor)
                self.shared.append(shared_image(a_img, a_info, self.pcfg))
            image_from = self.shared[0]
        tab_spec = tabular_encoder_spec(self.suite, prep, tab_name)
        kwargs = dict(
            images=data.images, x_num=prep.tab.x_num, x_cat=prep.tab.x_cat,
            train_idx=prep.train if data.image_available is None else prep.train[data.image_available[prep.train]],
            image_spec=self.image_spec, tabular_spec=tab_spec, cfg=self.pcfg, seed=PRETRAIN_SEED,
            data_checksum=self.prov["checksum"], device=self.dev, heldout_idx=prep.val, image_from=image_from,
            labels=data.y, n_classes=data.n_classes if data.task != "binary" else 2)
        path = pretrain_cache_path(self.prov["checksum"], self.image_spec, tab_spec, self.pcfg, PRETRAIN_SEED,
                                   heldout=True, image_from=None if image_from is None else image_from.key)
        return kwargs, path

    def pretrain(self, tab_name: str):
        """Pretrain (or load) one pair; with a shared image encoder, the anchor pair first (AMF-MedIT 3.1).
        On Ray the pair trains on the cluster and this process loads the checkpoint it sends back."""
        kwargs, path = self.pretrain_job(tab_name)
        if self.placement is not None and not path.exists():
            pretrain_on_ray({f"{self.image_label}+{tab_name}": (kwargs, path)}, self.placement, say=_say)
        pbar = tqdm(total=pretrain_steps(len(self.prep.train), self.pcfg), desc=f"pretrain {self.image_label}+{tab_name}",
                    unit="step", disable=not self.progress, leave=False, dynamic_ncols=True)
        img_enc, tab_enc, pinfo = pretrain_pair(**kwargs, progress=pbar)
        pbar.close()
        if hasattr(tab_enc, "tokens_needed"):  # no fusion reads all tabular tokens: skip computing them
            tab_enc.tokens_needed = self.needs_tab_tokens
        return img_enc, tab_enc, pinfo

    def pretrain_on_cluster(self, tasks: Sequence) -> None:
        """On Ray, the pairs the plan will read (runs or reference rows to make) pretrain at once, on the
        cluster, when their checkpoints are not cached (the shared anchor first)."""
        if self.placement is None:
            return
        with self.timed("pretraining"):  # pretrain_job trains the shared image encoder's anchor first
            todo_pairs = [t.args["tab"] for t, runs in zip(tasks, tasks_to_run(tasks))
                          if runs and t.kind == "pretrain" and not t.args.get("anchor_only")]
            jobs = {f"{self.image_label}+{t}": self.pretrain_job(t) for t in todo_pairs}
            jobs = {name: job for name, job in jobs.items() if not job[1].exists()}
            if jobs:
                pretrain_on_ray(jobs, self.placement, say=_say)

    def encode_on_cluster(self, tasks: Sequence) -> None:
        """On Ray, every frozen feature set the plan's encode tasks will read and the cache lacks is encoded
        at once on the cluster (the image features once per image encoder); the encode tasks then load them."""
        if self.placement is None:
            return
        with self.timed("features"):
            jobs: dict[str, tuple] = {}
            names: dict[Path, str] = {}
            encoders: dict[str, tuple] = {}
            for task, runs in zip(tasks, tasks_to_run(tasks)):
                if not runs or task.kind != "encode":
                    continue
                tab, setting = task.args["tab"], task.args["setting"]
                if tab not in encoders:  # trained by pretrain_on_cluster: loaded from the cache
                    encoders[tab] = self.pretrain(tab)
                img_enc, tab_enc, pinfo = encoders[tab]
                proto = self.settings[setting].proto
                image_key, tab_key = self.feature_keys(pinfo, protocol_data_key(proto, self.prep.tab))
                for name, key, compute, args in (
                        (f"{self.image_label} images ({tab} pair)", image_key, encode_images, (img_enc, self.data.images)),
                        (f"{tab} / {setting} table", tab_key, encode_tabular,
                         (tab_enc, proto.x_num, proto.x_cat, self.needs_tab_tokens))):
                    path = features_cache_path(key)
                    if not path.exists() and path not in names:
                        names[path] = name
                        jobs[name] = (compute, args, path)
            if jobs:
                encode_on_ray(jobs, self.placement, say=_say)

    # ------------------------------------------------------------------------- the plan's tasks
    def handlers(self) -> dict:
        """The method that executes each kind of task of the plan (:func:`bench.executor.execute_plan`)."""
        return {"importance": lambda task, inputs: self.importance, "pretrain": self.pretrain_task,
                "encode": self.encode_task, "probe": self.probe_task, "reference": self.reference_task,
                "profile": self.profile_task, "search": self.search_task, "fit": self.fit_tasks,
                "render": self.render_task}

    def skipped(self, task) -> None:
        """A task whose result is stored and that no pending task reads."""
        if task.kind == "fit":
            self.bar.update(1)

    def pretrain_task(self, task, inputs) -> EncoderPair | None:
        """One encoder pair pretrained (or loaded from its cache) and measured on held-out pairs; with a
        shared image encoder whose anchor is not one of the suite's pairs, the anchor alone (no output)."""
        tab_name = task.args["tab"]
        if task.args.get("anchor_only"):
            with self.timed("pretraining"):
                if not self.shared:
                    a_img, _, a_info = self.pretrain(tab_name)
                    self.shared.append(shared_image(a_img, a_info, self.pcfg))
            return None
        tab_spec = tabular_encoder_spec(self.suite, self.prep, tab_name)
        with self.timed("pretraining"):
            img_enc, tab_enc, pinfo = self.pretrain(tab_name)
        ho = pinfo.get("heldout") or {}
        shown = {k: _num(ho.get(k)) for k in ("itc_init", "itc", "chance_itc", "top1_init", "top1")}
        _say(f"[bench] pretrained {self.image_label}+{tab_name} "
             f"({'cache' if pinfo['cached'] else str(pinfo['seconds']) + ' s'}): "
             f"held-out ITC {shown['itc_init']} -> {shown['itc']} (chance ln B {shown['chance_itc']}), top-1 retrieval "
             f"{shown['top1_init']} -> {shown['top1']} (chance 1/B {_num(ho.get('chance_top1'), '.4f')})"
             + ("" if ho.get("learned") else " — ENCODERS NOT TRAINED (short of ln B - 0.5 and 5/B, or too few held-out pairs)"))
        rec = pinfo.get("reconstruction")
        if rec:
            _say(f"[bench]   held-out table reconstruction: numeric R^2 {_num(rec.get('numeric_r2'))} (chance 0), "
                 f"categorical accuracy {_num(rec.get('categorical_accuracy'))} (majority {_num(rec.get('categorical_majority'))})")
        torch.manual_seed(PRETRAIN_SEED)  # the exact starting point of pretraining, for the random-init probes
        init_img, init_tab = place_image_encoder(self.image_spec.build(), self.dev), tab_spec.build().to(self.dev)
        if hasattr(init_tab, "tokens_needed"):
            init_tab.tokens_needed = False
        return EncoderPair(tab_name, img_enc, tab_enc, pinfo, init_img, init_tab)

    def encode_task(self, task, inputs) -> tuple[Features, str]:
        """One pair's frozen features under one training setting's data, and the key of that data."""
        pair = inputs[("pretrain", task.args["tab"])]
        proto = self.settings[task.args["setting"]].proto
        data_key = protocol_data_key(proto, self.prep.tab)
        with self.timed("features"):
            return self.features(pair, proto, data_key), data_key

    def probe_task(self, task, inputs) -> dict:
        tab, setting = task.args["tab"], task.args["setting"]
        feats, data_key = inputs[("encode", tab, setting)]
        with self.timed("probes"):
            return self.probes(inputs[("pretrain", tab)], self.settings[setting].proto, data_key, feats)

    def reference_task(self, task, inputs) -> None:
        """The reference rows of one protocol (bench.reference): the table-only models and ceilings (pair
        None), or the classical models on the table plus one pair's frozen image features. One call writes
        every row of its group; the group's other tasks find it written."""
        setting, pair = task.args["setting"], task.args["pair"]
        if (setting, pair) in self.reference_groups:
            return
        self.reference_groups.add((setting, pair))
        proto = self.settings[setting].proto
        ref = dict(out=self.out, suite=self.suite, protocol=setting, image_label=self.image_label, data=self.data,
                   prep=self.prep, x_num=proto.x_num, x_cat=proto.x_cat, seeds=self.suite.seeds, prov=self.prov,
                   env=self.env, base_fingerprint=reference_base_fingerprint(self.suite, self.prov, setting,
                                                                             task.args["tab"]),
                   force=self.force, say=_say, memo=self.reference_memo)
        if pair is None:
            rows = dict(image_features=None, pair=None, ceilings=self.ceilings if setting == "complete" else None)
        else:
            feats, _ = inputs[("encode", pair, setting)]
            rows = dict(image_features=feats.image_pooled.cpu().numpy(), pair=pair, ceilings=None,
                        pretraining=inputs[("pretrain", pair)].pinfo)
        with self.timed("reference rows"):
            if self.placement is None:
                write_reference_runs(**ref, **rows)
                return
            # on Ray: the classical fits start on the cluster now; the rows are written before the leaderboard
            self.reference_fits_on_cluster(ref, rows)
            self.deferred_references.append((f"{pair or 'table'} / {setting}",
                                             lambda: write_reference_runs(**ref, **rows)))

    def reference_fits_on_cluster(self, ref: dict, rows: dict) -> None:
        """Start the classical fits one reference group still needs on the Ray cluster, without waiting;
        their promises go into the memo that :func:`write_reference_runs` reads (one fit per distinct inputs)."""
        x, y, split = reference_inputs(self.data, self.prep, ref["x_num"], ref["x_cat"], rows["image_features"])
        digest = inputs_digest(x, y, split, self.data.task, self.data.n_classes)
        needed = fits_needed(out=self.out, suite=self.suite, protocol=ref["protocol"], image_label=self.image_label,
                             pair=rows["pair"], seeds=self.suite.seeds, base_fingerprint=ref["base_fingerprint"],
                             force=self.force, image_features=rows["image_features"])
        jobs = {(digest, how, seed): (how, x, y, split, self.data.task, seed, int(self.data.n_classes))
                for how, seed in needed if (digest, how, seed) not in self.reference_memo}
        if jobs:
            self.reference_memo.update(reference_fits_on_ray(jobs, self.placement))

    def write_deferred_references(self) -> None:
        """On Ray, the reference rows whose classical fits ran on the cluster, written as the fits return.
        A group whose fit failed is left out of the leaderboard with a warning (like a failed run, it is
        made on the next invocation); the other groups and the leaderboard are still written."""
        with self.timed("reference rows"):
            while self.deferred_references:
                name, write = self.deferred_references.pop(0)
                try:
                    write()
                except Exception as exc:  # noqa: BLE001 - one classical model must not cost the leaderboard
                    warn(f"reference rows {name} not written: {exc}; run the suite again to make them")

    def profile_task(self, task, inputs) -> dict | Exception:
        """Parameters, FLOPs and latency of one method on one pair (an exception: its runs fail)."""
        tab, label = task.args["tab"], task.args["label"]
        pair, probes = inputs[("pretrain", tab)], inputs[("probe", tab, task.args["setting"])]
        base = parse_variant(label)[0]
        try:
            with self.timed("latency profiles"):
                dims = fusion_dims(pair.img_enc, pair.tab_enc, get("fusion", base))
                return _profile(pair.img_enc, pair.tab_enc, label, dims, self.n_out,
                                dict(self.budget.get("fusions", {}).get(base, {})), probes["rconf"], self.data,
                                self.budget.get("latency", {}))
        except Exception as exc:  # a plug-in that cannot even be built or traced: its runs fail
            return exc

    def context(self, args: dict, inputs: dict) -> _RunContext:
        """What one method (pair, setting, fusion, strategy) trains with: shared by its search and its fits."""
        tab, setting_name, label, strategy = args["tab"], args["setting"], args["label"], args["strategy"]
        key = (tab, setting_name, label, strategy)
        if key in self.contexts:
            return self.contexts[key]
        warm = strategy == "trainable" and self.budget["finetune"]["trainable"].get("warm_start") == "frozen"
        # a warm-started run loads the head of the frozen run with the same spec and seed
        warm_from = (self.out, self.spec_of(setting_name, tab, label, "frozen", 0)) if warm else None
        ctx = _RunContext(self.training, inputs[("pretrain", tab)], inputs[("encode", tab, setting_name)][0],
                          self.settings[setting_name], label, strategy, inputs[("probe", tab, setting_name)]["rconf"],
                          warm_from)
        self.contexts[key] = ctx
        return ctx

    def search_task(self, task, inputs) -> tuple[dict, dict] | Exception:
        """One search (an exception: every run that reads it is recorded as failed)."""
        args = task.args
        profile = inputs[("profile", args["tab"], args["label"])]
        if isinstance(profile, Exception):
            return profile
        ctx = self.context(args, inputs)
        try:
            with self.timed("searches"):
                return self.search(ctx, ctx.fusion_cls, args["strategy"], args["first"], args["setting"])
        except Exception as exc:  # the search itself failed
            return exc

    def fit_tasks(self, tasks, inputs) -> None:
        """The seeds' final fits of one method: in this process, in --workers forked processes or on Ray
        (:func:`bench.executor.run_fits`)."""
        args = tasks[0].args
        todo = [t.args["spec"] for t in tasks]
        tab, setting_name, label, strategy = args["tab"], args["setting"], args["label"], args["strategy"]
        found = inputs[("search", search_stem(self.suite, todo[0]))]
        profile = inputs[("profile", tab, label)]
        failed = next((x for x in (profile, found) if isinstance(x, Exception)), None)
        if failed is not None:  # its profile or its search failed: every run of it is recorded as failed
            for sp in todo:
                self.record_failed(sp, failed, self.hooks)
            self.bar.update(len(todo))
            self.contexts.pop((tab, setting_name, label, strategy), None)  # its features are not kept
            return
        ctx = self.context(args, inputs)
        self.bar.set_postfix_str(f"{tab}/{label}/{strategy}/{setting_name}")
        best, search_info = found
        fit_one = FinalFit(ctx, best, search_info, self.suite, self.prov, self.env, profile,
                           inputs[("pretrain", tab)].pinfo, inputs[("probe", tab, setting_name)],
                           ctx.warm_from is not None)
        with self.timed("final fits"):
            run_fits(todo, fit_one, workers=self.workers, hooks=self.hooks, on_error=self.record_failed,
                     run_dir_of=lambda sp: run_dir(self.out, sp), on_done=lambda _sp: self.bar.update(1),
                     ray=self.placement)
        self.contexts.pop((tab, setting_name, label, strategy), None)

    def render_task(self, task, inputs) -> None:
        """The leaderboard of this invocation's plan: its runs and reference rows, whatever else is in the folder."""
        from bench.leaderboard import write_leaderboard

        self.write_deferred_references()
        self.bar.close()
        self.hooks.close()
        self.run_ids = list(task.args["run_ids"])
        with self.timed("leaderboard"):
            write_leaderboard(self.suite_dir, expected_seeds=self.suite.seeds, run_ids=self.run_ids)

    def feature_keys(self, pinfo: dict, data_key: str) -> tuple[dict, dict]:
        """The cache keys of a pair's image features and of its tabular features on one protocol's data."""
        image = {"encoders": pinfo.get("image_key", pinfo["cache_key"]), "data": self.prov["checksum"], "modality": "image"}
        table = {"encoders": pinfo["cache_key"], "data": self.prov["checksum"], "modality": "tabular",
                 "protocol": data_key, "tokens": self.needs_tab_tokens}
        return image, table

    def features(self, pair: EncoderPair, proto, data_key: str) -> Features:
        """Frozen features: computed once per (encoder checkpoint, dataset, protocol data), cached on disk;
        the image features do not depend on the protocol: encoded once per pair."""
        image_key, tab_key = self.feature_keys(pair.pinfo, data_key)
        if pair.img_tokens is None:
            pair.img_tokens, pair.img_pooled = cached_features(image_key, self.dev, encode_images, pair.img_enc,
                                                               self.data.images)
        tab_tokens, tab_pooled = cached_features(tab_key, self.dev, encode_tabular, pair.tab_enc, proto.x_num,
                                                 proto.x_cat, self.needs_tab_tokens)
        return Features(pair.img_tokens, pair.img_pooled, tab_pooled, tab_tokens)

    def probes(self, pair: EncoderPair, proto, data_key: str, feats: Features) -> dict:
        """Rconf from frozen unimodal probes on the protocol's data (appendix A.4), and the same probes on
        the randomly initialised encoders (what pretraining bought). On Ray the probes of a pair and protocol
        are fitted at once on the cluster (the random-init encoders encode there too); the result records where."""
        if data_key in pair.probes:
            return pair.probes[data_key]
        prep, data = self.prep, self.prep.data
        probe_cfg = self.budget.get("probes", {"max_epochs": 50, "patience": 10})
        common = (data.y, prep.train, prep.val, data.task, data.n_classes, self.loss, probe_cfg, PRETRAIN_SEED)
        on_ray = self.placement is not None

        def cpu(x):  # what a Ray task is sent lives on the CPU
            return (copy.deepcopy(x).cpu() if isinstance(x, nn.Module) else x.cpu()) if on_ray else x

        # the image features do not depend on the protocol, and pairs that share one image encoder
        # (pretrain.image_encoder: shared) have the same ones: each image probe is fitted once; so is the
        # random-init image probe (every pair's image encoder starts from the same weights)
        image_key = pair.pinfo.get("image_key", pair.pinfo["cache_key"])
        jobs: dict[str, tuple[Callable, tuple]] = {}
        if image_key not in self.image_probes:
            jobs["image"] = (probe_metric, (cpu(feats.image_pooled), *common))
        jobs["tabular"] = (probe_metric, (cpu(feats.tab_pooled), *common))
        if "random-init" not in self.image_probes:
            jobs["image, random init"] = (probe_encoded, (encode_images, *common, cpu(pair.init_img), self.data.images))
        jobs["tabular, random init"] = (probe_encoded, (encode_tabular, *common, cpu(pair.init_tab), proto.x_num,
                                                        proto.x_cat, False))
        if on_ray:
            named = {f"{pair.tab_name} / {data_key}: {name} probe": name for name in jobs}
            ran = jobs_on_ray({key: jobs[name] for key, name in named.items()}, self.placement, "probing", "probed",
                              say=_say)
            done = {named[key]: metric for key, (metric, _) in ran.items()}
            where = {named[key]: info for key, (_, info) in ran.items()}
        else:
            done, where = {name: fn(*args) for name, (fn, args) in jobs.items()}, None
        if "image" in done:
            self.image_probes[image_key] = done["image"]
        if "image, random init" in done:
            self.image_probes["random-init"] = done["image, random init"]
        m_img, m_tab = self.image_probes[image_key], done["tabular"]
        rconf = confidence_ratio(m_img, m_tab)
        override = self.suite.raw.get("rconf", "measured")
        if override != "measured":  # a suite may fix Rconf, e.g. the paper's ablation values (4.6.1)
            rconf = float(override)
        _say(f"[bench] {pair.tab_name} / {data_key}: unimodal probes (val) image {m_img:.4f}, "
             f"tabular {m_tab:.4f} -> Rconf {rconf:.3f}{'' if override == 'measured' else ' (fixed by the suite)'}")
        r_img, r_tab = self.image_probes["random-init"], done["tabular, random init"]
        _say(f"[bench]   random-init encoders: image {r_img:.4f}, tabular {r_tab:.4f}")
        pair.probes[data_key] = {"image_val": m_img, "tabular_val": m_tab, "rconf": rconf,
                                 "image_val_random_init": r_img, "tabular_val_random_init": r_tab,
                                 **({"probed_on": where} if where else {})}
        return pair.probes[data_key]

    def search(self, ctx: _RunContext, fusion_cls, strategy: str, first: RunSpec, setting_name: str) -> tuple[dict, dict]:
        """The best hyper-parameters of one (tabular encoder, fusion, strategy[, protocol]) search
        (fingerprint.search_stem), saved in the suite directory; with per_protocol false the search runs
        on the first (complete) setting, where an imputation variant is its fusion, and is reused by the others."""
        suite, budget = self.suite, self.budget
        search_cfg = budget.get("search", {})
        search_key = search_stem(suite, first)
        search_file = self.suite_dir / "search" / f"{search_key}.json"
        # --force redoes a search once per invocation; a search shared by settings
        # (per_protocol false) is then reused, not redone on each setting's data
        if search_file.exists() and (not self.force or search_key in self.searched):
            saved = json.loads(search_file.read_text())
            return saved["best"], saved["info"]
        # one study per key and per setting (budget, data, seed): a changed budget starts anew
        setting_hash = hashlib.sha256(json.dumps([budget, self.prov["checksum"], suite.version, suite.seeds[0]],
                                                 sort_keys=True, default=str).encode()).hexdigest()[:8]
        best, search_info = run_search(
            ctx.objective, fusion_cls=fusion_cls, strategy=strategy, budget=search_cfg,
            seed=suite.seeds[0], backend=self.backend, fresh=self.force, ray_address=self.ray_address,
            storage=self.storage or default_storage(self.backend, self.suite_dir / "search"),
            study_name=f"{suite.name}__{search_file.stem}__{setting_hash}",
            use_gpu=self.dev.type == "cuda", max_epochs=int(ctx.cfg["max_epochs"]))
        atomic_write_json(search_file, {"best": best, "info": {**search_info, "protocol": setting_name}})
        self.searched.add(search_key)
        return best, search_info

    # ---------------------------------------------------------------------------------- the end
    def finish(self, t_start: float) -> SuiteResult:
        """The reports of this invocation's plan, and where its wall time went (``timings.json``)."""
        self.write_deferred_references()  # (already written when the plan rendered its leaderboard)
        reports = load_reports(self.suite_dir, run_ids=self.run_ids)
        seconds = time.perf_counter() - t_start
        stages = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        stages["other (data, checks, encodings of test conditions, writing)"] = round(seconds - sum(stages.values()), 3)
        atomic_write_json(self.suite_dir / "timings.json", {"wall_seconds": round(seconds, 3), "stages": stages,
                                                            "environment": self.env})
        _say("[bench] wall time by stage: " + ", ".join(f"{k} {v:,.0f} s" for k, v in stages.items() if v >= 0.5))
        return SuiteResult(self.suite_dir, reports, seconds, self.run_ids, stages)


def has_ceilings(data: MultimodalData) -> bool:
    """Whether ``data`` is a replica whose generator gives ceiling logits (the OL3I replica)."""
    return data.provenance.source == "synthetic" and data.provenance.dataset == "ol3i-synthetic"


def synthetic_ceilings(data: MultimodalData) -> dict[str, np.ndarray] | None:
    """The generator's ceiling logits for every sample when ``data`` is a replica that knows them, else None."""
    prov = data.provenance
    if not has_ceilings(data):
        return None
    from bench.data.ol3i_synthetic import ceiling_scores, simulate

    d = prov.details
    return ceiling_scores(simulate(int(d["n"]), int(d["seed"]), prov.version))


def _profile(img_enc, tab_enc, fusion_name, dims, n_out, fusion_kwargs, rconf, data, latency_cfg) -> dict:
    from bench.profile import profile_model

    fusion = build_fusion(fusion_name, dims, n_out, fusion_kwargs, rconf)
    model = MultimodalModel(copy.deepcopy(img_enc), copy.deepcopy(tab_enc), fusion.to(_device_of(img_enc))).eval()
    example = {
        "images": image_batch(data.images[:1]),
        "x_num": torch.zeros(1, len(data.num_names)),
        "x_cat": torch.zeros(1, len(data.cat_names), dtype=torch.long) if data.cat_names else None,
    }
    rep = profile_model(model, example, runs=int(latency_cfg.get("runs", 100)), warmup=int(latency_cfg.get("warmup", 10)))
    return rep.to_dict()
