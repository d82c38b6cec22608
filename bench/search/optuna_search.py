"""Hyper-parameter search on the validation split with Optuna (AMF-MedIT A.3).

The paper tries three learning rates {1e-2, 1e-3, 1e-4} with the fixed seed 2022 for every setting,
and weight decay {1e-1, 1e-2, 1e-3, 1e-4} for cross-attention. Here the space is data: the budget's
``search.lr`` list (``search.trainable_lr`` for the trainable strategy, when given) plus the entries
of the fusion class's ``search_space`` that the budget names in ``search.fusion_params`` (by default
``[weight_decay]``, which only cross-attention declares, as in the paper). When the whole space fits in ``n_trials`` it is enumerated with
Optuna's GridSampler; otherwise a seeded TPE sampler draws ``n_trials`` points. Every method of a
suite gets the same number of trials. The test split is never touched here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import optuna

log = logging.getLogger(__name__)


def build_space(fusion_cls, strategy: str, budget: dict) -> dict[str, list]:
    key = "trainable_lr" if strategy == "trainable" and "trainable_lr" in budget else "lr"
    space: dict[str, list] = {"lr": [float(v) for v in budget.get(key, [1e-3])]}
    wanted = set(budget.get("fusion_params", ["weight_decay"]))
    for name, spec in getattr(fusion_cls, "search_space", {}).items():
        if name in wanted:
            if spec.get("type", "categorical") != "categorical":
                raise ValueError(f"{fusion_cls.__name__}.search_space[{name!r}]: only categorical specs are supported")
            space[name] = list(spec["choices"])
    return space


def search_hyperparameters(
    objective: Callable[[dict, int], float], *, fusion_cls, strategy: str, budget: dict, seed: int
) -> tuple[dict, dict]:
    """Return (best hyper-parameters, a summary of the search for the report)."""
    space = build_space(fusion_cls, strategy, budget)
    n_trials = int(budget.get(f"{strategy}_n_trials", budget.get("n_trials", 1)))
    if n_trials <= 1:
        space = {"lr": space["lr"][:1]}  # no search: the first learning rate, the fusion's own defaults
    grid_size = math.prod(len(v) for v in space.values())
    if grid_size == 1:
        only = {k: v[0] for k, v in space.items()}
        return only, {"backend": "none", "trials": 0, "space": space, "note": "single configuration, no search"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if grid_size <= n_trials:
        sampler = optuna.samplers.GridSampler(space, seed=seed)
        n_trials = grid_size
        kind = "grid"
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
        kind = "tpe"
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def _objective(trial: optuna.Trial) -> float:
        hp = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
        value = objective(hp, seed)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"non-finite validation metric for {hp}")
        return value

    study.optimize(_objective, n_trials=n_trials, catch=(FloatingPointError,))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        fallback = {k: v[0] for k, v in space.items()}
        return fallback, {"backend": f"optuna-{kind}", "trials": len(study.trials), "space": space,
                          "note": "every trial failed; first configuration used"}
    best = dict(study.best_params)
    info = {
        "backend": f"optuna-{kind}",
        "trials": len(study.trials),
        "space": space,
        "best_val": study.best_value,
        "all": [{"params": t.params, "val": t.value} for t in completed],
    }
    return best, info

