"""Cost measurements for the leaderboard: parameters, multiply-adds, latency and peak memory.

Multiply-adds
    Counted with fvcore's :class:`~fvcore.nn.FlopCountAnalysis`, which traces the module with the
    JIT tracer and counts **one multiply-add as one** "flop"; its total divided by 1e9 is therefore
    GMac. fvcore only counts the operators it has a handle for (matmul, linear, conv, einsum, ...).
    We add handles where the count is well defined (``scaled_dot_product_attention``, ``baddbmm``,
    ``mv``, ...) and count operators that do no arithmetic at all (comparisons, logical ops, copies,
    indexing, max-pooling) as zero. Everything else -- elementwise arithmetic, activations,
    softmax, reductions, custom autograd functions such as a fused selective-scan kernel -- stays
    uncounted and is reported in :attr:`GmacResult.uncounted_ops` instead of being passed off as
    zero. Norm layers use fvcore's own estimate (4-5 operations per element); an ``einsum`` is
    counted as half of numpy's ``einsum_path`` FLOP estimate, so a product without summation (an
    outer or elementwise product) counts half a MAC per multiplication.

    Only the work the logits depend on is counted: the trace keeps the tensors a module returns and
    dead-code elimination drops the rest, so auxiliary losses and diagnostics (training-time
    extras of :class:`~bench.api.FusionOutput`) are not part of the inference cost.
    PyTorch's fused fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` is
    switched off while tracing so that its matrix products are visible to the counter.

Latency
    Wall-clock time per call under :func:`torch.inference_mode`, after warm-up calls: on CPU each
    call is timed with :func:`time.perf_counter_ns`; on CUDA with a pair of CUDA events per call
    (one synchronisation after all runs). We report percentiles, never assert on them.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import platform
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.api import FusionOutput

__all__ = [
    "GmacResult",
    "LatencyResult",
    "ProfileReport",
    "count_gmac",
    "count_parameters",
    "device_description",
    "measure_latency",
    "measure_module_latency",
    "peak_memory_mb",
    "profile_model",
]


# --------------------------------------------------------------------------------------------------
# parameters


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------------
# multiply-adds


@dataclass
class GmacResult:
    gmac: float  # counted multiply-adds / 1e9
    uncounted_ops: dict[str, int]  # op name -> number of calls that contributed nothing to `gmac`
    note: str  # one line for reports: what was and was not counted
    by_operator: dict[str, float] = field(default_factory=dict)  # GMac per counted operator


def _shape(value: Any) -> list[int]:
    shape = value.type().sizes() if value.isCompleteTensor() else None
    if shape is None:
        raise ValueError("operand shape unknown in the trace")
    return list(shape)


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # scaled_dot_product_attention(query [..., L, E], key [..., S, E], value [..., S, Ev], ...):
    # Q K^T costs (...)·L·S·E multiply-adds and softmax(.) V costs (...)·L·S·Ev. A causal mask is
    # not credited: the dense formula is the one the math kernel runs.
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    length_q, e, length_k, ev = q[-2], q[-1], k[-2], v[-1]
    return batch * length_q * length_k * e + batch * length_q * length_k * ev


def _baddbmm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # baddbmm / addbmm(input, batch1 [b, n, m], batch2 [b, m, p], ...)
    b, n, m = _shape(inputs[1])
    return b * n * m * _shape(inputs[2])[-1]


def _mv_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # mv(mat [n, m], vec [m])
    return prod(_shape(inputs[0]))


def _addmv_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # addmv(input, mat [n, m], vec [m], ...)
    return prod(_shape(inputs[1]))


def _dot_macs(inputs: list[Any], outputs: list[Any]) -> int:
    return prod(_shape(inputs[0]))


def _zero(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


_EXTRA_HANDLES: dict[str, Callable[[list[Any], list[Any]], Any]] = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::baddbmm": _baddbmm_macs,
    "aten::addbmm": _baddbmm_macs,
    "aten::mv": _mv_macs,
    "aten::addmv": _addmv_macs,
    "aten::dot": _dot_macs,
    "aten::vdot": _dot_macs,
}

# Operators that perform no multiply-add at all (comparisons, logic, copies, indexing, max):
# zero is their true count, as for the operators fvcore itself ignores (relu, max, cat, view...).
_ZERO_MAC_OPS = (
    "aten::all aten::any aten::ne aten::lt aten::le aten::isnan aten::isfinite aten::isinf "
    "aten::logical_and aten::logical_or aten::logical_not aten::logical_xor "
    "aten::bitwise_and aten::bitwise_or aten::bitwise_xor aten::where aten::masked_fill_ "
    "aten::masked_select aten::expand_as aten::view_as aten::reshape_as aten::unflatten "
    "aten::movedim aten::repeat aten::repeat_interleave aten::tile aten::flip aten::clone "
    "aten::index_select aten::embedding aten::scatter aten::argmax aten::argmin aten::amax aten::amin "
    "aten::max_pool1d aten::max_pool2d aten::max_pool3d aten::adaptive_max_pool1d "
    "aten::adaptive_max_pool2d aten::ones_like aten::empty_like aten::new_ones aten::fill_ "
    "aten::zero_ aten::lift_fresh aten::alias aten::detach_ aten::resolve_conj aten::resolve_neg"
).split()


def _tensors_of(out: Any) -> Tensor | tuple:
    """What the trace returns: the logits of a FusionOutput, tensors of (named) tuples and dicts."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, FusionOutput):
        return out.logits
    if isinstance(out, (tuple, list)):
        return tuple(_tensors_of(x) for x in out if x is not None)
    if isinstance(out, Mapping):
        return tuple(_tensors_of(out[k]) for k in sorted(out) if out[k] is not None)
    raise TypeError(f"cannot count multiply-adds of a module returning {type(out).__name__}")


class _TraceAdapter(nn.Module):
    """Calls ``module(*args, **kwargs)`` taking only the tensor arguments as inputs.

    Non-tensor arguments (``None`` masks, flags) are baked in as constants so the JIT tracer
    accepts them, and the output is reduced to tensors (a FusionOutput to its logits).
    """

    def __init__(self, module: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]):
        super().__init__()
        self.module = module
        self._args = list(args)
        self._kwargs = dict(kwargs)

    def tensor_inputs(self) -> tuple[Tensor, ...]:
        values = [*self._args, *self._kwargs.values()]
        return tuple(v for v in values if isinstance(v, Tensor))

    def forward(self, *tensors: Tensor) -> Tensor | tuple:
        it = iter(tensors)
        args = [next(it) if isinstance(a, Tensor) else a for a in self._args]
        kwargs = {k: next(it) if isinstance(v, Tensor) else v for k, v in self._kwargs.items()}
        return _tensors_of(self.module(*args, **kwargs))


def _guarded(op: str, handle: Callable, failures: Counter) -> Callable:
    def run(inputs: list[Any], outputs: list[Any]) -> Any:
        try:
            return handle(inputs, outputs)
        except Exception:  # a shape the handle cannot read: report the op as uncounted
            failures[op] += 1
            return 0

    return run


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    backend = getattr(torch.backends, "mha", None)
    if backend is None:
        yield
        return
    previous = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(previous)


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\S* is deprecated", category=FutureWarning)
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\S* is deprecated", category=DeprecationWarning
        )
        yield


def _note(uncounted: Mapping[str, int]) -> str:
    base = "fvcore multiply-adds (1 MAC = 1); matmul/linear/conv/einsum/attention counted"
    if not uncounted:
        return base + "; no operator left uncounted"
    calls = sum(uncounted.values())
    top = sorted(uncounted.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(f"{op} x{n}" for op, n in top[:8]) + (", ..." if len(top) > 8 else "")
    return (
        f"{base}; {calls} call(s) of {len(top)} operator(s) left uncounted "
        f"(elementwise/reductions/custom kernels, so GMac is a lower bound): {listed}"
    )


def _count_gmac(module: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> GmacResult:
    with _quiet_jit():  # importing fvcore runs torch.jit.script decorators
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    adapter = _TraceAdapter(module, args, kwargs)
    failures: Counter[str] = Counter()
    handles = {**_DEFAULT_SUPPORTED_OPS, **_EXTRA_HANDLES, **dict.fromkeys(_ZERO_MAC_OPS, _zero)}
    analysis = FlopCountAnalysis(adapter, adapter.tensor_inputs())
    analysis.set_op_handle(**{op: _guarded(op, h, failures) for op, h in handles.items()})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("no_tracer_warning")
    with _eval_mode(module), _no_mha_fastpath(), _quiet_jit():
        try:
            total = float(analysis.total())
        except Exception as exc:
            raise RuntimeError(
                f"could not trace {type(module).__name__} to count its multiply-adds: {exc}"
            ) from exc
        unsupported = analysis.unsupported_ops()
        per_op = analysis.by_operator()
    uncounted = Counter({op: int(n) for op, n in unsupported.items()}) + failures
    return GmacResult(
        gmac=total / 1e9,
        uncounted_ops=dict(sorted(uncounted.items())),
        note=_note(uncounted),
        by_operator={op: float(n) / 1e9 for op, n in sorted(per_op.items()) if n},
    )


def count_gmac(module: nn.Module, inputs: tuple) -> GmacResult:
    """Multiply-adds of ``module(*inputs)`` in GMac, and what fvcore left uncounted.

    ``inputs`` may contain ``None`` or other non-tensor values (they are fixed during the trace).
    The module is traced in eval mode (its train/eval state is restored afterwards); modules
    returning a :class:`~bench.api.FusionOutput` are counted up to their logits.
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    return _count_gmac(module, tuple(inputs), {})


# --------------------------------------------------------------------------------------------------
# latency and memory


@dataclass
class LatencyResult:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    device: str  # e.g. "cpu: AMD EPYC (2 threads)" or "cuda: NVIDIA H100 80GB HBM3"
    method: str  # "perf_counter_ns" (CPU) or "cuda_events" (CUDA)
    batch_size: int | None = None
    dtype: str | None = None
    warmup: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


#: the instruction-set flags that decide which CPU kernels PyTorch (oneDNN, its vectorised ops) can use
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_features() -> dict:
    """What a CPU speed figure depends on: model, vendor, ISA flags (:data:`ISA_FLAGS` present), cache
    sizes per level (``/sys/devices/system/cpu/cpu0/cache``), logical CPUs and PyTorch's chosen kernel
    level (``torch.backends.cpu.get_cpu_capability()``). Missing sources give empty fields, never an error."""
    flags: set[str] = set()
    vendor = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "vendor_id" and not vendor:
                    vendor = value.strip()
    except OSError:
        pass
    caches: dict[str, str] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(root.glob("index*")) if root.is_dir() else []:
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[name] = size
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an older torch
        capability = ""
    return {"model": _cpu_model_name(), "vendor": vendor, "isa": [f for f in ISA_FLAGS if f in flags],
            "caches": caches, "logical_cpus": os.cpu_count(), "torch_capability": capability}


def device_description(device: str | torch.device) -> str:
    """``"cpu: <model> (<torch threads> threads)"`` or ``"cuda: <GPU name>"``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda: {torch.cuda.get_device_name(index)}"
    if dev.type == "cpu":
        return f"cpu: {_cpu_model_name()} ({torch.get_num_threads()} threads)"
    return str(dev)


def measure_latency(
    fn: Callable[[], object],
    *,
    device: str | torch.device,
    warmup: int = 10,
    runs: int = 100,
    batch_size: int | None = None,
    dtype: str | torch.dtype | None = None,
) -> LatencyResult:
    """Per-call latency of ``fn()`` on ``device`` under :func:`torch.inference_mode`.

    ``warmup`` untimed calls come first. On CUDA each call is bracketed by two CUDA events and the
    device is synchronised before the first and after the last; on other devices each call is
    timed with :func:`time.perf_counter_ns` (for a non-CPU, non-CUDA device that is only right if
    ``fn`` synchronises). ``batch_size`` and ``dtype`` are recorded, not used.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dev = torch.device(device)
    times_ms: list[float]
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if dev.type == "cuda":
            method = "cuda_events"
            with torch.cuda.device(dev):
                starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
                ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
                torch.cuda.synchronize()
                for start, end in zip(starts, ends):
                    start.record()
                    fn()
                    end.record()
                torch.cuda.synchronize()
            times_ms = [start.elapsed_time(end) for start, end in zip(starts, ends)]
        else:
            method = "perf_counter_ns"
            times_ms = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                fn()
                times_ms.append((time.perf_counter_ns() - t0) / 1e6)
    t = np.asarray(times_ms, dtype=np.float64)
    return LatencyResult(
        p50_ms=float(np.percentile(t, 50)),
        p90_ms=float(np.percentile(t, 90)),
        mean_ms=float(t.mean()),
        runs=runs,
        device=device_description(dev),
        method=method,
        batch_size=batch_size,
        dtype=_dtype_name(dtype),
        warmup=warmup,
    )


def _dtype_name(dtype: str | torch.dtype | None) -> str | None:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return dtype


def _module_device(module: nn.Module, inputs: Sequence[Any] = ()) -> torch.device:
    for t in [*module.parameters(), *module.buffers(), *inputs]:
        if isinstance(t, Tensor):
            return t.device
    return torch.device("cpu")


def _module_dtype(module: nn.Module, inputs: Sequence[Any] = ()) -> str | None:
    for t in [*module.parameters(), *inputs]:
        if isinstance(t, Tensor) and t.is_floating_point():
            return _dtype_name(t.dtype)
    return None


def _batch_size(inputs: Sequence[Any]) -> int | None:
    for t in inputs:
        if isinstance(t, Tensor) and t.ndim >= 1:
            return int(t.shape[0])
    return None


def measure_module_latency(
    module: nn.Module, inputs: tuple, *, warmup: int = 10, runs: int = 100
) -> LatencyResult:
    """Latency of ``module(*inputs)`` in eval mode (state restored afterwards).

    Moves nothing: ``inputs`` must already be on the module's device. The device is the one of the
    module's first parameter (or first input), the batch size the first dimension of the first
    tensor input, the dtype that of the first floating-point parameter.
    """
    inputs = tuple(inputs)
    with _eval_mode(module):
        return measure_latency(
            lambda: module(*inputs),
            device=_module_device(module, inputs),
            warmup=warmup,
            runs=runs,
            batch_size=_batch_size(inputs),
            dtype=_module_dtype(module, inputs),
        )


def peak_memory_mb(fn: Callable[[], object], *, device: str | torch.device | None = None) -> float | None:
    """Peak CUDA memory allocated by tensors during one ``fn()`` call, in MiB (2**20 bytes).

    The peak includes what was already allocated when the call started (weights, inputs).
    ``device`` defaults to the current CUDA device when CUDA is available. On CPU the answer is
    ``None``: the process's max RSS only ever grows and is not attributable to one call, so no
    honest per-call figure exists without an allocator hook.
    """
    if device is None:
        if not torch.cuda.is_available():
            return None
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device(device)
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        fn()
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / 2**20


# --------------------------------------------------------------------------------------------------
# whole-model report


@dataclass
class ProfileReport:
    params_total: int
    params_trainable_total: int
    params_fusion: int
    gmac_total: float
    gmac_fusion: float
    uncounted_ops_total: dict[str, int]
    uncounted_ops_fusion: dict[str, int]
    gmac_note: str  # of the whole model
    latency_p50_ms: float  # whole model, batch `batch_size`
    latency_p90_ms: float
    fusion_latency_p50_ms: float  # fusion module alone, fed the encoders' outputs
    fusion_latency_p90_ms: float
    peak_memory_mb: float | None  # CUDA only; None on CPU
    device: str
    dtype: str | None
    batch_size: int | None
    runs: int
    warmup: int
    latency_method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _bind_positional(fn: Callable, kwargs: Mapping[str, Any], args: Sequence[Any] = ()) -> tuple:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    if bound.kwargs:
        raise TypeError(f"keyword-only arguments are not supported here: {sorted(bound.kwargs)}")
    return tuple(bound.args)


def profile_model(
    model: nn.Module, example: Mapping[str, Any], *, runs: int = 100, warmup: int = 10
) -> ProfileReport:
    """Parameters, GMac, latency and peak memory of a :class:`~bench.api.MultimodalModel`.

    ``example`` holds the keyword arguments of ``model.forward`` at batch 1 (``images``, ``x_num``
    and optionally ``x_cat`` and the availability masks); tensors are moved to the model's device
    once, before any measurement. The fusion-only figures are taken on ``model.fusion`` fed with
    exactly the arguments the model passes to it for this example (captured by a forward pre-hook
    during one run of the whole model).
    """
    fusion = getattr(model, "fusion", None)
    if not isinstance(fusion, nn.Module):
        raise TypeError(
            f"profile_model needs a MultimodalModel with a .fusion module, got {type(model).__name__}"
        )
    device = _module_device(model)
    example = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in example.items()}
    model_args = _bind_positional(model.forward, example)

    captured: list[tuple[tuple, dict]] = []

    def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not captured:
            captured.append((args, kwargs))

    with _eval_mode(model):
        hook = fusion.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad():  # not inference_mode: the captured tensors feed a JIT trace
                model(*model_args)
        finally:
            hook.remove()
        if not captured:
            raise RuntimeError(f"{type(model).__name__}.forward never called its fusion module")
        fusion_args = _bind_positional(fusion.forward, captured[0][1], captured[0][0])

        gmac_total = count_gmac(model, model_args)
        gmac_fusion = count_gmac(fusion, fusion_args)
        latency = measure_module_latency(model, model_args, warmup=warmup, runs=runs)
        fusion_latency = measure_module_latency(fusion, fusion_args, warmup=warmup, runs=runs)
        peak = peak_memory_mb(lambda: model(*model_args), device=device)

    # an encoder the model never runs (a single-modality baseline's other encoder) is not part of its cost
    unread = list(getattr(model, "unread_encoders", lambda: [])())
    return ProfileReport(
        params_total=count_parameters(model) - sum(count_parameters(m) for m in unread),
        params_trainable_total=count_parameters(model, trainable_only=True)
        - sum(count_parameters(m, trainable_only=True) for m in unread),
        params_fusion=count_parameters(fusion),
        gmac_total=gmac_total.gmac,
        gmac_fusion=gmac_fusion.gmac,
        uncounted_ops_total=gmac_total.uncounted_ops,
        uncounted_ops_fusion=gmac_fusion.uncounted_ops,
        gmac_note=gmac_total.note,
        latency_p50_ms=latency.p50_ms,
        latency_p90_ms=latency.p90_ms,
        fusion_latency_p50_ms=fusion_latency.p50_ms,
        fusion_latency_p90_ms=fusion_latency.p90_ms,
        peak_memory_mb=peak,
        device=latency.device,
        dtype=latency.dtype,
        batch_size=latency.batch_size,
        runs=runs,
        warmup=warmup,
        latency_method=latency.method,
    )
