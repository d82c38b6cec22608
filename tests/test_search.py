"""The Optuna search driver: persisted and resumed studies, pruning of clearly worse trials, determinism."""

from __future__ import annotations

import importlib.util
import math
import sys

import optuna
import pytest

from bench.errors import ConfigError
from bench.search import check_backend, run_search
from bench.search.optuna_search import counted_trials

LRS = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5]


class Fusion:
    search_space = {"weight_decay": {"type": "categorical", "choices": [0.0, 1e-2]}}


class Curves:
    """A fake training run: a validation curve per learning rate, best at 1e-3; counts calls."""

    def __init__(self, epochs: int = 6, bad: float | None = None, interrupt_at: int | None = None):
        self.epochs, self.bad, self.interrupt_at = epochs, bad, interrupt_at
        self.calls: list[dict] = []

    def level(self, hp: dict) -> float:
        if hp["lr"] == self.bad:
            return 0.1
        return 0.9 - 0.05 * abs(math.log10(hp["lr"]) + 3) - hp.get("weight_decay", 0.0)

    def __call__(self, hp: dict, seed: int, on_epoch=None) -> float:
        self.calls.append(dict(hp))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        best = -math.inf
        for epoch in range(self.epochs):
            val = self.level(hp) * (1 - 0.5 ** (epoch + 1))
            best = max(best, val)
            if on_epoch:
                on_epoch(epoch, val)
        return best


def _search(objective, budget, **kw):
    return run_search(objective, fusion_cls=Fusion, strategy="frozen", budget=budget, seed=kw.pop("seed", 2022), **kw)


def test_study_is_persisted_in_sqlite_and_resumed(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    budget = {"n_configs": 4, "lr": LRS[:4], "weight_decay": [0.0, 1e-2], "fusion_params": [], "pruner": "none"}
    first = Curves()
    best, info = _search(first, budget, storage=url, study_name="mlp__concat__frozen")
    assert len(first.calls) == 4 and info["trials"] == 4 and info["sampler"] == "grid"
    assert info["distinct_configs"] == 4 and sorted(c["lr"] for c in first.calls) == sorted(LRS[:4])
    assert info["backend"] == "optuna" and info["pruner"] == "none" and info["study"] == "mlp__concat__frozen"

    again = Curves()  # same storage and key: every trial is finished, nothing runs again
    best2, info2 = _search(again, budget, storage=url, study_name="mlp__concat__frozen")
    assert again.calls == [] and best2 == best and info2["resumed_trials"] == 4

    with pytest.raises(ConfigError, match="another search space"):
        _search(Curves(), {**budget, "n_configs": 8}, storage=url, study_name="mlp__concat__frozen")

    fresh = Curves()
    _search(fresh, budget, storage=url, study_name="mlp__concat__frozen", fresh=True)
    assert len(fresh.calls) == 4


class Plain:
    search_space: dict = {}


class WithDropout:
    search_space = {"modality_dropout": {"type": "categorical", "choices": [0.0, 0.1, 0.3]}}


@pytest.mark.parametrize("fusion", [Plain, Fusion, WithDropout])
def test_every_method_tries_every_lr_with_the_same_number_of_distinct_configs(fusion):
    budget = {"n_configs": 6, "lr": [1e-2, 1e-3, 1e-4], "weight_decay": [1e-4, 1e-2],
              "fusion_params": ["modality_dropout"]}
    curves = Curves()
    _, info = run_search(curves, fusion_cls=fusion, strategy="frozen", budget=budget, seed=2022)
    assert len(curves.calls) == 6 == info["distinct_configs"]
    assert len({tuple(sorted(c.items())) for c in curves.calls}) == 6  # no duplicate trial
    for lr in (1e-2, 1e-3, 1e-4):  # every grid value, each with the same number of other settings
        assert sum(c["lr"] == lr for c in curves.calls) == 2
    assert info["pruner"] == "none"  # the default: no pruner exposes one grid value systematically


def test_uneven_search_is_refused():
    with pytest.raises(ConfigError, match="not a multiple"):
        _search(Curves(), {"n_configs": 4, "lr": [1e-2, 1e-3, 1e-4]})
    with pytest.raises(ConfigError, match="weight_decay"):
        _search(Curves(), {"n_configs": 6, "lr": [1e-2, 1e-3, 1e-4], "weight_decay": [0.0]})


def test_interrupted_search_resumes_and_reruns_the_cut_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    budget = {"n_trials": 3, "lr": [1e-2, 1e-3, 1e-4], "fusion_params": [], "pruner": "none"}  # a grid of three
    crashing = Curves(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        _search(crashing, budget, storage=url, study_name="k")
    cut = crashing.calls[1]
    resumed = Curves()
    best, info = _search(resumed, budget, storage=url, study_name="k")
    assert resumed.calls[0] == cut and len(resumed.calls) == 2  # the cut trial again, then the missing one
    assert best == {"lr": 1e-3} and info["trials_complete"] == 3 and info["sampler"] == "grid"
    study = optuna.load_study(study_name="k", storage=url)
    assert counted_trials(study) == 3
    done = sorted(t.params["config"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == [0, 1, 2]  # the study stores configuration indices; every one ran once


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pruning_stops_a_clearly_worse_curve(seed):
    lrs = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5]
    budget = {"n_trials": 6, "lr": lrs, "fusion_params": [], "pruner": "median", "pruner_startup_trials": 2, "pruner_warmup_epochs": 1}
    curves = Curves(bad=1e-5)
    best, info = _search(curves, budget, seed=seed)
    by_lr = {r["params"]["lr"]: r for r in info["all"]}
    position = [c["lr"] for c in curves.calls].index(1e-5)
    assert best == {"lr": 1e-3} and by_lr[1e-3]["state"] == "complete"
    assert info["pruner"].startswith("median") and info["sampler"] == "grid"
    if position >= 2:  # after the start-up trials, the clearly worse curve is cut after the warm-up epoch
        assert by_lr[1e-5]["state"] == "pruned" and by_lr[1e-5]["epochs"] == 2 and info["trials_pruned"] >= 1


def test_pruning_cuts_some_seed():
    lrs = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5]
    budget = {"n_trials": 6, "lr": lrs, "fusion_params": [], "pruner": "median", "pruner_startup_trials": 2,
              "pruner_warmup_epochs": 1}
    pruned = [_search(Curves(bad=1e-5), budget, seed=s)[1]["trials_pruned"] for s in range(4)]
    assert any(pruned)


def test_same_seed_same_best_params():
    budget = {"n_configs": 8, "lr": LRS, "fusion_params": ["weight_decay"]}
    runs = [_search(Curves(), budget, seed=7) for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    assert [r["params"] for r in runs[0][1]["all"]] == [r["params"] for r in runs[1][1]["all"]]


def test_halving_pruner_and_failed_trials_are_recorded():
    def objective(hp, seed, on_epoch=None):
        if hp["lr"] == 1e-2:
            raise FloatingPointError("non-finite loss at epoch 0 (lr=0.01); lower the learning rate")
        return Curves()(hp, seed, on_epoch)

    best, info = _search(objective, {"n_trials": 3, "lr": [1e-2, 1e-3, 1e-4], "fusion_params": [], "pruner": "halving"})
    assert best == {"lr": 1e-3} and info["trials_failed"] == 1 and info["pruner"].startswith("successive-halving")


def test_backend_options_are_checked():
    with pytest.raises(ConfigError, match="--ray-address is for --backend ray"):
        check_backend("optuna", ray_address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="not a database URL"):
        check_backend("optuna", storage="runs/optuna.db")
    with pytest.raises(ConfigError, match="unknown search backend"):
        check_backend("hyperopt")
    with pytest.raises(ConfigError, match="pruner"):
        _search(Curves(), {"n_trials": 3, "lr": [1e-2, 1e-3, 1e-4], "pruner": "hyperband"})


def test_ray_backend_needs_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"^Ray is not installed; pip install -e '\.\[ray\]'$"):
        check_backend("ray")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[ray]')")
def test_ray_backend_options_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster at 127.0.0.2:9"):
        check_backend("ray", ray_address="127.0.0.2:9")
    with pytest.raises(ConfigError, match="database URL, which is for --backend optuna"):
        check_backend("ray", storage="postgresql://user@host/db")
