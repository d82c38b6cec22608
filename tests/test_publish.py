"""Published leaderboards re-render byte-for-byte from the compact results committed beside them."""

from __future__ import annotations

import json

from bench.leaderboard import write_leaderboard
from bench.publish import main, rebuild
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
