"""Real DVM-CAR adapter: car-model classification from a front-view photo + 13 advert features.

Protocol (the one AMF-MedIT section 4.1 and appendix A.1 use, from Hager et al. 2023,
"Best of both worlds", CVPR): *101 car-model classes* (``Genmodel_ID``) with at least 100
front-view adverts each, one front-view image per advert, a random 72 / 18 / 10 % train / val /
test split, and 13 tabular features -- 9 continuous (Adv_year, Adv_month, Reg_year, Runned_Miles,
Price, Seat_num, Door_num, Entry_price, Engine_size) and 4 categorical (Color, Bodytype, Gearbox,
Fuel_type). Brand, model name and size features are excluded to avoid label leakage.
The other published DVM protocol (286 classes, all viewpoints, stratified 50 / 40 / 10 split) is
*not* implemented.

Steps, following Hager et al.'s published preparation notebook (re-implemented, not copied):

1. ``Image_table.csv``: ``Adv_ID`` = the first two ``$$``-separated fields of ``Image_ID``; keep
   front views (``Predicted_viewpoint == 0``) that passed the quality check (``Quality_check == "P"``,
   when the column exists); keep the first image per advert.
2. ``Ad_table.csv`` inner-joined with ``Price_table.csv`` on ``(Genmodel_ID, Reg_year) ==
   (Genmodel_ID, Year)`` to get ``Entry_price``, then with the images on ``Adv_ID``.
3. Rows with any missing value are dropped (as in the reference, over every joined column);
   ``Engine_size`` = ``Engin_size`` without its trailing ``L``; ``Runned_Miles`` and ``Price`` parsed
   as numbers (unparseable rows dropped).
4. Classes: ``Genmodel_ID`` values with >= ``min_per_class`` (100) rows, numbered in order of first
   appearance.
5. Split: ``train_test_split(ids, test_size=0.1, random_state=split_seed)`` then 20 % of the rest
   to validation (``split_seed`` 2022 as in the reference). The reference additionally removed a
   list of unreadable images it did not publish; we do not.

Files (``root=`` or ``$BENCH_DVM_ROOT``): the tables in the root or in ``tables_V2.0/`` or
``tables/``; images at ``resized_DVM/<Maker>/<Genmodel>/<Year>/<Color>/<Image_name>`` (the
release layout; ``resized_DVM/<Maker>/<Year>/<Color>/`` and ``Confirmed_fronts/<Maker>/<Year>/``
are also tried). Images: PIL, RGB, resized to ``image_size`` (bilinear, antialiased), scaled to
[0, 1], cached as ``.npy`` and memory-mapped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.base import SPLITS, MultimodalData, Provenance, cached_npy, default_cache_dir, resolve_root
from bench.data.images import ImageReadError, read_photo
from bench.data.tabular import encode_categorical
from bench.data.tabular import read_table as _read_csv
from bench.errors import DataError
from bench.registry import register_dataset

log = logging.getLogger(__name__)

ENV_VAR = "BENCH_DVM_ROOT"
VERSION = "DVM-CAR (Huang et al. 2021), tables V2.0"
CACHE_FORMAT = "dvm-images-v1"
PROTOCOL_NOTE = (
    "DVM: car-model classes with >= 100 front-view adverts (101 on the full release), 1 front image per advert, "
    "random 72/18/10 split, 13 features (Hager et al. 2023 protocol, as used by AMF-MedIT)"
)
CONTINUOUS = [
    "Adv_year",
    "Adv_month",
    "Reg_year",
    "Runned_Miles",
    "Price",
    "Seat_num",
    "Door_num",
    "Entry_price",
    "Engine_size",
]
CATEGORICAL = ["Color", "Bodytype", "Gearbox", "Fuel_type"]
AD_COLUMNS = [
    "Maker",
    "Genmodel",
    "Genmodel_ID",
    "Adv_ID",
    "Adv_year",
    "Adv_month",
    "Color",
    "Reg_year",
    "Bodytype",
    "Runned_Miles",
    "Engin_size",
    "Gearbox",
    "Fuel_type",
    "Price",
    "Seat_num",
    "Door_num",
]
IMAGE_COLUMNS = ["Image_ID", "Image_name", "Predicted_viewpoint"]
PRICE_COLUMNS = ["Genmodel_ID", "Year", "Entry_price"]
TABLE_DIRS = ("", "tables_V2.0", "tables", "tables_V2.0/tables", "tables/tables")


def _find_tables(root: Path) -> Path:
    for sub in TABLE_DIRS:
        d = root / sub if sub else root
        if (d / "Ad_table.csv").is_file():
            return d
    raise DataError(
        f"Ad_table.csv not found in {root} (nor in tables_V2.0/ or tables/): point --data-root / {ENV_VAR} at the unpacked DVM-CAR release"
    )


def _table(d: Path, name: str, required: list[str]) -> pd.DataFrame:
    path = d / name
    if not path.is_file():
        raise DataError(
            f"{name} not found in {d}: the DVM adapter needs Ad_table.csv, Image_table.csv and Price_table.csv from the release"
        )
    df = _read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{name} has no column {', '.join(repr(c) for c in missing)}; use the DVM-CAR release's {name}"
        )
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
            df[c] = df[c].str.strip()
    return df


def _image_candidates(root: Path, name: str) -> list[Path]:
    parts = name.split("$$")
    if len(parts) < 4:
        return [root / "resized_DVM" / name]
    maker, model, year, color = parts[:4]
    return [
        root / "resized_DVM" / maker / model / year / color / name,
        root / "resized_DVM" / maker / year / color / name,
        root / "Confirmed_fronts" / maker / year / name,
    ]


def _locate_images(root: Path, names: list[str]) -> tuple[list[Path], str]:
    if not any((root / d).is_dir() for d in ("resized_DVM", "Confirmed_fronts")):
        raise DataError(
            f"no image folder in {root}: expected resized_DVM/ (or Confirmed_fronts/) from the DVM-CAR release"
        )
    paths, h = [], hashlib.sha256()
    for name in names:
        for cand in _image_candidates(root, name):
            try:
                st = os.stat(cand)
            except OSError:
                continue
            paths.append(cand)
            h.update(f"{cand.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            break
        else:
            n_missing = sum(1 for nm in names if not any(c.is_file() for c in _image_candidates(root, nm)))
            raise DataError(
                f"{n_missing} front-view images are missing, e.g. {_image_candidates(root, name)[0]}; unpack resized_DVM/ from the release into {root}"
            )
    return paths, h.hexdigest()


def _fill_images(paths: list[Path], size: int, out: np.ndarray) -> None:
    for i, p in enumerate(paths):
        try:
            out[i] = read_photo(p, size, "RGB")
        except ImageReadError as exc:
            raise DataError(f"{exc}; re-download it or remove its advert") from None


def select_protocol_rows(
    ad: pd.DataFrame, images: pd.DataFrame, price: pd.DataFrame, min_per_class: int
) -> tuple[pd.DataFrame, dict]:
    """Steps 1-4 of the protocol on the three tables; returns the kept rows (with ``label``)."""
    counts = {}
    img = images.copy()
    img["Adv_ID"] = img["Image_ID"].astype(str).map(lambda s: "$$".join(s.split("$$")[:2]))
    front = pd.to_numeric(img["Predicted_viewpoint"], errors="coerce") == 0
    if "Quality_check" in img.columns:
        front &= img["Quality_check"].astype(str).str.strip() == "P"
    img = img[front].drop_duplicates(subset="Adv_ID", keep="first")
    counts["front_view_adverts"] = len(img)
    pr = price[PRICE_COLUMNS].copy()
    pr["Year"] = pd.to_numeric(pr["Year"], errors="coerce")
    pr = pr.drop_duplicates(subset=["Genmodel_ID", "Year"], keep="first")
    ad = ad.copy()
    ad["Reg_year"] = pd.to_numeric(ad["Reg_year"], errors="coerce")
    df = ad.merge(pr, left_on=["Genmodel_ID", "Reg_year"], right_on=["Genmodel_ID", "Year"], how="inner")
    counts["adverts_with_entry_price"] = len(df)
    df = df.merge(img[["Adv_ID", "Image_name", "Predicted_viewpoint"]], on="Adv_ID", how="inner")
    if df["Adv_ID"].duplicated().any():
        raise DataError(
            "Ad_table.csv repeats Adv_ID values after the join; use the release's tables unchanged"
        )
    counts["joined"] = len(df)
    df = df.dropna()
    df["Engine_size"] = pd.to_numeric(
        df["Engin_size"].astype(str).str.strip().str.rstrip("Ll"), errors="coerce"
    )
    for c in ("Runned_Miles", "Price", "Adv_year", "Adv_month", "Seat_num", "Door_num", "Entry_price"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df = df.dropna(subset=CONTINUOUS + CATEGORICAL)
    counts["complete"] = len(df)
    sizes = df["Genmodel_ID"].value_counts()
    keep = set(sizes.index[sizes >= min_per_class])
    df = df[df["Genmodel_ID"].isin(keep)].reset_index(drop=True)
    if df.empty:
        raise DataError(
            f"no car model has >= {min_per_class} complete front-view adverts ({counts}); check the tables or lower min_per_class"
        )
    order = {g: i for i, g in enumerate(pd.unique(df["Genmodel_ID"]))}
    df["label"] = df["Genmodel_ID"].map(order).astype(np.int64)
    counts["kept"] = len(df)
    return df, counts


def protocol_split(n: int, split_seed: int) -> np.ndarray:
    """Random 72/18/10 split as in the reference: 10 % test, then 20 % of the rest to validation."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    if n < 3:
        raise DataError(
            f"only {n} adverts are left after the protocol filters; the 72/18/10 split needs at least 3"
        )
    rest, test = train_test_split(idx, test_size=0.1, random_state=split_seed)
    train, val = train_test_split(rest, test_size=0.2, random_state=split_seed)
    split = np.empty(n, dtype="<U5")
    split[train], split[val], split[test] = "train", "val", "test"
    return split


@register_dataset("dvm")
def load_dvm(
    *,
    root: str | Path | None = None,
    image_size: int = 64,
    cache_dir: str | Path | None = None,
    min_per_class: int = 100,
    split_seed: int = 2022,
    **_,
) -> MultimodalData:
    """DVM-CAR (real): car model from front image + 13 advert features (Hager et al. protocol)."""
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an integer >= 8, got {image_size!r}")
    path = resolve_root(
        root, ENV_VAR, "DVM", "Ad_table.csv, Image_table.csv, Price_table.csv and resized_DVM/"
    )
    tables = _find_tables(path)
    ad = _table(tables, "Ad_table.csv", AD_COLUMNS)
    images = _table(tables, "Image_table.csv", IMAGE_COLUMNS)
    price = _table(tables, "Price_table.csv", PRICE_COLUMNS)
    for t in (ad, price):
        t["Genmodel_ID"] = t["Genmodel_ID"].astype(str).str.strip()
    df, counts = select_protocol_rows(ad, images, price, min_per_class)
    split = protocol_split(len(df), split_seed)

    x_num = df[CONTINUOUS].to_numpy(dtype=np.float32)
    cat_cols, cat_levels = [], {}
    for c in CATEGORICAL:
        codes, levels = encode_categorical(df[c].astype(str))
        cat_cols.append(codes)
        cat_levels[c] = levels
    x_cat = np.stack(cat_cols, axis=1)
    y = df["label"].to_numpy()
    first = df.drop_duplicates("label").sort_values("label")
    class_names = [f"{m} {g}" for m, g in zip(first["Maker"], first["Genmodel"])]

    paths, image_key = _locate_images(path, df["Image_name"].astype(str).tolist())
    key = hashlib.sha256(f"{CACHE_FORMAT}|{image_size}|{image_key}".encode()).hexdigest()[:16]
    cache_file = default_cache_dir("dvm", cache_dir) / f"dvm_{image_size}px_{key}.npy"
    imgs, was_cached = cached_npy(
        cache_file,
        (len(df), 3, image_size, image_size),
        np.float32,
        lambda out: _fill_images(paths, image_size, out),
    )
    h = hashlib.sha256()
    for name in ("Ad_table.csv", "Image_table.csv", "Price_table.csv"):
        with open(tables / name, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    provenance = Provenance(
        dataset="dvm",
        source="real",
        version=VERSION,
        checksum=h.hexdigest()[:16],
        protocol_note=PROTOCOL_NOTE,
        details={
            "root": str(path),
            "tables": str(tables),
            "rows": counts,
            "n_classes": len(class_names),
            "min_per_class": min_per_class,
            "split_seed": split_seed,
            "n_per_split": {s: int((split == s).sum()) for s in SPLITS},
            "cat_levels": cat_levels,
            "image_cache": str(cache_file),
            "image_cache_hit": was_cached,
        },
    )
    return MultimodalData(
        images=imgs,
        x_num=x_num,
        x_cat=x_cat,
        y=y,
        split=split,
        num_names=list(CONTINUOUS),
        cat_names=list(CATEGORICAL),
        cat_cardinalities=[len(cat_levels[c]) for c in CATEGORICAL],
        task="multiclass",
        n_classes=len(class_names),
        provenance=provenance,
        ids=df["Adv_ID"].to_numpy(dtype=object).astype(str),
        class_names=class_names,
    )
