"""Hyper-parameter search on the validation split: one objective, two drivers.

``optuna`` (default) runs the trials in this process with Optuna, the study kept in an SQLAlchemy
storage (by default ``<out>/<suite>/search/optuna.db``) so that an interrupted search resumes;
``ray`` runs them on a Ray cluster with Ray Tune (``pip install -e '.[ray]'``). Both draw the same
points with the same seed, report the validation metric each epoch and stop clearly worse trials.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import ConfigError
from bench.search.space import Objective, plan_search, pruner_settings

BACKENDS = ("optuna", "ray")

__all__ = ["BACKENDS", "check_backend", "default_storage", "describe", "plan_search", "run_search"]


def check_backend(backend: str, storage: str | None = None, ray_address: str | None = None) -> None:
    """Fail early (before any training) on a bad combination of search options."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown search backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "optuna":
        if ray_address:
            raise ConfigError("--ray-address is for --backend ray; add --backend ray or drop --ray-address")
        if storage and "://" not in storage:
            raise ConfigError(f"--storage {storage!r} is not a database URL; give one such as sqlite:///runs/optuna.db "
                              "or postgresql://user@host/db")
        return
    from bench.search.ray_search import check_address, check_storage, require_ray

    require_ray()
    check_storage(storage)
    check_address(ray_address)


def default_storage(backend: str, search_dir: Path) -> str:
    """Where a suite's searches live when no ``--storage`` is given: under its output directory."""
    search_dir = Path(search_dir).resolve()
    if backend == "ray":
        return str(search_dir / "ray")
    search_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{search_dir / 'optuna.db'}"


def describe(backend: str, budget: dict) -> dict:
    """The search settings every method of a suite shares, for suite.json and the leaderboard."""
    pruning = pruner_settings(budget)
    pruner = pruning["name"] if backend == "optuna" or pruning["name"] == "none" else "asha"
    return {"backend": backend, "pruner": pruner, "pruner_startup_trials": pruning["startup_trials"],
            "pruner_warmup_epochs": pruning["warmup_epochs"],
            "sampler": "every distinct configuration once (grid over the configurations, seeded order)"}


def run_search(
    objective: Objective, *, fusion_cls, strategy: str, budget: dict, seed: int, backend: str = "optuna",
    storage: str | None = None, study_name: str | None = None, fresh: bool = False,
    ray_address: str | None = None, use_gpu: bool = False, max_epochs: int = 100,
) -> tuple[dict, dict]:
    """(best hyper-parameters, search summary) from the chosen backend; ``fresh`` starts the study over."""
    check_backend(backend, storage, ray_address)
    if backend == "ray":
        from bench.search.ray_search import search_hyperparameters as ray_search

        if storage is None:
            raise ConfigError("the ray backend needs a storage path; pass --storage DIR")
        return ray_search(objective, fusion_cls=fusion_cls, strategy=strategy, budget=budget, seed=seed,
                          storage_path=storage, study_name=study_name, fresh=fresh, address=ray_address,
                          use_gpu=use_gpu, max_epochs=max_epochs)
    from bench.search.optuna_search import search_hyperparameters

    return search_hyperparameters(objective, fusion_cls=fusion_cls, strategy=strategy, budget=budget, seed=seed,
                                  storage=storage, study_name=study_name, fresh=fresh)
