"""Hyper-parameter search on the validation split with Optuna, on one machine (AMF-MedIT A.3).

The paper tries three learning rates {1e-2, 1e-3, 1e-4} with the fixed seed 2022 for every setting,
and weight decay {1e-1, 1e-2, 1e-3, 1e-4} for cross-attention; the space and trial budget come from
:mod:`bench.search.space`. Points are drawn by Optuna's GridSampler when the space fits in the
budget, else by a seeded TPE sampler. Each epoch's best-so-far validation metric is reported with
``trial.report`` and a pruner (median by default, or successive halving) stops a trial whose curve
is clearly worse. With a storage URL (SQLAlchemy: ``sqlite:///...``, ``postgresql://...``) the study
persists and a second call resumes it: finished trials are not run again, and a trial cut short by
an interruption is run again with the same parameters. The test split is never touched here.
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import optuna
from optuna.trial import TrialState

from bench.errors import ConfigError
from bench.search.space import (
    Objective,
    RunningBest,
    SearchPlan,
    build_space,
    make_sampler,
    plan_search,
    pruner_settings,
    summarize,
)

__all__ = ["build_space", "search_hyperparameters", "make_pruner", "counted_trials"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 30  # a RUNNING trial whose process stopped beating for 3 x this long is failed and retried
MAX_RETRY = 3


def make_pruner(settings: dict) -> tuple[optuna.pruners.BasePruner, str]:
    """The Optuna pruner for ``pruner_settings(budget)`` and a one-line description of it."""
    name, startup, warmup = settings["name"], settings["startup_trials"], settings["warmup_epochs"]
    if name == "median":
        return (optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup),
                f"median(n_startup_trials={startup}, n_warmup_steps={warmup})")
    if name == "halving":
        return (optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup), reduction_factor=2),
                f"successive-halving(min_resource={max(1, warmup)}, reduction_factor=2)")
    return optuna.pruners.NopPruner(), "none"


# Optuna 4.9 renamed the retry callback and its RDBStorage argument
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
_RETRY_ARG = "heartbeat_stale_trial_callback" if _RETRY else "failed_trial_callback"


def _retry_callback():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return (_RETRY or optuna.storages.RetryFailedTrialCallback)(max_retry=MAX_RETRY)


def _storage(url: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                                          **{_RETRY_ARG: _retry_callback()})


def counted_trials(study: optuna.Study) -> int:
    """Trials that spent budget: complete, pruned, or failed by the objective (not by an interruption)."""
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs) for t in study.get_trials(deepcopy=False))


def _requeue_interrupted(study: optuna.Study) -> int:
    """Queue again, once, each trial that failed because the search was interrupted (Ctrl-C, a crash)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retry = _retry_callback()
    queued = 0
    for t in trials:
        if t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in retried:
            retry(study, t)
            queued += 1
    return queued


def _records(study: optuna.Study) -> list[dict]:
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state in states or (t.state == TrialState.FAIL and "error" in t.user_attrs):
            val = t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=None)
            out.append({"number": t.number, "params": t.params, "state": states.get(t.state, "failed"),
                        "val": val, "epochs": len(t.intermediate_values),
                        "objective_s": t.user_attrs.get("objective_s", 0.0),
                        **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {})})
    return out


def search_hyperparameters(
    objective: Objective, *, fusion_cls, strategy: str, budget: dict, seed: int,
    storage: str | None = None, study_name: str | None = None, fresh: bool = False,
) -> tuple[dict, dict]:
    """Return (best hyper-parameters, a summary of the search for the report).

    ``storage`` is an SQLAlchemy URL (None: in memory); ``fresh`` deletes an existing study first.
    """
    plan = plan_search(fusion_cls, strategy, budget, seed)
    if plan.sampler == "none":
        return plan.first, {"backend": "none", "sampler": "none", "pruner": "none", "trials": 0,
                            "distinct_configs": 1, "space": plan.choices, "note": "single configuration, no search"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner, pruner_desc = make_pruner(pruner_settings(budget))
    study = _open_study(plan, seed, pruner, storage, study_name, fresh)
    if storage:
        _requeue_interrupted(study)
    remaining = plan.n_trials - counted_trials(study)
    t0 = time.perf_counter()

    def _objective(trial: optuna.Trial) -> float:
        hp = plan.params({k: trial.suggest_categorical(k, v) for k, v in plan.space.items()})
        best = RunningBest()

        def on_epoch(epoch: int, val: float) -> None:
            if math.isfinite(best.update(val)):
                trial.report(best.value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch}: best validation {best.value:.4f} is below the median")

        t_trial = time.perf_counter()
        try:
            value = objective(hp, seed, on_epoch)
        except FloatingPointError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        finally:
            trial.set_user_attr("objective_s", round(time.perf_counter() - t_trial, 3))
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"non-finite validation metric for {hp}")
        return value

    def _stop_at_budget(study: optuna.Study, _trial) -> None:  # several workers may share one storage
        if counted_trials(study) >= plan.n_trials:
            study.stop()

    if remaining > 0:
        study.optimize(_objective, n_trials=remaining, catch=(FloatingPointError,),
                       callbacks=[_stop_at_budget])
    masked = _mask(storage)
    best, info = summarize(plan, _records(study), backend="optuna", pruner=pruner_desc,
                           storage=masked, study=study.study_name if storage else None,
                           resumed_trials=plan.n_trials - remaining if storage else 0,
                           seconds=round(time.perf_counter() - t0, 3))
    return best, info


def _open_study(plan: SearchPlan, seed: int, pruner, storage: str | None, study_name: str | None,
                fresh: bool) -> optuna.Study:
    rdb = _storage(storage) if storage else None
    if rdb is not None and fresh:
        try:
            optuna.delete_study(study_name=study_name, storage=rdb)
        except KeyError:
            pass
    study = optuna.create_study(storage=rdb, study_name=study_name, direction="maximize",
                                sampler=make_sampler(plan, seed), pruner=pruner, load_if_exists=True)
    space = [dict(c) for c in plan.configs]
    saved = study.user_attrs.get("space")
    if saved is None:
        study.set_user_attr("space", space)
        study.set_user_attr("n_trials", plan.n_trials)
    elif saved != space:
        raise ConfigError(f"study {study_name!r} in {_mask(storage)} was made for another search space "
                         f"({saved}); re-run with --force or give another --storage")
    return study


def _mask(url: str | None) -> str | None:
    """The storage URL without its password, fit for a report."""
    if not url:
        return None
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
