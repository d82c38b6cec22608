"""A model that reads only the image makes the same fit on every encoder pair that shares one image encoder.

With ``pretrain.image_encoder: shared`` every pair holds the anchor's image encoder, so an image-only
head sees the same features (frozen) or starts from the same encoder (trainable) whatever the tabular
encoder or the protocol's table: ``_RunContext.share_key`` names that computation and
``final_train`` makes it once. Checked end to end against fitting every run: bit-identical predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from bench.cli import main
from bench.pipeline import _RunContext
from bench.suites import SUITES_DIR
from tests.test_search_fit_reuse import _runs

ARGS = ["--budget", "smoke", "--tabular", "mlp", "resnet", "--fusion", "image_only", "--no-progress"]


def _shared_suite(tmp_path):
    doc = yaml.safe_load((SUITES_DIR / "ol3i-incomplete.yaml").read_text())
    doc["budget_overrides"] = {"smoke": {"pretrain": {"image_encoder": "shared", "anchor": "mlp"}}}
    path = tmp_path / "shared-suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_image_only_fits_are_made_once_for_pairs_sharing_the_image_encoder(tmp_path, monkeypatch):
    suite = str(_shared_suite(tmp_path))
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "shared"), *ARGS]) == 0
    shared = _runs(tmp_path / "shared", only="image_only")
    monkeypatch.setattr(_RunContext, "share_key", lambda self, hp, seed: None)  # every run fitted
    assert main(["run", "--suite", suite, "--out", str(tmp_path / "each"), *ARGS]) == 0
    each = _runs(tmp_path / "each", only="image_only")

    assert sorted(shared) == sorted(each) and len(shared) == 16  # 2 pairs x 2 protocols x 2 strategies x 2 seeds
    taken = [name for name, (_, training) in shared.items() if training.get("fit", "").startswith("run ")]
    # the MLP pair's complete-data runs are fitted; every other pair / protocol takes them
    assert len(taken) == 12 and not any(n.startswith("complete__mlp__") for n in taken)
    for name, (arrays, training) in shared.items():
        assert sorted(arrays) == sorted(each[name][0])
        for k, v in arrays.items():
            assert np.array_equal(v, each[name][0][k]), (name, k)
        assert training["history"] == each[name][1]["history"]


def test_the_dry_run_counts_shared_image_only_fits_once(tmp_path):
    from bench.plan import plan_suite
    from bench.suite import load_suite

    suite = load_suite(str(_shared_suite(tmp_path)), budget="smoke", fusions=["image_only"],
                       tabular_encoders=["mlp", "resnet"], strategies=["frozen"])
    fits = {t.name: t.cost for t in plan_suite(suite, out=tmp_path / "out") if t.kind == "fit"}
    assert len(fits) == 8
    assert {k for k, v in fits.items() if v > 0} == {"complete__mlp__image_only__frozen__seed2022",
                                                      "complete__mlp__image_only__frozen__seed2023"}
