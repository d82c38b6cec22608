"""Published leaderboards re-render from the compact results committed beside them: text byte for byte, figures
pixel for pixel up to anti-aliasing."""

from __future__ import annotations

import io
import json

import numpy as np

from bench.leaderboard import write_leaderboard
from bench.publish import compact_predictions, main, rebuild
from tests.test_leaderboard_plots import make_suite


def test_publish_exports_compact_results_and_rebuilds_byte_for_byte(tmp_path):
    root = tmp_path / "runs" / "fake"
    make_suite(root)
    pub = tmp_path / "leaderboards"
    write_leaderboard(root, expected_seeds=[0, 1], publish_to=pub)
    compact = pub / "results" / "fake"
    assert (compact / "suite.json").exists()
    runs = sorted(p.name for p in (compact / "runs").iterdir())
    assert runs and all(sorted(f.name for f in (compact / "runs" / r).iterdir()) ==
                        ["DONE", "config.json", "predictions.npz", "report.json"] for r in runs)
    assert rebuild(pub, write=False) == []
    assert main(["--check", "--leaderboards", str(pub)]) == 0

    # a published file edited by hand is caught and restored
    md = pub / "fake.md"
    md.write_text(md.read_text().replace("fake", "edited", 1))
    assert rebuild(pub, write=True) == ["fake.md"]
    assert rebuild(pub, write=False) == []

    # a changed result changes the leaderboard
    report = next((compact / "runs").glob("*/report.json"))
    doc = json.loads(report.read_text())
    doc["test"]["value"] = 0.0123
    report.write_text(json.dumps(doc))
    assert "fake.md" in rebuild(pub, write=False)


def test_compact_predictions_keep_test_and_validation_arrays_as_stored(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "predictions.npz"
    binary, multi = rng.normal(size=(50, 1)).astype(np.float32), rng.normal(size=(50, 101)).astype(np.float32)
    np.savez_compressed(path, test_ids=np.arange(50).astype(str), test_y=rng.integers(0, 2, 50),
                        test_logits=multi, **{"test_logits__missing-image@test=0.5": binary},
                        test_image_available=rng.random(50) < 0.5, val_y=np.zeros(20), val_logits=np.zeros((20, 101)))
    with np.load(io.BytesIO(compact_predictions(path))) as z:
        assert sorted(z.files) == sorted(["test_ids", "test_y", "test_logits", "test_logits__missing-image@test=0.5",
                                          "test_image_available", "val_y", "val_logits"])
        # float32 as trained: every published metric recomputes exactly; validation logits let any threshold be
        assert z["test_logits"].dtype == np.float32 and np.array_equal(z["test_logits"], multi)
        assert z["test_logits__missing-image@test=0.5"].dtype == np.float32  # one column: kept exact
        assert np.array_equal(z["test_logits__missing-image@test=0.5"], binary)
        assert z["test_image_available"].dtype == bool and z["test_ids"].dtype.kind == "U"


def test_figures_compare_pixel_for_pixel_up_to_anti_aliasing():
    """A PNG may differ from its committed copy by anti-aliasing at a few edge pixels (another CPU's NumPy
    SIMD paths move an axis edge by a fraction of a pixel), never by a moved marker."""
    import io

    import numpy as np
    from matplotlib.image import imsave

    from bench.publish import same_figure

    def png(img):
        buf = io.BytesIO()
        imsave(buf, img, format="png")
        return buf.getvalue()

    base = np.ones((400, 600, 3))
    base[100:300, 100] = base[100:300, 500] = 0.2  # two axis edges
    base[195:205, 295:305] = (0.1, 0.3, 0.8)        # a marker
    edge = base.copy()
    edge[100:110, 501] = 0.9                        # anti-aliased edge pixels: 10 of 240,000, by 0.1
    moved = base.copy()
    moved[195:205, 295:305] = 1.0
    moved[195:205, 298:308] = (0.1, 0.3, 0.8)       # the marker 3 pixels to the right
    assert same_figure(png(base), png(base)) and same_figure(png(base), png(edge))
    assert not same_figure(png(base), png(moved))
    assert not same_figure(png(base), png(base[:-1]))  # another size
