"""Conformance kit: the checks every fusion, tabular encoder, image encoder, metric and protocol must pass.

Used by ``python -m bench check-plugin NAME`` and by the registry-parametrized tests (one test per
plug-in x check). Each check is a small function ``check(cls) -> CheckResult``; instances are built
on CPU with small dimensions and the class's ``conformance_kwargs``, so a whole kind runs in seconds.

    from bench.conformance import run_checks
    for result in run_checks("fusion", "amf"):
        print(result.name, result.passed, result.message)

The kit leaves the global RNG state as it found it.
"""

from __future__ import annotations

import difflib
import inspect
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import bench.registry as _registry
from bench.api import EncoderOutput, Fusion, FusionDims, FusionOutput, modalities_read
from bench.errors import BenchError
from bench.registry import ENTRY_POINT_GROUPS, registry

__all__ = [
    "CHECKS",
    "KINDS",
    "CheckResult",
    "check_names",
    "infer_kind",
    "run_check",
    "run_checks",
]

KINDS = ("fusion", "tabular_encoder", "image_encoder", "metric", "protocol")
MODEL_KINDS = KINDS[:3]
BATCH = 6
#: Fusion inputs: 32-d image features on a 2x2 map, 16-d tabular features (10 tokens when the
#: fusion reads every tabular token, else the pooled vector as the single token, as the harness does).
FUSION_DIMS = dict(image_pooled=32, image_token=32, tabular_pooled=16, tabular_token=16, image_tokens=4)
TABULAR_TOKENS = 10
#: Tabular encoder feature sets: mixed, numeric only, categorical only.
FEATURE_SETS = {"mixed": (5, [3, 4]), "numeric": (4, []), "categorical": (0, [3, 2])}
#: Image encoder defaults (overridable through ``conformance_kwargs``).
IMAGE_DEFAULTS = {"in_chans": 1, "image_size": 32}
#: Hyper-parameters a search may tune that are optimiser settings, not constructor arguments.
OPTIMISER_PARAMS = ("lr", "weight_decay")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    message: str = ""
    skipped: bool = False  # not applicable to this plug-in (counts as passed)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "skip" if self.skipped else "pass" if self.passed else "FAIL"


class CheckFailed(AssertionError):
    """A conformance violation; the message names the problem and the fix."""


class _NotApplicable(Exception):
    pass


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


CheckFn = Callable[[type], CheckResult]
CHECKS: dict[str, dict[str, CheckFn]] = {kind: {} for kind in KINDS}


def _check(kinds: str | tuple[str, ...], name: str) -> Callable[[Callable[[type], str]], CheckFn]:
    """Register ``fn(cls) -> detail`` as the check ``name``; it becomes ``check(cls) -> CheckResult``."""

    def wrap(fn: Callable[[type], str]) -> CheckFn:
        def check(cls: type) -> CheckResult:
            t0 = time.perf_counter()
            try:
                with torch.random.fork_rng(devices=[]):
                    detail = fn(cls)
                passed, skipped, message = True, False, detail or ""
            except _NotApplicable as exc:
                passed, skipped, message = True, True, str(exc)
            except CheckFailed as exc:
                passed, skipped, message = False, False, str(exc)
            except Exception as exc:  # any crash of the plug-in is a failed check, never a kit crash
                passed, skipped, message = False, False, _one_line(exc)
            return CheckResult(name, passed, message, skipped, time.perf_counter() - t0)

        check.__name__ = f"check_{name}"
        check.__doc__ = fn.__doc__
        for kind in (kinds,) if isinstance(kinds, str) else kinds:
            CHECKS[kind][name] = check
        return check

    return wrap


# --------------------------------------------------------------------------------------------------
# building instances and inputs


def _kwargs(cls: type) -> dict:
    kwargs = getattr(cls, "conformance_kwargs", {})
    _require(isinstance(kwargs, dict), f"{cls.__name__}.conformance_kwargs must be a dict, got {type(kwargs).__name__}")
    return dict(kwargs)


def fusion_dims(cls: type) -> FusionDims:
    tokens = TABULAR_TOKENS if getattr(cls, "needs_tabular_tokens", False) else 1
    return FusionDims(**FUSION_DIMS, tabular_tokens=tokens)


def build_fusion(cls: type, *, n_classes: int = 3, seed: int = 0, **overrides) -> Fusion:
    torch.manual_seed(seed)
    return cls(dims=fusion_dims(cls), n_classes=n_classes, **{**_kwargs(cls), **overrides})


def fusion_inputs(cls: type, *, seed: int = 0, batch: int = BATCH) -> list[Tensor]:
    """``[image_tokens, image_pooled, tabular_tokens, tabular_pooled]`` of random content."""
    dims = fusion_dims(cls)
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, dims.image_tokens, dims.image_token, generator=g),
        torch.randn(batch, dims.image_pooled, generator=g),
        torch.randn(batch, dims.tabular_tokens, dims.tabular_token, generator=g),
        torch.randn(batch, dims.tabular_pooled, generator=g),
    ]


def _masks(batch: int = BATCH) -> dict[str, tuple[Tensor, Tensor]]:
    """Availability patterns: some samples miss the image and others the tabular data; a whole batch missing one."""
    ones = torch.ones(batch, dtype=torch.bool)
    image, tabular = ones.clone(), ones.clone()
    image[1] = image[4] = False
    tabular[2] = False
    return {
        "mixed": (image, tabular),
        "no image in the batch": (~ones, ones.clone()),
        "no tabular data in the batch": (ones.clone(), ~ones),
    }


_MODALITY_INPUTS = {"image": (0, 1), "tabular": (2, 3)}


def _with_missing(inputs: list[Tensor], image: Tensor, tabular: Tensor, fill: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """Copies of ``inputs`` whose rows of missing samples hold ``fill(row shape)`` content."""
    out = [x.clone() for x in inputs]
    for modality, available in (("image", image), ("tabular", tabular)):
        for i in _MODALITY_INPUTS[modality]:
            out[i][~available] = fill(out[i][~available])
    return out


def _tabular_inputs(n_num: int, cards: list[int], *, seed: int = 0, batch: int = BATCH):
    g = torch.Generator().manual_seed(seed)
    x_num = torch.randn(batch, n_num, generator=g)
    x_cat = torch.stack([torch.randint(0, c, (batch,), generator=g) for c in cards], 1) if cards else None
    return x_num, x_cat


def build_tabular(cls: type, n_num: int, cards: list[int], *, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls(n_num=n_num, cat_cardinalities=list(cards), **_kwargs(cls))


def _image_kwargs(cls: type) -> dict:
    return {**IMAGE_DEFAULTS, **_kwargs(cls)}


def build_image(cls: type, *, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls(**_image_kwargs(cls))


def _image_inputs(cls: type, *, seed: int = 0, batch: int = BATCH) -> tuple[Tensor]:
    kw = _image_kwargs(cls)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, kw["in_chans"], kw["image_size"], kw["image_size"], generator=g),)


def _encoder_build_and_inputs(kind: str, cls: type, seed: int = 0) -> tuple[nn.Module, tuple]:
    if kind == "tabular_encoder":
        n_num, cards = FEATURE_SETS["mixed"]
        return build_tabular(cls, n_num, cards, seed=seed), _tabular_inputs(n_num, cards)
    return build_image(cls, seed=seed), _image_inputs(cls)


def _outputs(out: Any) -> dict[str, Tensor]:
    """The tensors of a module's output, by name (logits and aux losses, or tokens and pooled)."""
    if isinstance(out, FusionOutput):
        return {"logits": out.logits, **{f"aux_losses[{k!r}]": v for k, v in out.aux_losses.items()}}
    return {"tokens": out.tokens, "pooled": out.pooled}


def _readout_loss(out: Any, seed: int = 1) -> Tensor:
    """Random read-outs of every output (a plain sum gives exactly-zero gradients through a norm)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(out, FusionOutput):
        loss = (out.logits * torch.randn(out.logits.shape, generator=g)).sum()
        return loss + sum(out.aux_losses.values(), torch.zeros(()))
    return sum(((t * torch.randn(t.shape, generator=g)).sum() for t in (out.tokens, out.pooled)), torch.zeros(()))


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


# --------------------------------------------------------------------------------------------------
# checks shared by every kind


def _accepted_kwargs(cls: type) -> tuple[set[str], bool]:
    params = inspect.signature(cls.__init__).parameters
    names = {p.name for p in params.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names - {"self"}, any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_constructor(cls: type, required: tuple[str, ...]) -> None:
    names, var_kw = _accepted_kwargs(cls)
    missing = [r for r in required if r not in names and not var_kw]
    _require(not missing, f"{cls.__name__}.__init__ must accept the keyword arguments {missing} (see bench/api.py)")
    unknown = sorted(set(_kwargs(cls)) - names) if not var_kw else []
    _require(not unknown, f"{cls.__name__}.conformance_kwargs names {unknown}, which __init__ does not accept")


def _check_search_space(cls: type, build: Callable[[dict], Any]) -> str:
    space = getattr(cls, "search_space", {})
    _require(isinstance(space, dict), f"{cls.__name__}.search_space must be a dict name -> spec, got {type(space).__name__}")
    if not space:
        return "empty (nothing to tune)"
    names, var_kw = _accepted_kwargs(cls)
    summary = []
    for param, spec in space.items():
        where = f"{cls.__name__}.search_space[{param!r}]"
        _require(isinstance(param, str) and param, f"{where}: names must be non-empty strings")
        _require(isinstance(spec, dict), f"{where} must be a dict such as {{'type': 'categorical', 'choices': [...]}}")
        kind = spec.get("type", "categorical")
        _require(kind == "categorical", f"{where}: type {kind!r} is not supported; use 'categorical' with 'choices'")
        choices = spec.get("choices")
        _require(isinstance(choices, list | tuple) and len(choices) > 0, f"{where}: 'choices' must be a non-empty list")
        if param in OPTIMISER_PARAMS:
            _require(all(isinstance(c, int | float) and c >= 0 for c in choices), f"{where}: choices must be non-negative numbers")
            summary.append(f"{param}: {len(choices)} choices (optimiser)")
            continue
        _require(param in names or var_kw, f"{where}: {param!r} is neither a constructor argument nor one of {list(OPTIMISER_PARAMS)}")
        for choice in choices:
            try:
                build({param: choice})
            except Exception as exc:
                raise CheckFailed(f"{where}: building with {param}={choice!r} fails: {_one_line(exc)}") from exc
        summary.append(f"{param}: {len(choices)} choices built")
    return "; ".join(summary)


def _check_deterministic(make: Callable[[int], tuple[nn.Module, tuple, dict]]) -> str:
    outs = []
    for _ in range(2):
        module, args, kwargs = make(7)
        module.train()  # dropout active: still reproducible under the same seed
        torch.manual_seed(99)
        outs.append(_outputs(module(*args, **kwargs)))
    _require(outs[0].keys() == outs[1].keys(), f"outputs differ in their keys: {sorted(outs[0])} vs {sorted(outs[1])}")
    for key in outs[0]:
        _require(
            torch.equal(outs[0][key], outs[1][key]),
            f"{key} differs between two runs under the same seed (max |diff| {_max_diff(outs[0][key], outs[1][key]):.3g}); "
            "draw randomness from torch's global generator only",
        )
    return f"train mode, seeded: identical {', '.join(outs[0])}"


def _check_state_dict(make: Callable[[int], tuple[nn.Module, tuple, dict]]) -> str:
    a, args, kwargs = make(0)
    b, _, _ = make(1)
    a.eval()
    b.eval()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, map_location="cpu", weights_only=True)  # how the harness reloads heads
    except Exception as exc:
        raise CheckFailed(f"state_dict does not reload with torch.load(weights_only=True): {_one_line(exc)}; "
                          "keep only tensors in it") from exc
    b.load_state_dict(state, strict=True)
    with torch.no_grad():
        out_a, out_b = _outputs(a(*args, **kwargs)), _outputs(b(*args, **kwargs))
    for key in out_a:
        _require(torch.equal(out_a[key], out_b[key]),
                 f"{key} differs after load_state_dict (max |diff| {_max_diff(out_a[key], out_b[key]):.3g}); "
                 "register every tensor the forward pass uses as a parameter or buffer")
    return f"{len(state)} tensor(s); identical outputs after reload"


def _check_gradients(module: nn.Module, loss: Tensor) -> str:
    loss.backward()
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        return "no trainable parameters"
    unreached = [n for n, p in params if p.grad is None]
    _require(not unreached, f"no gradient reaches {unreached}; use every parameter in forward or set requires_grad=False")
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    _require(not bad, f"non-finite gradients in {bad}")
    zero = [n for n, p in params if not bool(p.grad.abs().sum() > 0)]
    _require(len(zero) < len(params), "every parameter gradient is exactly zero")
    shown = ", ".join(zero[:3]) + (", ..." if len(zero) > 3 else "")
    note = f"; {len(zero)} exactly zero at this input (zero-initialised layers?): {shown}" if zero else ""
    return f"{len(params)} parameter tensor(s) reached{note}"


def _check_flops(module: nn.Module, args: tuple) -> str:
    from bench.profile import count_gmac

    result = count_gmac(module, args)
    _require(result.gmac >= 0, f"negative multiply-add count {result.gmac}")
    uncounted = sum(result.uncounted_ops.values())
    return f"{result.gmac * 1e3:.4g} MMac at batch {BATCH}; {uncounted} call(s) left uncounted"


# --------------------------------------------------------------------------------------------------
# fusion checks


@_check(MODEL_KINDS, "load")
def _load(cls: type) -> str:
    """The registry entry resolves to a class of the right kind."""
    return f"{cls.__module__}:{cls.__qualname__}"


# --------------------------------------------------------------------------------------------------
# protocol checks: on a small preprocessed table (5 numeric, 2 categorical columns, 20 rows)


def _protocol_case(cls: type):
    import numpy as np

    from bench.protocols import PreparedTabular

    rng = np.random.default_rng(0)
    x_num = rng.normal(size=(20, 5)).astype(np.float32)
    x_cat = rng.integers(0, 3, size=(20, 2)).astype(np.int64)
    tab = PreparedTabular(x_num, x_cat, [f"n{i}" for i in range(5)], ["c0", "c1"], x_num.mean(0),
                          np.zeros(2, dtype=np.int64))
    spec = {"name": getattr(cls, "conformance_name", None) or _registered_name(cls),
            **getattr(cls, "conformance_spec", {})}
    return tab, spec, [*tab.num_names, *tab.cat_names][::-1]


def _registered_name(cls: type) -> str:
    return next(n for n, e in registry("protocol").entries.items() if e.target is cls)


@_check("protocol", "load")
def protocol_load(cls: type) -> str:
    """The registry entry is a :class:`bench.protocols.Protocol` subclass, and its default entry checks."""
    from bench.protocols import Protocol

    _require(isinstance(cls, type) and issubclass(cls, Protocol), f"{cls!r} is not a bench.protocols.Protocol subclass")
    _, spec, _ = _protocol_case(cls)
    cls().check(spec)
    return f"{cls.__module__}:{cls.__qualname__} ({spec})"


@_check("protocol", "data")
def protocol_data(cls: type) -> str:
    """``data`` keeps every column's shape and dtype, leaves the input untouched, is deterministic, and
    masks only columns of the table."""
    import numpy as np

    tab, spec, ranking = _protocol_case(cls)
    before = (tab.x_num.copy(), tab.x_cat.copy())
    a = cls().data(spec, tab, ranking)
    b = cls().data(spec, tab, ranking)
    _require(np.array_equal(tab.x_num, before[0]) and np.array_equal(tab.x_cat, before[1]),
             "data() changed the input table in place; copy before masking")
    for what, x, ref in (("x_num", a.x_num, tab.x_num), ("x_cat", a.x_cat, tab.x_cat)):
        _require(x.shape == ref.shape and x.dtype == ref.dtype, f"{what}: {x.shape} {x.dtype} for {ref.shape} {ref.dtype}")
    _require(np.array_equal(a.x_num, b.x_num) and np.array_equal(a.x_cat, b.x_cat), "two calls gave different data")
    unknown = set(a.masked_features) - set(ranking)
    _require(not unknown, f"masks {sorted(unknown)}, which are not columns of the table")
    return a.describe()


@_check("protocol", "missingness")
def protocol_missingness(cls: type) -> str:
    """``missingness`` is None or a sweep of image / tabular / cells with rates in [0, 1]."""
    from bench.protocols import MissingnessPlan

    _, spec, _ = _protocol_case(cls)
    plan = cls().missingness(spec)
    if plan is None:
        return "no sweep"
    _require(isinstance(plan, MissingnessPlan), f"returned a {type(plan).__name__}, not a MissingnessPlan")
    _require(plan.kind in ("image", "tabular", "cells"), f"kind {plan.kind!r}: use image, tabular or cells")
    rates = [*plan.train_rates, *plan.test_rates]
    _require(rates and all(0.0 <= r <= 1.0 for r in rates), f"rates {rates} outside [0, 1]")
    return plan.describe()


# --------------------------------------------------------------------------------------------------
# metric checks: on made-up labels and scores of each task the metric declares


def _metric_cases(metric, seed: int = 0) -> dict[str, tuple]:
    """Per declared task: labels, random logits and logits that rank every sample right."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cases = {}
    if "binary" in metric.tasks:
        y = np.array([0, 1] * 20)
        rng.shuffle(y)
        cases["binary"] = (y, rng.normal(size=y.size), np.where(y == 1, 3.0, -3.0))
    if "multiclass" in metric.tasks:
        y = np.arange(60) % 6
        rng.shuffle(y)
        cases["multiclass"] = (y, rng.normal(size=(y.size, 6)), 6.0 * np.eye(6)[y] - 3.0)
    return cases


@_check("metric", "load")
def metric_load(metric) -> str:
    """The registry entry is a :class:`bench.metrics.Metric` for binary and/or multiclass tasks."""
    from bench.metrics import Metric

    _require(isinstance(metric, Metric), f"registered object is a {type(metric).__name__}, not a bench.metrics.Metric; "
             "register a function with @register_metric(...)")
    _require(metric.tasks and set(metric.tasks) <= {"binary", "multiclass"},
             f"tasks {metric.tasks!r}: declare 'binary' and/or 'multiclass'")
    return f"{getattr(metric.fn, '__module__', '?')}:{getattr(metric.fn, '__qualname__', metric.name)} ({', '.join(metric.tasks)})"


@_check("metric", "finite")
def metric_finite(metric) -> str:
    """A finite float on random scores of every declared task."""
    out = []
    for task, (y, scores, _) in _metric_cases(metric).items():
        v = metric(y, scores)
        _require(isinstance(v, float) and v == v and abs(v) != float("inf"), f"{task}: returned {v!r} on random scores")
        out.append(f"{task} {v:.4g}")
    return ", ".join(out)


@_check("metric", "order_invariant")
def metric_order_invariant(metric) -> str:
    """Shuffling the samples (labels and scores together) does not change the value."""
    import numpy as np

    for task, (y, scores, _) in _metric_cases(metric).items():
        perm = np.random.default_rng(1).permutation(len(y))
        a, b = metric(y, scores), metric(y[perm], scores[perm])
        _require(abs(a - b) <= 1e-9 * max(1.0, abs(a)), f"{task}: {a!r} before and {b!r} after shuffling the samples")
    return "same value after shuffling"


@_check("metric", "direction")
def metric_direction(metric) -> str:
    """Scores that rank every sample right beat the same scores negated, in the declared direction."""
    out = []
    for task, (y, _, perfect) in _metric_cases(metric).items():
        good, bad = metric(y, perfect), metric(y, -perfect)
        better = good > bad if metric.higher_is_better else good < bad
        _require(better, f"{task}: perfect scores give {good:.4g}, reversed ones {bad:.4g}, but the metric declares "
                 f"{'higher' if metric.higher_is_better else 'lower'} is better")
        out.append(f"{task} {good:.4g} vs {bad:.4g}")
    return ", ".join(out)


@_check("fusion", "contract")
def fusion_contract(cls: type) -> str:
    """Subclass of bench.api.Fusion; boolean declarations; keyword-only constructor; builds."""
    _require(isinstance(cls, type) and issubclass(cls, Fusion), f"{cls!r} must be a subclass of bench.api.Fusion")
    flags = ("needs_tokens", "needs_tabular_tokens", "handles_missing")
    for attr in flags:
        _require(isinstance(getattr(cls, attr), bool), f"{cls.__name__}.{attr} must be True or False")
    _require(cls.fuse is not Fusion.fuse or cls.forward is not Fusion.forward, f"{cls.__name__} must implement fuse()")
    _check_constructor(cls, ("dims", "n_classes"))
    build_fusion(cls)
    return ", ".join(f"{a}={getattr(cls, a)}" for a in flags)


@_check("fusion", "search_space")
def fusion_search_space(cls: type) -> str:
    """Categorical specs over constructor arguments (or lr / weight_decay); every choice builds."""
    return _check_search_space(cls, lambda kw: build_fusion(cls, **kw))


@_check("fusion", "output_shapes")
def fusion_output_shapes(cls: type) -> str:
    """A FusionOutput with logits [B, n_classes] for n_classes 1 and 5."""
    for n_classes in (1, 5):
        fusion = build_fusion(cls, n_classes=n_classes).eval()
        with torch.no_grad():
            out = fusion(*fusion_inputs(cls))
        _require(isinstance(out, FusionOutput), f"forward must return a bench.api.FusionOutput, got {type(out).__name__}")
        _require(isinstance(out.logits, Tensor) and tuple(out.logits.shape) == (BATCH, n_classes),
                 f"logits must be [batch={BATCH}, n_classes={n_classes}], got {tuple(getattr(out.logits, 'shape', ()))}")
        _require(out.logits.is_floating_point(), f"logits must be floating point, got {out.logits.dtype}")
    return f"logits [{BATCH}, 1] and [{BATCH}, 5]"


@_check("fusion", "finite_outputs")
def fusion_finite_outputs(cls: type) -> str:
    """Finite logits; aux losses finite scalars; diagnostics finite and detached."""
    fusion = build_fusion(cls).train()
    out = fusion(*fusion_inputs(cls))
    _require(torch.isfinite(out.logits).all(), "logits contain NaN or inf")
    for key, loss in out.aux_losses.items():
        _require(isinstance(key, str), f"aux_losses keys must be strings, got {key!r}")
        _require(isinstance(loss, Tensor) and loss.ndim == 0, f"aux_losses[{key!r}] must be a scalar tensor")
        _require(torch.isfinite(loss), f"aux_losses[{key!r}] is not finite")
    for key, value in out.diagnostics.items():
        _require(isinstance(key, str), f"diagnostics keys must be strings, got {key!r}")
        _require(isinstance(value, Tensor), f"diagnostics[{key!r}] must be a tensor")
        _require(not value.requires_grad, f"diagnostics[{key!r}] requires grad; store value.detach()")
        _require(torch.isfinite(value).all(), f"diagnostics[{key!r}] is not finite")
    return f"{len(out.aux_losses)} aux loss(es), {len(out.diagnostics)} diagnostic(s)"


@_check("fusion", "gradients")
def fusion_gradients(cls: type) -> str:
    """Every trainable parameter gets a finite gradient from logits + aux losses (and, for a fusion
    that handles a missing modality, from a batch with missing modalities too)."""
    fusion = build_fusion(cls).train()
    loss = _readout_loss(fusion(*fusion_inputs(cls)))
    if cls.handles_missing:  # parameters used only for missing modalities (learned placeholders) count
        image, tabular = _masks()["mixed"]
        inputs = _with_missing(fusion_inputs(cls), image, tabular, torch.zeros_like)
        loss = loss + _readout_loss(fusion(*inputs, image, tabular), seed=2)
    return _check_gradients(fusion, loss)


@_check("fusion", "missing_modality")
def fusion_missing_modality(cls: type) -> str:
    """handles_missing=True: finite outputs under masks; False: a ValueError naming the missing modality."""
    fusion = build_fusion(cls).eval()
    inputs = fusion_inputs(cls)
    if cls.handles_missing:
        for label, (image, tabular) in _masks().items():
            with torch.no_grad():
                out = fusion(*_with_missing(inputs, image, tabular, torch.zeros_like), image, tabular)
            _require(tuple(out.logits.shape) == (BATCH, fusion.n_classes), f"{label}: logits shape {tuple(out.logits.shape)}")
            for key, value in _outputs(out).items():
                _require(torch.isfinite(value).all(), f"{label}: {key} is not finite under availability masks")
        return f"finite outputs for: {', '.join(_masks())}"
    image, tabular = _masks()["mixed"]
    for modality, masks in (("image", (image, None)), ("tabular", (None, tabular))):
        try:
            with torch.no_grad():
                fusion(*inputs, *masks)
        except ValueError as exc:
            _require(modality in str(exc), f"the ValueError for a missing {modality} modality must name it, got: {exc}")
        else:
            raise CheckFailed(f"handles_missing=False but a missing {modality} modality raised no ValueError; "
                              "call super().forward (bench.api.Fusion checks the masks) or set handles_missing=True")
    ones = torch.ones(BATCH, dtype=torch.bool)
    with torch.no_grad():
        fusion(*inputs, ones, ones)  # explicit all-available masks are fine
    return "handles_missing=False: a missing image or tabular modality raises a ValueError naming it"


@_check("fusion", "missing_invariance")
def fusion_missing_invariance(cls: type) -> str:
    """A sample's output does not depend on the content of its missing modality."""
    if not cls.handles_missing:
        raise _NotApplicable("handles_missing=False")
    fusion = build_fusion(cls).eval()
    inputs = fusion_inputs(cls)
    g = torch.Generator().manual_seed(5)
    noise = lambda x: 10 * torch.randn(x.shape, generator=g) + 3  # noqa: E731
    for label, (image, tabular) in _masks().items():
        with torch.no_grad():
            zeros = fusion(*_with_missing(inputs, image, tabular, torch.zeros_like), image, tabular).logits
            random = fusion(*_with_missing(inputs, image, tabular, noise), image, tabular).logits
        diff = (zeros - random).abs().amax(dim=1)
        changed = torch.nonzero(diff > 1e-5 * (1 + zeros.abs().amax(dim=1))).flatten().tolist()
        _require(not changed, f"{label}: logits of samples {changed} change with the content of a missing modality "
                              f"(max |diff| {float(diff.max()):.3g}); mask it out with the availability masks")
    return f"logits unchanged under random content in missing modalities ({len(_masks())} mask patterns)"


@_check("fusion", "reads")
def fusion_reads(cls: type) -> str:
    """``reads`` names image and/or tabular, and the output does not depend on a modality it leaves out."""
    reads = modalities_read(cls)
    _require(reads and set(reads) <= {"image", "tabular"} and len(set(reads)) == len(reads),
             f"{cls.__name__}.reads must name 'image' and/or 'tabular' once each, got {reads!r}")
    unread = [m for m in ("image", "tabular") if m not in reads]
    if not unread:
        return "reads image and tabular: the harness runs both encoders"
    fusion = build_fusion(cls).eval()
    inputs = fusion_inputs(cls)
    g = torch.Generator().manual_seed(6)
    changed = [x.clone() for x in inputs]
    for modality in unread:
        for i in _MODALITY_INPUTS[modality]:
            changed[i] = 10 * torch.randn(inputs[i].shape, generator=g) + 3
    with torch.no_grad():
        diff = _max_diff(fusion(*inputs).logits, fusion(*changed).logits)
    _require(diff == 0.0, f"reads={reads!r} but the logits change by {diff:.3g} with the {unread[0]} tensors; "
                          f"add {unread[0]!r} to reads")
    return f"reads {', '.join(reads)}: logits unchanged under random {unread[0]} tensors"


@_check("fusion", "missing_gradients")
def fusion_missing_gradients(cls: type) -> str:
    """No gradient flows into a missing modality's inputs (from logits or aux losses), whatever they hold."""
    if not cls.handles_missing:
        raise _NotApplicable("handles_missing=False")
    fusion = build_fusion(cls).train()
    for label, (image, tabular) in _masks().items():
        # random content in the missing rows: at zeros a leak such as x**2 would have zero gradient
        inputs = [x.requires_grad_(True) for x in fusion_inputs(cls)]
        torch.manual_seed(3)
        loss = _readout_loss(fusion(*inputs, image, tabular))
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        for modality, available in (("image", image), ("tabular", tabular)):
            for i in _MODALITY_INPUTS[modality]:
                grad = grads[i]
                if grad is None:
                    continue
                leak = float(grad[~available].abs().max()) if bool((~available).any()) else 0.0
                _require(leak == 0.0, f"{label}: gradient {leak:.3g} flows into the missing {modality} inputs; "
                                      "mask them out of the logits and aux losses")
    return f"zero gradient into missing inputs ({len(_masks())} mask patterns)"


def _fusion_make(cls: type) -> Callable[[int], tuple[nn.Module, tuple, dict]]:
    return lambda seed: (build_fusion(cls, seed=seed), tuple(fusion_inputs(cls)), {})


@_check("fusion", "deterministic")
def fusion_deterministic(cls: type) -> str:
    """Same seed, same logits and aux losses, in train mode."""
    return _check_deterministic(_fusion_make(cls))


@_check("fusion", "state_dict")
def fusion_state_dict(cls: type) -> str:
    """state_dict survives torch.save / torch.load(weights_only=True) and reproduces the outputs."""
    return _check_state_dict(_fusion_make(cls))


@_check("fusion", "flops")
def fusion_flops(cls: type) -> str:
    """fvcore can trace the fusion and count its multiply-adds (bench.profile.count_gmac)."""
    return _check_flops(build_fusion(cls), tuple(fusion_inputs(cls)))


# --------------------------------------------------------------------------------------------------
# encoder checks


def _declared_sizes(enc: nn.Module) -> str:
    for attr in ("d_out", "d_token"):
        value = getattr(enc, attr, None)
        _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{type(enc).__name__} must set self.{attr} to a positive int, got {value!r}")
    n_tokens = getattr(enc, "n_tokens", None)
    _require(n_tokens is None or (isinstance(n_tokens, int) and n_tokens > 0),
             f"{type(enc).__name__}.n_tokens must be a positive int, got {n_tokens!r}")
    return f"d_out={enc.d_out}, d_token={enc.d_token}, n_tokens={n_tokens if n_tokens is not None else '1 (undeclared)'}"


def _check_encoder_output(enc: nn.Module, out: Any, label: str = "") -> None:
    where = f"{label}: " if label else ""
    _require(isinstance(out, EncoderOutput), f"{where}forward must return a bench.api.EncoderOutput, got {type(out).__name__}")
    n_tokens = getattr(enc, "n_tokens", 1)
    _require(tuple(out.tokens.shape) == (BATCH, n_tokens, enc.d_token),
             f"{where}tokens must be [batch={BATCH}, n_tokens={n_tokens}, d_token={enc.d_token}], got {tuple(out.tokens.shape)}"
             + ("; declare self.n_tokens" if not hasattr(enc, "n_tokens") else ""))
    _require(tuple(out.pooled.shape) == (BATCH, enc.d_out),
             f"{where}pooled must be [batch={BATCH}, d_out={enc.d_out}], got {tuple(out.pooled.shape)}")
    _require(out.tokens.is_floating_point() and out.pooled.is_floating_point(), f"{where}outputs must be floating point")


@_check("tabular_encoder", "contract")
def tabular_contract(cls: type) -> str:
    """An nn.Module with a keyword-only (n_num, cat_cardinalities) constructor that declares its sizes."""
    _require(isinstance(cls, type) and issubclass(cls, nn.Module), f"{cls!r} must be a torch.nn.Module subclass")
    _check_constructor(cls, ("n_num", "cat_cardinalities"))
    n_num, cards = FEATURE_SETS["mixed"]
    return _declared_sizes(build_tabular(cls, n_num, cards))


@_check("tabular_encoder", "search_space")
def tabular_search_space(cls: type) -> str:
    """Categorical specs over constructor arguments; every choice builds."""
    n_num, cards = FEATURE_SETS["mixed"]
    return _check_search_space(cls, lambda kw: cls(n_num=n_num, cat_cardinalities=cards, **{**_kwargs(cls), **kw}))


@_check("tabular_encoder", "output_shapes")
def tabular_output_shapes(cls: type) -> str:
    """tokens [B, n_tokens, d_token] and pooled [B, d_out] for mixed, numeric-only and categorical-only features."""
    for label, (n_num, cards) in FEATURE_SETS.items():
        enc = build_tabular(cls, n_num, cards).eval()
        with torch.no_grad():
            _check_encoder_output(enc, enc(*_tabular_inputs(n_num, cards)), label)
    return f"{', '.join(FEATURE_SETS)} features"


@_check("tabular_encoder", "finite_outputs")
def tabular_finite_outputs(cls: type) -> str:
    """Finite tokens and pooled vectors."""
    for label, (n_num, cards) in FEATURE_SETS.items():
        enc = build_tabular(cls, n_num, cards).train()
        for key, value in _outputs(enc(*_tabular_inputs(n_num, cards))).items():
            _require(torch.isfinite(value).all(), f"{label}: {key} contains NaN or inf")
    return "tokens and pooled finite"


@_check("image_encoder", "contract")
def image_contract(cls: type) -> str:
    """An nn.Module with a keyword-only (in_chans, image_size) constructor that declares its sizes."""
    _require(isinstance(cls, type) and issubclass(cls, nn.Module), f"{cls!r} must be a torch.nn.Module subclass")
    _check_constructor(cls, ("in_chans", "image_size"))
    return _declared_sizes(build_image(cls))


@_check("image_encoder", "search_space")
def image_search_space(cls: type) -> str:
    """Categorical specs over constructor arguments; every choice builds."""
    return _check_search_space(cls, lambda kw: cls(**{**_image_kwargs(cls), **kw}))


@_check("image_encoder", "output_shapes")
def image_output_shapes(cls: type) -> str:
    """tokens [B, n_tokens, d_token] and pooled [B, d_out]."""
    enc = build_image(cls).eval()
    with torch.no_grad():
        _check_encoder_output(enc, enc(*_image_inputs(cls)))
    kw = _image_kwargs(cls)
    return f"{kw['in_chans']}x{kw['image_size']}x{kw['image_size']} images"


@_check("image_encoder", "finite_outputs")
def image_finite_outputs(cls: type) -> str:
    """Finite tokens and pooled vectors."""
    enc = build_image(cls).train()
    for key, value in _outputs(enc(*_image_inputs(cls))).items():
        _require(torch.isfinite(value).all(), f"{key} contains NaN or inf")
    return "tokens and pooled finite"


def _encoder_make(kind: str, cls: type) -> Callable[[int], tuple[nn.Module, tuple, dict]]:
    def make(seed: int) -> tuple[nn.Module, tuple, dict]:
        enc, args = _encoder_build_and_inputs(kind, cls, seed)
        return enc, args, {}

    return make


def _register_encoder_checks(kind: str) -> None:
    @_check(kind, "gradients")
    def gradients(cls: type) -> str:
        """Every trainable parameter gets a finite gradient from random read-outs of tokens and pooled."""
        enc, args = _encoder_build_and_inputs(kind, cls)
        enc.train()
        return _check_gradients(enc, _readout_loss(enc(*args)))

    @_check(kind, "deterministic")
    def deterministic(cls: type) -> str:
        """Same seed, same tokens and pooled, in train mode."""
        return _check_deterministic(_encoder_make(kind, cls))

    @_check(kind, "state_dict")
    def state_dict(cls: type) -> str:
        """state_dict survives torch.save / torch.load(weights_only=True) and reproduces the outputs."""
        return _check_state_dict(_encoder_make(kind, cls))

    @_check(kind, "flops")
    def flops(cls: type) -> str:
        """fvcore can trace the encoder and count its multiply-adds (bench.profile.count_gmac)."""
        enc, args = _encoder_build_and_inputs(kind, cls)
        return _check_flops(enc, args)


_register_encoder_checks("tabular_encoder")
_register_encoder_checks("image_encoder")


# --------------------------------------------------------------------------------------------------
# running


def check_names(kind: str) -> list[str]:
    """The checks of one kind, in the order they run."""
    _check_kind(kind)
    return list(CHECKS[kind])


def _check_kind(kind: str) -> None:
    if kind not in CHECKS:
        raise BenchError(f"the conformance kit checks {list(KINDS)}, not {kind!r}; pass --kind with one of them")


def _plugin_error(kind: str, name: str) -> str | None:
    return _registry.plugin_errors.get(f"{ENTRY_POINT_GROUPS[kind]}:{name}")


def infer_kind(name: str) -> str:
    """The kind a plug-in name is registered under; a one-line error when it is unknown or ambiguous."""
    kinds = [k for k in KINDS if name in registry(k) or _plugin_error(k, name)]
    if len(kinds) == 1:
        return kinds[0]
    if kinds:
        raise BenchError(f"{name!r} is registered as {' and '.join(kinds)}; pass --kind {kinds[0]} (or another)")
    known = {n: k for k in KINDS for n in registry(k).names()}
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(f'{c!r} ({known[c]})' for c in close)}?" if close else ""
    raise BenchError(f"unknown plug-in {name!r}.{hint} Run `python -m bench list` to see what is registered.")


def _resolve(kind: str, name: str) -> type:
    _check_kind(kind)
    error = _plugin_error(kind, name)
    if error and name not in registry(kind):
        raise CheckFailed(f"{kind} {name!r} failed to load: {error}; fix or reinstall the package that declares it")
    return registry(kind).get(name)


def run_check(kind: str, name: str, check: str) -> CheckResult:
    """Run one check of the kit on the registered plug-in ``name``."""
    if check not in check_names(kind):
        raise BenchError(f"unknown {kind} check {check!r}; choose from {check_names(kind)}")
    t0 = time.perf_counter()
    try:
        cls = _resolve(kind, name)
    except (CheckFailed, BenchError) as exc:
        return CheckResult(check, False, str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:
        return CheckResult(check, False, f"cannot load {kind} {name!r}: {_one_line(exc)}", seconds=time.perf_counter() - t0)
    return CHECKS[kind][check](cls)


def run_checks(kind: str, name: str) -> list[CheckResult]:
    """Every check of the kit on the registered plug-in ``name``; only ``load`` when it cannot be loaded."""
    results = [run_check(kind, name, "load")]
    if not results[0].passed:
        return results
    return results + [run_check(kind, name, check) for check in check_names(kind) if check != "load"]


def format_table(kind: str, name: str, results: list[CheckResult]) -> str:
    """The results as a plain-text table with a summary line."""
    entry = registry(kind).entries.get(name)
    origin = f" [{entry.origin}]" if entry is not None and entry.origin != "builtin" else " [builtin]" if entry else ""
    width = max(len(r.name) for r in results)
    lines = [f"{kind} {name!r}{origin}", f"  {'check':<{width}}  result  {'time':>6}  detail"]
    lines += [f"  {r.name:<{width}}  {r.status:<6}  {r.seconds:>5.2f}s  {r.message}" for r in results]
    failed = sum(not r.passed for r in results)
    skipped = sum(r.skipped for r in results)
    passed = len(results) - failed - skipped
    lines.append(f"{len(results)} checks: {passed} passed, {skipped} skipped, {failed} failed")
    return "\n".join(lines)
