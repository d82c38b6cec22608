"""Data protocols: transformations of the (preprocessed) tabular data applied at train and test time.

* ``complete`` — the data as released.
* ``incomplete-tabular`` — AMF-MedIT 4.2.4: the most important tabular feature(s) are masked and
  replaced by their training-split mean, in every split (the model is fine-tuned and tested under the
  incomplete setting). Importance comes from integrated gradients of a supervised tabular model
  trained on the training split (:mod:`bench.importance`), or from feature names the suite gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import ConfigError


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


def apply_protocol(spec: dict, tab: PreparedTabular, importance_ranking: list[str] | None) -> AppliedProtocol:
    name = spec["name"]
    if name == "complete":
        return AppliedProtocol(name, tab.x_num, tab.x_cat, [], "none")
    if name != "incomplete-tabular":
        raise ConfigError(f"unknown protocol {name!r}; choose complete or incomplete-tabular")
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
