"""Registry, suite loading and the CLI's user-facing behaviour."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.cli import main
from bench.errors import ConfigError, UnknownNameError
from bench.registry import Entry, Registry, list_names, registry
from bench.suite import load_suite


def test_builtins_registered():
    assert {"concat", "cross_attention", "amf"} <= set(list_names("fusion"))
    assert {"mlp", "resnet", "ft_transformer", "ft_mamba"} <= set(list_names("tabular_encoder"))
    assert "timm" in list_names("image_encoder")
    assert {"ol3i", "ol3i-synthetic", "dvm", "dvm-synthetic"} <= set(list_names("dataset"))
    assert {"ol3i-incomplete", "dvm-complete"} <= set(list_names("suite"))


def test_wildcards():
    assert list_names("tabular_encoder", "ft*") == ["ft_mamba", "ft_transformer"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as exc:
        registry("fusion").get("amff")
    assert "did you mean 'amf'" in str(exc.value).lower()
    assert "\n" not in str(exc.value)


def test_lazy_entries_and_builtin_wins(caplog):
    reg = Registry("fusion")
    reg.add("thing", "json:dumps")
    assert reg.get("thing") is json.dumps
    reg.add("thing", "json:loads", origin="someplugin")  # a plug-in cannot shadow a built-in
    assert reg.get("thing") is json.dumps
    assert "built-in of that name wins" in caplog.text


ALL_FUSIONS = ["concat", "cross_attention", "amf", "amc", "masked_attention", "late_fusion", "gmu",
               "concat_missing_embedding", "image_only", "tabular_only"]


def test_suite_budgets_and_narrowing():
    s = load_suite("ol3i-incomplete")
    assert s.budget_name == "cpu" and len(s.seeds) >= 2
    assert s.fusions == ALL_FUSIONS
    s = load_suite("ol3i-incomplete", budget="paper")
    assert s.seeds == [2022, 2023, 2024, 2025, 2026]
    assert s.budget["data"]["image_size"] == 512 and s.image_config()["model_name"] == "resnet50"
    assert s.tabular_config("ft_mamba")["d_state"] == 128
    s = load_suite("ol3i-incomplete", fusions=["amf"], tabular_encoders=["mlp"], seeds=[1, 2])
    assert s.fusions == ["amf"] and s.tabular_encoders == ["mlp"] and s.seeds == [1, 2]


def test_fusion_option_replaces_the_suite_list(monkeypatch):
    # --fusion may name any registered fusion, e.g. a plug-in the suite does not list, in the order given
    from baselines.fusion.concat import ConcatFusion

    monkeypatch.setitem(registry("fusion").entries, "my_fusion", Entry("my_fusion", "fusion", ConcatFusion, "my-plugin"))
    s = load_suite("ol3i-incomplete", fusions=["my_fusion", "concat", "amf", "concat"])
    assert s.fusions == ["my_fusion", "concat", "amf"]
    assert load_suite("ol3i-incomplete").fusions == ALL_FUSIONS
    with pytest.raises(UnknownNameError, match="Did you mean 'my_fusion'"):
        load_suite("ol3i-incomplete", fusions=["my_fusio"])


def test_suite_errors():
    with pytest.raises(ConfigError, match="two seeds"):
        load_suite("ol3i-incomplete", seeds=[1])
    with pytest.raises(ConfigError, match="unknown budget"):
        load_suite("ol3i-incomplete", budget="huge")
    with pytest.raises(UnknownNameError):
        load_suite("ol3i-incomplet")
    with pytest.raises(ConfigError, match="warm-starts"):
        load_suite("ol3i-incomplete", strategies=["trainable"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--suite", "ol3i-incomplet"], "did you mean 'ol3i-incomplete'"),
        (["run", "--suite", "ol3i-incomplete", "--fusion", "amff"], "did you mean 'amf'"),
        (["run", "--suite", "ol3i-incomplete", "--data-root", "/nonexistent/ol3i"], "does not exist"),
        (["list", "fusionz"], "unknown kind"),
        (["leaderboard", "/nonexistent/dir"], "not a directory"),
    ],
)
def test_cli_bad_input_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err.lower()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_list_json(capsys):
    assert main(["list", "fusion", "--json"]) == 0
    names = [d["name"] for d in json.loads(capsys.readouterr().out)]
    assert "amf" in names


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "bench", "list", "suite"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ol3i-incomplete" in out.stdout
