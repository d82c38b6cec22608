"""A run that raises is recorded as failed with its reason, shown in the leaderboard, and retried on rerun."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench.api import Fusion, FusionOutput
from bench.cli import main
from bench.registry import register_fusion, registry


class ExplodingFusion(Fusion):
    """Concatenation whose logits turn NaN once training has taken a step (a diverging plug-in)."""

    def __init__(self, *, dims, n_classes):
        super().__init__(dims=dims, n_classes=n_classes)
        self.head = nn.Linear(dims.image_pooled + dims.tabular_pooled, n_classes)

    def fuse(self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available, tabular_available):
        logits = self.head(torch.cat([image_pooled, tabular_pooled], -1))
        return FusionOutput(logits=logits * float("nan") if self.training else logits)


@pytest.fixture
def exploding():
    register_fusion("exploding_test_fusion")(ExplodingFusion)
    yield "exploding_test_fusion"
    del registry("fusion").entries["exploding_test_fusion"]


def test_failed_run_is_recorded_and_the_suite_completes(exploding, tmp_path, capsys):
    args = ["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--tabular", "mlp", "--strategy", "frozen",
            "--fusion", "concat", exploding, "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 1  # some runs failed: non-zero exit, the last line counts them
    suite_dir = tmp_path / "ol3i-incomplete"
    failed = sorted(suite_dir.glob("runs/*/FAILED"))
    assert len(failed) == 4  # 2 protocols x 2 seeds; concat's runs finished
    assert len(list(suite_dir.glob("runs/*concat*/DONE"))) == 4
    info = json.loads(failed[0].read_text())
    assert info["error"] == "FloatingPointError" and "non-finite loss" in info["reason"]
    md = (suite_dir / "leaderboard.md").read_text()
    assert "## Failed runs" in md and "failed‡" in md and "FloatingPointError" in md
    out = capsys.readouterr().out
    assert "failed:" in out
    assert out.strip().splitlines()[-1].startswith("[bench] 4 runs done, 0 skipped (finished earlier), 4 failed")
    # a rerun retries the failed runs (still failing here) and keeps the finished ones
    stamps = {p: p.stat().st_mtime_ns for p in suite_dir.glob("runs/*concat*/report.json")}
    assert main(args) == 1
    assert {p: p.stat().st_mtime_ns for p in suite_dir.glob("runs/*concat*/report.json")} == stamps
    assert json.loads(failed[0].read_text())["created"] >= info["created"]


class UnbuildableFusion(ExplodingFusion):
    """A plug-in whose constructor raises: its search cannot even start."""

    def __init__(self, *, dims, n_classes):
        raise RuntimeError("this plug-in is broken")


def test_a_plugin_that_cannot_be_built_fails_its_runs_only(tmp_path):
    register_fusion("unbuildable_test_fusion")(UnbuildableFusion)
    try:
        assert main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--tabular", "mlp", "--strategy",
                     "frozen", "--fusion", "unbuildable_test_fusion", "concat", "--out", str(tmp_path),
                     "--no-progress"]) == 1
    finally:
        del registry("fusion").entries["unbuildable_test_fusion"]
    suite_dir = tmp_path / "ol3i-incomplete"
    reasons = {json.loads(p.read_text())["reason"] for p in suite_dir.glob("runs/*unbuildable*/FAILED")}
    assert reasons == {"RuntimeError: this plug-in is broken"}
    assert len(list(suite_dir.glob("runs/*concat*/DONE"))) == 4
