"""Protocols as a registry kind: the built-ins pass the conformance kit, a suite names protocols that are
looked up and checked when it loads, and a plug-in protocol is one class that any suite can run."""

import json
from pathlib import Path

import numpy as np
import pytest

import bench.registry as reg
from bench.cli import main
from bench.conformance import run_checks
from bench.errors import ConfigError
from bench.protocols import AppliedProtocol, Protocol, get_protocol

SUITES = Path(__file__).resolve().parent.parent / "bench" / "suites"


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registries copied, so protocols a test registers vanish afterwards."""
    reg.registry("protocol")
    monkeypatch.setattr(reg, "_REGISTRIES", {k: reg.Registry(k, dict(r.entries)) for k, r in reg._REGISTRIES.items()})


def _noisy_protocol():
    @reg.register_protocol("noisy-tabular")
    class NoisyTabular(Protocol):
        """Measurement noise: seeded Gaussian noise of scale sigma on every numeric column, in every split."""

        keys = frozenset({"sigma"})
        conformance_spec = {"sigma": 0.5}

        def check(self, spec):
            super().check(spec)
            if not float(spec.get("sigma", 0.5)) > 0:
                raise ConfigError("protocol noisy-tabular: sigma must be > 0")

        def data(self, spec, tab, importance_ranking):
            rng = np.random.default_rng(0)
            noise = rng.normal(0.0, float(spec.get("sigma", 0.5)), tab.x_num.shape).astype(tab.x_num.dtype)
            return AppliedProtocol(spec["name"], tab.x_num + noise, tab.x_cat, [], "none")

    return NoisyTabular


@pytest.mark.parametrize("name", ["complete", "incomplete-tabular", "missing-image", "missing-tabular", "missing-cells"])
def test_builtin_protocols_pass_the_conformance_kit(name):
    results = run_checks("protocol", name)
    assert [r.name for r in results] == ["load", "data", "missingness"]
    assert all(r.passed for r in results), [(r.name, r.message) for r in results]


def test_a_plugin_protocol_is_checked_and_one_that_edits_in_place_fails(scratch_registry):
    _noisy_protocol()
    assert all(r.passed for r in run_checks("protocol", "noisy-tabular"))

    @reg.register_protocol("sloppy")
    class Sloppy(Protocol):
        def data(self, spec, tab, importance_ranking):
            tab.x_num[:, 0] = 0.0  # masks in place: every later protocol would see it
            return AppliedProtocol(spec["name"], tab.x_num, tab.x_cat, ["n0"], "zero")

    failed = {r.name: r for r in run_checks("protocol", "sloppy")}
    assert not failed["data"].passed and "in place" in failed["data"].message
    with pytest.raises(ConfigError, match="unknown key 'sigmaa'; known keys: name, sigma"):
        get_protocol("noisy-tabular").check({"name": "noisy-tabular", "sigmaa": 1})


def test_a_suite_with_an_unknown_protocol_or_key_fails_in_one_line(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    for protocols, message in ((["complet"], "Did you mean 'complete'"),
                               ([{"name": "missing-cells", "flavor": "random-cells"}], "unknown key 'flavor'"),
                               ([{"name": "missing-image", "test_rates": [1.5]}], "rate 1.5 in test_rates")):
        suite.write_text(f"include: {SUITES / 'ol3i-incomplete.yaml'}\nprotocols: {json.dumps(protocols)}\n")
        assert main(["run", "--suite", str(suite), "--budget", "smoke", "--out", str(tmp_path / "o"), "--dry-run"]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_plugin_protocol_runs_in_a_suite_on_its_own_features(tmp_path, scratch_registry, monkeypatch):
    _noisy_protocol()
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "s.yaml"
    suite.write_text(f"include: {SUITES / 'ol3i-incomplete.yaml'}\n"
                     "protocols: [complete, {name: noisy-tabular, sigma: 3.0}]\n")
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(suite), "--budget", "smoke", "--tabular", "mlp", "--fusion", "concat",
                 "--strategy", "frozen", "--out", str(out), "--no-progress"]) == 0
    reports = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/runs/*/report.json")}
    noisy = [r for name, r in reports.items() if name.startswith("noisy-tabular__")]
    complete = [r for name, r in reports.items() if name.startswith("complete__")]
    assert len(noisy) == len(complete) == 2  # two seeds each
    # its own features: the tabular probe saw the noisy table, not the complete one's cached features
    assert noisy[0]["training"]["probes"]["tabular_val"] != complete[0]["training"]["probes"]["tabular_val"]
    assert "noisy-tabular" in (out / "ol3i-incomplete" / "leaderboard.md").read_text()
