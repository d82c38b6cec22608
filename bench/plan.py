"""A suite as a plan of typed tasks, listed without training: ``bench run --dry-run``.

The plan has the shape of the pipeline (:func:`bench.pipeline.run_suite`): feature importance, one
contrastive pretraining per encoder pair (the shared image encoder's anchor first), per pair and
protocol the frozen features, the unimodal probes and the reference rows, per method the search, then
one fit per seed, and the leaderboard. A task is *done* when what it would produce is on disk under the
key it would be written with (the pretraining cache key, a run's fingerprint, a saved search), so the
plan says exactly what ``bench run`` would redo (a frozen fit that its search's trial at the first seed
already is costs nothing). Costs are counted in the budget's own units (optimiser
steps, epochs, fitted models); where this output folder already holds finished runs, their measured
seconds turn the pending fits into an estimate of wall time on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.fingerprint import planned_specs, run_fingerprint, search_stem, training_settings
from bench.results import is_done, run_dir
from bench.suite import Suite

KINDS = ("importance", "pretrain", "encode", "probe", "reference", "profile", "search", "fit", "render")


@dataclass(frozen=True)
class Task:
    """One unit of work: its kind, what it is, whether its result is already stored, and its cost.

    ``key`` names the task's output (the executor keeps it, by that key, until the last task that reads
    it has run); ``deps`` are the keys of the outputs it reads; ``after`` are tasks that must have run
    first although their output is not an input (the anchor's pretraining, the frozen fit a warm start
    loads from disk, the fit of another pair that an image-only fit takes); ``args`` say which pair,
    setting, method, strategy or run it is; tasks with the same ``batch`` (one method's seeds) go to
    the fit executor together (:func:`bench.executor.run_fits`: in this process, forked workers or Ray).
    """

    kind: str
    name: str
    done: bool
    cost: float  # in ``unit``
    unit: str
    key: tuple = ()
    deps: tuple = ()
    after: tuple = ()
    args: dict = field(default_factory=dict, compare=False, hash=False)
    batch: tuple | None = None


@dataclass
class Loaded:
    """What planning reads from the data: loaded once and shared with the pipeline that executes the plan."""

    data: object
    prep: object
    prov: dict


def plan_suite(suite: Suite, *, out: Path, data_root: str | None = None, dataset: str | None = None,
               loaded: Loaded | None = None, force: bool = False) -> list[Task]:
    """Every task of ``bench run`` for ``suite`` into ``out``, in the order it runs them (one encoder pair
    after another; within a pair, one training setting after another; within a setting, one method after
    another), so that what one pair and setting hold in memory is released before the next.

    ``loaded``: the data, its preprocessing and provenance when the caller has them (the pipeline);
    otherwise they are loaded here (``bench run --dry-run``). ``force``: the importance ranking and every
    run, search and reference row are to be made again (``bench run --force``; pretraining and frozen
    features stay cached by their content keys).
    """
    from bench.api import modalities_read
    from bench.executor import tasks_to_run
    from bench.pipeline import (
        PRETRAIN_SEED,
        data_provenance,
        has_ceilings,
        image_encoder_spec,
        importance_cache_path,
        importance_key,
        load_data,
        needs_importance,
        prepare,
        reference_base_fingerprint,
        tabular_encoder_spec,
    )
    from bench.pretrain import pretrain_cache_path, pretrain_steps
    from bench.reference import CEILINGS, RAW, reference_rows, reference_spec
    from bench.registry import get
    from bench.search.space import plan_search
    from bench.train import LossConfig

    if loaded is None:
        data = load_data(suite, data_root, dataset)
        loaded = Loaded(data, prepare(data), data_provenance(data))
    data, prep, prov = loaded.data, loaded.prep, loaded.prov
    budget = suite.budget
    suite_dir = out / suite.name
    tasks: list[Task] = []
    importance = ()
    if needs_importance(suite):
        icfg = budget.get("importance", {})
        stored = importance_cache_path(importance_key(suite, prov, prep, LossConfig.from_dict(suite.loss))).is_file()
        tasks.append(Task("importance", f"integrated gradients of a supervised {icfg.get('model', 'resnet')}",
                          stored and not force,
                          float(icfg.get("epochs", 0)), "epochs", key=("importance",)))
        importance = (("importance",),)
    settings = training_settings(suite)  # setting -> trains on complete data
    specs = planned_specs(suite)
    done = {sp.run_id: not force and is_done(run_dir(out, sp), run_fingerprint(suite, prov, sp)) for sp in specs}
    image_spec = image_encoder_spec(suite, data)
    image_label = image_spec.kwargs.get("model_name", image_spec.name)
    pcfg = budget["pretrain"]
    steps = float(pretrain_steps(len(prep.train), pcfg))
    variants, _ = suite.fusion_variants()

    def pretrain_path(name: str, image_from: str | None) -> Path:
        return pretrain_cache_path(prov["checksum"], image_spec, tabular_encoder_spec(suite, prep, name), pcfg,
                                   PRETRAIN_SEED, heldout=True, image_from=image_from)

    anchor = pcfg.get("anchor", "mlp")
    shared = pcfg.get("image_encoder", "per_pair") == "shared"
    anchor_key = pretrain_path(anchor, None).stem if shared else None
    reference = bool(budget.get("reference", {}).get("classical", True))
    fit_cost = {s: _fit_cost(budget, s) for s in suite.strategies}
    # a trainable fit that warm-starts from the frozen one's head runs after it, whatever the suite's order
    warm_start = budget["finetune"].get("trainable", {}).get("warm_start") == "frozen"
    strategies = sorted(suite.strategies, key=lambda s: s != "frozen") if warm_start else list(suite.strategies)
    anchor_listed = anchor in suite.tabular_encoders  # else pretrained first, for the others to align to
    shared_fits: dict[tuple, str] = {}  # an image-only fit on the shared image encoder -> the run that makes it
    raw_rows_listed: set[str] = set()
    searches: dict[str, list] = {}  # one search per stem; per_protocol false: a fusion's variants share one
    for sp in specs:
        searches.setdefault(search_stem(suite, sp), []).append(sp)
    # each search runs with the data of its first pending run's setting, before that run's fits
    search_at = {stem: next((sp for sp in runs if not done[sp.run_id]), runs[0]).run_id
                 for stem, runs in searches.items()}
    for tab in suite.tabular_encoders:
        pending = [sp for sp in specs if sp.tabular_encoder == tab and not done[sp.run_id]]
        after_anchor = ()
        if shared and tab != anchor:
            after_anchor = (("pretrain", anchor),)
            if not anchor_listed:
                anchor_listed = True
                tasks.append(Task("pretrain", f"{image_label}+{anchor} (the shared image encoder's anchor)",
                                  pretrain_path(anchor, None).exists() or not pending, steps, "steps",
                                  key=("pretrain", anchor),
                                  args={"tab": anchor, "anchor_only": True, "cache": pretrain_path(anchor, None)}))
        image_from = anchor_key if shared and tab != anchor else None
        pair_key = ("pretrain", tab)
        tasks.append(Task("pretrain", f"{image_label}+{tab}"
                          + (" (table side aligned to the shared image encoder)" if image_from else ""),
                          pretrain_path(tab, image_from).exists() or not pending, steps, "steps",
                          key=pair_key, after=after_anchor, args={"tab": tab, "cache": pretrain_path(tab, image_from)}))
        profiled: set[str] = set()
        for setting, complete in settings.items():
            left = [sp for sp in pending if sp.protocol == setting]
            enc_key, probe_key = ("encode", tab, setting), ("probe", tab, setting)
            tasks.append(Task("encode", f"{tab} / {setting}: frozen image and tabular features", not left,
                              float(data.n), "samples", key=enc_key, deps=(pair_key, *importance),
                              args={"tab": tab, "setting": setting}))
            tasks.append(Task("probe", f"{tab} / {setting}: image and tabular probes, pretrained and random-init",
                              not left, 4.0 * budget.get("probes", {}).get("max_epochs", 1), "epochs",
                              key=probe_key, deps=(pair_key, enc_key), args={"tab": tab, "setting": setting}))
            if reference and complete:
                base_fp = reference_base_fingerprint(suite, prov, setting, tab)
                ceilings = dict.fromkeys(CEILINGS) if setting == "complete" and has_ceilings(data) else None
                groups = ([None] if setting not in raw_rows_listed else []) + [tab]  # table-only rows once
                raw_rows_listed.add(setting)
                for pair in groups:
                    for row, _, what, _ in reference_rows(pair, ceilings):
                        found = [(sp.run_id, not force and is_done(run_dir(out, sp), fp)) for sp, fp in
                                 (reference_spec(suite, setting, image_label, pair, row, what, seed, base_fp)
                                  for seed in suite.seeds)]
                        # pairs that share one image encoder have the same image features: fitted once
                        again = shared and pair is not None and tab != suite.tabular_encoders[0]
                        tasks.append(Task(
                            "reference", f"{row} · {pair or RAW} / {setting} × {len(found)} seed(s)",
                            all(ok for _, ok in found), 0.0 if again else float(len(found)), "models",
                            key=("reference", setting, pair or RAW, row),
                            deps=(enc_key, pair_key) if pair is not None else importance,
                            args={"tab": tab, "setting": setting, "pair": pair,
                                  "run_ids": [rid for rid, _ in found]}))
            for label, base, _ in variants:
                fusion_cls = get("fusion", base)
                method_specs = [sp for sp in specs if sp.tabular_encoder == tab and sp.protocol == setting
                                and sp.fusion == label]
                prof_key = ("profile", tab, label)
                # one profile per pair and method, with the probes of the first setting that has its fits to do
                method_done = all(done[sp.run_id] for sp in pending if sp.fusion == label)
                if label not in profiled and (method_done or not all(done[sp.run_id] for sp in method_specs)):
                    profiled.add(label)
                    tasks.append(Task("profile", f"{tab} / {label}: parameters, FLOPs, latency", method_done,
                                      1.0, "models", key=prof_key, deps=(pair_key, probe_key),
                                      args={"tab": tab, "label": label, "setting": setting}))
                for strategy in strategies:
                    group = [sp for sp in method_specs if sp.strategy == strategy]
                    inputs = (pair_key, enc_key, probe_key, prof_key)
                    stem = search_stem(suite, group[0])
                    search_key = ("search", stem)
                    method = {"tab": tab, "setting": setting, "label": label, "strategy": strategy}
                    if search_at[stem] in {sp.run_id for sp in group}:
                        trials = plan_search(fusion_cls, strategy, budget.get("search", {}))
                        runs = searches[stem]
                        search_done = not force and ((suite_dir / "search" / f"{stem}.json").exists()
                                                     or all(done[sp.run_id] for sp in runs))
                        tasks.append(Task("search", stem, search_done, trials.n_trials * fit_cost[strategy][0],
                                          fit_cost[strategy][1], key=search_key, deps=inputs,
                                          args={**method, "first": group[0]}))
                        free_from_search = {search_at[stem]} if (not search_done and strategy == "frozen"
                                                                 and trials.n_trials > 1) else set()
                    else:
                        free_from_search = set()
                    warm = strategy == "trainable" and budget["finetune"]["trainable"].get("warm_start") == "frozen"
                    for sp in group:
                        after = ()
                        if warm and "frozen" in suite.strategies:  # the frozen run's head, at this seed, is loaded
                            after = (("fit", dataclasses.replace(sp, strategy="frozen").run_id),)
                        # an image-only model on a shared image encoder: one fit for every pair (_RunContext.share_key)
                        share = (sp.fusion, sp.strategy, sp.seed, "complete" if complete else sp.protocol) \
                            if shared and modalities_read(fusion_cls) == ("image",) else None
                        free = sp.run_id in free_from_search and sp.seed == suite.seeds[0]
                        if share is not None:
                            if share in shared_fits:
                                free = True
                                after += (("fit", shared_fits[share]),)
                            else:
                                shared_fits[share] = sp.run_id
                        tasks.append(Task("fit", sp.run_id, done[sp.run_id],
                                          *((0.0, fit_cost[strategy][1]) if free else fit_cost[strategy]),
                                          key=("fit", sp.run_id), deps=(*inputs, search_key), after=after,
                                          args={**method, "spec": sp}, batch=("fit", tab, setting, label, strategy)))
    # a pair with no pending run whose reference rows are pending is still pretrained if its cache lacks it
    for i, (task, runs) in enumerate(zip(tasks, tasks_to_run(tasks))):
        if task.kind == "pretrain" and task.done and runs and not Path(task.args["cache"]).exists():
            tasks[i] = dataclasses.replace(task, done=False)
    every_run = [t.key for t in tasks if t.kind in ("fit", "reference")]
    tasks.append(Task("render", f"{suite_dir / 'leaderboard.md'}", False, 1.0, "tables", key=("render",),
                      after=tuple(every_run),
                      args={"run_ids": [sp.run_id for sp in specs]
                            + [rid for t in tasks if t.kind == "reference" for rid in t.args["run_ids"]]}))
    return tasks


def _fit_cost(budget: dict, strategy: str) -> tuple[float, str]:
    cfg = budget["finetune"][strategy]
    if strategy == "trainable" and cfg.get("max_steps_per_epoch"):
        return float(cfg["max_epochs"] * cfg["max_steps_per_epoch"]), "steps"
    return float(cfg["max_epochs"]), "epochs"


def measured_fit_seconds(out: Path, suite: Suite) -> dict[tuple[str, str], float]:
    """Median training seconds of the finished fits in ``out``, by (tabular encoder, strategy)."""
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for sp in planned_specs(suite):
        rd = run_dir(out, sp)
        if not (rd / "DONE").exists():
            continue
        try:
            report = json.loads((rd / "report.json").read_text())
        except Exception:  # an unreadable report is for `bench run` to set aside, not for the plan
            continue
        t = (report.get("training") or {}).get("seconds")
        if isinstance(t, (int, float)) and math.isfinite(t):
            seconds[(sp.tabular_encoder, sp.strategy)].append(float(t))
    return {k: statistics.median(v) for k, v in seconds.items() if v}


def format_plan(tasks: list[Task], measured: dict[tuple[str, str], float] | None = None) -> str:
    """Tasks by kind (done / pending) with their cost in the budget's units, and the pending fits' wall time
    estimated from this folder's finished fits when there are any."""
    lines = ["| task | done | pending | pending cost |", "|---|---|---|---|"]
    for kind in KINDS:
        of_kind = [t for t in tasks if t.kind == kind]
        if not of_kind:
            continue
        pend = [t for t in of_kind if not t.done]
        units = Counter()
        for t in pend:
            units[t.unit] += t.cost
        cost = ", ".join(f"≤ {v:,.0f} {u}" for u, v in units.items()) or "-"
        lines.append(f"| {kind} | {len(of_kind) - len(pend)} | {len(pend)} | {cost} |")
    if measured:
        est, counted = 0.0, 0
        for t in tasks:
            if t.kind == "fit" and not t.done and t.cost > 0:  # cost 0: a search trial, not fitted again
                parts = t.name.split("__")
                key = (parts[1], parts[3]) if len(parts) > 4 else None  # protocol__tab__fusion__strategy__seed
                if key in measured:
                    est += measured[key]
                    counted += 1
        if counted:
            lines.append("")
            lines.append(f"Estimated from this folder's finished fits (median seconds per tabular encoder and "
                         f"strategy): {counted} pending fits ≈ {est / 60:,.1f} min, searches, pretraining and "
                         "reference rows not included.")
    return "\n".join(lines)
