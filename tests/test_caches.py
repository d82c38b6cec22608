"""What a suite keeps in the bench cache besides pretrained weights: the importance ranking and the replica's
rendered slices, each found again only under a key that holds everything it depends on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.data import base, ol3i_synthetic
from bench.data.ol3i_synthetic import make_ol3i_synthetic
from bench.pipeline import (
    cached_importance,
    data_provenance,
    importance_cache_path,
    importance_key,
    prepare,
)
from bench.suite import load_suite
from bench.train import LossConfig


def _key(suite, data):
    return importance_key(suite, data_provenance(data), prepare(data), LossConfig.from_dict(suite.loss))


def test_the_importance_key_holds_the_labels_it_is_fitted_on_and_the_settings(tmp_path):
    suite = load_suite("ol3i-incomplete", budget="smoke")
    data = make_ol3i_synthetic(n=300, seed=1, cache_dir=tmp_path)
    key = _key(suite, data)
    assert _key(suite, data) == key  # deterministic
    train = data.indices("train")
    flipped = data.y.copy()
    flipped[train[:5]] = 1 - flipped[train[:5]]
    assert _key(suite, dataclasses.replace(data, y=flipped)) != key  # training labels
    other = load_suite("ol3i-incomplete", budget="smoke")
    other.budget["importance"] = {**other.budget["importance"], "epochs": 4}
    assert _key(other, data) != key  # the importance model's budget
    prep = prepare(data)
    prep.tab.x_num[train[0], 0] += 1.0  # a preprocessing that changed (e.g. its code) changes the input rows
    assert importance_key(suite, data_provenance(data), prep, LossConfig.from_dict(suite.loss)) != key


def test_the_importance_key_holds_the_code_that_fits_and_attributes(tmp_path, monkeypatch):
    import bench.importance

    suite = load_suite("ol3i-incomplete", budget="smoke")
    data = make_ol3i_synthetic(n=300, seed=1, cache_dir=tmp_path)
    key = _key(suite, data)
    edited = tmp_path / "importance.py"
    edited.write_text(Path(bench.importance.__file__).read_text() + "\n# an edit\n")
    monkeypatch.setattr(bench.importance, "__file__", str(edited))
    assert _key(suite, data) != key


def test_the_importance_ranking_is_computed_once_and_read_back_exactly(tmp_path, capsys):
    calls = []

    def compute():
        calls.append(1)
        return {"ranking": ["b", "a"], "scores": {"b": np.float32(0.7), "a": 0.3}, "model": "mlp"}

    first = cached_importance("k" * 20, compute)
    again = cached_importance("k" * 20, compute)
    assert len(calls) == 1 and first == again
    assert list(again["scores"]) == ["b", "a"]  # ranked order kept, not sorted by name
    importance_cache_path("k" * 20).write_text("{not json")  # unreadable: set aside, computed again, never a crash
    assert cached_importance("k" * 20, compute) == first and len(calls) == 2
    assert cached_importance("k" * 20, compute, force=True) == first and len(calls) == 3  # bench run --force
    assert "is unreadable; moved it to" in capsys.readouterr().err


def test_replica_slices_render_once_and_read_back_equal(tmp_path, monkeypatch):
    first = make_ol3i_synthetic(n=200, seed=3, image_size=32, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.npy")
    assert base.source_digest(*ol3i_synthetic.RENDER_SOURCES) in cached.name  # an edited generator renders anew

    def no_render(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(ol3i_synthetic, "_render", no_render)
    again = make_ol3i_synthetic(n=200, seed=3, image_size=32, cache_dir=tmp_path)
    assert type(again.images) is np.ndarray and again.images.flags.writeable  # in memory, as rendered
    np.testing.assert_array_equal(again.images, first.images)
    assert again.provenance.checksum == first.provenance.checksum
    with pytest.raises(AssertionError, match="rendered again"):  # another seed is not this file
        make_ol3i_synthetic(n=200, seed=4, image_size=32, cache_dir=tmp_path)
