"""Bring your own data: a YAML-described table + image files, its image formats, its checks and its run.

Images are real files: PNGs the tests write, and the DICOM and NIfTI files that ship with pydicom and
nibabel as their test data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from bench.data.images import ImageOptions, ImageReadError, read_image, window_ct
from bench.data.table import grouped_split, load_table, read_spec, scan_table
from bench.errors import DataError

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
from nibabel.testing import data_path as NIB_DATA  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
README_YAML = """name: my-cohort
table: cohort.csv      # one row per sample
label: outcome
image: image_path      # paths relative to the table; empty = image missing
id: patient_id         # optional: groups for splitting, leakage check
split: split           # optional: train / val / test
"""


def make_cohort(root: Path, n: int = 60, size: int = 16, *, split: bool = True, missing: tuple[int, ...] = (),
                fmt: str = "png", yaml_text: str = README_YAML, seed: int = 0) -> Path:
    """A cohort folder: cohort.csv (two rows per patient), one image per row, the README's YAML."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    n_pat = n // 2
    y_pat = np.array([k % 2 for k in range(n_pat)])
    pid = [f"P{i // 2:03d}" for i in range(n)]
    y = y_pat.repeat(2)[:n]
    paths = []
    for i in range(n):
        arr = rng.random((size, size)) * 0.4 + 0.5 * y[i]
        if i in missing:
            paths.append("")
            continue
        if fmt == "png":
            p = f"img/{i:03d}.png"
            Image.fromarray((arr * 255).astype(np.uint8)).save(root / p)
        else:  # DICOM from pydicom's CT test file, pixel data replaced (HU = value - 1024)
            p = f"img/{i:03d}.dcm"
            ds = pydicom.dcmread(CT_SMALL)
            hu = (arr * 400 - 125).astype(np.int16)
            raw = (hu + 1024).astype(np.int16)
            ds.Rows, ds.Columns = size, size
            ds.PixelData = raw.tobytes()
            ds.save_as(root / p)
        paths.append(p)
    split_of = {g: ("train" if k % 10 < 6 else "val" if k % 10 < 8 else "test") for k, g in enumerate(sorted(set(pid)))}
    df = pd.DataFrame({"patient_id": pid, "image_path": paths, "outcome": y,
                       "age": (rng.normal(60, 10, n) + 3 * y).round(1), "sex": rng.choice(["F", "M"], n),
                       "site": rng.choice(["north", "south", "east"], n)})
    if split:
        df["split"] = [split_of[p] for p in pid]
    df.to_csv(root / "cohort.csv", index=False)
    (root / "cohort.yaml").write_text(yaml_text if split else yaml_text.replace("split: split", "# no split"))
    return root / "cohort.yaml"


def edit_table(yaml_path: Path, fn) -> None:
    csv = yaml_path.parent / "cohort.csv"
    df = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    fn(df)
    df.to_csv(csv, index=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def check_data(yaml_path, capsys) -> tuple[int, str, str]:
    rc = main(["check-data", str(yaml_path)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return rc, cap.out, cap.err


# ------------------------------------------------------------------------------------- image formats
def test_png_grayscale_rgb_and_16_bit(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "c.png")
    Image.fromarray(gray.astype(np.uint16) * 256).save(tmp_path / "w.png")
    g, mode = read_image(tmp_path / "g.png")
    assert g.shape == (1, 8, 8) and mode == "L" and np.allclose(g[0], gray / 255, atol=1e-6)
    c, mode = read_image(tmp_path / "c.png")
    assert c.shape == (3, 8, 8) and mode == "RGB"
    w, _ = read_image(tmp_path / "w.png")
    assert w.shape == (1, 8, 8) and np.allclose(w[0], gray.astype(np.float32) * 256 / 65535, atol=1e-4)


def test_dicom_ct_is_rescaled_to_hu_and_windowed():
    ds = pydicom.dcmread(CT_SMALL)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img, mode = read_image(CT_SMALL, ImageOptions(window=(-125.0, 275.0)))
    assert img.shape == (1, 128, 128) and mode.startswith("DICOM")
    assert np.allclose(img[0], window_ct(hu, -125, 275), atol=1e-6)
    lo, hi = float(hu.min()), float(hu.max())  # no window in the file or the YAML: min-max of the HU
    img, _ = read_image(CT_SMALL)
    assert np.allclose(img[0], (hu - lo) / (hi - lo), atol=1e-5)


def test_dicom_window_from_the_file():
    ds = pydicom.dcmread(MR_SMALL)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    img, _ = read_image(MR_SMALL)
    assert np.allclose(img[0], window_ct(ds.pixel_array, c - w / 2, c + w / 2), atol=1e-6)


def test_dicom_multiframe_needs_a_slice():
    path = Path(get_testdata_file("rtdose.dcm"))
    with pytest.raises(ImageReadError, match="slice"):
        read_image(path)
    img, _ = read_image(path, ImageOptions(slice=3))
    assert img.shape == (1, 10, 10)


def test_nifti_volume_slice_and_4d_refused():
    vol = np.asarray(nib.load(os.path.join(NIB_DATA, "anatomical.nii")).dataobj, dtype=np.float32)
    with pytest.raises(ImageReadError, match="slice"):
        read_image(Path(NIB_DATA) / "anatomical.nii")
    img, mode = read_image(Path(NIB_DATA) / "anatomical.nii", ImageOptions(slice=12))
    s = vol[:, :, 12]
    assert mode == "NIfTI (min-max)" and img.shape == (1, 33, 41) and np.allclose(img[0], (s - s.min()) / (s.max() - s.min()), atol=1e-5)
    mid, _ = read_image(Path(NIB_DATA) / "anatomical.nii", ImageOptions(slice="middle", slice_axis=0))
    assert mid.shape == (1, 41, 25)
    with pytest.raises(ImageReadError, match="2-D images or one slice"):
        read_image(Path(NIB_DATA) / "example4d.nii.gz", ImageOptions(slice=1))


def test_npy_and_unreadable_files(tmp_path):
    np.save(tmp_path / "a.npy", np.linspace(-1000, 1000, 36).reshape(6, 6))
    img, _ = read_image(tmp_path / "a.npy", ImageOptions(window=(-100.0, 100.0)))
    assert img.shape == (1, 6, 6) and img.min() == 0 and img.max() == 1
    np.save(tmp_path / "rgb.npy", np.zeros((6, 6, 3), np.uint8))
    assert read_image(tmp_path / "rgb.npy")[0].shape == (3, 6, 6)
    for name in ("bad.png", "bad.dcm", "bad.nii", "bad.npy"):
        (tmp_path / name).write_bytes(b"not an image at all" * 20)
        with pytest.raises(ImageReadError):
            read_image(tmp_path / name)


# ------------------------------------------------------------------------------------- loading
def test_cohort_loads_with_real_missing_images(tmp_path):
    cfg = make_cohort(tmp_path / "c", missing=(3, 10))
    data = load_table(config=cfg, image_size=8)
    assert data.provenance.source == "real" and data.provenance.dataset == "my-cohort"
    assert data.image_shape == (1, 8, 8) and data.task == "binary" and data.n_classes == 2
    assert data.image_available is not None and list(np.flatnonzero(~data.image_available)) == [3, 10]
    assert np.asarray(data.images)[[3, 10]].max() == 0 and np.asarray(data.images)[0].max() > 0
    assert set(data.split) == {"train", "val", "test"} and data.ids[0] == "P000"
    assert data.num_names == ["age"] and data.cat_names == ["sex", "site"]
    assert data.provenance.details["feature_types"] == {"age": "numeric", "sex": "boolean", "site": "categorical"}
    assert data.provenance.details["images_missing"] == 2
    again = load_table(config=cfg, image_size=8)
    assert again.provenance.details["image_cache_hit"] and again.provenance.checksum == data.provenance.checksum
    # the checksum covers the image bytes
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(cfg.parent / "img" / "000.png")
    assert load_table(config=cfg, image_size=8).provenance.checksum != data.provenance.checksum


def test_rgb_cohort_sets_three_channels(tmp_path):
    cfg = make_cohort(tmp_path / "c")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(cfg.parent / "img" / "001.png")
    data = load_table(config=cfg, image_size=8)
    assert data.image_shape == (3, 8, 8)


def test_dicom_cohort_loads_in_hu_window(tmp_path):
    cfg = make_cohort(tmp_path / "c", n=20, fmt="dcm", yaml_text=README_YAML + "window: [-125, 275]\n")
    data = load_table(config=cfg, image_size=16)
    img = np.asarray(data.images)
    assert data.image_shape == (1, 16, 16)
    assert img[data.y == 1].mean() > img[data.y == 0].mean() + 0.3  # the label shows in the windowed HU


def test_nifti_cohort_with_per_row_slice(tmp_path):
    root = tmp_path / "n"
    root.mkdir()
    src = Path(NIB_DATA) / "anatomical.nii"
    rows = [{"image": str(src), "z": k % 25, "y": k % 2, "f": float(k), "g": k % 3} for k in range(20)]
    pd.DataFrame(rows).to_csv(root / "t.csv", index=False)
    (root / "d.yaml").write_text("name: nii\ntable: t.csv\nlabel: y\nimage: image\nslice: z\n")
    data = load_table(config=root / "d.yaml", image_size=8)
    assert data.image_shape == (1, 8, 8) and "z" not in data.num_names


def test_generated_split_is_grouped_stratified_and_seeded(tmp_path):
    cfg = make_cohort(tmp_path / "c", n=120, split=False)
    a = load_table(config=cfg, image_size=8)
    b = load_table(config=cfg, image_size=8)
    assert (a.split == b.split).all()
    per_patient = pd.DataFrame({"id": a.ids, "s": a.split}).groupby("id")["s"].nunique()
    assert (per_patient == 1).all()
    for s in ("train", "val", "test"):
        assert set(a.y[a.split == s]) == {0, 1}
    assert "grouped by patient_id, seed 2022" in a.provenance.details["split"]
    split, note = grouped_split(np.array([0, 1] * 50), np.arange(100).astype(str), (0.7, 0.15, 0.15), 1)
    assert 68 <= (split == "train").sum() <= 71 and "stratified" in note


def test_multiclass_text_labels_positive_and_feature_lists(tmp_path):
    cfg = make_cohort(tmp_path / "c", n=60)
    edit_table(cfg, lambda df: df.__setitem__("outcome", ["low", "mid", "high"] * 20))
    spec_text = README_YAML + "features: [age, site]\ncategorical: [age]\n"
    cfg.write_text(spec_text)
    data = load_table(config=cfg, image_size=8)
    assert data.task == "multiclass" and data.class_names == ["high", "low", "mid"]
    assert data.cat_names == ["age", "site"] and data.num_names == []
    edit_table(cfg, lambda df: df.__setitem__("outcome", ["no", "yes"] * 30))
    cfg.write_text(README_YAML + "positive: 'no'\ndrop: [site]\n")
    data = load_table(config=cfg, image_size=8)
    assert data.class_names == ["yes", "no"] and "site" not in data.cat_names


def test_table_formats_tsv_and_parquet(tmp_path):
    cfg = make_cohort(tmp_path / "c", n=40)
    df = pd.read_csv(cfg.parent / "cohort.csv", keep_default_na=False)
    df.to_csv(cfg.parent / "cohort.tsv", sep="\t", index=False)
    cfg.write_text(README_YAML.replace("cohort.csv", "cohort.tsv"))
    assert load_table(config=cfg, image_size=8).n == 40
    pytest.importorskip("pyarrow")
    df.to_parquet(cfg.parent / "cohort.parquet")
    cfg.write_text(README_YAML.replace("cohort.csv", "cohort.parquet"))
    assert load_table(config=cfg, image_size=8).n == 40


# ------------------------------------------------------------------------------------- check-data
def test_check_data_summary_on_a_good_cohort(tmp_path, capsys):
    cfg = make_cohort(tmp_path / "c", missing=(5,))
    rc, out, _ = check_data(cfg, capsys)
    assert rc == 0, out
    assert "60 rows" in out and "train" in out and "age" in out and "numeric" in out and "boolean" in out
    assert "59 read, 1 cells empty" in out and "16x16 (59)" in out and "L (59)" in out
    assert "0 errors" in out


PROBLEMS = {
    "missing file": (lambda df: df.__setitem__("image_path", df["image_path"].where(df.index != 4, "img/nope.png")),
                     ["image file not found", "img/nope.png", "line 6"]),
    "unreadable file": ("unreadable", ["cannot be read", "001.png"]),
    "one class": (lambda df: df.__setitem__("outcome", 1), ["single class"]),
    "NaN labels": (lambda df: df.__setitem__("outcome", df["outcome"].where(df.index != 7, np.nan)),
                   ["empty or NaN", "line 9"]),
    "patient in two splits": (lambda df: df.__setitem__("split", df["split"].where(df.index != 1, "test")),
                              ["more than one split", "P000 (train, test)"]),
    "duplicate rows": (lambda df: df.__setitem__("image_path", df["image_path"].where(df.index != 1, "img/000.png")),
                       ["duplicate rows", "line 2 (patient_id=P000), line 3 (patient_id=P000)"]),
    "unknown split": (lambda df: df.__setitem__("split", df["split"].where(df.index != 2, "holdout")),
                      ["unknown values (holdout)", "line 4"]),
    "text in numeric": (lambda df: df.__setitem__("age", df["age"].astype(object).where(df.index != 3, "sixty")),
                        ["numeric column 'age'", "'sixty'", "line 5"]),
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_check_data_catches_each_problem_in_one_line(problem, tmp_path, capsys):
    cfg = make_cohort(tmp_path / "c")
    mutate, needles = PROBLEMS[problem]
    if mutate == "unreadable":
        (cfg.parent / "img" / "001.png").write_bytes(b"\x89PNG broken")
    else:
        edit_table(cfg, mutate)
    rc, out, err = check_data(cfg, capsys)
    assert rc == 2, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert any(all(n in ln for n in needles) for ln in errors), (needles, errors)
    assert len(err.strip().splitlines()) == 1 and "check-data" in err
    # bench run refuses the same data before training, in one line
    rc = main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--dataset", str(cfg),
               "--out", str(tmp_path / "runs"), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 2 and "Traceback" not in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err
    assert not (tmp_path / "runs" / "ol3i-incomplete@my-cohort" / "runs").exists()


def test_check_data_warns_on_constant_and_leaky_columns(tmp_path, capsys):
    cfg = make_cohort(tmp_path / "c")
    edit_table(cfg, lambda df: (df.__setitem__("ward", "A"), df.__setitem__("followup_days", df["outcome"] * 300 + df.index)))
    rc, out, _ = check_data(cfg, capsys)
    assert rc == 0, out
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    assert any("'ward' is constant" in w for w in warnings)
    assert any("'followup_days' alone predicts the label" in w and "leak" in w for w in warnings)
    assert "ward" not in load_table(config=cfg, image_size=8).cat_names


@pytest.mark.parametrize("yaml_text, needle", [
    (README_YAML + "lable: x\n", "unknown key 'lable'"),
    (README_YAML.replace("label: outcome", "label: outcom"), "label column 'outcom' is not in cohort.csv (did you mean 'outcome'?)"),
    (README_YAML.replace("cohort.csv", "nope.csv"), "nope.csv"),
    ("name: [x\n", "not valid YAML"),
    (README_YAML + "window: [300, 100]\n", "window must be"),
])
def test_bad_dataset_yaml_is_one_line_exit_2(yaml_text, needle, tmp_path, capsys):
    cfg = make_cohort(tmp_path / "c", n=20, yaml_text=yaml_text)
    rc, out, err = check_data(cfg, capsys)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(DataError):
        read_spec(cfg) if "window" in needle or "key" in needle or "YAML" in needle else scan_table(cfg)


def test_check_data_dicom_cohort_and_missing_dicom(tmp_path, capsys):
    cfg = make_cohort(tmp_path / "c", n=20, fmt="dcm")
    rc, out, _ = check_data(cfg, capsys)
    assert rc == 0 and "DICOM CT (min-max) (20)" in out and "no window" in out, out
    cfg.write_text(README_YAML + "window: [-125, 275]\n")
    rc, out, _ = check_data(cfg, capsys)
    assert rc == 0 and "DICOM CT (20)" in out and "no window" not in out, out
    (cfg.parent / "img" / "004.dcm").unlink()
    rc, out, _ = check_data(cfg, capsys)
    assert rc == 2 and "img/004.dcm" in out


def test_image_checks_are_cached_and_see_changed_files(tmp_path):
    cfg = make_cohort(tmp_path / "c", n=20)
    assert not scan_table(cfg).errors
    memo = list((tmp_path / "cache" / "table").glob("my-cohort_probe_*.json"))
    assert len(memo) == 1 and len(json.loads(memo[0].read_text())["info"]) == 20
    (cfg.parent / "img" / "002.png").write_bytes(b"garbage")
    assert any("cannot be read" in e.message for e in scan_table(cfg).errors)


# ------------------------------------------------------------------------------------- plug-in contract
def test_check_plugin_dataset_passes_for_a_builtin(capsys):
    rc = main(["check-plugin", "ol3i-synthetic", "--kind", "dataset"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for check in ("returns", "images", "features", "provenance", "data", "deterministic"):
        assert check in out


def test_check_plugin_dataset_reports_a_broken_adapter(monkeypatch, capsys):
    from bench.data.base import MultimodalData, Provenance
    from bench.registry import registry

    def broken(*, root=None, image_size=64, **_):
        n = 40
        return MultimodalData(images=np.full((n, 1, image_size, image_size), 2.0, np.float32), x_num=np.zeros((n, 1), np.float32),
                              x_cat=np.zeros((n, 0), np.int64), y=np.zeros(n, np.int64), split=np.array(["train"] * n),
                              num_names=["a"], cat_names=[], cat_cardinalities=[], task="binary", n_classes=2,
                              provenance=Provenance("broken", "real", "1", "abc"))

    monkeypatch.setitem(registry("dataset").entries, "broken-ds", registry("dataset").entries["ol3i"].__class__(
        "broken-ds", "dataset", broken, "tests", "a broken adapter"))
    rc = main(["check-plugin", "broken-ds", "--kind", "dataset"])
    out = capsys.readouterr().out
    assert rc == 1 and "images" in out and "FAIL" in out.upper() and "single class" in out


def test_real_missing_images_make_imputation_variants():
    from bench.suite import load_suite

    suite = load_suite("ol3i-incomplete", budget="smoke", fusions=["concat", "masked_attention"])
    assert [v[0] for v in suite.fusion_variants()[0]] == ["concat", "masked_attention"]
    suite.real_missing = ("image",)
    assert [v[0] for v in suite.fusion_variants()[0]] == ["concat+zero", "concat+mean", "masked_attention"]


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_run_suite_on_own_cohort_with_missing_images(tmp_path, capsys):
    cfg = make_cohort(tmp_path / "c", n=200, missing=(0, 7, 15, 33, 60, 99, 150))
    out = tmp_path / "runs"
    rc = main(["run", "--suite", "ol3i-incomplete", "--dataset", str(cfg), "--budget", "smoke", "--tabular", "mlp",
               "--fusion", "concat", "--strategy", "frozen", "--out", str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    suite_dir = out / "ol3i-incomplete@my-cohort"
    md = (suite_dir / "leaderboard.md").read_text()
    assert "my-cohort — **REAL**" in md
    df = pd.read_csv(suite_dir / "results.csv")
    assert set(df.fusion) == {"concat+zero", "concat+mean"} and (df.data_source == "real").all()
    run = next(d for d in (suite_dir / "runs").iterdir() if (d / "DONE").exists())
    arrays = np.load(run / "predictions.npz")
    assert not arrays["fit_image_available"][[0, 7, 15]].any() and arrays["fit_image_available"].sum() == 193
