"""Hyper-parameter search with Ray Tune, for clusters (the only module that imports ``ray``).

Same space, trial budget and sampler rule as the Optuna driver (:mod:`bench.search.space`): Ray's
``OptunaSearch`` wraps the seeded grid / TPE sampler and an ASHA scheduler stops trials whose
best-so-far validation metric, reported each epoch with ``ray.tune.report``, is clearly worse. The
objective (for the pipeline, the run context holding features and encoders) goes to the object
store once through ``tune.with_parameters``; each trial rebuilds its model from it on whichever
node Ray places it, with ``cpus_per_trial`` torch threads (1 by default, so concurrent trials do
not oversubscribe a node) and a GPU when the run's device is CUDA. The experiment is saved under
``storage_path`` (every node must see it: a shared folder or ``s3://...``); a second call resumes it
with ``Tuner.restore`` instead of starting over. Each trial records its node id and host:pid.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import optuna

from bench.errors import ConfigError
from bench.search.space import (
    IndexedObjective,
    Objective,
    RunningBest,
    plan_search,
    pruner_settings,
    summarize,
)

RAY_MISSING = "Ray is not installed; pip install -e '.[ray]'"
SQLALCHEMY_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


def require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def check_storage(storage: str | None) -> None:
    if storage and storage.split(":", 1)[0].split("+", 1)[0] in SQLALCHEMY_SCHEMES:
        raise ConfigError(f"--storage {storage!r} is a database URL, which is for --backend optuna; with --backend ray "
                          "give a folder every node sees or a URI such as s3://bucket/bench")


def check_address(address: str | None) -> None:
    """A quick TCP check of ``host:port`` (``ray.init`` waits minutes on a dead address)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or "://" in address or address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise ConfigError(f"cannot reach the Ray cluster at {address}; start it with `ray start --head --port=PORT` "
                          "or fix --ray-address / RAY_ADDRESS") from None


def connect(address: str | None) -> str:
    """Join the cluster at ``address`` (else ``$RAY_ADDRESS``, else a new local instance); returns where."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        check_address(address)
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address or 'a new local instance'} "
                              f"({str(exc).splitlines()[0]}); start it with `ray start --head` or fix --ray-address") from None
    return address or "local"


def _trainable(config: dict, objective: Objective, seed: int, threads: int) -> None:
    """One trial on a Ray worker: train with ``config``, report the best-so-far validation metric each epoch."""
    import ray
    import torch
    from ray import tune

    from bench.allocator import keep_freed_memory

    keep_freed_memory()  # a worker process does not start through bench's command line
    torch.set_num_threads(threads)
    tag = {"node_id": ray.get_runtime_context().get_node_id(), "worker": f"{socket.gethostname()}:{os.getpid()}"}
    best, epochs, t0 = RunningBest(), 0, time.perf_counter()

    def on_epoch(epoch: int, val: float) -> None:
        nonlocal epochs
        epochs = epoch + 1
        tune.report({"val": best.update(val), "epoch": epochs, "objective_s": time.perf_counter() - t0, **tag})

    try:
        value, error = objective(dict(config), seed, on_epoch), None
    except FloatingPointError as exc:
        value, error = math.nan, str(exc)
    final = {"val": value if math.isfinite(value) else math.nan, "epoch": epochs, "complete": error is None
             and math.isfinite(value), "objective_s": time.perf_counter() - t0, **tag}
    tune.report({**final, **({"error": error} if error else {})})


class _TuneGridSampler(optuna.samplers.GridSampler):
    """A grid for OptunaSearch: Tune's ``num_samples`` ends the search, so no ``Study.stop``.

    GridSampler.after_trial calls Study.stop, which raises outside Study.optimize and would leave the
    last grid trial RUNNING in OptunaSearch's study.
    """

    def after_trial(self, study, trial, state, values) -> None:
        pass


def _sampler(plan, seed: int):
    return _TuneGridSampler(plan.space, seed=seed)


def _experiment_name(study_name: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", study_name or "search")


def _delete(path: str) -> None:
    if "://" in path:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        try:
            fs.delete_dir(inner)
        except (FileNotFoundError, OSError):
            pass
    else:
        shutil.rmtree(path, ignore_errors=True)


def _fit(tuner):
    """``tuner.fit()``, raising KeyboardInterrupt when Ctrl-C cut it short (Tune saves and returns instead).

    Tune swaps in its own SIGINT handler during fit, puts back the one it found on the first Ctrl-C,
    and leaves its own in place otherwise; so finding ours back after fit means Ctrl-C was pressed.
    """
    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()
    pressed = threading.Event()

    def ours(signum, frame):  # reached only when Tune's handler is not installed
        pressed.set()

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, ours)
    try:
        grid = tuner.fit()
        tune_handled = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
        if pressed.is_set() or (tune_handled and signal.getsignal(signal.SIGINT) is ours):
            raise KeyboardInterrupt  # the experiment is saved; the next run resumes it with Tuner.restore
        return grid
    finally:
        signal.signal(signal.SIGINT, previous)


def search_hyperparameters(
    objective: Objective, *, fusion_cls, strategy: str, budget: dict, seed: int, storage_path: str,
    study_name: str | None = None, fresh: bool = False, address: str | None = None, use_gpu: bool = False,
    max_epochs: int = 100,
) -> tuple[dict, dict]:
    """Return (best hyper-parameters, a summary of the search) like the Optuna driver, with trials on Ray."""
    plan = plan_search(fusion_cls, strategy, budget, seed)
    if plan.sampler == "none":
        return plan.first, {"backend": "none", "sampler": "none", "pruner": "none", "trials": 0,
                            "distinct_configs": 1, "space": plan.choices, "note": "single configuration, no search"}
    check_storage(storage_path)
    require_ray()
    import ray
    from optuna.distributions import CategoricalDistribution
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    where = connect(address)
    rcfg = dict(budget.get("ray", {}))
    cpus = float(rcfg.get("cpus_per_trial", 1))
    gpus = float(rcfg.get("gpus_per_trial", 1)) if use_gpu else 0.0
    resources = ray.cluster_resources()
    if gpus and resources.get("GPU", 0) < gpus:
        raise ConfigError(f"the Ray cluster at {where} has no GPU for the trials; run with --device cpu or add GPU nodes")
    if resources.get("CPU", 0) < cpus:
        raise ConfigError(f"the Ray cluster at {where} has {resources.get('CPU', 0):g} CPUs but a trial asks for {cpus:g}; "
                          "lower search.ray.cpus_per_trial")
    from bench.executor import memmaps_by_path

    with memmaps_by_path():  # a large dataset's images travel as their file, not their bytes
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, objective=IndexedObjective(objective, plan), seed=seed,
                                 threads=max(1, int(cpus))),
            {"cpu": cpus, "gpu": gpus})
    pruning = pruner_settings(budget)
    grace = max(1, pruning["warmup_epochs"])
    max_t = max(int(max_epochs), grace) + 1  # + the final report of a trial that ran every epoch
    pruner = (f"asha(grace_period={grace}, reduction_factor=2, max_t={max_t})" if pruning["name"] != "none" else "none")
    storage_path = storage_path if "://" in storage_path else str(Path(storage_path).resolve())
    name = _experiment_name(study_name)
    path = f"{storage_path.rstrip('/')}/{name}"
    if fresh:
        _delete(path)
    t0 = time.perf_counter()
    resumed = tune.Tuner.can_restore(path)
    if resumed:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher = OptunaSearch(space={k: CategoricalDistribution(v) for k, v in plan.space.items()},
                                metric="val", mode="max", sampler=_sampler(plan, seed))
        scheduler = (ASHAScheduler(time_attr="training_iteration", metric="val", mode="max", max_t=max_t,
                                   grace_period=grace, reduction_factor=2)
                     if pruning["name"] != "none" else FIFOScheduler())
        run_config = getattr(tune, "RunConfig", None) or ray.train.RunConfig
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.n_trials,
                                        max_concurrent_trials=rcfg.get("max_concurrent_trials"),
                                        reuse_actors=bool(rcfg.get("reuse_actors", True))),
            # a trial whose worker dies (node lost, OOM kill) is retried from scratch, not lost
            run_config=run_config(name=name, storage_path=storage_path, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=int(rcfg.get("max_failures", 2)))))
    grid = _fit(tuner)
    if len(grid) < plan.n_trials:
        raise ConfigError(f"the Ray search {name} stopped after {len(grid)} of {plan.n_trials} trials; "
                          "run the same command again to resume it")
    records = []
    for i in range(len(grid)):
        res = grid[i]
        m = dict(res.metrics or {})
        error = m.get("error") or (str(res.error).splitlines()[0] if res.error else None)
        state = "failed" if error else "complete" if m.get("complete") else "pruned"
        val = m.get("val")
        records.append({"params": {k: res.config[k] for k in plan.space if k in res.config}, "state": state,
                        "val": float(val) if val is not None and math.isfinite(val) else None,
                        "epochs": m.get("epoch"), "objective_s": round(float(m.get("objective_s", 0.0)), 3),
                        "node_id": m.get("node_id"), "worker": m.get("worker"),
                        **({"error": error} if error else {})})
    return summarize(plan, records, backend="ray", pruner=pruner, address=where, storage=path, resumed=resumed,
                     nodes=sorted({r["node_id"] for r in records if r["node_id"]}),
                     resources_per_trial={"cpu": cpus, "gpu": gpus}, seconds=round(time.perf_counter() - t0, 3))
