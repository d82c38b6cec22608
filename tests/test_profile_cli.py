"""`python -m bench profile`: a batch-sweep latency profile with params and GMac (figures, no timed asserts)."""

from __future__ import annotations

import json

from bench.cli import main


def test_profile_batch_sweep(tmp_path, capsys):
    out = tmp_path / "profile.json"
    rc = main(["profile", "--fusion", "amf", "cross_attention", "--batch-sizes", "1", "2", "--runs", "1",
               "--warmup", "0", "--budget", "smoke", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["fusion"]) == set(res["model"]) == {"amf", "cross_attention"}
    amf = res["fusion"]["amf"]
    assert amf["params"] == 8_532_033  # AMF-MedIT Table 3 setting: 8.53 M
    assert set(amf["latency"]) == {"1", "2"} and all(v["p50_ms"] > 0 for v in amf["latency"].values())
    model = res["model"]["cross_attention"]
    assert model["params"] > model["params_fusion"] > 0 and model["gmac_batch1"] > 0
    assert set(res["ratio_cross_attention_over_amf_p50"]) == {"1", "2"}
    text = capsys.readouterr().out
    assert "Fusion modules (paper dims)" in text and "Whole models" in text and "cross-attention / AMF" in text


def test_profile_rejects_bad_input(capsys):
    assert main(["profile", "--fusion", "amff"]) == 2
    assert "amf" in capsys.readouterr().err
    assert main(["profile", "--batch-sizes", "0"]) == 2
