"""Image intensities checked at load, before any windowing, resizing or cache write.

A CT adapter expects raw Hounsfield units; slices that were already windowed to [0, 1], or stored
pixel values still carrying the DICOM rescale (unsigned, ``HU = value + RescaleIntercept`` with the
usual intercept -1024), would be windowed into nonsense and still be labelled real. A photograph is
expected in [0, 1] (float) or [0, 255]. Non-finite pixels are refused for every kind. Each problem is
one :class:`~bench.errors.DataError` naming the sample, what was found and what was expected; since the
check runs inside the cache's fill function, bad data never reaches a cache file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.errors import DataError

#: plausible raw CT values: padding outside the field of view goes down to -3024 (-3072 with some
#: vendors' 12-bit extended scale); metal in the extended CT scale reaches ~31,000 HU
HU_RANGE = (-4096.0, 32767.0)


def _per_sample(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = x.reshape(len(x), -1)
    if flat.dtype.kind == "f":
        finite = np.isfinite(flat)
        bad = (~finite).sum(axis=1)
        lo = np.where(finite, flat, np.inf).min(axis=1)
        hi = np.where(finite, flat, -np.inf).max(axis=1)
        return bad, lo.astype(np.float64), hi.astype(np.float64)
    return np.zeros(len(flat), dtype=np.int64), flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)


def _finite_samples(bad: np.ndarray, names: Sequence[str], prefix: str, expected: str, noun: str):
    """``(index, "<prefix> <name>")`` per sample, refusing the first with a non-finite pixel."""
    for i, name in enumerate(names):
        where = f"{prefix} {name}"
        if bad[i]:
            raise DataError(f"{where} has {int(bad[i])} non-finite pixel(s) (NaN or inf); expected {expected} — "
                            f"fix or drop that {noun}")
        yield i, where


def check_ct_hu(slices: np.ndarray, names: Sequence[str], source: str) -> None:
    """Raw CT slices ``[B, ...]`` (one per sample, as stored) must be finite Hounsfield units.

    Refused: non-finite pixels; a slice within [0, 1] (already windowed); an unsigned dtype, or a slice
    with bone-like values (>= 500) but nothing below 0 HU — a body slice that holds bone holds fat and
    air too, so those are stored pixel values without the DICOM rescale; values outside :data:`HU_RANGE`.
    """
    x = np.asarray(slices)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source}: CT slices have dtype {x.dtype}; expected numbers in Hounsfield units")
    bad, lo, hi = _per_sample(x)
    for i, where in _finite_samples(bad, names, f"{source}: slice", "finite CT values in HU", "slice"):
        if lo[i] >= 0 and hi[i] <= 1.0:
            raise DataError(f"{where} lies in [{lo[i]:g}, {hi[i]:g}]: it looks already windowed or normalised; expected "
                            "raw CT values in HU (air about -1000), which the adapter windows itself")
        if lo[i] >= 0 and (x.dtype.kind in "ub" or hi[i] >= 500):
            raise DataError(f"{where} has no value below 0 (min {lo[i]:g}, max {hi[i]:g}, dtype {x.dtype}): it looks "
                            "like stored pixel values without the DICOM rescale; convert to HU "
                            "(value x RescaleSlope + RescaleIntercept, usually -1024) first")
        if lo[i] < HU_RANGE[0] or hi[i] > HU_RANGE[1]:
            raise DataError(f"{where} spans [{lo[i]:g}, {hi[i]:g}], outside any CT range {list(HU_RANGE)}; expected "
                            "raw CT values in HU")


def check_photo(images: np.ndarray, names: Sequence[str], source: str) -> None:
    """Photographs ``[B, ...]``: finite, in [0, 1] (float) or [0, 255]."""
    x = np.asarray(images)
    bad, lo, hi = _per_sample(x)
    for i, where in _finite_samples(bad, names, f"{source}: image", "values in [0, 1] or [0, 255]", "image"):
        if lo[i] < 0 or hi[i] > 255:
            raise DataError(f"{where} spans [{lo[i]:g}, {hi[i]:g}]; expected a photograph in [0, 1] or [0, 255]")


def check_finite(images: np.ndarray, source: str) -> None:
    """Images already scaled for the model (e.g. a synthetic replica): finite everywhere."""
    x = np.asarray(images)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise DataError(f"{source}: image {i} has non-finite pixels (NaN or inf); expected finite values")
