"""Dataset adapters, synthetic replicas and preprocessing (bench.data).

Real-format fixtures are written to ``tmp_path`` in the published layouts: an OL3I folder with
``l3_slices.h5`` (512x512 int16 HU slices keyed by anon_id), ``clinical_data.csv`` and an extra
EHR table joined on anon_id; a DVM-CAR tree with Ad / Image / Price tables and
``resized_DVM/<Maker>/<Genmodel>/<Year>/<Color>/`` images.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data import fit_preprocessor
from bench.data.base import MultimodalData, Provenance
from bench.data.dvm import load_dvm
from bench.data.dvm_synthetic import make_dvm_synthetic
from bench.data.ol3i import load_ol3i, window_ct
from bench.data.ol3i_synthetic import N_FEATURES, feature_names, make_ol3i_synthetic, simulate
from bench.errors import DataError

# ---------------------------------------------------------------------------------------------
# OL3I fixture

IDS = [f"p{i:03d}" for i in range(12)]
SPLIT_OF = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
LABELS = [0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0]


def _slice(i: int) -> np.ndarray:
    """Slice i: left half -125 HU, right half 275 HU (-> 0 and 1), except a few constant ones."""
    if i == 0:
        return np.full((512, 512), -1000, np.int16)  # air only -> 0 everywhere
    if i == 1:
        return np.full((512, 512), 75, np.int16)  # the window's centre -> 0.5
    s = np.full((512, 512), -125, np.int16)
    s[:, 256:] = 275 + 10 * i  # above the window top -> 1
    return s


def _write_h5(path, ids=IDS, shape=(512, 512), stacked=False):
    with h5py.File(path, "w") as f:
        if stacked:
            f.create_dataset("images", data=np.stack([_slice(i) for i in range(len(ids))]))
            f.create_dataset("anon_id", data=np.array(ids, dtype="S"))
        else:
            for i, aid in enumerate(ids):
                data = _slice(i) if shape == (512, 512) else np.zeros(shape, np.int16)
                f.create_dataset(aid, data=data)


@pytest.fixture
def ol3i_root(tmp_path):
    root = tmp_path / "ol3i"
    root.mkdir()
    _write_h5(root / "l3_slices.h5")
    pd.DataFrame(
        {
            "anon_id": IDS,
            "bmi": [22.5, np.nan, 31.0, 27.2, 24.0, 29.9, 35.1, np.nan, 26.0, 23.3, 28.8, 30.1],
            "smoker": [0, 1, 0, 0, 1, np.nan, 0, 0, 1, 0, 0, 0],
            "age": [50, 61, 72, 45, 80, 66, 59, 70, 48, 77, 63, 55],
            "sex": ["M", "F", "F", "M", "M", "F", "M", "F", "M", "F", "M", "F"],
            "label_1y": LABELS,
            "set_1y": SPLIT_OF,
            "label_5y": [1] * 12,
            "set_5y": ["train"] * 12,
        }
    ).to_csv(root / "clinical_data.csv", index=False)
    order = np.random.default_rng(0).permutation(12)  # the EHR table lists patients in another order
    pd.DataFrame(
        {
            "img_id": [f"img{i}" for i in order],
            "anon_id": [IDS[i] for i in order],
            "set_1y": [SPLIT_OF[i] for i in order],
            "label_1y": [LABELS[i] for i in order],
            "age_at_scan": [1000 + i for i in order],  # encodes the row index, to check the join
            "gender": ["Male" if i % 2 == 0 else "Female" for i in order],
            "CCI": [i % 4 for i in order],
            "C10": [i % 3 for i in order],
            "exp_wt_lab_systolic": [np.nan if i % 5 == 0 else 120.0 + i for i in order],
        }
    ).to_csv(root / "ehr_features.csv", index=False)
    return root


def _load(root, tmp_path, **kw):
    return load_ol3i(root=root, cache_dir=tmp_path / "cache", **kw)


def test_window_ct_clips_and_scales():
    hu = np.array([-2000, -125, 75, 275, 3000], dtype=np.int16)
    np.testing.assert_allclose(window_ct(hu), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert window_ct(hu).dtype == np.float32


def test_ol3i_loads_release_layout_and_joins_on_anon_id(ol3i_root, tmp_path):
    d = _load(ol3i_root, tmp_path, image_size=32)
    assert isinstance(d, MultimodalData)
    assert d.images.shape == (12, 1, 32, 32) and d.images.dtype == np.float32
    assert list(d.ids) == IDS
    assert list(d.split) == SPLIT_OF and list(d.y) == LABELS
    assert d.task == "binary" and d.n_classes == 2
    assert d.provenance.dataset == "ol3i" and d.provenance.source == "real"
    assert d.provenance.version == "OL3I (Stanford AIMI 2023)" and len(d.provenance.checksum) == 16
    # kinds: two distinct values -> categorical; targets, other horizons and ids are never features
    assert sorted(d.cat_names) == ["gender", "sex", "smoker"]
    assert sorted(d.num_names) == ["C10", "CCI", "age", "age_at_scan", "bmi", "exp_wt_lab_systolic"]
    assert not {"label_1y", "set_1y", "label_5y", "set_5y", "anon_id", "img_id"} & set(d.feature_names)
    sex = d.x_cat[:, d.cat_names.index("sex")]
    assert list(sex[:3]) == [1, 0, 0]  # F -> 0, M -> 1 (sorted levels)
    smoker = d.x_cat[:, d.cat_names.index("smoker")]
    assert (
        smoker[5] == 2 and d.cat_cardinalities[d.cat_names.index("smoker")] == 3
    )  # missing has its own code
    # the join put each patient's EHR row on its own row
    np.testing.assert_array_equal(d.x_num[:, d.num_names.index("age_at_scan")], 1000 + np.arange(12))
    bmi = d.x_num[:, d.num_names.index("bmi")]
    assert np.isnan(bmi[1]) and bmi[0] == pytest.approx(22.5)  # NaN kept (imputation is fitted later)
    assert d.provenance.details["positives_per_split"] == {"train": 2, "val": 1, "test": 1}


def test_ol3i_windowing_and_resize(ol3i_root, tmp_path):
    d = _load(ol3i_root, tmp_path, image_size=64)
    img = np.asarray(d.images)
    assert np.all(img[0] == 0.0)  # -1000 HU
    np.testing.assert_allclose(img[1], 0.5, atol=1e-6)  # 75 HU
    half = img[2, 0]
    assert np.all(half[:, :28] == 0.0) and np.all(half[:, 36:] == 1.0)  # -125 | >= 275 HU
    assert half.mean() == pytest.approx(0.5, abs=1e-6) and 0.0 <= half.min() and half.max() <= 1.0
    full = _load(ol3i_root, tmp_path, image_size=512)
    assert full.images.shape == (12, 1, 512, 512)
    assert np.all(np.asarray(full.images[2, 0, :, :256]) == 0) and np.all(
        np.asarray(full.images[2, 0, :, 256:]) == 1
    )


def test_ol3i_image_cache_is_reused_and_invalidated(ol3i_root, tmp_path):
    first = _load(ol3i_root, tmp_path, image_size=16)
    assert first.provenance.details["image_cache_hit"] is False
    second = _load(ol3i_root, tmp_path, image_size=16)
    assert second.provenance.details["image_cache_hit"] is True
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(first.images, second.images)
    assert second.provenance.details["image_cache"] == first.provenance.details["image_cache"]
    other_size = _load(ol3i_root, tmp_path, image_size=24)
    assert other_size.provenance.details["image_cache"] != first.provenance.details["image_cache"]
    h5 = ol3i_root / "l3_slices.h5"
    st = h5.stat()
    os.utime(h5, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file gets a new cache entry
    third = _load(ol3i_root, tmp_path, image_size=16)
    assert third.provenance.details["image_cache_hit"] is False
    assert third.provenance.details["image_cache"] != first.provenance.details["image_cache"]


def test_ol3i_root_from_env_var(ol3i_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_OL3I_ROOT", str(ol3i_root))
    d = load_ol3i(image_size=16, cache_dir=tmp_path / "c")
    assert d.n == 12


def test_ol3i_stacked_h5_layout(ol3i_root, tmp_path):
    _write_h5(ol3i_root / "l3_slices.h5", ids=IDS[::-1], stacked=True)  # ids in another order
    d = _load(ol3i_root, tmp_path, image_size=16)
    assert d.provenance.details["h5_layout"] == "stacked"
    assert np.all(np.asarray(d.images[11]) == 0.0)  # IDS[11] is stored first, as the air-only slice


def _edit_csv(path, fn):
    df = pd.read_csv(path)
    fn(df)
    df.to_csv(path, index=False)


def _drop(col):
    return lambda df: df.drop(columns=col, inplace=True)


def _set(col, row, value):
    def fn(df):
        if isinstance(value, str):
            df[col] = df[col].astype(object)
        df.loc[row, col] = value

    return fn


def _flip_label(df):
    df.loc[0, "label_1y"] = 1 - df.loc[0, "label_1y"]


OL3I_BAD_INPUTS = {
    "no label column": (lambda r: _edit_csv(r / "clinical_data.csv", _drop("label_1y")), "label_1y"),
    "no split column": (lambda r: _edit_csv(r / "clinical_data.csv", _drop("set_1y")), "set_1y"),
    "no anon_id column": (lambda r: _edit_csv(r / "clinical_data.csv", _drop("anon_id")), "anon_id"),
    "missing label": (lambda r: _edit_csv(r / "clinical_data.csv", _set("label_1y", 3, np.nan)), "label_1y"),
    "non-binary label": (lambda r: _edit_csv(r / "clinical_data.csv", _set("label_1y", 3, 2)), "0 or 1"),
    "unknown split": (lambda r: _edit_csv(r / "clinical_data.csv", _set("set_1y", 2, "holdout")), "holdout"),
    "duplicate anon_id": (
        lambda r: _edit_csv(r / "clinical_data.csv", _set("anon_id", 1, "p000")),
        "repeated",
    ),
    "anon_id without image": (
        lambda r: _edit_csv(r / "clinical_data.csv", _set("anon_id", 4, "ghost")),
        "ghost",
    ),
    "slices not 512x512": (lambda r: _write_h5(r / "l3_slices.h5", shape=(256, 256)), "(256, 256)"),
    "missing h5": (lambda r: (r / "l3_slices.h5").unlink(), "l3_slices.h5"),
    "missing clinical csv": (lambda r: (r / "clinical_data.csv").unlink(), "clinical_data.csv"),
    "extra csv without anon_id": (
        lambda r: pd.DataFrame({"x": [1]}).to_csv(r / "notes.csv", index=False),
        "notes.csv",
    ),
    "extra csv label disagrees": (lambda r: _edit_csv(r / "ehr_features.csv", _flip_label), "disagrees"),
}


@pytest.mark.parametrize("case", list(OL3I_BAD_INPUTS))
def test_ol3i_bad_inputs_raise_one_line_data_error(case, ol3i_root, tmp_path):
    mutate, needle = OL3I_BAD_INPUTS[case]
    mutate(ol3i_root)
    with pytest.raises(DataError) as err:
        _load(ol3i_root, tmp_path, image_size=16)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg


def test_ol3i_wrong_shape_message_names_the_expected_shape(ol3i_root, tmp_path):
    _write_h5(ol3i_root / "l3_slices.h5", shape=(256, 256))
    with pytest.raises(DataError, match=r"expects the release's 512x512 slices"):
        _load(ol3i_root, tmp_path)


def test_ol3i_missing_root_names_the_flag_and_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_OL3I_ROOT", raising=False)
    with pytest.raises(DataError, match=r"--data-root.*BENCH_OL3I_ROOT") as err:
        load_ol3i(cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_ol3i(root=tmp_path / "nowhere", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# OL3I synthetic replica


def test_ol3i_synthetic_schema_and_determinism():
    a = make_ol3i_synthetic(n=120, image_size=32, seed=3)
    b = make_ol3i_synthetic(n=120, image_size=32, seed=3)
    c = make_ol3i_synthetic(n=120, image_size=32, seed=4)
    for name in ("images", "x_num", "x_cat", "y", "split"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.images, c.images) and not np.allclose(a.x_num, c.x_num, equal_nan=True)
    assert a.provenance.checksum == b.provenance.checksum != c.provenance.checksum
    assert a.provenance.source == "synthetic" and a.provenance.version == "ol3i-synth-v2"  # the default
    assert a.images.shape == (120, 1, 32, 32) and a.images.dtype == np.float32
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    # 423 columns, exactly two of them binary and categorical
    assert len(a.feature_names) == N_FEATURES == 423 and len(set(a.feature_names)) == 423
    assert a.cat_names == ["gender", "smoker"] and a.cat_cardinalities == [2, 2]
    assert a.x_num.shape == (120, 421) and a.x_num.dtype == np.float32
    num, cat = feature_names()
    assert a.num_names == num and a.cat_names == cat
    for name in (
        "age_at_scan",
        "CCI",
        "bmi",
        "exp_wt_lab_systolic",
        "exp_wt_lab_hba1c",
        "B01",
        "C03",
        "C09",
        "V06",
        "Chapter_II_4",
        "Chapter_IX_3",
        "Evaluation_14",
        "Surgery_1",
        "Medical_9",
    ):
        assert name in a.num_names, name


def test_ol3i_synthetic_full_size_rates_splits_and_kinds():
    d = make_ol3i_synthetic(n=8139, image_size=16, seed=0)
    assert abs(d.y.mean() - 0.044) <= 0.003
    assert d.provenance.details["n_per_split"] == {"train": 5227, "val": 1303, "test": 1609}
    assert all(v > 0 for v in d.provenance.details["positives_per_split"].values())
    x = d.x_num
    missing = np.isnan(x).mean(axis=0)
    labs = [i for i, n in enumerate(d.num_names) if n.startswith(("exp_wt_lab_", "latest_value_"))]
    assert all(0.25 <= missing[i] <= 0.75 for i in labs)
    assert 0.05 < missing[d.num_names.index("bmi")] < 0.3
    counts = [i for i, n in enumerate(d.num_names) if n[:1].isupper() and n != "CCI"]
    assert len(counts) == 391
    cx = x[:, counts]
    assert not np.isnan(cx).any() and (cx >= 0).all() and np.all(cx == np.round(cx))
    assert 0.5 < (cx == 0).mean() < 0.97  # sparse, zero-inflated
    # only gender and smoker are binary: every numeric column has >= 3 distinct values
    assert min(len(np.unique(col[~np.isnan(col)])) for col in x.T) >= 3
    assert set(np.unique(d.x_cat)) == {0, 1}


def test_ol3i_synthetic_age_is_the_strongest_single_feature():
    from scipy.stats import rankdata

    sim = simulate(8139, 0)
    y, x = sim["y"].astype(bool), sim["x_num"].astype(np.float64)
    x = np.where(np.isnan(x), np.nanmedian(x, axis=0), x)
    ranks = rankdata(x, axis=0)  # univariate AUC of every column (Mann-Whitney)
    n1, n0 = y.sum(), (~y).sum()
    auc = (ranks[y].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    strength = np.maximum(auc, 1 - auc)
    ranked = [sim["num_names"][i] for i in np.argsort(-strength)]
    assert ranked[0] == "age_at_scan", ranked[:5]


@pytest.mark.parametrize("size", [32, 512])
def test_ol3i_synthetic_image_sizes(size):
    d = make_ol3i_synthetic(n=30, image_size=size, seed=1)
    assert d.images.shape == (30, 1, size, size)
    img = d.images[:, 0]
    assert (img == 0).mean() > 0.2 and (img >= 0.99).any()  # air outside the body, bright bone inside


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(DataError, match="image_size"):
        make_ol3i_synthetic(n=100, image_size=8)
    with pytest.raises(DataError, match="n must be"):
        make_ol3i_synthetic(n=5)
    with pytest.raises(DataError, match="n_classes"):
        make_dvm_synthetic(n=100, n_classes=1)


# ---------------------------------------------------------------------------------------------
# DVM fixture: 3 car models with 6 complete front-view adverts each, plus adverts the protocol drops

MODELS = [("Ford", "Fiesta", "29_1"), ("BMW", "X5", "8_7"), ("Audi", "A3", "2_3")]
RGB = {"Red": (255, 0, 0), "Blue": (0, 0, 255), "White": (255, 255, 255)}


@pytest.fixture
def dvm_root(tmp_path):
    root = tmp_path / "dvm"
    tables = root / "tables_V2.0"
    tables.mkdir(parents=True)
    ads, imgs, prices = [], [], []
    for m, (maker, model, gid) in enumerate(MODELS):
        prices += [(maker, model, gid, year, 15000 + 1000 * m + year % 10) for year in (2015, 2016)]
        for k in range(1, 8):
            adv = f"{gid}$${k}"
            color = list(RGB)[k % 3]
            year = 2015 + k % 2
            ads.append(
                {
                    "Maker": maker,
                    "Genmodel": model,
                    "Genmodel_ID": gid,
                    "Adv_ID": adv,
                    "Adv_year": 2018,
                    "Adv_month": k,
                    "Color": color,
                    "Reg_year": year,
                    "Bodytype": "SUV" if m == 1 else "Hatchback",
                    "Runned_Miles": str(10000 * k),
                    "Engin_size": f"{1.0 + m * 0.4:.1f}L",
                    "Gearbox": "Manual",
                    "Fuel_type": "Diesel" if k % 2 else "Petrol",
                    "Price": 9000 + 100 * k,
                    "Seat_num": 5.0,
                    "Door_num": 5.0,
                }
            )
            name = f"{maker}$${model}$${year}$${color}$${gid}$${k}$$image_0.jpg"
            imgs.append((gid, f"{adv}$$0", name, 0, "P"))
            imgs.append((gid, f"{adv}$$1", name.replace("image_0", "image_1"), 90, "P"))  # side view
            path = root / "resized_DVM" / maker / model / str(year) / color / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), RGB[color]).save(path, format="PNG")  # PNG bytes, as a file
    ads[6]["Price"] = "Uknown"  # unparseable price: dropped
    ads[13]["Bodytype"] = np.nan  # a missing value: dropped
    ads[20]["Reg_year"] = 2014  # no Entry_price for 2014: dropped by the price join
    # a fourth model with too few adverts, and an advert whose only front view failed the quality check
    ads.append(dict(ads[0], Genmodel="Ka", Genmodel_ID="29_9", Adv_ID="29_9$$1"))
    imgs.append(("29_9", "29_9$$1$$0", imgs[0][2], 0, "P"))
    imgs.append(("29_1", "29_1$$99$$0", "x.jpg", 0, np.nan))
    ads.append(dict(ads[0], Adv_ID="29_1$$99"))
    pd.DataFrame(ads).to_csv(tables / "Ad_table.csv", index=False)
    pd.DataFrame(
        imgs, columns=["Genmodel_ID", " Image_ID", " Image_name", "Predicted_viewpoint", "Quality_check"]
    ).to_csv(tables / "Image_table.csv", index=False)
    pd.DataFrame(prices, columns=["Maker", "Genmodel", "Genmodel_ID", "Year", "Entry_price"]).to_csv(
        tables / "Price_table.csv", index=False
    )
    return root


def test_dvm_protocol_on_release_layout(dvm_root, tmp_path):
    d = load_dvm(root=dvm_root, image_size=16, cache_dir=tmp_path / "c", min_per_class=5)
    assert d.task == "multiclass" and d.n_classes == 3
    assert d.class_names == ["Ford Fiesta", "BMW X5", "Audi A3"]
    assert d.n == 18 and np.bincount(d.y).tolist() == [6, 6, 6]
    assert d.num_names == [
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
    assert d.cat_names == ["Color", "Bodytype", "Gearbox", "Fuel_type"]
    assert d.cat_cardinalities == [3, 2, 1, 2]
    assert not np.isnan(d.x_num).any()
    assert sorted(set(d.x_num[:, d.num_names.index("Engine_size")].round(1))) == [1.0, 1.4, 1.8]
    entry = dict(zip(d.ids, d.x_num[:, d.num_names.index("Entry_price")]))
    assert entry["8_7$$1"] == 16006 and entry["8_7$$2"] == 16005  # (Genmodel_ID, Reg_year) join
    assert (
        "29_1$$7" not in entry
        and "8_7$$7" not in entry
        and "2_3$$7" not in entry
        and "29_9$$1" not in entry
        and "29_1$$99" not in entry
    )
    # 72 / 18 / 10: sklearn's split of 18 ids -> 2 test, then 4 of the remaining 16 for validation
    assert {s: int((d.split == s).sum()) for s in ("train", "val", "test")} == {
        "train": 12,
        "val": 4,
        "test": 2,
    }
    again = load_dvm(root=dvm_root, image_size=16, cache_dir=tmp_path / "c", min_per_class=5)
    np.testing.assert_array_equal(again.split, d.split)
    other = load_dvm(root=dvm_root, image_size=16, cache_dir=tmp_path / "c", min_per_class=5, split_seed=7)
    assert not np.array_equal(other.split, d.split)
    # images: RGB [n, 3, S, S] in [0, 1], colour of the advert, served from the cache the second time
    assert d.images.shape == (18, 3, 16, 16) and d.images.dtype == np.float32
    color = d.x_cat[:, 0]
    red = d.images[color == list(sorted(RGB)).index("Red")]
    np.testing.assert_allclose(red[:, 0], 1.0)
    np.testing.assert_allclose(red[:, 1:], 0.0)
    assert again.provenance.details["image_cache_hit"] and isinstance(again.images, np.memmap)
    assert "101" in d.provenance.protocol_note and "Hager" in d.provenance.protocol_note


def test_dvm_jpeg_images_and_env_var(dvm_root, tmp_path, monkeypatch):
    for p in (dvm_root / "resized_DVM").rglob("*.jpg"):
        Image.new("RGB", (300, 300), (0, 0, 255) if "Blue" in p.parts else (128, 128, 128)).save(
            p, format="JPEG"
        )
    monkeypatch.setenv("BENCH_DVM_ROOT", str(dvm_root))
    d = load_dvm(image_size=8, cache_dir=tmp_path / "c", min_per_class=5)
    blue = d.images[d.x_cat[:, 0] == sorted(RGB).index("Blue")]
    assert np.all(blue[:, 2] > 0.95) and np.all(blue[:, 0] < 0.05)


DVM_BAD_INPUTS = {
    "no Ad_table": (lambda r: (r / "tables_V2.0" / "Ad_table.csv").unlink(), "Ad_table.csv"),
    "no Price_table": (lambda r: (r / "tables_V2.0" / "Price_table.csv").unlink(), "Price_table.csv"),
    "Ad_table without Runned_Miles": (
        lambda r: _edit_csv(r / "tables_V2.0" / "Ad_table.csv", _drop("Runned_Miles")),
        "Runned_Miles",
    ),
    "missing image file": (lambda r: next((r / "resized_DVM").rglob("*.jpg")).unlink(), "missing"),
    "no image folder": (lambda r: (r / "resized_DVM").rename(r / "elsewhere"), "resized_DVM"),
}


@pytest.mark.parametrize("case", list(DVM_BAD_INPUTS))
def test_dvm_bad_inputs_raise_one_line_data_error(case, dvm_root, tmp_path):
    mutate, needle = DVM_BAD_INPUTS[case]
    mutate(dvm_root)
    with pytest.raises(DataError) as err:
        load_dvm(root=dvm_root, image_size=8, cache_dir=tmp_path / "c", min_per_class=5)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg


def test_dvm_too_few_samples_and_missing_root(dvm_root, tmp_path, monkeypatch):
    with pytest.raises(DataError, match=">= 100"):
        load_dvm(root=dvm_root, cache_dir=tmp_path)  # the real protocol's 100 adverts per class
    monkeypatch.delenv("BENCH_DVM_ROOT", raising=False)
    with pytest.raises(DataError, match=r"--data-root.*BENCH_DVM_ROOT"):
        load_dvm(cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# DVM synthetic replica


def test_dvm_synthetic_schema_and_determinism():
    a = make_dvm_synthetic(n=600, image_size=32, seed=0)
    b = make_dvm_synthetic(n=600, image_size=32, seed=0)
    c = make_dvm_synthetic(n=600, image_size=32, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.x_num, b.x_num)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (600, 3, 32, 32) and 0.0 <= a.images.min() and a.images.max() <= 1.0
    assert a.task == "multiclass" and a.n_classes == 101 and len(a.class_names) == 101
    assert set(np.unique(a.y)) == set(range(101))  # every class present
    assert a.num_names == [
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
    assert a.cat_names == ["Color", "Bodytype", "Gearbox", "Fuel_type"]
    assert all(a.x_cat[:, j].max() < card for j, card in enumerate(a.cat_cardinalities))
    assert a.cat_cardinalities[0] >= 15 and not np.isnan(a.x_num).any()
    counts = {s: int((a.split == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 432, "val": 108, "test": 60}
    assert a.provenance.source == "synthetic" and a.provenance.version == "dvm-synth-v1"
    small = make_dvm_synthetic(n=200, n_classes=10, image_size=16, seed=0)
    assert small.n_classes == 10 and small.images.shape == (200, 3, 16, 16)


def test_dvm_synthetic_is_learnable_but_not_trivial():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    d = make_dvm_synthetic(n=2000, n_classes=20, image_size=16, seed=0)
    tr, te = d.split != "test", d.split == "test"
    onehot = np.concatenate([np.eye(k)[d.x_cat[:, j]] for j, k in enumerate(d.cat_cardinalities)], axis=1)
    x = np.concatenate([np.log1p(np.abs(d.x_num)), onehot], axis=1)
    acc = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(x[tr], d.y[tr]).score(x[te], d.y[te])
    assert 0.2 < acc < 0.99, acc  # chance is ~0.05


# ---------------------------------------------------------------------------------------------
# preprocessing


def _toy(x_num, split):
    n = len(split)
    return MultimodalData(
        images=np.zeros((n, 1, 2, 2), np.float32),
        x_num=np.asarray(x_num, np.float32),
        x_cat=np.zeros((n, 0), np.int64),
        y=np.zeros(n, np.int64),
        split=np.asarray(split),
        num_names=["a", "b", "c"],
        cat_names=[],
        cat_cardinalities=[],
        task="binary",
        n_classes=2,
        provenance=Provenance("toy", "synthetic", "0", "0"),
    )


def test_preprocessor_is_fitted_on_training_rows_only():
    nan = np.nan
    x = [
        [1.0, 5.0, nan],
        [2.0, 5.0, nan],
        [3.0, nan, nan],
        [nan, 5.0, nan],  # train
        [1000.0, -1e6, 7.0],
        [-1000.0, 1e6, 8.0],
    ]  # val / test: extreme values must not matter
    d = _toy(x, ["train"] * 4 + ["val", "test"])
    pre = fit_preprocessor(d)
    np.testing.assert_allclose(pre.medians, [2.0, 5.0, 0.0])  # all-missing in train -> 0
    np.testing.assert_allclose(pre.means, [2.0, 5.0, 0.0])
    np.testing.assert_allclose(pre.stds, [np.sqrt(0.5), 1.0, 1.0])  # a zero std becomes 1
    np.testing.assert_allclose(pre.train_means, 0.0, atol=1e-6)
    out = pre.transform(d.x_num)
    assert out.dtype == np.float32 and not np.isnan(out).any()
    np.testing.assert_allclose(out[3], [0.0, 0.0, 0.0])  # imputed with the medians
    np.testing.assert_allclose(out[4, 2], 7.0)
    assert pre.fill_value("b") == pytest.approx(0.0) and pre.n_train == 4
    again = type(pre).from_dict(pre.to_dict())
    np.testing.assert_array_equal(again.transform(d.x_num), out)
    with pytest.raises(DataError, match="numeric features"):
        pre.transform(np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match="no training rows"):
        fit_preprocessor(_toy(x, ["val"] * 6))


def test_preprocessor_on_synthetic_ol3i():
    d = make_ol3i_synthetic(n=400, image_size=16, seed=0)
    pre = fit_preprocessor(d)
    z = pre.transform(d.x_num)
    tr = d.indices("train")
    assert not np.isnan(z).any()
    np.testing.assert_allclose(z[tr].mean(0), 0.0, atol=1e-4)
    sd = z[tr].std(0)
    assert np.all((np.abs(sd - 1) < 1e-3) | (sd < 1e-6))


def test_datasets_are_registered():
    from bench.registry import _REGISTRIES  # the dataset registry itself, without loading every plug-in

    datasets = _REGISTRIES["dataset"]
    assert datasets.get("ol3i") is load_ol3i and datasets.get("ol3i-synthetic") is make_ol3i_synthetic
    assert datasets.get("dvm") is load_dvm and datasets.get("dvm-synthetic") is make_dvm_synthetic
