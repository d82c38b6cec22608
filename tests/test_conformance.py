"""The conformance kit catches what it claims to, and `bench check-plugin` reports it.

The kit itself runs on every registered plug-in in test_fusions.py and test_tabular_encoders.py;
here deliberately broken fusions show that each check fails for the right reason.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import bench.registry as reg
from bench.api import Fusion, FusionOutput
from bench.cli import main
from bench.conformance import CHECKS, CheckResult, check_names, run_check, run_checks
from bench.registry import Entry, registry


class GoodFusion(Fusion):
    """Concatenation that zeroes a missing modality: conforms to everything."""

    handles_missing = True
    search_space = {"width": {"type": "categorical", "choices": [4, 8]}, "lr": {"type": "categorical", "choices": [1e-3]}}
    conformance_kwargs = {"width": 4}

    def __init__(self, *, dims, n_classes, width: int = 8):
        super().__init__(dims=dims, n_classes=n_classes)
        self.proj = nn.Linear(dims.image_pooled + dims.tabular_pooled, width)
        self.head = nn.Linear(width, n_classes)
        self.drop = nn.Dropout(0.5)

    def fuse(self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available, tabular_available):
        img = torch.where(image_available[:, None], image_pooled, torch.zeros(()))
        tab = torch.where(tabular_available[:, None], tabular_pooled, torch.zeros(()))
        hidden = self.drop(torch.relu(self.proj(torch.cat([img, tab], dim=1))))
        return FusionOutput(self.head(hidden), {"l2": 1e-3 * hidden.square().mean()}, {"norm": hidden.detach().norm()})


class LeaksMissingContent(GoodFusion):
    def fuse(self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available, tabular_available):
        return FusionOutput(self.head(self.proj(torch.cat([image_pooled, tabular_pooled], dim=1))))


class AuxLossLeaks(GoodFusion):
    def fuse(self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, *masks):
        out = super().fuse(image_tokens, image_pooled, tabular_tokens, tabular_pooled, *masks)
        out.aux_losses["leak"] = image_pooled.square().mean()
        return out


class SilentlyAcceptsMissing(Fusion):
    def __init__(self, *, dims, n_classes):
        super().__init__(dims=dims, n_classes=n_classes)
        self.head = nn.Linear(dims.image_pooled, n_classes)

    def forward(self, image_tokens, image_pooled, tabular_tokens, tabular_pooled, image_available=None, tabular_available=None):
        return FusionOutput(self.head(image_pooled))  # skips the base class's mask check


class UnusedParameter(GoodFusion):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.spare = nn.Linear(3, 3)


class NotDeterministic(GoodFusion):
    def fuse(self, *args):
        out = super().fuse(*args)
        return FusionOutput(out.logits + random.random())  # Python's RNG, not torch's


class AttachedDiagnostics(GoodFusion):
    def fuse(self, *args):
        out = super().fuse(*args)
        return FusionOutput(out.logits, diagnostics={"logits": out.logits.mean()})


class WrongShape(GoodFusion):
    def fuse(self, *args):
        return FusionOutput(super().fuse(*args).logits[:, :1])  # one column whatever n_classes is


class NanLogits(GoodFusion):
    def fuse(self, *args):
        return FusionOutput(super().fuse(*args).logits * float("nan"))


class BadSearchSpace(GoodFusion):
    search_space = {"depth": {"type": "float", "low": 1, "high": 3}}


class UnknownSearchParameter(GoodFusion):
    search_space = {"depth": {"type": "categorical", "choices": [1, 2]}}


class StateOutsideStateDict(GoodFusion):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = 1.0 + float(torch.rand(()))  # a plain attribute: not saved, not restored

    def fuse(self, *args):
        return FusionOutput(super().fuse(*args).logits * self.scale)


class ClaimsImageOnly(GoodFusion):
    """Declares that it reads only the image, yet its logits use the tabular vector."""

    reads = ("image",)


class Untraceable(GoodFusion):
    def fuse(self, *args):
        out = super().fuse(*args)
        top = out.logits.topk(1, dim=-1).indices
        keep = torch.zeros_like(out.logits, dtype=torch.bool).scatter(-1, top, True)  # the JIT tracer rejects it
        return FusionOutput(out.logits.masked_fill(~keep, 0.0))


def _run(cls: type, check: str) -> CheckResult:
    return CHECKS["fusion"][check](cls)


@pytest.mark.parametrize("check", check_names("fusion"))
def test_a_conforming_fusion_passes_every_check(check):
    result = _run(GoodFusion, check)
    assert result.passed and not result.skipped, result.message


@pytest.mark.parametrize(
    ("cls", "check", "needle"),
    [
        (LeaksMissingContent, "missing_invariance", "change with the content of a missing modality"),
        (LeaksMissingContent, "missing_gradients", "flows into the missing image inputs"),
        (AuxLossLeaks, "missing_gradients", "flows into the missing image inputs"),
        (SilentlyAcceptsMissing, "missing_modality", "raised no ValueError"),
        (UnusedParameter, "gradients", "no gradient reaches ['spare.weight', 'spare.bias']"),
        (NotDeterministic, "deterministic", "differs between two runs under the same seed"),
        (AttachedDiagnostics, "finite_outputs", "diagnostics['logits'] requires grad"),
        (WrongShape, "output_shapes", "logits must be [batch=6, n_classes=5]"),
        (NanLogits, "finite_outputs", "logits contain NaN"),
        (BadSearchSpace, "search_space", "type 'float' is not supported"),
        (UnknownSearchParameter, "search_space", "'depth' is neither a constructor argument"),
        (StateOutsideStateDict, "state_dict", "differs after load_state_dict"),
        (Untraceable, "flops", "could not trace"),
        (ClaimsImageOnly, "reads", "add 'tabular' to reads"),
        (nn.Linear, "contract", "must be a subclass of bench.api.Fusion"),
    ],
)
def test_each_check_catches_its_violation(cls, check, needle):
    result = _run(cls, check)
    assert not result.passed
    assert needle in result.message
    assert "\n" not in result.message


def test_missing_checks_are_skipped_without_handles_missing():
    result = _run(SilentlyAcceptsMissing, "missing_invariance")
    assert result.passed and result.skipped and "handles_missing=False" in result.message


def test_the_kit_leaves_the_global_rng_alone():
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    run_checks("fusion", "concat")
    assert torch.equal(torch.rand(3), expected)


def test_run_check_rejects_an_unknown_check():
    with pytest.raises(Exception, match="unknown fusion check 'shapes'"):
        run_check("fusion", "concat", "shapes")


# --------------------------------------------------------------------------------------------------
# python -m bench check-plugin
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def register(monkeypatch):
    """Register a throwaway plug-in for one test (entries and load errors restored afterwards)."""
    errors = dict(reg.plugin_errors)

    def add(kind: str, name: str, target, origin: str = "tests-plugin") -> None:
        monkeypatch.setitem(registry(kind).entries, name, Entry(name, kind, target, origin))

    yield add
    reg.plugin_errors.clear()
    reg.plugin_errors.update(errors)


def test_check_plugin_passes_for_a_builtin(capsys):
    assert main(["check-plugin", "concat"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fusion 'concat' [builtin]")
    assert "13 checks: 11 passed, 2 skipped, 0 failed" in out
    for check in check_names("fusion"):
        assert f"  {check} " in out


def test_check_plugin_infers_an_encoder_kind(capsys):
    assert main(["check-plugin", "mlp"]) == 0
    assert capsys.readouterr().out.startswith("tabular_encoder 'mlp'")


def test_check_plugin_exit_1_on_a_failing_plugin(register, capsys):
    register("fusion", "leaky", LeaksMissingContent)
    assert main(["check-plugin", "leaky"]) == 1
    out = capsys.readouterr().out
    assert "fusion 'leaky' [tests-plugin]" in out
    assert "missing_invariance  FAIL" in out and "2 failed" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check-plugin", "amff"], "did you mean 'amf' (fusion)"),
        (["check-plugin", "amff", "--kind", "fusion"], "did you mean 'amf'"),
        (["check-plugin", "ml"], "did you mean 'mlp' (tabular_encoder)"),
    ],
)
def test_check_plugin_unknown_name_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err.lower() and len(err.splitlines()) == 1


def test_check_plugin_ambiguous_name_asks_for_kind(register, capsys):
    register("fusion", "mlp", GoodFusion)
    assert main(["check-plugin", "mlp"]) == 2
    err = capsys.readouterr().err
    assert "registered as fusion and tabular_encoder" in err and "--kind" in err
    assert main(["check-plugin", "mlp", "--kind", "fusion"]) == 0


def test_check_plugin_reports_an_import_failure_by_name(register, capsys):
    register("fusion", "ghost", "bench_no_such_module_for_tests:Fusion", origin="ghost-dist")
    assert main(["check-plugin", "ghost"]) == 1
    out = capsys.readouterr().out
    assert "load" in out and "FAIL" in out
    assert "fusion 'ghost' from ghost-dist" in out and "failed to import" in out and "bench_no_such_module_for_tests" in out
    assert "bench.fusions:ghost" in reg.plugin_errors


def test_a_broken_plugin_is_a_one_line_error_in_run(register, capsys):
    register("fusion", "ghost", "bench_no_such_module_for_tests:Fusion", origin="ghost-dist")
    assert main(["run", "--suite", "ol3i-incomplete", "--fusion", "ghost"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ghost-dist" in err and "failed to import" in err
