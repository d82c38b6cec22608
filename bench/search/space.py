"""What both search drivers share: the space, the trial budget, the pruning settings and the summary.

The space is data: the budget's ``search.lr`` list (``search.trainable_lr`` for the trainable
strategy, when given) plus the entries of the fusion class's ``search_space`` that the budget names
in ``search.fusion_params``. When the whole space fits in ``n_trials`` it is enumerated (a grid);
otherwise a seeded TPE sampler draws ``n_trials`` points. Every method of a suite gets the same
number of trials, the same pruner and the same sampler rule.

An objective is ``objective(hp, seed, on_epoch) -> best validation metric``: it trains on the
training split, scores on the validation split and calls ``on_epoch(epoch, val)`` after each epoch
so that a driver can report the curve and stop a trial that is clearly worse.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from bench.errors import ConfigError

OnEpoch = Callable[[int, float], None]
Objective = Callable[[dict, int, OnEpoch | None], float]

PRUNERS = ("median", "halving", "none")


def build_space(fusion_cls, strategy: str, budget: dict) -> dict[str, list]:
    """The choices of every searched parameter: learning rates, the generic optimizer grid
    (``search.weight_decay``, the same for every method) and the fusion-specific entries of the fusion's
    ``search_space`` that the budget names in ``search.fusion_params``."""
    key = "trainable_lr" if strategy == "trainable" and "trainable_lr" in budget else "lr"
    space: dict[str, list] = {"lr": [float(v) for v in budget.get(key, [1e-3])]}
    wanted = set(budget.get("fusion_params", []))
    if "weight_decay" in budget:
        space["weight_decay"] = [float(v) for v in budget["weight_decay"]]
    for name, spec in getattr(fusion_cls, "search_space", {}).items():
        if name in wanted and name not in space:
            if spec.get("type", "categorical") != "categorical":
                raise ValueError(f"{fusion_cls.__name__}.search_space[{name!r}]: only categorical specs are supported")
            space[name] = list(spec["choices"])
    return space


@dataclass
class SearchPlan:
    """The distinct configurations one method's search evaluates, each exactly once.

    ``space`` is what the samplers see: one categorical parameter ``config`` (the index into ``configs``),
    enumerated as a grid by both backends, so a configuration is never drawn twice and none is skipped.
    ``choices`` keeps the per-parameter lists for the report. ``sampler`` is ``grid`` or ``none`` (one
    configuration: nothing to search).
    """

    choices: dict[str, list]
    configs: list[dict]
    sampler: str

    @property
    def space(self) -> dict[str, list]:
        return {"config": list(range(len(self.configs)))}

    @property
    def n_trials(self) -> int:
        return len(self.configs) if self.sampler == "grid" else 0

    @property
    def first(self) -> dict:
        return dict(self.configs[0])

    def params(self, hp: dict) -> dict:
        """The hyper-parameters of a sampled point (``{"config": i}``), or ``hp`` itself if it is one already."""
        return dict(self.configs[int(hp["config"])]) if "config" in hp else dict(hp)


def plan_search(fusion_cls, strategy: str, budget: dict, seed: int = 0) -> SearchPlan:
    """Equal searches: every learning rate of the grid, with the same number of settings of the other
    parameters for every method.

    ``n_configs`` (default: ``n_trials``, else the size of the lr grid) distinct configurations per method:
    each learning rate is paired with the same ``k = n_configs // len(lr)`` settings of the remaining
    parameters: the first choice of each (the fusion's default) and ``k - 1`` more drawn without replacement
    by a generator seeded with ``seed``. ``k`` is capped by the generic grid (``weight_decay``), which every
    method has, so every method gets exactly ``len(lr) * k`` configurations. One configuration: no search.
    """
    choices = build_space(fusion_cls, strategy, budget)
    lrs = choices["lr"]
    n_trials = int(budget.get(f"{strategy}_n_configs", budget.get("n_configs", budget.get(
        f"{strategy}_n_trials", budget.get("n_trials", len(lrs))))))
    if n_trials <= 1:
        return SearchPlan({"lr": lrs[:1]}, [{"lr": lrs[0]}], "none")
    if n_trials % len(lrs):
        raise ConfigError(f"search: n_configs {n_trials} is not a multiple of the {len(lrs)} learning rates {lrs}; "
                          "every learning rate must be tried with the same number of settings")
    k = n_trials // len(lrs)
    generic = len(choices.get("weight_decay", [None]))
    if k > generic:
        raise ConfigError(f"search: {k} settings per learning rate need at least {k} weight_decay values "
                          f"(got {choices.get('weight_decay', 'none')}); add values to search.weight_decay")
    others = {name: v for name, v in choices.items() if name != "lr"}
    combos = [dict(zip(others, values, strict=True)) for values in itertools.product(*others.values())]
    picked = combos[:1]
    if k > 1:
        rng = random.Random(f"{seed}:{getattr(fusion_cls, '__name__', fusion_cls)}:{strategy}")
        picked += rng.sample(combos[1:], k - 1)
    configs = [{"lr": lr, **c} for lr in lrs for c in picked]
    return SearchPlan(choices, configs, "grid" if len(configs) > 1 else "none")


class IndexedObjective:
    """``objective`` called with the configuration a sampled ``{"config": i}`` stands for (picklable for Ray)."""

    def __init__(self, objective: Objective, plan: SearchPlan) -> None:
        self.objective, self.plan = objective, plan

    def __call__(self, hp: dict, seed: int, on_epoch: OnEpoch | None = None) -> float:
        return self.objective(self.plan.params(hp), seed, on_epoch)


def make_sampler(plan: SearchPlan, seed: int):
    import optuna

    return optuna.samplers.GridSampler(plan.space, seed=seed)


def pruner_settings(budget: dict) -> dict:
    """``search.pruner`` (median | halving | none, default none: a pruner that always sees some grid value
    last would cut it systematically) with its start-up trials and warm-up epochs."""
    name = str(budget.get("pruner", "none"))
    if name not in PRUNERS:
        raise ConfigError(f"search.pruner {name!r} is unknown; choose one of {list(PRUNERS)}")
    return {"name": name, "startup_trials": int(budget.get("pruner_startup_trials", 2)),
            "warmup_epochs": int(budget.get("pruner_warmup_epochs", 1))}


class RunningBest:
    """The best finite validation value seen so far (what a trial reports each epoch)."""

    def __init__(self) -> None:
        self.value = -math.inf

    def update(self, val: float) -> float:
        if math.isfinite(val) and val > self.value:
            self.value = float(val)
        return self.value


def summarize(plan: SearchPlan, records: list[dict], **extra) -> tuple[dict, dict]:
    """(best hyper-parameters, the search summary saved with every run) from per-trial records.

    A record has ``params``, ``state`` (complete | pruned | failed) and ``val``; the best is the
    complete trial with the highest finite validation metric.
    """
    records = [{**r, "params": plan.params(r["params"])} for r in records]
    complete = [r for r in records if r["state"] == "complete" and r.get("val") is not None
                and math.isfinite(r["val"])]
    counts = {s: sum(r["state"] == s for r in records) for s in ("complete", "pruned", "failed")}
    info = {**extra, "sampler": plan.sampler, "n_trials": plan.n_trials, "trials": len(records),
            "trials_complete": counts["complete"], "trials_pruned": counts["pruned"],
            "trials_failed": counts["failed"], "space": plan.choices,
            "distinct_configs": len({json.dumps(r["params"], sort_keys=True) for r in records}),
            "objective_seconds": round(sum(r.get("objective_s", 0.0) for r in records), 3)}
    if not complete:
        info["note"] = "no trial completed; first configuration used"
        return plan.first, {**info, "all": records}
    best = max(complete, key=lambda r: r["val"])
    return plan.params(best["params"]), {**info, "best_val": best["val"], "all": records}
