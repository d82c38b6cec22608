"""Suites: named, versioned YAML files that expand into run specs.

A suite names a dataset (with a synthetic fallback), protocols, an image encoder, tabular encoders,
fusions, strategies and seeds; a *budget* (``smoke`` / ``cpu`` / ``paper``, from ``_budgets.yaml``)
scales data size, resolution, encoder widths, epochs and search trials to a machine without removing
any method. ``include:`` merges another YAML file first (lm-eval style).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.errors import ConfigError
from bench.imputation import IMPUTATIONS, variant_label
from bench.protocols import ALL_PROTOCOLS, MISSING_MODALITY, missingness_plan
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


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"suite file {str(path)!r} does not exist; pass a registered suite name or a YAML path") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"suite file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"suite file {str(path)!r} must be a YAML mapping")
    include = doc.pop("include", None)
    if include:
        for inc in [include] if isinstance(include, str) else include:
            doc = deep_merge(_read_yaml(path.parent / inc), doc)
    return doc


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

    def tabular_config(self, name: str) -> dict:
        return dict(self.budget.get("tabular_encoders", {}).get(name, {}))

    def image_config(self) -> dict:
        cfg = {k: v for k, v in self.image_encoder.items() if k != "name"}
        return deep_merge(cfg, self.budget.get("image_encoder", {}))

    @property
    def imputations(self) -> list[str]:
        return list(self.raw.get("impute", []))

    def fusion_variants(self) -> tuple[list[tuple[str, str, str | None]], dict[str, str]]:
        """``([(label, fusion, imputation)], {refused fusion: reason})``.

        Without whole-modality missingness every fusion runs as itself. With it, a fusion that
        handles a missing modality runs as itself; one that cannot runs once per imputation the
        suite names (``impute: [zero, mean]``), or is refused with the reason when it names none.
        """
        if not any(p["name"] in MISSING_MODALITY for p in self.protocols):
            return [(f, f, None) for f in self.fusions], {}
        variants, refused = [], {}
        for f in self.fusions:
            if registry("fusion").get(f).handles_missing:
                variants.append((f, f, None))
            elif self.imputations:
                variants += [(variant_label(f, m), f, m) for m in self.imputations]
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

    ``tabular_encoders`` and ``strategies`` narrow the suite's lists; ``fusions`` replaces its list
    and may name any registered fusion.
    """
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = Path(registry("suite").get(name_or_path))
    doc = _read_yaml(path)
    for key in ("name", "dataset", "protocols", "image_encoder", "tabular_encoders", "fusions"):
        if key not in doc:
            raise ConfigError(f"suite {str(path)!r} lacks the required key {key!r}")
    budgets = doc.get("budgets", {})
    budget_name = budget or doc.get("default_budget", "cpu")
    if budget_name not in budgets:
        raise ConfigError(f"unknown budget {budget_name!r} for suite {doc['name']!r}; choose one of {sorted(budgets)}")
    budget_cfg = deep_merge(budgets[budget_name], doc.get("budget_overrides", {}).get(budget_name, {}))

    suite_seeds = list(doc.get("seeds", [2022, 2023, 2024, 2025, 2026]))
    if seeds:
        chosen = list(seeds)
    else:
        chosen = suite_seeds[: int(budget_cfg.get("seeds", len(suite_seeds)))]
    if len(chosen) < 2:
        raise ConfigError(f"at least two seeds are needed so that a spread is reported; got {chosen}")

    def narrow(kind: str, values: list[str], wanted: list[str] | None) -> list[str]:
        for v in wanted or []:
            if v not in values:
                registry(kind).get(v)  # unknown name -> error with suggestions
                raise ConfigError(f"{kind} {v!r} is registered but not part of suite {doc['name']!r} ({values})")
        return [v for v in values if not wanted or v in wanted]

    tab = narrow("tabular_encoder", list(doc["tabular_encoders"]), tabular_encoders)
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
    for n in tab:
        registry("tabular_encoder").get(n)
    for n in fus:
        registry("fusion").get(n)
    registry("image_encoder").get(doc["image_encoder"].get("name", "timm"))
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
    for p in protocols:
        if p["name"] not in ALL_PROTOCOLS:
            raise ConfigError(f"suite {doc['name']!r}: unknown protocol {p['name']!r}; choose from {list(ALL_PROTOCOLS)}")
        missingness_plan(p)  # validates rates and flavours now, not mid-suite
    impute = doc.get("impute", [])
    if not isinstance(impute, list) or any(m not in IMPUTATIONS for m in impute):
        raise ConfigError(f"suite {doc['name']!r}: impute must be a list drawn from {list(IMPUTATIONS)}, got {impute!r}")
    suite = Suite(
        name=doc["name"],
        version=int(doc.get("version", 1)),
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
