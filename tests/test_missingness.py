"""Missing-data protocols: availability masks, TIP's cell flavours, imputation variants, suites, robustness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bench.api import FusionDims
from bench.cli import main
from bench.errors import ConfigError
from bench.imputation import ImputedFusion, parse_variant, variant_label
from bench.pipeline import train_settings
from bench.protocols import (
    Condition,
    PreparedTabular,
    apply_cells,
    availability,
    cell_mask,
    missingness_plan,
    parse_run_protocol,
)
from bench.registry import registry
from bench.robustness import relative_robustness
from bench.suite import load_suite

SUITES = Path(__file__).resolve().parent.parent / "bench" / "suites"


# ------------------------------------------------------------------------------------ masks
def test_availability_is_deterministic_nested_and_limited_to_rows():
    n, rows = 1000, np.arange(200, 1000)
    a3 = availability(n, rows, Condition("image", 0.3), seed=2022, role="test")
    assert np.array_equal(a3, availability(n, rows, Condition("image", 0.3), seed=2022, role="test"))
    assert a3[:200].all()  # rows outside the set keep the modality
    assert abs((~a3[rows]).mean() - 0.3) < 0.05
    a7 = availability(n, rows, Condition("image", 0.7), seed=2022, role="test")
    assert ((~a3) <= (~a7)).all()  # a higher rate removes a superset
    assert availability(n, rows, Condition("image", 0.0), 2022, "test").all()
    assert not availability(n, rows, Condition("image", 1.0), 2022, "test")[rows].any()
    other_seed = availability(n, rows, Condition("image", 0.3), seed=2023, role="test")
    other_role = availability(n, rows, Condition("image", 0.3), seed=2022, role="fit")
    other_modality = availability(n, rows, Condition("tabular", 0.3), seed=2022, role="test")
    assert not np.array_equal(a3, other_seed) and not np.array_equal(a3, other_role)
    assert not np.array_equal(a3, other_modality)


def _tab(n: int = 50) -> PreparedTabular:
    rng = np.random.default_rng(0)
    x_num = rng.normal(size=(n, 4)).astype(np.float32)
    x_cat = rng.integers(0, 3, size=(n, 1))
    return PreparedTabular(x_num, x_cat, ["a", "b", "c", "d"], ["e"], np.array([10, 20, 30, 40], np.float32),
                           np.array([2]))


def test_cell_flavours():
    names = ["a", "b", "c", "d", "e"]
    rows = np.arange(10, 50)
    ranking = ["c", "e", "a", "d", "b"]
    cells = cell_mask(50, rows, names, Condition("cells", 0.4, "random-cells"), 1, "test", None)
    assert not cells[:10].any() and abs(cells[rows].mean() - 0.4) < 0.15
    feats = cell_mask(50, rows, names, Condition("cells", 0.4, "random-features"), 1, "test", None)
    cols = np.flatnonzero(feats[rows].all(0))
    assert len(cols) == 2 and feats[rows][:, cols].all() and not np.delete(feats[rows], cols, axis=1).any()
    top = cell_mask(50, rows, names, Condition("cells", 0.4, "most-important"), 1, "test", ranking)
    assert sorted(np.flatnonzero(top[rows].all(0))) == [names.index("c"), names.index("e")]
    low = cell_mask(50, rows, names, Condition("cells", 0.4, "least-important"), 1, "test", ranking)
    assert sorted(np.flatnonzero(low[rows].all(0))) == [names.index("b"), names.index("d")]
    with pytest.raises(ConfigError, match="importance ranking"):
        cell_mask(50, rows, names, Condition("cells", 0.4, "most-important"), 1, "test", None)


def test_apply_cells_fills_training_mean_and_mode():
    tab = _tab()
    mask = np.zeros((50, 5), bool)
    mask[3, 1] = mask[4, 4] = True
    x_num, x_cat = apply_cells(tab.x_num, tab.x_cat, tab, mask)
    assert x_num[3, 1] == 20 and x_cat[4, 0] == 2
    assert np.array_equal(np.delete(x_num.ravel(), 3 * 4 + 1), np.delete(tab.x_num.ravel(), 3 * 4 + 1))
    assert tab.x_num[3, 1] != 20  # the input is not modified in place


@pytest.mark.parametrize("spec, match", [
    ({"name": "missing-image", "train_rates": [0.0, 1.5]}, "rate 1.5"),
    ({"name": "missing-image", "test_rates": []}, "non-empty list"),
    ({"name": "missing-cells", "flavour": "diagonal"}, "unknown flavour"),
    ({"name": "missing-image", "flavour": "random-cells"}, "takes no flavour"),
    ({"name": "missing-tabular", "rate": 0.3}, "unknown key"),
])
def test_plan_validation(spec, match):
    with pytest.raises(ConfigError, match=match):
        missingness_plan(spec)


def test_settings_share_complete_training():
    class _S:
        protocols = [{"name": "complete"},
                     {"name": "missing-image", "train_rates": [0.0, 0.5], "test_rates": [0.0, 1.0]},
                     {"name": "missing-cells", "flavour": "random-cells", "train_rates": [0.0], "test_rates": [0.3]}]
    settings = train_settings(_S(), _tab(), None)
    assert list(settings) == ["complete", "missing-image@train=0.5"]
    evals = settings["complete"].evals
    assert [(p, c.rate) for p, c in evals] == [("missing-image", 0.0), ("missing-image", 1.0),
                                               ("missing-cells:random-cells", 0.0), ("missing-cells:random-cells", 0.3)]
    matched = settings["missing-image@train=0.5"]
    assert matched.train_cond == Condition("image", 0.5) and matched.report_eval == ("missing-image", Condition("image", 0.5))
    assert [c.rate for _, c in matched.evals] == [0.0, 0.5, 1.0]  # the training rate is always tested
    assert parse_run_protocol("missing-image@train=0.5") == ("missing-image", 0.5)
    assert parse_run_protocol("complete") == ("complete", None)


def test_relative_robustness_is_normalised_area():
    assert relative_robustness(np.array([0, 0.5, 1.0]), np.array([0.8, 0.8, 0.8])) == pytest.approx(0.8)
    assert relative_robustness(np.array([1.0, 0.0]), np.array([0.5, 0.9])) == pytest.approx(0.7)


# ------------------------------------------------------------------------------ imputation
DIMS = FusionDims(image_pooled=8, image_token=8, tabular_pooled=4, tabular_token=4, image_tokens=3, tabular_tokens=1)


def _inputs(batch: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, 8, generator=g), torch.randn(batch, 8, generator=g),
            torch.randn(batch, 1, 4, generator=g), torch.randn(batch, 4, generator=g))


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_imputed_fusion_ignores_missing_content(mode):
    torch.manual_seed(0)
    fusion = ImputedFusion(registry("fusion").get("concat")(dims=DIMS, n_classes=1), mode)
    assert fusion.handles_missing
    it, ip, tt, tp = _inputs()
    avail = torch.tensor([True, False, True, False, True, True])
    fusion.train()
    fusion(it, ip, tt, tp, avail, None)
    fusion.eval()
    a = fusion(it, ip, tt, tp, avail, None).logits
    b = fusion(it * 7 + 3, ip * -5, tt, tp, avail, None).logits
    assert torch.allclose(a[~avail], b[~avail]) and not torch.allclose(a[avail], b[avail])


def test_mean_imputation_uses_mean_of_available_training_rows():
    torch.manual_seed(0)
    inner = registry("fusion").get("concat")(dims=DIMS, n_classes=1)
    fusion = ImputedFusion(inner, "mean").train()
    batches = [_inputs(seed=s) for s in range(3)]
    avail = torch.tensor([True, True, False, True, False, True])
    for it, ip, tt, tp in batches:
        fusion(it, ip, tt, tp, avail, None)
    seen = torch.cat([ip[avail] for _, ip, _, _ in batches])
    assert torch.allclose(fusion.mean_image_pooled, seen.mean(0), atol=1e-6)
    assert int(fusion.seen_image) == len(seen)
    fusion.eval()
    it, ip, tt, tp = _inputs(seed=9)
    missing = torch.zeros(6, dtype=torch.bool)
    out = fusion(it, ip, tt, tp, missing | True, None).logits
    imputed = inner.head(torch.cat([fusion.mean_image_pooled.expand(6, -1), tp], 1))
    assert not torch.allclose(out, imputed)
    assert torch.allclose(fusion(it, ip, tt, tp, missing, torch.ones(6, dtype=torch.bool)).logits, imputed, atol=1e-6)


def test_imputation_labels_and_refusals():
    assert variant_label("concat", "mean") == "concat+mean" and parse_variant("concat+mean") == ("concat", "mean")
    assert parse_variant("my+fusion") == ("my+fusion", None)
    with pytest.raises(ConfigError, match="needs no imputation"):
        ImputedFusion(registry("fusion").get("late_fusion")(dims=DIMS, n_classes=1), "zero")
    with pytest.raises(ConfigError, match="unknown imputation"):
        ImputedFusion(registry("fusion").get("concat")(dims=DIMS, n_classes=1), "median")


# ---------------------------------------------------------------------------------- suites
def _suite_file(tmp_path: Path, **changes) -> Path:
    doc = {
        "name": "tiny-missing", "version": 1, "description": "test", "include": str(SUITES / "_budgets.yaml"),
        "default_budget": "smoke", "dataset": {"name": "ol3i", "fallback": "ol3i-synthetic"},
        "loss": {"name": "weighted_ce", "class_weights": [0.1, 2.0], "sampler": [0.5, 5.0]},
        "protocols": [{"name": "missing-image", "train_rates": [0.0, 0.5], "test_rates": [0.0, 0.5, 1.0]},
                      {"name": "missing-cells", "flavour": "most-important", "train_rates": [0.0],
                       "test_rates": [0.0, 0.5]}],
        "impute": ["mean"], "image_encoder": {"name": "timm"}, "tabular_encoders": ["mlp"],
        "fusions": ["concat", "late_fusion"], "strategies": ["frozen"], "seeds": [2022, 2023],
    }
    doc.update(changes)
    path = tmp_path / "tiny-missing.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_suite_variants_and_refusal(tmp_path):
    suite = load_suite(str(_suite_file(tmp_path, impute=["zero", "mean"])))
    variants, refused = suite.fusion_variants()
    assert [v[0] for v in variants] == ["concat+zero", "concat+mean", "late_fusion"] and not refused
    suite = load_suite(str(_suite_file(tmp_path, impute=[])))
    variants, refused = suite.fusion_variants()
    assert [v[0] for v in variants] == ["late_fusion"] and "impute" in refused["concat"]
    with pytest.raises(ConfigError, match="no fusion can run"):
        load_suite(str(_suite_file(tmp_path, impute=[], fusions=["concat"])))
    with pytest.raises(ConfigError, match="impute must be a list"):
        load_suite(str(_suite_file(tmp_path, impute=["median"])))


def test_cli_refuses_with_one_line(tmp_path, capsys):
    rc = main(["run", "--suite", str(_suite_file(tmp_path, impute=[], fusions=["cross_attention"])), "--out",
               str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cross_attention" in err[0] and "impute" in err[0]


@pytest.fixture(scope="module")
def tiny_missing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("missing")
    rc = main(["run", "--suite", str(_suite_file(tmp)), "--out", str(tmp / "runs"), "--no-progress"])
    assert rc == 0
    return tmp / "runs" / "tiny-missing"


def test_missing_suite_end_to_end(tiny_missing):
    df = pd.read_csv(tiny_missing / "results.csv")
    # 2 training settings (complete, missing-image@train=0.5) x 2 variants x 2 seeds
    assert len(df) == 8 and set(df.fusion) == {"concat+mean", "late_fusion"}
    assert set(df.protocol) == {"complete", "missing-image@train=0.5"}
    rob = pd.read_csv(tiny_missing / "robustness.csv")
    test_time = rob[(rob.protocol == "missing-image") & (rob.train_rate == 0)]
    assert sorted(test_time.test_rate.unique()) == [0.0, 0.5, 1.0]
    assert set(rob.protocol) == {"missing-image", "missing-cells:most-important"}
    md = (tiny_missing / "leaderboard.md").read_text()
    assert "Robustness to missing data" in md and "Area (rel. robustness)" in md and "Training-time" in md
    png = tiny_missing / "tiny-missing-missing-image.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG" and png.name in md
    # at p = 0 a test-time evaluation equals the complete test metric of the same run
    row = df[(df.protocol == "complete") & (df.fusion == "late_fusion") & (df.seed == 2022)].iloc[0]
    p0 = test_time[(test_time.fusion == "late_fusion") & (test_time.seed == 2022) & (test_time.test_rate == 0)]
    assert p0.value.iloc[0] == pytest.approx(row.test_value)


def test_masks_are_saved_and_reach_the_run(tiny_missing):
    run = tiny_missing / "runs" / "missing-image@train=0.5__mlp__late_fusion__frozen__seed2022"
    saved = np.load(run / "predictions.npz")
    fit_avail = saved["fit_image_available"]
    assert 0.3 < 1 - fit_avail.mean() < 0.6  # train + validation rows at rate 0.5 (test rows stay True)
    test_avail = saved["test_image_available__missing-image@test=1"]
    assert not test_avail.any()
    half = saved["test_image_available__missing-image@test=0.5"]
    assert 0.3 < 1 - half.mean() < 0.7
    report = json.loads((run / "report.json").read_text())
    assert report["test"]["value"] == pytest.approx(report["sweep"]["missing-image"]["0.5"]["value"])
    other = np.load(tiny_missing / "runs" / "missing-image@train=0.5__mlp__late_fusion__frozen__seed2023" / "predictions.npz")
    assert not np.array_equal(other["fit_image_available"], fit_avail)  # masks are drawn per seed


def test_force_searches_once_and_reuses_the_complete_data_choice(tiny_missing, tmp_path):
    # per_protocol false: one search per fusion, on complete data, reused by the training-time settings;
    # --force redoes it once, not once more on each setting's data
    out = tmp_path / "runs"
    shutil.copytree(tiny_missing, out / "tiny-missing")
    rc = main(["run", "--suite", str(_suite_file(tmp_path)), "--out", str(out), "--no-progress", "--force"])
    assert rc == 0
    searches = sorted(f for f in (out / "tiny-missing" / "search").glob("*.json") if not f.name.startswith("_"))
    assert searches and all(json.loads(f.read_text())["info"]["protocol"] == "complete" for f in searches)
