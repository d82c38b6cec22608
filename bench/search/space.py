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

import math
from collections.abc import Callable
from dataclasses import dataclass

from bench.errors import ConfigError

OnEpoch = Callable[[int, float], None]
Objective = Callable[[dict, int, OnEpoch | None], float]

PRUNERS = ("median", "halving", "none")


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


@dataclass
class SearchPlan:
    """The space, how many trials, and how points are drawn (``grid``, ``tpe``, or ``none``: one point)."""

    space: dict[str, list]
    n_trials: int
    sampler: str

    @property
    def first(self) -> dict:
        return {k: v[0] for k, v in self.space.items()}


def plan_search(fusion_cls, strategy: str, budget: dict) -> SearchPlan:
    space = build_space(fusion_cls, strategy, budget)
    n_trials = int(budget.get(f"{strategy}_n_trials", budget.get("n_trials", 1)))
    if n_trials <= 1:
        space = {"lr": space["lr"][:1]}  # no search: the first learning rate, the fusion's own defaults
    grid_size = math.prod(len(v) for v in space.values())
    if grid_size == 1:
        return SearchPlan(space, 0, "none")
    if grid_size <= n_trials:
        return SearchPlan(space, grid_size, "grid")
    return SearchPlan(space, n_trials, "tpe")


def make_sampler(plan: SearchPlan, seed: int):
    import optuna

    if plan.sampler == "grid":
        return optuna.samplers.GridSampler(plan.space, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner_settings(budget: dict) -> dict:
    """``search.pruner`` (median | halving | none, default median) with its start-up trials and warm-up epochs."""
    name = str(budget.get("pruner", "median"))
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
    complete = [r for r in records if r["state"] == "complete" and r.get("val") is not None
                and math.isfinite(r["val"])]
    counts = {s: sum(r["state"] == s for r in records) for s in ("complete", "pruned", "failed")}
    info = {**extra, "sampler": plan.sampler, "n_trials": plan.n_trials, "trials": len(records),
            "trials_complete": counts["complete"], "trials_pruned": counts["pruned"],
            "trials_failed": counts["failed"], "space": plan.space,
            "objective_seconds": round(sum(r.get("objective_s", 0.0) for r in records), 3)}
    if not complete:
        info["note"] = "no trial completed; first configuration used"
        return plan.first, {**info, "all": records}
    best = max(complete, key=lambda r: r["val"])
    return dict(best["params"]), {**info, "best_val": best["val"], "all": records}
