"""Real OL3I adapter: L3 axial CT slices + EHR features, 1-year ischemic heart disease (IHD).

OL3I ("Opportunistic L3 CT slices for IHD risk assessment", Stanford AIMI 2023) as used by
AMF-MedIT (section 4.1, appendix A.1): 8,139 patients, one 512x512 slice each, the predefined
``set_1y`` split and the binary ``label_1y`` target. See ``datasets/ol3i.md`` for the card.

On-disk layout under the data root (``root=`` or ``$BENCH_OL3I_ROOT``)::

    l3_slices.h5        one slice per patient, raw CT values in Hounsfield units (HU)
    clinical_data.csv   anon_id, label_1y, set_1y (+ label_*y / set_*y, bmi, smoker, age, sex, ...)
    *.csv               optional extra feature tables (e.g. the 423-feature EHR table), joined on anon_id

HDF5 layouts supported:

* the release's: one 2-D dataset per patient at the top level, keyed by ``anon_id``
  (a singleton axis, ``[1, 512, 512]`` or ``[512, 512, 1]``, is squeezed);
* defensively: one 3-D dataset ``[n, 512, 512]`` plus a 1-D id dataset (named ``anon_id``,
  ``anon_ids``, ``ids``, ``id`` or ``keys``; bytes or str) giving the ``anon_id`` of each slice.

Features: every column except ids (``anon_id``, ``img_id``, ...), targets and splits
(``label_<k>y``, ``set_<k>y``) and ``Unnamed: *`` index columns. A column with exactly two distinct
non-null values (sex, smoker, gender, ...) is categorical (binary; levels sorted, so F/M -> 0/1,
No/Yes -> 0/1); other numeric columns are float with NaN kept (imputation is fitted on the
training split later, :mod:`bench.data.preprocess`); other text columns are categorical, unless
they look like identifiers (more than 50 levels), which are dropped with a warning.

Images: clipped to [-125, 275] HU and scaled to [0, 1] (:func:`window_ct`, appendix A.1), then
resized to ``image_size`` with antialiased bilinear interpolation (an area-like filter when
shrinking); the result ``[n, 1, S, S]`` float32 is cached as ``.npy`` and memory-mapped.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from bench.data.base import SPLITS, MultimodalData, Provenance, cached_npy, default_cache_dir, resolve_root
from bench.data.images import HU_WINDOW, resize_batch, window_ct
from bench.data.intensity import check_ct_hu
from bench.data.tabular import MAX_TEXT_LEVELS, encode_categorical, read_table, table_to_features
from bench.data.tabular import parse_splits as _parse_splits
from bench.errors import DataError
from bench.registry import register_dataset

log = logging.getLogger(__name__)

# the shared image and table helpers (bench.data.images, bench.data.tabular) stay importable from here
__all__ = ["HU_WINDOW", "MAX_TEXT_LEVELS", "encode_categorical", "load_ol3i", "parse_labels", "parse_splits",
           "resize_batch", "table_to_features", "window_ct"]

SLICE_SHAPE = (512, 512)
ENV_VAR = "BENCH_OL3I_ROOT"
H5_NAME = "l3_slices.h5"
CLINICAL_NAME = "clinical_data.csv"
ID_COL, LABEL_COL, SPLIT_COL = "anon_id", "label_1y", "set_1y"
VERSION = "OL3I (Stanford AIMI 2023)"
CACHE_FORMAT = "ol3i-images-v1"  # bump when the image preprocessing changes

ID_COLUMNS = frozenset({"anon_id", "img_id", "mrn", "accession", "ct_date", "patient_id"})
_TARGET_LIKE = re.compile(r"^(label|set)_\d+y$")
_H5_ID_NAMES = ("anon_id", "anon_ids", "ids", "id", "keys")


def _file_sha(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _read_csv(path: Path) -> pd.DataFrame:
    return read_table(path)


def _same(a: pd.Series, b: pd.Series) -> bool:
    """NaN-aware equality of two aligned columns (numeric with tolerance, else as text)."""
    na, nb = a.isna().to_numpy(), b.isna().to_numpy()
    if (na != nb).any():
        return False
    a, b = a[~na], b[~nb]
    an, bn = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if an.notna().all() and bn.notna().all():
        return bool(np.allclose(an.to_numpy(float), bn.to_numpy(float), rtol=1e-6, atol=1e-9))
    return bool((a.astype(str).str.strip().to_numpy() == b.astype(str).str.strip().to_numpy()).all())


def _join_extra_tables(df: pd.DataFrame, extra: list[Path]) -> tuple[pd.DataFrame, dict]:
    info: dict = {}
    for path in extra:
        t = _read_csv(path)
        if ID_COL not in t.columns:
            raise DataError(
                f"{path.name} in the OL3I folder has no {ID_COL!r} column; every extra *.csv there is joined "
                f"on {ID_COL}: add the column or move the file out of the folder"
            )
        t[ID_COL] = t[ID_COL].astype(str).str.strip()
        dup = t[ID_COL][t[ID_COL].duplicated()]
        if len(dup):
            raise DataError(
                f"{path.name} has {len(dup)} repeated {ID_COL} values (e.g. {dup.iloc[0]!r}); the join needs one row per patient: deduplicate the table"
            )
        joined = df[[ID_COL]].merge(t, on=ID_COL, how="left")
        renames = {}
        for col in [c for c in t.columns if c != ID_COL and c in df.columns]:
            both = joined[col].notna().to_numpy() & df[col].notna().to_numpy()
            agree = _same(df[col][both].reset_index(drop=True), joined[col][both].reset_index(drop=True))
            if _TARGET_LIKE.match(col):
                if not agree:
                    raise DataError(
                        f"{col} disagrees between {CLINICAL_NAME} and {path.name} for the same {ID_COL}; fix or remove the extra table"
                    )
                joined = joined.drop(columns=col)
            elif _same(df[col].reset_index(drop=True), joined[col].reset_index(drop=True)):
                joined = joined.drop(columns=col)
            else:
                renames[col] = f"{col}@{path.stem}"
        joined = joined.rename(columns=renames)
        unmatched = int((~df[ID_COL].isin(t[ID_COL])).sum())
        info[path.name] = {"columns": int(joined.shape[1] - 1), "rows_without_match": unmatched}
        if unmatched:
            log.warning(
                "%s: %d of %d patients have no row; their features from it are missing",
                path.name,
                unmatched,
                len(df),
            )
        df = pd.concat(
            [df.reset_index(drop=True), joined.drop(columns=ID_COL).reset_index(drop=True)], axis=1
        )
    return df, info


def parse_labels(df: pd.DataFrame, source: str) -> np.ndarray:
    raw = df[LABEL_COL]
    y = pd.to_numeric(raw.astype("object").replace({True: 1, False: 0}), errors="coerce")
    bad = y.isna() | ~y.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}: {int(bad.sum())} rows have a missing or non-binary {LABEL_COL} (first: {ID_COL}={df[ID_COL].iloc[i]!r}, "
            f"value {raw.iloc[i]!r}); {LABEL_COL} must be 0 or 1 for every patient"
        )
    return y.to_numpy(dtype=np.int64)


def parse_splits(values: pd.Series, source: str, column: str = SPLIT_COL) -> np.ndarray:
    return _parse_splits(values, source, column)


# --------------------------------------------------------------------------------------------
# images


def _h5_index(f: h5py.File) -> tuple[str, dict[str, tuple[str, int | None]], str | None]:
    """Map anon_id -> (dataset path, row or None) for the supported layouts."""
    container = f
    members = list(f)
    if members and not any(isinstance(f[k], h5py.Dataset) for k in members) and len(members) == 1:
        container = f[members[0]]  # everything inside one top-level group
        members = list(container)
    prefix = "" if container is f else container.name.rstrip("/") + "/"
    for id_name in _H5_ID_NAMES:
        if (
            id_name in container
            and isinstance(container[id_name], h5py.Dataset)
            and container[id_name].ndim == 1
        ):
            stacks = [
                k
                for k in members
                if k != id_name and isinstance(container[k], h5py.Dataset) and container[k].ndim == 3
            ]
            if len(stacks) == 1 and container[stacks[0]].shape[0] == container[id_name].shape[0]:
                ids = [v.decode() if isinstance(v, bytes) else str(v) for v in container[id_name][()]]
                stack = prefix + stacks[0]
                return "stacked", {i.strip(): (stack, r) for r, i in enumerate(ids)}, stack
    index = {str(k).strip(): (prefix + k, None) for k in members if isinstance(container[k], h5py.Dataset)}
    return "per-key", index, None


def _slice_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1) if len(shape) > 2 else tuple(shape)


def _check_images(f: h5py.File, ids: np.ndarray, h5_path: Path) -> tuple[str, list[tuple[str, int | None]]]:
    layout, index, stack = _h5_index(f)
    missing = [i for i in ids if i not in index]
    if missing:
        raise DataError(
            f"{len(missing)} {ID_COL} values in {CLINICAL_NAME} have no image in {h5_path.name} (e.g. {missing[0]!r}); "
            f"remove those rows or use the matching l3_slices.h5"
        )
    refs = [index[i] for i in ids]
    if layout == "stacked":
        shape = _slice_shape(f[stack].shape[1:])
        if shape != SLICE_SHAPE:
            raise DataError(
                f"{h5_path.name}[{stack!r}] holds slices of shape {shape}; the OL3I adapter expects the release's 512x512 slices"
            )
    else:
        for aid, (key, _) in zip(ids, refs):
            shape = _slice_shape(f[key].shape)
            if shape != SLICE_SHAPE:
                raise DataError(
                    f"{h5_path.name}[{aid!r}] has shape {tuple(f[key].shape)}; the OL3I adapter expects the release's 512x512 slices"
                )
    return layout, refs


def _fill_images(
    h5_path: Path, refs: list[tuple[str, int | None]], image_size: int, out: np.ndarray, batch: int = 64
) -> None:
    with h5py.File(h5_path, "r") as f:
        for start in range(0, len(refs), batch):
            chunk = refs[start : start + batch]
            raw = np.stack(
                [np.asarray(f[k][()] if r is None else f[k][r]).reshape(SLICE_SHAPE) for k, r in chunk]
            )
            check_ct_hu(raw, [k if r is None else f"{k}[{r}]" for k, r in chunk], h5_path.name)  # before any cache write
            hu = window_ct(raw)[:, None]
            out[start : start + len(chunk)] = resize_batch(hu, image_size)


# --------------------------------------------------------------------------------------------


@register_dataset("ol3i")
def load_ol3i(
    *, root: str | Path | None = None, image_size: int = 64, cache_dir: str | Path | None = None, **_
) -> MultimodalData:
    """OL3I (real): L3 CT slices + EHR tables, 1-year IHD, predefined set_1y split."""
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an integer >= 8, got {image_size!r}")
    path = resolve_root(root, ENV_VAR, "OL3I", f"{H5_NAME} and {CLINICAL_NAME}")
    h5_path, csv_path = path / H5_NAME, path / CLINICAL_NAME
    for p in (csv_path, h5_path):
        if not p.is_file():
            raise DataError(
                f"{p.name} not found in {path}: download the OL3I release from Stanford AIMI and point --data-root / {ENV_VAR} at its folder"
            )

    df = _read_csv(csv_path)
    for col in (ID_COL, LABEL_COL, SPLIT_COL):
        if col not in df.columns:
            raise DataError(
                f"{CLINICAL_NAME} has no {col!r} column (found: {', '.join(list(df.columns)[:8])}); use the release's clinical_data.csv"
            )
    df[ID_COL] = df[ID_COL].astype(str).str.strip()
    dup = df[ID_COL][df[ID_COL].duplicated()]
    if len(dup):
        raise DataError(
            f"{CLINICAL_NAME} has {len(dup)} repeated {ID_COL} values (e.g. {dup.iloc[0]!r}); keep one row per patient"
        )
    y = parse_labels(df, CLINICAL_NAME)
    split = parse_splits(df[SPLIT_COL], CLINICAL_NAME)
    extra = sorted(p for p in path.glob("*.csv") if p.name != CLINICAL_NAME)
    df, join_info = _join_extra_tables(df, extra)
    feature_cols = [
        c
        for c in df.columns
        if c not in ID_COLUMNS and not _TARGET_LIKE.match(c) and not c.startswith("Unnamed:")
    ]
    feats = table_to_features(df, feature_cols, source="OL3I")
    ids = df[ID_COL].to_numpy(dtype=object).astype(str)

    with h5py.File(h5_path, "r") as f:
        layout, refs = _check_images(f, ids, h5_path)
    stat = h5_path.stat()
    key = hashlib.sha256(
        f"{CACHE_FORMAT}|{stat.st_size}|{stat.st_mtime_ns}|{image_size}|".encode() + "\n".join(ids).encode()
    ).hexdigest()[:16]
    cache_file = default_cache_dir("ol3i", cache_dir) / f"ol3i_{image_size}px_{key}.npy"
    images, was_cached = cached_npy(
        cache_file,
        (len(ids), 1, image_size, image_size),
        np.float32,
        lambda out: _fill_images(h5_path, refs, image_size, out),
    )

    h = hashlib.sha256()
    for p in [csv_path, *extra]:
        _file_sha(h, p)
    h.update(str(stat.st_size).encode())
    provenance = Provenance(
        dataset="ol3i",
        source="real",
        version=VERSION,
        checksum=h.hexdigest()[:16],
        protocol_note="OL3I 1-year IHD (label_1y), predefined set_1y split; CT window [-125, 275] HU -> [0, 1]",
        details={
            "root": str(path),
            "h5_layout": layout,
            "extra_tables": join_info,
            "dropped_columns": feats["dropped_columns"],
            "cat_levels": feats["cat_levels"],
            "n_per_split": {s: int((split == s).sum()) for s in SPLITS},
            "positives_per_split": {s: int(y[split == s].sum()) for s in SPLITS},
            "image_cache": str(cache_file),
            "image_cache_hit": was_cached,
        },
    )
    return MultimodalData(
        images=images,
        x_num=feats["x_num"],
        x_cat=feats["x_cat"],
        y=y,
        split=split,
        num_names=feats["num_names"],
        cat_names=feats["cat_names"],
        cat_cardinalities=feats["cat_cardinalities"],
        task="binary",
        n_classes=2,
        provenance=provenance,
        ids=ids,
        class_names=["no IHD within 1 year", "IHD within 1 year"],
    )
