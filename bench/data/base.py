"""What every dataset adapter returns: raw arrays plus provenance. Preprocessing lives in
:mod:`bench.data.preprocess` so that it is fitted on the training split by one shared code path.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bench.errors import DataError

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Provenance:
    dataset: str  # e.g. "ol3i"
    source: Literal["real", "synthetic"]
    version: str  # release name / generator version
    checksum: str  # content hash of what was loaded (sha256 prefix)
    protocol_note: str = ""  # e.g. "DVM: 101 classes, front views (Hager et al. 2023)"
    details: dict = field(default_factory=dict)


@dataclass
class MultimodalData:
    """One image-tabular dataset, all splits, before preprocessing.

    ``images`` is float32 ``[n, C, H, W]`` already scaled to [0, 1] (CT windowing applied);
    ``x_num`` is float32 with NaN for missing values; ``x_cat`` int64 category codes in
    ``[0, cardinality)`` (missing values get their own code); ``y`` int64 labels;
    ``split`` an array of "train" / "val" / "test". ``image_available`` (bool ``[n]``, or None when
    every sample has its image) marks real missing images: their rows of ``images`` are zeros and
    they reach fusions as ``image_available=False`` in training and test alike.
    """

    images: np.ndarray
    x_num: np.ndarray
    x_cat: np.ndarray
    y: np.ndarray
    split: np.ndarray
    num_names: list[str]
    cat_names: list[str]
    cat_cardinalities: list[int]
    task: Literal["binary", "multiclass"]
    n_classes: int
    provenance: Provenance
    ids: np.ndarray | None = None
    class_names: list[str] | None = None
    image_available: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.y)
        if self.image_available is not None:
            avail = np.asarray(self.image_available)
            if avail.shape != (n,) or avail.dtype != bool:
                raise ValueError(f"image_available must be a bool array of shape ({n},), got {avail.dtype} {avail.shape}")
            self.image_available = None if avail.all() else avail
        for name in ("images", "x_num", "x_cat", "split"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, labels have {n}")
        if self.x_num.shape[1] != len(self.num_names) or self.x_cat.shape[1] != len(self.cat_names):
            raise ValueError("feature names do not match the feature arrays")
        if len(self.cat_cardinalities) != len(self.cat_names):
            raise ValueError("one cardinality per categorical feature is required")

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def indices(self, split: Split) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    @property
    def feature_names(self) -> list[str]:
        return [*self.num_names, *self.cat_names]


def checksum_arrays(*arrays: np.ndarray) -> str:
    """A short sha256 over array bytes, for provenance."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def checksum_files(*paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the real-data adapters (root resolution and the .npy image cache).


def resolve_root(root, env_var: str, dataset: str, expected: str) -> Path:
    """The data root from the argument, else from ``env_var``; a one-line DataError otherwise."""
    if root is None or str(root) == "":
        root = os.environ.get(env_var) or None
    if root is None:
        raise DataError(
            f"no {dataset} data folder given: pass --data-root DIR or set {env_var}=DIR "
            f"(the folder holding {expected})"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{dataset} data folder {str(path)!r} does not exist or is not a folder: pass --data-root or set {env_var} to the folder holding {expected}"
        )
    return path


def default_cache_dir(dataset: str, cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$BENCH_CACHE/<dataset>``, else ``~/.cache/bench/<dataset>``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("BENCH_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "bench") / dataset


def cached_npy(
    path: Path, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]
) -> tuple[np.ndarray, bool]:
    """Load ``path`` memory-mapped (read-only) if it holds an array of ``shape``/``dtype``;
    otherwise create it through ``fill(out)`` writing into a memory-mapped temporary file that is
    renamed into place atomically. Returns ``(array, was_cached)``. If the cache folder is not
    writable the array is built in memory and a warning is logged.
    """
    dtype = np.dtype(dtype)
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == tuple(shape) and arr.dtype == dtype:
                return arr, True
        except (OSError, ValueError):  # a truncated or foreign file: rebuild it
            pass
        log.warning("cache file %s does not match; rebuilding it", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
    except OSError as exc:
        log.warning("cannot write the image cache %s (%s); keeping the images in memory", path, exc)
        out = np.empty(shape, dtype=dtype)
        fill(out)
        return out, False
    try:
        fill(out)
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return np.load(path, mmap_mode="r"), False


IN_MEMORY_LIMIT = 1 << 30  # bytes; larger image arrays are rendered into a memory-mapped cache file


def source_digest(*files: str | Path) -> str:
    """A short hash of a generator's source files (its own and those its rendering calls), for the names
    of the images it renders into the cache: an edited generator renders anew instead of reusing what its
    old code drew."""
    h = hashlib.sha256()
    for file in files:
        h.update(Path(file).read_bytes())
    return h.hexdigest()[:12]


def render_images(shape: tuple[int, ...], fill: Callable[[np.ndarray], None], cache_path: Path) -> np.ndarray:
    """float32 images of ``shape`` filled by ``fill`` once, then read from ``cache_path`` (whose name must
    say everything they depend on: generator version and source, size, seed): up to
    :data:`IN_MEMORY_LIMIT` read back into memory (a replica's slices render in seconds on 2 cores; reading
    them back takes a fraction of one), larger ones memory-mapped."""
    images = cached_npy(cache_path, shape, np.float32, fill)[0]
    if int(np.prod(shape)) * 4 <= IN_MEMORY_LIMIT and isinstance(images, np.memmap):
        return np.array(images)  # in memory and writable, as rendered
    return images
