"""Suites: named, versioned YAML files that expand into run specs.

A suite names a dataset (with a synthetic fallback), protocols, an image encoder, tabular encoders,
fusions, strategies and seeds; a *budget* (``smoke`` / ``cpu`` / ``paper``, from ``_budgets.yaml``)
scales data size, resolution, encoder widths, epochs and search trials to a machine without removing
any method. ``include:`` merges another YAML file first (lm-eval style).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.errors import ConfigError
from bench.imputation import IMPUTATIONS, variant_label
from bench.protocols import MISSING_MODALITY, get_protocol
from bench.registry import registry

STRATEGIES = ("frozen", "trainable")


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------------------------ the schema
# Every key a suite or budget may hold, with its type and bounds; an unknown key or a wrong type is a
# one-line error naming the file, the key path and the fix (did-you-mean on keys), before any data is
# loaded. README "Suite files" documents the same schema.
class _Spec:
    def __init__(self, check, text: str, plural: str = ""):
        # check(value, where) raises ConfigError; text: "an integer >= 1"; plural: "integers >= 1"
        self.check, self.text, self.plural = check, text, plural or text


def _bad(where: str, spec_text: str, value) -> ConfigError:
    return ConfigError(f"{where} must be {spec_text}, got {value!r}; fix the suite or budget file")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def Int(lo: int | None = None, hi: int | None = None, null: bool = False) -> _Spec:
    bounds = (f" >= {lo}" if lo is not None else "") + (f" <= {hi}" if hi is not None else "") + (" or null" if null else "")
    text = "an integer" + bounds

    def check(v, where):
        if v is None and null:
            return
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _bad(where, text, v)
    return _Spec(check, text, "integers" + bounds)


def Num(lo: float | None = None, hi: float | None = None, *, positive: bool = False, null: bool = False) -> _Spec:
    bounds = (" > 0" if positive else f" >= {lo:g}" if lo is not None else "") \
        + (f" <= {hi:g}" if hi is not None else "") + (" or null" if null else "")
    text = "a number" + bounds

    def check(v, where):
        if v is None and null:
            return
        ok = (_is_int(v) or isinstance(v, float)) and v == v and v not in (float("inf"), float("-inf"))
        if not ok or (positive and v <= 0) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _bad(where, text, v)
    return _Spec(check, text, "numbers" + bounds)


def Str(choices: tuple | None = None, null: bool = False) -> _Spec:
    text = (f"one of {list(choices)}" if choices else "a string") + (" or null" if null else "")

    def check(v, where):
        if v is None and null:
            return
        if not isinstance(v, str) or not v or (choices and v not in choices):
            raise _bad(where, text, v)
    return _Spec(check, text, f"values from {list(choices)}" if choices else "strings")


def Bool() -> _Spec:
    def check(v, where):
        if not isinstance(v, bool):
            raise _bad(where, "true or false", v)
    return _Spec(check, "true or false")


def List(item: _Spec, *, nonempty: bool = False, length: int | None = None, example: str = "") -> _Spec:
    text = f"a list of {f'{length} ' if length else ''}{item.plural}" + (f", e.g. {example}" if example else "")

    def check(v, where):
        if not isinstance(v, list) or (nonempty and not v) or (length is not None and len(v) != length):
            raise _bad(where, text, v)
        for i, x in enumerate(v):
            item.check(x, f"{where}[{i}]")
    return _Spec(check, text)


def Map(keys: dict[str, _Spec] | None = None, *, values: _Spec | None = None, free: bool = False) -> _Spec:
    """A mapping with the given keys (all optional), or any keys with ``values``, or anything (``free``)."""
    def check(v, where):
        if not isinstance(v, dict):
            raise _bad(where, "a mapping (key: value)", v)
        for k, x in v.items():
            sub = f"{where} {k}" if where.endswith(":") else f"{where}.{k}"
            if keys is not None:
                if k not in keys:
                    close = difflib.get_close_matches(str(k), keys, n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ConfigError(f"{where}: unknown key {k!r}{hint}; known keys: {', '.join(keys)}")
                keys[k].check(x, sub)
            elif values is not None:
                values.check(x, sub)
    return _Spec(check, "a mapping")


def OneOf(*specs: _Spec, text: str) -> _Spec:
    def check(v, where):
        for sp in specs:
            try:
                sp.check(v, where)
                return
            except ConfigError:
                continue
        raise _bad(where, text, v)
    return _Spec(check, text)


SEED = Int(0, 2**32 - 1)
NAMES = List(Str(), nonempty=True, example="[concat, amf]")
FINETUNE = Map({"max_epochs": Int(1), "patience": Int(1), "batch_size": Int(1), "max_steps_per_epoch": Int(1, null=True),
                "warm_start": Str(("frozen", "none"), null=True)})
BUDGET_SCHEMA = Map({
    "data": Map({"n": Int(30), "image_size": Int(8), "cache_dir": Str(null=True), "n_classes": Int(2),
                 "min_per_class": Int(1), "split_seed": Int(0)}),
    "image_encoder": Map(free=True),
    "tabular_encoders": Map(values=Map(free=True)),
    "fusions": Map(values=Map(free=True)),
    "pretrain": Map({"epochs": Int(0), "max_samples": Int(2, null=True), "batch_size": Int(2), "lr": Num(positive=True),
                     "weight_decay": Num(0), "temperature": Num(positive=True), "projection_dim": Int(1),
                     "schedule": Str(("constant", "cosine")), "image_encoder": Str(("per_pair", "shared")),
                     "anchor": Str(),
                     "reconstruct": Map({"weight": Num(positive=True)}),
                     "supervised": Map({"weight": Num(positive=True),
                                        "heads": List(Str(("image", "tabular", "joint")), nonempty=True)})}),
    "reference": Map({"classical": Bool()}),
    "importance": Map({"model": Str(), "epochs": Int(1), "ig_samples": Int(1, null=True), "ig_steps": Int(1),
                       "lr": Num(positive=True), "patience": Int(1), "batch_size": Int(1)}),
    "probes": Map({"max_epochs": Int(1), "patience": Int(1)}),
    "finetune": Map({"frozen": FINETUNE, "trainable": FINETUNE}),
    "search": Map({"n_trials": Int(1), "frozen_n_trials": Int(1), "trainable_n_trials": Int(1),
                   "n_configs": Int(1), "frozen_n_configs": Int(1), "trainable_n_configs": Int(1),
                   "weight_decay": List(Num(0), nonempty=True),
                   "lr": List(Num(positive=True), nonempty=True), "trainable_lr": List(Num(positive=True), nonempty=True),
                   "fusion_params": List(Str()), "per_protocol": Bool(), "pruner": Str(("median", "halving", "none")),
                   "pruner_startup_trials": Int(0), "pruner_warmup_epochs": Int(0), "backend": Str(("optuna", "ray")),
                   "ray": Map({"cpus_per_trial": Num(positive=True), "gpus_per_trial": Num(0), "max_failures": Int(0),
                               "max_concurrent_trials": Int(1, null=True), "reuse_actors": Bool()})}),
    "seeds": Int(1),
    "cluster": Map({"cpus_per_task": Num(positive=True), "gpus_per_task": Num(0), "max_retries": Int(0)}),
    "latency": Map({"warmup": Int(0), "runs": Int(1)}),
    "missingness": Map({"train_rates": List(Num(0, 1), nonempty=True)}),
})
SUITE_SCHEMA = Map({
    "name": Str(), "version": Int(1), "description": Str(), "default_budget": Str(),
    "budgets": Map(values=BUDGET_SCHEMA), "budget_overrides": Map(values=BUDGET_SCHEMA),
    "dataset": OneOf(Str(), Map({"name": Str(), "fallback": Str(null=True)}),
                     text="a dataset name or a mapping {name: NAME, fallback: SYNTHETIC_NAME}"),
    "loss": Map({"name": Str(("ce", "weighted_ce", "focal")), "class_weights": List(Num(positive=True), length=2),
                 "sampler": OneOf(List(Num(positive=True), length=2), Str(null=True), text="[keep fraction, repeats] or null"),
                 "focal_gamma": Num(0)}),
    "protocols": List(OneOf(Str(), Map(free=True), text="a protocol name or a mapping {name: ..., ...}"), nonempty=True),
    "impute": List(Str()),
    "image_encoder": Map(free=True),
    "tabular_encoders": NAMES, "fusions": NAMES,
    "strategies": List(Str(("frozen", "trainable")), nonempty=True),
    "seeds": List(SEED, nonempty=True),
    "rconf": OneOf(Str(("measured",)), Num(positive=True), text="'measured' or a positive number"),
    "metrics": List(Str()),
})


def validate_suite_doc(doc: dict, path: Path) -> None:
    """The suite's keys and types (and its budgets'), before anything uses them."""
    SUITE_SCHEMA.check(doc, f"suite {str(path)!r}:")
    if "protocols" in doc:
        for i, p in enumerate(doc["protocols"]):
            if isinstance(p, dict) and not isinstance(p.get("name"), str):
                raise ConfigError(f"suite {str(path)!r}: protocols[{i}] needs a name (`python -m bench list protocol`)")


def _include_path(path: Path, inc: str) -> Path:
    """``include:`` resolves next to the including file, then among the built-in suites (``_budgets.yaml``)."""
    from bench.suites import SUITES_DIR

    local = path.parent / inc
    if local.exists() or (SUITES_DIR / inc) == local:
        return local
    builtin = SUITES_DIR / inc
    if builtin.exists():
        return builtin
    raise ConfigError(f"suite {str(path)!r} includes {inc!r}, found neither next to it ({str(local)!r}) nor among the "
                      f"built-in suites ({str(SUITES_DIR)!r}); fix the include: path")


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"suite file {str(path)!r} does not exist; pass a registered suite name or a YAML path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"suite file {str(path)!r} cannot be read ({type(exc).__name__}); pass a readable YAML file") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"suite file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"suite file {str(path)!r} must be a YAML mapping")
    include = doc.pop("include", None)
    if include is not None:
        incs = [include] if isinstance(include, str) else include
        if not isinstance(incs, list) or not all(isinstance(i, str) and i for i in incs):
            raise ConfigError(f"suite {str(path)!r}: include must be a file name or a list of them, got {include!r}")
        for inc in incs:
            doc = deep_merge(_read_yaml(_include_path(path, inc)), doc)
    return doc


def check_seeds(seeds, where: str = "--seeds") -> list[int]:
    """Distinct integers in [0, 2**32 - 1] (what numpy and torch accept as seeds)."""
    seeds = list(seeds)
    for s in seeds:
        if not _is_int(s) or not 0 <= s <= 2**32 - 1:
            raise ConfigError(f"{where}: seed {s!r} is not an integer in [0, 4294967295]; give seeds such as 2022 2023")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ConfigError(f"{where} repeats seed {dup[0]}; give distinct seeds (at least two, e.g. 2022 2023)")
    return seeds


def _check_resolved_budget(name: str, cfg: dict, strategies: list[str], where: str) -> None:
    """The settings a run needs are all there once the budget and its overrides are merged."""
    need = [("pretrain", "epochs"), ("pretrain", "batch_size"), ("pretrain", "lr")]
    need += [("finetune", s, k) for s in strategies for k in ("max_epochs", "patience", "batch_size")]
    for keys in need:
        node = cfg
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"{where}: budget {name!r} lacks {'.'.join(keys)}; add it to the budget "
                                  "(see README, Suite files)")
            node = node[k]


@dataclass
class Suite:
    name: str
    version: int
    description: str
    path: str
    budget_name: str
    budget: dict
    dataset: dict
    loss: dict
    protocols: list[dict]
    image_encoder: dict
    tabular_encoders: list[str]
    fusions: list[str]
    strategies: list[str]
    seeds: list[int]
    raw: dict = field(repr=False, default_factory=dict)
    #: modalities the loaded data itself lacks for some samples (``("image",)``: real missing images);
    #: set when the data is loaded, and its fusions then run as under a missing-modality protocol
    real_missing: tuple[str, ...] = ()

    def tabular_config(self, name: str) -> dict:
        return dict(self.budget.get("tabular_encoders", {}).get(name, {}))

    def image_config(self) -> dict:
        cfg = {k: v for k, v in self.image_encoder.items() if k != "name"}
        return deep_merge(cfg, self.budget.get("image_encoder", {}))

    @property
    def metrics(self) -> list[str]:
        """Extra test metrics the leaderboard reports beside the primary one (registered metrics)."""
        return list(self.raw.get("metrics", []))

    @property
    def imputations(self) -> list[str]:
        return list(self.raw.get("impute", []))

    def fusion_variants(self) -> tuple[list[tuple[str, str, str | None]], dict[str, str]]:
        """``([(label, fusion, imputation)], {refused fusion: reason})``.

        Without whole-modality missingness every fusion runs as itself. With it, a fusion that
        handles a missing modality runs as itself; one that cannot runs once per imputation the
        suite names (``impute: [zero, mean]``), or is refused with the reason when it names none.
        Data with real missing images (``real_missing``) counts as such a protocol; a suite that
        names no imputation then runs every imputation variant.
        """
        if not any(p["name"] in MISSING_MODALITY for p in self.protocols) and not self.real_missing:
            return [(f, f, None) for f in self.fusions], {}
        variants, refused = [], {}
        imputations = self.imputations or (list(IMPUTATIONS) if self.real_missing else [])
        for f in self.fusions:
            if registry("fusion").get(f).handles_missing:
                variants.append((f, f, None))
            elif imputations:
                variants += [(variant_label(f, m), f, m) for m in imputations]
            else:
                refused[f] = ("cannot take a missing modality (handles_missing=False) and the suite names no "
                              "imputation; add `impute: [zero, mean]` to the suite to run its imputation variants")
        return variants, refused


def load_suite(
    name_or_path: str,
    *,
    budget: str | None = None,
    seeds: list[int] | None = None,
    fusions: list[str] | None = None,
    tabular_encoders: list[str] | None = None,
    strategies: list[str] | None = None,
) -> Suite:
    """Load a suite by registered name or YAML path, apply a budget and CLI selections, validate names.

    ``fusions`` and ``tabular_encoders`` replace the suite's lists and may name any registered fusion /
    tabular encoder (plug-ins included); ``strategies`` narrows its list. The suite file and its
    budgets are checked against the schema first (unknown keys, types, bounds).
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError("--suite is empty; pass a registered suite name (`python -m bench list suite`) or a YAML path")
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = Path(registry("suite").get(name_or_path))
    doc = _read_yaml(path)
    validate_suite_doc(doc, path)
    for key in ("name", "dataset", "protocols", "image_encoder", "tabular_encoders", "fusions"):
        if key not in doc:
            raise ConfigError(f"suite {str(path)!r} lacks the required key {key!r}")
    budgets = doc.get("budgets", {})
    budget_name = budget or doc.get("default_budget", "cpu")
    if budget_name not in budgets:
        raise ConfigError(f"unknown budget {budget_name!r} for suite {doc['name']!r}; choose one of {sorted(budgets)}")
    budget_cfg = deep_merge(budgets[budget_name], doc.get("budget_overrides", {}).get(budget_name, {}))
    for key in doc.get("budget_overrides", {}):
        if key not in budgets:
            raise ConfigError(f"suite {str(path)!r}: budget_overrides names the unknown budget {key!r}; "
                              f"choose one of {sorted(budgets)}")

    suite_seeds = check_seeds(doc.get("seeds", [2022, 2023, 2024, 2025, 2026]), f"suite {str(path)!r}: seeds")
    if seeds:
        chosen = check_seeds(seeds)
    else:
        chosen = suite_seeds[: int(budget_cfg.get("seeds", len(suite_seeds)))]
    if len(chosen) < 2:
        raise ConfigError(f"at least two seeds are needed so that a spread is reported; got {chosen} "
                          "(pass --seeds with two or more distinct seeds)")

    # `--tabular` may name any registered tabular encoder, like `--fusion`: it replaces the suite's list
    tab = list(dict.fromkeys(tabular_encoders)) if tabular_encoders else list(doc["tabular_encoders"])
    # `--fusion` may name any registered fusion, plug-ins outside the suite included: it replaces the
    # suite's list (in the order given); unknown names fail below with close matches
    fus = list(dict.fromkeys(fusions)) if fusions else list(doc["fusions"])
    strat = list(doc.get("strategies", ["frozen"]))
    for s in strategies or []:
        if s not in STRATEGIES:
            raise ConfigError(f"unknown strategy {s!r}; choose from {list(STRATEGIES)}")
    strat = [s for s in strat if not strategies or s in strategies]
    for s in strat:
        if s not in STRATEGIES:
            raise ConfigError(f"suite {doc['name']!r}: unknown strategy {s!r}; choose from {list(STRATEGIES)}")
    warm = budget_cfg.get("finetune", {}).get("trainable", {}).get("warm_start") == "frozen"
    if warm and "trainable" in strat and "frozen" not in strat:
        raise ConfigError(f"budget {budget_name!r} warm-starts trainable runs from the frozen runs' heads; "
                          "run the frozen strategy too (drop --strategy trainable) or use --budget paper")
    _check_resolved_budget(budget_name, budget_cfg, strat, f"suite {str(path)!r}")
    for n in tab:
        registry("tabular_encoder").get(n)
    for n in fus:
        registry("fusion").get(n)
    registry("image_encoder").get(doc["image_encoder"].get("name", "timm"))
    for n in doc.get("metrics", []):
        registry("metric").get(n)
    ds = doc["dataset"] if isinstance(doc["dataset"], dict) else {"name": doc["dataset"]}
    registry("dataset").get(ds["name"])
    if ds.get("fallback"):
        registry("dataset").get(ds["fallback"])
    protocols = [dict(p) if isinstance(p, dict) else {"name": p} for p in doc["protocols"]]
    # a budget may narrow the training rates of whole-modality sweeps (each rate is a set of runs;
    # test rates cost only an evaluation and are never narrowed)
    budget_rates = budget_cfg.get("missingness", {}).get("train_rates")
    if budget_rates is not None:
        for p in protocols:
            if p["name"] in MISSING_MODALITY:
                p["train_rates"] = list(budget_rates)
    for p in protocols:  # an unknown name: one line with close matches; keys, rates, flavours: now, not mid-suite
        get_protocol(p["name"]).check(p)
    impute = doc.get("impute", [])
    if not isinstance(impute, list) or any(m not in IMPUTATIONS for m in impute):
        raise ConfigError(f"suite {doc['name']!r}: impute must be a list drawn from {list(IMPUTATIONS)}, got {impute!r}")
    suite = Suite(
        name=doc["name"],
        version=doc.get("version", 1),
        description=doc.get("description", ""),
        path=str(path),
        budget_name=budget_name,
        budget=budget_cfg,
        dataset=ds,
        loss=doc.get("loss", {"name": "ce"}),
        protocols=protocols,
        image_encoder=doc["image_encoder"],
        tabular_encoders=tab,
        fusions=fus,
        strategies=strat,
        seeds=chosen,
        raw=doc,
    )
    variants, refused = suite.fusion_variants()
    if not variants:
        raise ConfigError(f"suite {doc['name']!r}: no fusion can run under its protocols ({'; '.join(f'{k}: {v}' for k, v in refused.items())})")
    return suite
