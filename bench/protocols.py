"""Data protocols: transformations of the (preprocessed) tabular data applied at train and test time.

* ``complete`` — the data as released.
* ``incomplete-tabular`` — AMF-MedIT 4.2.4: the most important tabular feature(s) are masked and
  replaced by their training-split mean, in every split (the model is fine-tuned and tested under the
  incomplete setting). Importance comes from integrated gradients of a supervised tabular model
  trained on the training split (:mod:`bench.importance`), or from feature names the suite gives.
* ``missing-image``, ``missing-tabular``, ``missing-cells`` — missingness sweeps (below).

Each is a :class:`Protocol` registered under its name (``@register_protocol``, entry point group
``bench.protocols``), so a suite's ``protocols:`` entry is looked up in the registry, checked by the
protocol itself, and a new protocol is one class in one file (``bench check-plugin NAME --kind protocol``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.errors import ConfigError
from bench.registry import register_protocol


@dataclass
class PreparedTabular:
    x_num: np.ndarray  # float32, imputed and z-scored with training statistics
    x_cat: np.ndarray  # int64 codes
    num_names: list[str]
    cat_names: list[str]
    num_train_mean: np.ndarray  # training mean of each preprocessed numeric column
    cat_train_mode: np.ndarray  # training mode of each categorical column


@dataclass
class AppliedProtocol:
    name: str
    x_num: np.ndarray
    x_cat: np.ndarray
    masked_features: list[str]
    fill: str

    def describe(self) -> str:
        if not self.masked_features:
            return self.name
        return f"{self.name} (masked: {', '.join(self.masked_features)}; fill: {self.fill})"


class Protocol:
    """A data protocol (a template: :class:`IncompleteTabular`). A suite entry ``{name: NAME, ...}`` is
    checked by :meth:`check` when the suite loads; the pipeline then asks for

    * :meth:`data` — the feature-level data every split is trained and tested on (masking, filling);
    * :meth:`missingness` — a sweep of missing modalities or cells (training and test rates), or None;
    * :meth:`needs_importance` — whether :meth:`data` or the sweep reads the importance ranking, which
      the harness computes on the training split only.

    Subclasses set ``keys`` (the entry's allowed keys besides ``name``) and override what they change.
    """

    keys: ClassVar[frozenset[str]] = frozenset()

    def check(self, spec: dict) -> None:
        extra = set(spec) - {"name"} - set(self.keys)
        if extra:
            raise ConfigError(f"protocol {spec['name']!r}: unknown key {sorted(extra)[0]!r}; known keys: "
                              f"{', '.join(sorted({'name', *self.keys}))}")

    def data(self, spec: dict, tab: PreparedTabular, importance_ranking: list[str] | None) -> AppliedProtocol:
        return AppliedProtocol(spec["name"], tab.x_num, tab.x_cat, [], "none")

    def missingness(self, spec: dict) -> MissingnessPlan | None:
        return None

    def needs_importance(self, spec: dict) -> bool:
        return False


@register_protocol("complete")
class Complete(Protocol):
    """The data as released."""


@register_protocol("incomplete-tabular")
class IncompleteTabular(Protocol):
    """AMF-MedIT 4.2.4: the top-k features by importance (or named ones) replaced by their training mean."""

    keys = frozenset({"mask", "fill"})

    def check(self, spec: dict) -> None:
        super().check(spec)
        mask = spec.get("mask", {})
        if not isinstance(mask, dict) or set(mask) - {"by", "top_k", "features"}:
            raise ConfigError(f"protocol incomplete-tabular: mask must be a mapping with keys by, top_k, features; "
                              f"got {mask!r}")
        if mask.get("by", "importance") not in ("importance", "names"):
            raise ConfigError(f"protocol incomplete-tabular: mask.by must be 'importance' or 'names', got {mask['by']!r}")
        top_k = mask.get("top_k", 1)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ConfigError(f"protocol incomplete-tabular: mask.top_k must be an integer >= 1, got {top_k!r}")
        if not isinstance(mask.get("features", []), list):
            raise ConfigError("protocol incomplete-tabular: mask.features must be a list of column names")

    def needs_importance(self, spec: dict) -> bool:
        return spec.get("mask", {}).get("by", "importance") == "importance"

    def data(self, spec: dict, tab: PreparedTabular, importance_ranking: list[str] | None) -> AppliedProtocol:
        name = spec["name"]
        mask = spec.get("mask", {"by": "importance", "top_k": 1})
        fill = spec.get("fill", "mean")
        if fill != "mean":
            raise ConfigError(f"protocol {name!r}: fill {fill!r} is not supported; use 'mean' (the paper's setting)")
        if mask.get("by", "importance") == "names":
            features = list(mask.get("features", []))
            if not features:
                raise ConfigError("protocol incomplete-tabular with mask.by=names needs mask.features: [name, ...]")
        else:
            if not importance_ranking:
                raise ConfigError("protocol incomplete-tabular needs an importance ranking; none was computed")
            features = importance_ranking[: int(mask.get("top_k", 1))]
        x_num, x_cat = tab.x_num.copy(), tab.x_cat.copy()
        for f in features:
            if f in tab.num_names:
                j = tab.num_names.index(f)
                x_num[:, j] = tab.num_train_mean[j]
            elif f in tab.cat_names:
                # NOTE[DIFF]: the paper masks a numeric feature (age); a categorical feature has no mean,
                # so it is filled with its training mode.
                j = tab.cat_names.index(f)
                x_cat[:, j] = tab.cat_train_mode[j]
            else:
                raise ConfigError(f"protocol incomplete-tabular: feature {f!r} is not a column of this dataset")
        return AppliedProtocol(name, x_num, x_cat, features, fill)


def get_protocol(name: str) -> Protocol:
    """An instance of the protocol registered as ``name`` (one-line error with close matches otherwise)."""
    from bench.registry import get

    return get("protocol", name)()


def apply_protocol(spec: dict, tab: PreparedTabular, importance_ranking: list[str] | None) -> AppliedProtocol:
    """The data of a protocol; a missingness protocol starts from the complete data (its masks come later)."""
    return get_protocol(spec["name"]).data(spec, tab, importance_ranking)


# ------------------------------------------------------------------------------- missingness
# Whole-modality missingness (the resilient vision-tabular transformer's two stress tests) and
# tabular-cell missingness (TIP's four flavours). A protocol of this kind expands into *training
# conditions* (one set of runs each) and *test conditions* (every run is evaluated under each):
#
#   {name: missing-image,   train_rates: [0.0, 0.5], test_rates: [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]}
#   {name: missing-tabular, train_rates: [...],      test_rates: [...]}
#   {name: missing-cells, flavour: random-cells, train_rates: [0.0], test_rates: [0.0, 0.3, 0.5]}
#
# A missing modality is an availability mask [n] that reaches the fusion (the harness also zeroes
# that modality's features, and the fusion may not depend on them); missing cells are replaced by
# their training mean (numeric) or mode (categorical), as in the incomplete-tabular protocol.
# Masks are a pure function of (run seed, modality, role, rate): each sample draws one uniform
# number u per role and is missing when u < rate, so a higher rate removes a superset of samples.

MISSING_MODALITY = ("missing-image", "missing-tabular")
CELL_FLAVOURS = ("random-cells", "random-features", "most-important", "least-important")


def _rates(spec: dict, key: str, default: list[float]) -> list[float]:
    values = spec.get(key, default)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"protocol {spec['name']!r}: {key} must be a non-empty list of rates in [0, 1], got {values!r}")
    out = []
    for v in values:
        if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ConfigError(f"protocol {spec['name']!r}: rate {v!r} in {key} is not a number in [0, 1]")
        out.append(round(float(v), 6))
    return sorted(dict.fromkeys(out))


@dataclass(frozen=True)
class Condition:
    """Missingness applied to some rows: whole modalities at a rate, or tabular cells of a flavour."""

    kind: str  # "none" | "image" | "tabular" | "cells"
    rate: float = 0.0
    flavour: str = ""

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.rate:g}"


@dataclass
class MissingnessPlan:
    """How a protocol expands: the run-spec protocol label of each training rate, and the test rates."""

    name: str  # e.g. "missing-image" or "missing-cells:most-important"
    kind: str  # "image" | "tabular" | "cells"
    flavour: str
    train_rates: list[float]
    test_rates: list[float]

    def run_protocol(self, train_rate: float) -> str:
        return f"{self.name}@train={train_rate:g}"

    def condition(self, rate: float) -> Condition:
        return Condition(self.kind, rate, self.flavour)

    def describe(self) -> str:
        what = {"image": "whole image missing", "tabular": "whole tabular record missing",
                "cells": f"tabular cells missing ({self.flavour}; filled with the training mean/mode)"}[self.kind]
        return (f"{what} for a fraction p of samples; training (and validation) at p in {self.train_rates}, "
                f"every trained model tested at p in {self.test_rates}; masks drawn per seed")


class _Sweep(Protocol):
    """Missingness sweeps: training conditions (one set of runs each) and test conditions (every run)."""

    keys = frozenset({"train_rates", "test_rates"})

    def check(self, spec: dict) -> None:
        super().check(spec)
        self.missingness(spec)  # rates and flavours, now rather than mid-suite

    def missingness(self, spec: dict) -> MissingnessPlan:
        name = spec["name"]
        train = _rates(spec, "train_rates", [0.0])
        test = _rates(spec, "test_rates", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
        return MissingnessPlan(name, name.split("-", 1)[1], "", train, test)


@register_protocol("missing-image")
class MissingImage(_Sweep):
    """Whole images missing for a fraction of samples, in training and/or at test."""

    def check(self, spec: dict) -> None:
        if "flavour" in spec:
            raise ConfigError(f"protocol {spec['name']!r} takes no flavour (that is for missing-cells)")
        super().check(spec)


@register_protocol("missing-tabular")
class MissingTabular(MissingImage):
    """Whole tabular records missing for a fraction of samples, in training and/or at test."""


@register_protocol("missing-cells")
class MissingCells(_Sweep):
    """Tabular cells missing (TIP's four flavours), filled with the training mean / mode."""

    keys = frozenset({"train_rates", "test_rates", "flavour"})

    def missingness(self, spec: dict) -> MissingnessPlan:
        plan = super().missingness(spec)
        flavour = spec.get("flavour", "random-cells")
        if flavour not in CELL_FLAVOURS:
            raise ConfigError(f"protocol missing-cells: unknown flavour {flavour!r}; choose from {list(CELL_FLAVOURS)}")
        return MissingnessPlan(f"missing-cells:{flavour}", "cells", flavour, plan.train_rates, plan.test_rates)

    def needs_importance(self, spec: dict) -> bool:
        return spec.get("flavour") in ("most-important", "least-important")


def missingness_plan(spec: dict) -> MissingnessPlan | None:
    """The expansion of a missingness protocol, or None for one without a sweep (complete, incomplete-tabular);
    the entry is checked first (its keys, rates and flavour)."""
    protocol = get_protocol(spec["name"])
    protocol.check(spec)
    return protocol.missingness(spec)


def parse_run_protocol(label: str) -> tuple[str, float | None]:
    """``"missing-image@train=0.3"`` -> ``("missing-image", 0.3)``; other labels -> ``(label, None)``."""
    if "@train=" not in label:
        return label, None
    name, rate = label.split("@train=", 1)
    return name, float(rate)


def _uniform(seed: int, stream: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform numbers that depend only on (seed, stream): the basis of every missingness mask."""
    digest = np.frombuffer(stream.encode(), dtype=np.uint8).astype(np.uint64)
    key = [int(seed) & 0xFFFFFFFF, *[int(b) for b in digest]]
    return np.random.default_rng(np.random.SeedSequence(key)).random(shape)


def availability(n: int, rows: np.ndarray, cond: Condition, seed: int, role: str) -> np.ndarray:
    """Availability [n] of the condition's modality: rows lose it when their uniform draw is below the rate.

    ``role`` separates the draws of the fitted rows ("fit": train + validation) from the test rows.
    Rows outside ``rows`` stay available.
    """
    avail = np.ones(n, dtype=bool)
    if cond.kind not in ("image", "tabular") or cond.rate <= 0:
        return avail
    u = _uniform(seed, f"{cond.kind}/{role}", (n,))
    avail[rows] = ~(u[rows] < cond.rate)
    return avail


def cell_mask(n: int, rows: np.ndarray, names: list[str], cond: Condition, seed: int, role: str,
              importance_ranking: list[str] | None) -> np.ndarray:
    """Missing cells [n, n_features] (True = missing) for TIP's four flavours at the condition's rate.

    * random-cells: each cell of the rows independently with probability p;
    * random-features: a fraction p of the features (drawn per seed), for every row;
    * most-important / least-important: the round(p * n_features) top / bottom features of the
      importance ranking, for every row.
    """
    n_feat = len(names)
    mask = np.zeros((n, n_feat), dtype=bool)
    if cond.kind != "cells" or cond.rate <= 0:
        return mask
    if cond.flavour == "random-cells":
        u = _uniform(seed, f"cells/{role}", (n, n_feat))
        mask[rows] = u[rows] < cond.rate
        return mask
    k = int(round(cond.rate * n_feat))
    if cond.flavour == "random-features":
        order = np.argsort(_uniform(seed, "features", (n_feat,)), kind="stable")
        cols = order[:k]
    else:
        if not importance_ranking:
            raise ConfigError(f"protocol missing-cells ({cond.flavour}) needs an importance ranking; none was computed")
        ranked = [names.index(f) for f in importance_ranking if f in names]
        ranked += [j for j in range(n_feat) if j not in set(ranked)]
        cols = ranked[:k] if cond.flavour == "most-important" else ranked[n_feat - k:] if k else []
    for j in cols:
        mask[rows, j] = True
    return mask


def apply_cells(x_num: np.ndarray, x_cat: np.ndarray, tab: PreparedTabular, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of ``(x_num, x_cat)`` with the masked cells filled by the training mean / mode."""
    n_num = x_num.shape[1]
    if not mask.any():
        return x_num, x_cat
    x_num, x_cat = x_num.copy(), x_cat.copy()
    num_mask, cat_mask = mask[:, :n_num], mask[:, n_num:]
    x_num[num_mask] = np.broadcast_to(tab.num_train_mean, x_num.shape)[num_mask]
    if cat_mask.size:
        x_cat[cat_mask] = np.broadcast_to(tab.cat_train_mode, x_cat.shape)[cat_mask]
    return x_num, x_cat


NO_MISSINGNESS = Condition("none")  # complete data: nothing masked
