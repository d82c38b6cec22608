"""Tabular preprocessing fitted on the TRAINING split only: median imputation, then z-scoring.

AMF-MedIT appendix A.1 imputes OL3I's missing values with the median and z-scores the continuous
features of both datasets. The official AMF code computes those statistics over all splits
together, which leaks validation and test data into training; we do not copy that: every
statistic here comes from ``data.split == "train"`` rows only, and the same fitted
:class:`Preprocessor` transforms every split.

Categorical codes (``x_cat``) are left alone: each encoder embeds them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.base import MultimodalData
from bench.errors import DataError


@dataclass(frozen=True)
class Preprocessor:
    """Per-numeric-feature statistics of the training split.

    ``medians``: imputation values (raw units); ``means`` / ``stds``: of the imputed training
    features (raw units; a zero std is stored as 1); ``train_means``: the training means of the
    imputed *and* scaled features -- the fill value of the incomplete-tabular protocol, which
    replaces a masked feature by its training mean (0 up to rounding, by construction).
    """

    num_names: tuple[str, ...]
    medians: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    train_means: np.ndarray
    n_train: int

    def transform(self, x_num: np.ndarray) -> np.ndarray:
        """Impute NaN with the training medians, z-score; float32 without NaN."""
        x = np.asarray(x_num, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.medians):
            raise DataError(
                f"x_num has shape {x.shape}; this preprocessor was fitted on {len(self.medians)} numeric features: use the same dataset"
            )
        x = np.where(np.isnan(x), self.medians[None, :], x)
        return ((x - self.means[None, :]) / self.stds[None, :]).astype(np.float32, copy=False)

    def fill_value(self, name: str) -> float:
        """Training mean of one imputed and scaled feature (the incomplete-tabular fill value)."""
        try:
            return float(self.train_means[self.num_names.index(name)])
        except ValueError:
            raise DataError(
                f"unknown numeric feature {name!r}; known: {', '.join(self.num_names[:5])}, ..."
            ) from None

    def to_dict(self) -> dict:
        return {
            "num_names": list(self.num_names),
            "medians": self.medians.tolist(),
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "train_means": self.train_means.tolist(),
            "n_train": self.n_train,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        arr = lambda k: np.asarray(d[k], dtype=np.float32)  # noqa: E731
        return cls(
            tuple(d["num_names"]),
            arr("medians"),
            arr("means"),
            arr("stds"),
            arr("train_means"),
            int(d["n_train"]),
        )


def fit_preprocessor(data: MultimodalData) -> Preprocessor:
    """Fit median imputation + z-scoring on ``data``'s training rows only."""
    train = data.indices("train")
    if len(train) == 0:
        raise DataError(
            f"{data.provenance.dataset} has no training rows; the preprocessing is fitted on split == 'train'"
        )
    x = np.asarray(data.x_num[train], dtype=np.float64)
    d = x.shape[1]
    medians = np.zeros(d)
    observed = ~np.isnan(x)
    has_any = observed.any(axis=0)
    if has_any.any():
        medians[has_any] = np.nanmedian(x[:, has_any], axis=0)  # an all-missing feature is imputed with 0
    x = np.where(observed, x, medians[None, :])
    means = x.mean(axis=0)
    stds = x.std(axis=0)
    stds = np.where(stds > 1e-12 * np.maximum(1.0, np.abs(means)), stds, 1.0)
    scaled = (x - means) / stds
    return Preprocessor(
        num_names=tuple(data.num_names),
        medians=medians.astype(np.float32),
        means=means.astype(np.float32),
        stds=stds.astype(np.float32),
        train_means=scaled.mean(axis=0).astype(np.float32),
        n_train=int(len(train)),
    )
