"""A pure-PyTorch Mamba (selective SSM) mixer, a drop-in twin of ``mamba_ssm.Mamba``.

``mamba_ssm`` ships CUDA kernels only. :class:`MambaCPU` has the same parameters (names, shapes,
initialisation) as ``mamba_ssm.Mamba(d_model, d_state, d_conv, expand, dt_rank="auto",
bias=False, conv_bias=True)``, so a ``state_dict`` moves between the two with ``strict=True``; it
runs anywhere PyTorch runs. :func:`make_mamba` picks the CUDA kernels when they can be used.

The recurrence (Gu & Dao, 2023, Algorithm 2), per channel ``d`` and state ``n``::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t        (A < 0, dt > 0)
    y_t = C_t . h_t + D * x_t

Two scans compute it:

* :func:`selective_scan_sequential` - the plain loop over time, differentiated by autograd. The
  readable reference.
* :func:`selective_scan_chunked` - the default. A custom autograd function that walks time in chunks
  of ``chunk_size`` steps: the per-chunk work that does not depend on the state (the decays
  ``exp(dt*A)``, the inputs ``dt*B*x``, the read-out ``C . h``, and every gradient reduction) is done
  for the whole chunk at once, the state update is one fused ``addcmul`` per step written into a
  chunk buffer, and only the state at each chunk boundary is kept for the backward pass, which
  recomputes a chunk's states from it and runs the reverse (adjoint) recurrence. Nothing of size
  ``[B, L, d_inner, d_state]`` is ever materialised, so the work stays in cache; the only
  exponentials taken are of ``dt*A <= 0``. Like ``mamba_ssm``'s ``selective_scan_fn`` it also
  takes the step size before its softplus and the gate ``z``, and applies both inside the chunk
  loop, where the data are in cache. On CPU each chunk's work is, by default, the same computation
  written as plain tensor expressions (:func:`_chunk_forward`, :func:`_chunk_backward`) and fused
  by ``torch.compile`` into a few C++/OpenMP loops (:class:`_FusedSelectiveScan`); without a
  working compiler it runs as separate eager ops (:class:`_ChunkedSelectiveScan`), with a warning.
  ``BENCH_FUSED_SCAN=0`` in the environment picks the eager chunks without compiling anything (the
  test suite does: compiling every shape variant its small suites sweep made its end-to-end smoke suite
  take 858 s on a 2-core AMD EPYC, against 234 s eager; the fused path has tests of its own).

Subnormal floats. FT-Mamba reads out only the last token (CLS), so in the backward the adjoint
``dL/dh_t`` decays by ``exp(dt A)`` per step backwards in time and, for most ``(d, n)``, crosses
float32's subnormal range before it reaches zero. Intel cores take a microcode assist on every
subnormal operand (AMD cores a much smaller penalty): on 2 Sapphire Rapids Xeon cores the twin ran
at half its speed for that alone. Both scans set adjoint entries below 2**-100 to zero
(:func:`_flush_tiny`), which changes no gradient above ~1e-30. Measured there with ``python -m
bench perf --only ft_mamba`` (the whole FT-Mamba, fwd+bwd, 423 features, batch 64): 68 samples/s
before; eager chunks with the flush 74.5; fused chunks with the flush 112 (5.1x mamba.py, 0.85x
the 1-head FT-Transformer).

:class:`MambaCPU` runs time-major (``[L, B, .]``, the scan's layout) from its input projection to
its output projection, so nothing of width ``d_inner`` is transposed, and its causal convolution
(+ SiLU) walks time in cache-sized blocks with its own backward (:func:`causal_depthwise_conv`).
Together with the fused softplus and gate this took the whole FT-Mamba's forward+backward (423
features, batch 64, d_token 64, 2 blocks) from 121 to 176 samples/s on the 2-core reference
machine (same process order, back to back).

NOTE[DIFF] (design of the chunked scan). Mamba-2 style "SSD" chunking (intra-chunk decay matrix
``exp(cumsum_t - cumsum_s)`` applied with einsum, state carried across chunks) does not pay off
for Mamba-1: here the decay depends on the channel *and* the state index, so the intra-chunk decay
matrix is ``[T, T]`` per ``(d, n)`` - ``T`` times the work of the recurrence itself - and the
cheap factorised (matmul) form needs ``exp(-cumsum)``, which overflows. A two-level variant (local
scans inside all chunks at once, a carry loop over chunks, then an ``exp(cumsum)`` correction)
is memory-bound on CPU and was slower than the plain loop. Measured on 2 CPU cores (B=64, L=424,
d_inner=128, d_state=16, forward+backward of the scan alone): this module's scan 0.11 s, the
sequential loop 1.4 s, mamba.py's parallel scan 1.7 s, the two-level cumsum variant about 3 s.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from baselines.ops import softplus_forward

__all__ = [
    "MambaCPU",
    "auto_chunk_size",
    "causal_depthwise_conv",
    "fused_scan_enabled",
    "fused_scan_failure",
    "make_mamba",
    "mamba_ssm_available",
    "selective_scan_chunked",
    "selective_scan_sequential",
]

ScanName = Literal["chunked", "sequential"]
#: Auto chunk size: chunk buffers [T, B, d_inner, d_state] of about this many elements (4 MiB in
#: float32) stay in cache; measured best on a 2-core EPYC for B 64-256, d_inner 64-256.
AUTO_CHUNK_ELEMENTS = 1 << 20
MAX_CHUNK_SIZE = 64


def auto_chunk_size(batch: int, d_inner: int, d_state: int) -> int:
    """The chunk length used when none is given: largest T with T*B*D*N <= 2**20, in [1, 64]."""
    return max(1, min(MAX_CHUNK_SIZE, AUTO_CHUNK_ELEMENTS // max(1, batch * d_inner * d_state)))


# --------------------------------------------------------------------------------------------
# Scans. Shapes: x, dt [B, L, D]; A [D, N] (negative); B, C [B, L, N]; D [D] -> y [B, L, D].
# --------------------------------------------------------------------------------------------


def _check_scan_args(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must be [batch, length, channels], however: x.shape={tuple(x.shape)}")
    if dt.shape != x.shape:
        raise ValueError(f"dt must have the shape of x, however: {tuple(dt.shape)=}, {tuple(x.shape)=}")
    if A.ndim != 2 or A.shape[0] != x.shape[2]:
        raise ValueError(f"A must be [channels, d_state], however: {tuple(A.shape)=}, {tuple(x.shape)=}")
    expected = (x.shape[0], x.shape[1], A.shape[1])
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} must be [batch, length, d_state]={expected}, however: {tuple(t.shape)}")
    if D is not None and tuple(D.shape) != (x.shape[2],):
        raise ValueError(f"D must be [channels], however: {tuple(D.shape)=}")


def selective_scan_sequential(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, *,
    z: Tensor | None = None, delta_softplus: bool = False,
) -> Tensor:
    """The selective scan as a plain loop over time (reference implementation, autograd backward).

    ``delta_softplus`` and ``z`` as in :func:`selective_scan_chunked` (with ``F.softplus``/``F.silu``).
    """
    _check_scan_args(x, dt, A, B, C, D)
    if delta_softplus:
        dt = F.softplus(dt)
    batch, length, _ = x.shape
    h = x.new_zeros(batch, A.shape[0], A.shape[1])  # [B, D, N]
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t, :, None] * A)  # [B, D, N], in (0, 1]
        h = decay * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))  # [B, D]
    y = torch.stack(ys, dim=1)
    y = y if D is None else y + D * x
    return y if z is None else y * F.silu(z)


class _ChunkedSelectiveScan(torch.autograd.Function):
    """``mamba_ssm``'s ``selective_scan_fn`` (without ``delta_bias``) as a chunked CPU function.

    ``y_t = C_t . h_t + D * x_t`` with ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``dt =
    softplus(delta)`` when ``delta_softplus`` else ``delta``, and ``out = y * silu(z)`` when ``z`` is
    given. The elementwise work around the recurrence (softplus, skip term, gate) is done chunk by
    chunk, on data that is in cache anyway, instead of as separate passes over ``[L, B, D]``.

    Time-major and state-major inside: a step's state is a contiguous ``[B, N, D]`` block (channel
    innermost), so that the read-outs over ``n`` are fast vector-matrix products.
    """

    @staticmethod
    def forward(ctx, xt: Tensor, delta: Tensor, A: Tensor, bt: Tensor, ct: Tensor, D: Tensor | None,
                zt: Tensor | None, delta_softplus: bool, chunk_size: int) -> Tensor:
        # time-major and contiguous: xt, delta, zt [L, B, D]; bt, ct [L, B, N]
        at = A.t().contiguous()  # [N, D]
        length, batch, d_inner = xt.shape
        n_chunks = -(-length // chunk_size)
        starts = xt.new_empty(n_chunks, batch, A.shape[1], d_inner)  # the state entering each chunk
        out = xt.new_empty(length, batch, d_inner)
        dtt = torch.empty_like(delta) if delta_softplus else delta
        work = _ChunkWork(xt, at, chunk_size, batch)
        h = xt.new_zeros(batch, A.shape[1], d_inner)
        for c in range(n_chunks):
            lo, hi = c * chunk_size, min(length, (c + 1) * chunk_size)
            if delta_softplus:
                _softplus_into(delta[lo:hi], dtt[lo:hi])
            starts[c].copy_(h)
            _, _, hs = work.states(starts[c], xt[lo:hi], dtt[lo:hi], bt[lo:hi])
            y = out[lo:hi]
            torch.matmul(ct[lo:hi, :, None, :], hs, out=y[:, :, None, :])  # sum_n C_t[n] h_t[n, :]
            if D is not None:
                y.addcmul_(xt[lo:hi], D)
            if zt is not None:
                y.mul_(F.silu(zt[lo:hi]))
            h = hs[-1]
        ctx.save_for_backward(xt, delta if delta_softplus else None, dtt, at, bt, ct, D, zt, starts)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        xt, delta, dtt, at, bt, ct, D, zt, starts = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        gout = gout.contiguous()
        length, batch, d_inner = xt.shape
        gx, gdt = torch.empty_like(xt), torch.empty_like(dtt)
        gb, gc = torch.empty_like(bt), torch.empty_like(ct)
        gat = torch.zeros_like(at)
        gD = None if D is None else torch.zeros_like(D)
        gz = None if zt is None else torch.empty_like(zt)
        work = _ChunkWork(xt, at, chunk_size, batch)
        gbuf, agbuf = torch.empty_like(work.decay), torch.empty_like(work.decay)
        ybuf = xt.new_empty(chunk_size, batch, d_inner)  # y recomputed for the gate, or a scratch row block
        # exp(dt_{t+1} A) * dL/dh_{t+1}: what flows from the next chunk into this chunk's last state
        carry = None
        for c in reversed(range(starts.shape[0])):
            lo, hi = c * chunk_size, min(length, (c + 1) * chunk_size)
            n = hi - lo
            decay, v, hs = work.states(starts[c], xt[lo:hi], dtt[lo:hi], bt[lo:hi])
            scratch = work.inp[:n]  # the chunk's inputs are no longer needed
            gy = gout[lo:hi]  # [n, B, D]: dL/d(out)
            if zt is not None:  # out = y * silu(z): recompute y from the states
                y = ybuf[:n]
                torch.matmul(ct[lo:hi, :, None, :], hs, out=y[:, :, None, :])
                if D is not None:
                    y.addcmul_(xt[lo:hi], D)
                torch.ops.aten.silu_backward.grad_input(gy * y, zt[lo:hi], grad_input=gz[lo:hi])
                gy = gy * F.silu(zt[lo:hi])  # dL/dy
            if D is not None:
                gD += torch.mul(gy, xt[lo:hi], out=ybuf[:n]).sum((0, 1))
            gyc = gy[:, :, None, :]  # [n, B, 1, D]
            # y_t = sum_n C_t[n] h_t[n, :]
            torch.sum(torch.mul(hs, gyc, out=scratch), -1, out=gc[lo:hi])
            g = torch.mul(ct[lo:hi, :, :, None], gyc, out=gbuf[:n])  # direct dL/dh_t
            # adjoint recurrence, backwards in time: g_t += exp(dt_{t+1} A) g_{t+1}
            if carry is not None:
                g[n - 1].add_(carry)
            for t in range(n - 1, -1, -1):
                if t < n - 1:
                    g[t].addcmul_(decay[t + 1], g[t + 1])
                g[t].masked_fill_(g[t].abs() < FLUSH_BELOW, 0.0)  # see _flush_tiny
            ag = torch.mul(decay, g, out=agbuf[:n])  # exp(dt_t A) g_t
            carry = ag[0].clone()
            # h_t receives B_t[n] v_t with v_t = dt_t x_t
            gv = torch.matmul(bt[lo:hi, :, None, :], g).squeeze(-2)  # [n, B, D]
            torch.sum(torch.mul(g, v[:, :, None, :], out=scratch), -1, out=gb[lo:hi])
            torch.mul(gv, dtt[lo:hi], out=gx[lo:hi])
            if D is not None:
                gx[lo:hi].addcmul_(gy, D)
            # decay_t = exp(dt_t A) multiplies h_{t-1}: dL/d(dt_t A) = exp(dt_t A) g_t h_{t-1}
            w = ag
            w[0].mul_(starts[c])
            if n > 1:
                w[1:].mul_(hs[:-1])
            gat += torch.mul(w, dtt[lo:hi, :, None, :], out=scratch).sum((0, 1))
            gdt_c = torch.sum(w.mul_(at), 2, out=gdt[lo:hi]).addcmul_(gv, xt[lo:hi])
            if delta is not None:  # dt = softplus(delta)
                torch.ops.aten.softplus_backward.grad_input(gdt_c, delta[lo:hi], 1.0, 20.0, grad_input=gdt_c)
        return gx, gdt, gat.t(), gb, gc, gD, gz, None, None


def _softplus_into(x: Tensor, out: Tensor) -> None:
    """``out = softplus(x)``: :func:`baselines.ops.softplus_forward` on CPU float32, else torch's."""
    if x.dtype == torch.float32 and x.device.type == "cpu":
        out.copy_(softplus_forward(x))
    else:
        torch.ops.aten.softplus.out(x, 1.0, 20.0, out=out)


class _ChunkWork:
    """Buffers ``[T, B, N, D]`` reused across chunks, and the per-chunk forward computation."""

    def __init__(self, like: Tensor, at: Tensor, chunk_size: int, batch: int):
        shape = (chunk_size, batch, *at.shape)
        self.decay = like.new_empty(shape)
        self.inp = like.new_empty(shape)
        self.hs = like.new_empty(shape)
        # exp(z) = 2**(z / ln 2): torch's exp2 is several times faster than its exp on CPU
        self.at_log2 = at * (1.0 / math.log(2.0))

    def states(self, h0: Tensor, x: Tensor, dt: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """States of one chunk (time-major inputs ``[n, B, .]``) from the state ``h0`` entering it.

        Returns ``decay = exp(dt*A)``, ``v = dt*x`` and the states ``h``; decay and h are views of the
        buffers, overwritten by the next call.
        """
        n = x.shape[0]
        decay = torch.mul(dt[:, :, None, :], self.at_log2, out=self.decay[:n]).exp2_()  # 2**(<= 0)
        v = dt * x
        inp = torch.mul(b[..., None], v[:, :, None, :], out=self.inp[:n])
        hs = self.hs[:n]
        h = h0
        for t in range(n):
            h = torch.addcmul(inp[t], decay[t], h, out=hs[t])
        return decay, v, hs


# --------------------------------------------------------------------------------------------
# The same chunk computation as plain tensor expressions, fused into a few loops by Inductor.
# --------------------------------------------------------------------------------------------


def _chunk_states(h0: Tensor, x: Tensor, delta: Tensor, at: Tensor, b: Tensor,
                  softplus: bool) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """A chunk's step sizes ``dt``, decays ``exp(dt A)``, inputs ``v = dt x`` and states ``h_t``
    (time-major ``[n, B, .]``, states ``[B, N, D]``) from the state ``h0`` entering it."""
    dt = F.softplus(delta) if softplus else delta
    decay = torch.exp(dt[:, :, None, :] * at)  # [n, B, N, D]
    v = dt * x
    inp = b[..., None] * v[:, :, None, :]
    h, states = h0, []
    for t in range(x.shape[0]):
        h = inp[t] + decay[t] * h
        states.append(h)
    return dt, decay, v, states


def _chunk_forward(h0: Tensor, x: Tensor, delta: Tensor, at: Tensor, b: Tensor, c: Tensor, D: Tensor | None,
                   z: Tensor | None, softplus: bool) -> tuple[Tensor, Tensor]:
    """One chunk of the forward scan (time-major ``[n, B, .]``, state ``[B, N, D]``): ``(out, h_last)``.

    Written as plain expressions so that Inductor fuses the whole chunk - step sizes, decays, the
    ``n`` state updates and read-outs, skip term and gate - into one pass over the chunk.
    """
    _, _, _, states = _chunk_states(h0, x, delta, at, b, softplus)
    y = torch.stack([(c[t][..., None] * h).sum(1) for t, h in enumerate(states)])  # C_t . h_t: [n, B, D]
    h = states[-1]
    if D is not None:
        y = y + D * x
    if z is not None:
        y = y * F.silu(z)
    return y, h


#: Adjoint entries smaller than this are set to zero (see :func:`_flush_tiny`).
FLUSH_BELOW = 2.0**-100


def _flush_tiny(g: Tensor) -> Tensor:
    """``g`` with entries of magnitude below :data:`FLUSH_BELOW` (7.9e-31) set to zero.

    Where only the last token is read out (FT-Mamba's CLS), the adjoint ``dL/dh_t`` decays by
    ``exp(dt A)`` per step backwards in time and, for most channels, passes through float32's
    subnormal range (below 1.2e-38) on its way to zero. Intel cores take a microcode assist on
    every subnormal operand (AMD's much cheaper), which halved the twin's training throughput on a
    Sapphire Rapids Xeon. An entry this small changes no gradient above ~1e-30.
    """
    return torch.where(g.abs() < FLUSH_BELOW, 0.0, g)


def _chunk_backward(h0: Tensor, x: Tensor, delta: Tensor, at: Tensor, b: Tensor, c: Tensor, D: Tensor | None,
                    z: Tensor | None, gout: Tensor, carry: Tensor, softplus: bool) -> tuple[Tensor, ...]:
    """One chunk of the backward scan: the states recomputed from ``h0``, the adjoint recurrence
    from ``carry`` (``exp(dt_{t+1} A) dL/dh_{t+1}`` flowing in from the next chunk), and every
    gradient of the chunk. Returns ``(gx, gdelta, gb, gc, gat, gD, gz, carry_out)``.
    """
    n = x.shape[0]
    dt, decay, v, states = _chunk_states(h0, x, delta, at, b, softplus)
    hs = torch.stack(states)  # [n, B, N, D]
    gy, gz = gout, None
    if z is not None:  # out = y * silu(z)
        y = (c[..., None] * hs).sum(2)
        if D is not None:
            y = y + D * x
        sig = torch.sigmoid(z)
        gz = gout * y * sig * (1 + z * (1 - sig))
        gy = gout * (z * sig)
    gD = None if D is None else (gy * x).sum((0, 1))
    gyc = gy[:, :, None, :]
    gc = (hs * gyc).sum(-1)
    direct = c[..., None] * gyc  # dL/dh_t through y_t
    g = _flush_tiny(direct[n - 1] + carry)
    adjoint = [g]
    for t in range(n - 2, -1, -1):
        g = _flush_tiny(direct[t] + decay[t + 1] * g)
        adjoint.append(g)
    g = torch.stack(adjoint[::-1])  # dL/dh_t
    ag = decay * g
    gv = (b[..., None] * g).sum(2)
    gb = (g * v[:, :, None, :]).sum(-1)
    gx = gv * dt if D is None else gv * dt + gy * D
    w = ag * torch.cat([h0[None], hs[:-1]])  # dL/d(dt_t A) = exp(dt_t A) g_t h_{t-1}
    gat = (w * dt[:, :, None, :]).sum((0, 1))
    gdt = (w * at).sum(2) + gv * x
    gdelta = gdt * torch.sigmoid(delta) if softplus else gdt
    return gx, gdelta, gb, gc, gat, gD, gz, ag[0]


def _probe(x: Tensor) -> Tensor:
    return torch.exp(x) * x + 1.0


#: Compiled variants kept per chunk function before further shapes run uncompiled.
RECOMPILE_LIMIT = 256


class _FusedChunks:
    """:func:`_chunk_forward` and :func:`_chunk_backward` compiled by ``torch.compile`` (Inductor's
    C++/OpenMP code on CPU), built once per process; the batch size is a dynamic dimension and
    chunk lengths are powers of two (:func:`_fused_bounds`), so a handful of compiled variants serve
    every shape. If compiling fails (no C++ compiler, an unsupported platform), a warning says so
    once, the chunk at hand runs the same function uncompiled, and later scans use the eager
    :class:`_ChunkedSelectiveScan`.
    """

    compiled: dict[str, Callable[..., tuple[Tensor, ...]]] = {}
    failed: str | None = None
    probed: bool = False

    @classmethod
    def usable(cls, like: Tensor) -> bool:
        """On CPU, once per process: does ``torch.compile`` build and run a small function here?
        (Never, without trying, when ``BENCH_FUSED_SCAN`` is ``0``, ``off`` or ``false``.)"""
        if like.device.type != "cpu" or not fused_scan_enabled():
            return False
        if not cls.probed:
            cls.probed = True
            try:
                torch.compile(_probe, fullgraph=True)(torch.linspace(-1.0, 1.0, 8))
            except Exception as exc:  # no C++ compiler, or a platform Inductor does not support
                cls.disable(exc)
        return cls.failed is None

    @classmethod
    def call(cls, fn: Callable[..., tuple[Tensor, ...]], *args) -> tuple[Tensor, ...]:
        """``fn(*args)`` through its compiled version; uncompiled if compiling it fails."""
        if cls.failed is None:
            try:
                if fn.__name__ not in cls.compiled:
                    # one compiled variant per (chunk length, dtype, optional inputs, sizes equal to
                    # 1): more than the default limit of 8 when tests sweep them; a suite uses a few
                    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
                    cls.compiled[fn.__name__] = torch.compile(fn, fullgraph=True, dynamic=True)
                return cls.compiled[fn.__name__](*args)
            except Exception as exc:
                if type(exc).__name__ == "FailOnRecompileLimitHit":
                    return fn(*args)  # yet another shape variant: this chunk uncompiled, the compiled ones stay
                cls.disable(exc)
        return fn(*args)

    @classmethod
    def disable(cls, exc: BaseException) -> None:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cls.failed = f"{type(exc).__name__}: {first_line}"
        warnings.warn(f"the fused Mamba scan could not be compiled ({cls.failed[:200]}); using the eager "
                      "chunked scan (same results, slower). Install a C++ compiler to fuse it.", stacklevel=3)


#: environment variable: ``0`` / ``off`` / ``false`` runs the eager chunked scan without compiling
FUSED_SCAN_ENV = "BENCH_FUSED_SCAN"


def fused_scan_enabled() -> bool:
    """Whether the environment leaves the fused scan on (``BENCH_FUSED_SCAN`` unset or not ``0/off/false``)."""
    return os.environ.get(FUSED_SCAN_ENV, "").strip().lower() not in ("0", "off", "false", "no")


def fused_scan_failure() -> str | None:
    """Why the chunked scan runs its chunks uncompiled in this process (``None``: it does not)."""
    return _FusedChunks.failed


def _fused_bounds(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """Chunk ``[lo, hi)`` bounds whose lengths are powers of two: ``chunk_size`` rounded down to one,
    and the remainder split by its binary digits (37 steps at 8: 8, 8, 8, 8, 4, 1)."""
    step = 1 << (max(1, chunk_size).bit_length() - 1)
    bounds, lo = [], 0
    while lo < length:
        while lo + step > length:
            step //= 2
        bounds.append((lo, lo + step))
        lo += step
    return bounds


class _FusedSelectiveScan(torch.autograd.Function):
    """The chunked scan of :class:`_ChunkedSelectiveScan` with each chunk's work fused by Inductor.

    Same algorithm (states at chunk boundaries kept, chunk states recomputed in the backward, the
    adjoint recurrence carried across chunks); each chunk's elementwise work and reductions run as
    a few compiled loops instead of ~20 separate passes over ``[n, B, N, D]`` buffers.
    """

    @staticmethod
    def forward(ctx, xt: Tensor, delta: Tensor, A: Tensor, bt: Tensor, ct: Tensor, D: Tensor | None,
                zt: Tensor | None, delta_softplus: bool, chunk_size: int) -> Tensor:
        at = A.t().contiguous()  # [N, D]
        length, batch, d_inner = xt.shape
        bounds = _fused_bounds(length, chunk_size)
        starts = xt.new_empty(len(bounds), batch, A.shape[1], d_inner)  # the state entering each chunk
        out = xt.new_empty(length, batch, d_inner)
        h = xt.new_zeros(batch, A.shape[1], d_inner)
        for c, (lo, hi) in enumerate(bounds):
            starts[c].copy_(h)
            y, h = _FusedChunks.call(_chunk_forward, starts[c], xt[lo:hi], delta[lo:hi], at, bt[lo:hi],
                                     ct[lo:hi], D, None if zt is None else zt[lo:hi], delta_softplus)
            out[lo:hi].copy_(y)
        ctx.save_for_backward(xt, delta, at, bt, ct, D, zt, starts)
        ctx.bounds, ctx.delta_softplus = bounds, delta_softplus
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        xt, delta, at, bt, ct, D, zt, starts = ctx.saved_tensors
        gout = gout.contiguous()
        gx, gdelta = torch.empty_like(xt), torch.empty_like(delta)
        gb, gc = torch.empty_like(bt), torch.empty_like(ct)
        gat = torch.zeros_like(at)
        gD = None if D is None else torch.zeros_like(D)
        gz = None if zt is None else torch.empty_like(zt)
        carry = torch.zeros_like(starts[0])  # exp(dt_{t+1} A) dL/dh_{t+1} from the next chunk
        for c in reversed(range(len(ctx.bounds))):
            lo, hi = ctx.bounds[c]
            cx, cdelta, cb, cc, c_at, cD, cz, carry = _FusedChunks.call(
                _chunk_backward, starts[c], xt[lo:hi], delta[lo:hi], at, bt[lo:hi], ct[lo:hi], D,
                None if zt is None else zt[lo:hi], gout[lo:hi], carry, ctx.delta_softplus)
            gx[lo:hi], gdelta[lo:hi], gb[lo:hi], gc[lo:hi] = cx, cdelta, cb, cc
            gat += c_at
            if gD is not None:
                gD += cD
            if gz is not None:
                gz[lo:hi] = cz
        return gx, gdelta, gat.t(), gb, gc, gD, gz, None, None


def selective_scan_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    z: Tensor | None = None,
    delta_softplus: bool = False,
    chunk_size: int | None = None,
    time_major: bool = False,
    fused: bool | None = None,
) -> Tensor:
    """The selective scan, chunked with a hand-written backward (see the module docstring).

    As ``mamba_ssm``'s ``selective_scan_fn(x, dt, A, B, C, D, z, delta_softplus=...)``:
    ``delta_softplus=True`` takes ``softplus(dt)`` as the step size, and ``z`` gates the result
    (``y * silu(z)``); both are computed inside the chunk loop. ``chunk_size=None`` picks
    :func:`auto_chunk_size`; the result does not depend on it. ``time_major=True``: ``x``, ``dt``,
    ``B``, ``C``, ``z`` and the result are ``[L, B, .]`` instead of ``[B, L, .]`` (the scan's own
    layout: no transposes in or out). ``fused``: each chunk's work compiled into a few loops by
    ``torch.compile`` (:class:`_FusedSelectiveScan`) or run as separate eager ops; ``None`` fuses on
    CPU when ``torch.compile`` works here. Same results to float32 rounding either way. Under
    ``torch.jit.trace`` (FLOP counting) or an outer ``torch.compile`` the eager ops run.
    """
    bm = (lambda t: t.transpose(0, 1)) if time_major else (lambda t: t)
    _check_scan_args(bm(x), bm(dt), A, bm(B), bm(C), D)
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must have the shape of x, however: {tuple(z.shape)=}, {tuple(x.shape)=}")
    if chunk_size is None:
        chunk_size = auto_chunk_size(bm(x).shape[0], A.shape[0], A.shape[1])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, however: {chunk_size=}")
    tm = (lambda t: t.contiguous()) if time_major else (lambda t: t.transpose(0, 1).contiguous())
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        fused = False  # a trace (fvcore's FLOP count) or an outer torch.compile records the eager ops
    elif fused is None:
        fused = _FusedChunks.usable(x)
    scan = _FusedSelectiveScan if fused else _ChunkedSelectiveScan
    y = scan.apply(tm(x), tm(dt), A, tm(B), tm(C), D, None if z is None else tm(z), bool(delta_softplus),
                   int(chunk_size))
    return y if time_major else y.transpose(0, 1)


SCANS = {"chunked": selective_scan_chunked, "sequential": selective_scan_sequential}


# --------------------------------------------------------------------------------------------
# The mixer.
# --------------------------------------------------------------------------------------------


#: Time steps per block of the causal convolution: a block of a [L, B, d_inner] tensor (and its
#: temporaries) of about this many elements stays in cache.
CONV_BLOCK_ELEMENTS = 1 << 18


class _CausalDepthwiseConv(torch.autograd.Function):
    """``y[t] = bias + sum_s w[K-1-s] * x[t-s]`` (``x[t] = 0`` for ``t < 0``), optionally ``silu(y)``.

    Forward and backward walk time in blocks of rows that stay in cache: one read of ``x`` (and of
    the incoming gradient) and one write of the result, where autograd through ``K`` shifted
    multiply-adds of the whole tensor made ~30 passes over memory for the backward alone. With
    ``silu`` the pre-activation is not kept; the backward recomputes it block by block.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, time_dim: int, silu: bool) -> Tensor:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        for t0, n in _CausalDepthwiseConv.blocks(x, time_dim):
            _CausalDepthwiseConv.pre_activation(x, weight, bias, time_dim, t0, n, out.narrow(time_dim, t0, n))
            if silu:
                F.silu(out.narrow(time_dim, t0, n), inplace=True)
        ctx.save_for_backward(x, weight, bias)
        ctx.time_dim, ctx.silu = time_dim, silu
        return out

    @staticmethod
    def blocks(x: Tensor, time_dim: int):
        length = x.shape[time_dim]
        step = max(1, CONV_BLOCK_ELEMENTS // max(1, x.numel() // max(1, length)))
        return [(t0, min(step, length - t0)) for t0 in range(0, length, step)]

    @staticmethod
    def pre_activation(x: Tensor, weight: Tensor, bias: Tensor | None, td: int, t0: int, n: int, out: Tensor):
        """Rows ``[t0, t0 + n)`` of the convolution (before any activation) into ``out``."""
        k = weight.shape[-1]
        w = weight[:, 0, :]  # [D, K]; tap K - 1 reads x_t, tap K - 1 - s reads x_{t - s}
        if bias is None:
            torch.mul(x.narrow(td, t0, n), w[:, k - 1], out=out)
        else:
            torch.addcmul(bias, x.narrow(td, t0, n), w[:, k - 1], out=out)
        for s in range(1, k):
            lo = max(t0, s)  # rows t >= s read x_{t - s}; earlier rows read the zero padding
            if lo < t0 + n:
                out.narrow(td, lo - t0, t0 + n - lo).addcmul_(x.narrow(td, lo - s, t0 + n - lo), w[:, k - 1 - s])

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, weight, bias = ctx.saved_tensors
        td, k = ctx.time_dim, weight.shape[-1]
        w = weight[:, 0, :]
        gx = torch.zeros_like(x, memory_format=torch.contiguous_format)
        gw = torch.zeros_like(w)
        gbias = None if bias is None else torch.zeros_like(bias)
        reduce_dims = list(range(x.ndim - 1))
        blocks = _CausalDepthwiseConv.blocks(x, td)
        block_shape = x.narrow(td, 0, blocks[0][1]).shape
        pre_buf = x.new_empty(block_shape) if ctx.silu else None
        tmp_buf = x.new_empty(block_shape)
        for t0, n in blocks:
            gp = g.narrow(td, t0, n)
            if ctx.silu:  # d silu(pre) / d pre, from the recomputed pre-activation
                pre = pre_buf.narrow(td, 0, n)
                _CausalDepthwiseConv.pre_activation(x, weight, bias, td, t0, n, pre)
                gp = torch.ops.aten.silu_backward.grad_input(gp, pre, grad_input=pre)
            if gbias is not None:
                gbias += gp.sum(reduce_dims)
            for s in range(k):
                lo = max(t0, s)
                if lo >= t0 + n:
                    continue
                rows = t0 + n - lo
                g_rows = gp.narrow(td, lo - t0, rows)
                x_rows = x.narrow(td, lo - s, rows)
                gx.narrow(td, lo - s, rows).addcmul_(g_rows, w[:, k - 1 - s])
                gw[:, k - 1 - s] += torch.mul(g_rows, x_rows, out=tmp_buf.narrow(td, 0, rows)).sum(reduce_dims)
        return gx, gw[:, None, :], gbias, None, None


def causal_depthwise_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, time_dim: int = 1, silu: bool = False
) -> Tensor:
    """``conv1d(x.transpose(1, 2), weight, bias, padding=K - 1, groups=D)[..., :L].transpose(1, 2)``.

    ``x`` ``[B, L, D]`` (or ``[L, B, D]`` with ``time_dim=0``), ``weight`` ``[D, 1, K]`` (the
    ``nn.Conv1d`` parameter); ``silu=True`` returns ``silu`` of it. Computed as ``K`` shifted
    multiply-adds per block of time steps, with its own backward (:class:`_CausalDepthwiseConv`),
    in the input's layout: conv + SiLU forward and backward of a ``[424, 64, 128]`` time-major input
    took 17.8 ms on the 2-core reference machine, vs 18.3 ms for ``conv1d`` + SiLU on the transposed
    batch-major tensor and 21.6 ms for the same shifted multiply-adds through autograd. Same values
    to float32 rounding.
    """
    if time_dim not in (0, 1):
        raise ValueError(f"time_dim must be 0 or 1, however: {time_dim=}")
    if x.ndim != 3 or weight.ndim != 3 or weight.shape[:2] != (x.shape[-1], 1):
        raise ValueError(f"need x [., ., D] and weight [D, 1, K], however: {tuple(x.shape)=}, {tuple(weight.shape)=}")
    return _CausalDepthwiseConv.apply(x, weight, bias, time_dim, silu)


class MambaCPU(nn.Module):
    """Pure-PyTorch twin of ``mamba_ssm.Mamba``: same state_dict keys, shapes and initialisation.

    Input and output ``[batch, length, d_model]``. ``scan`` picks the selective-scan implementation;
    ``fused`` (chunked scan only) whether its chunks run compiled by ``torch.compile`` (``None``: on
    CPU when it works here).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | Literal["auto"] = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: Literal["random", "constant"] = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        *,
        scan: ScanName = "chunked",
        chunk_size: int | None = None,
        fused: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        for name, value in (
            ("d_model", d_model),
            ("d_state", d_state),
            ("d_conv", d_conv),
            ("expand", expand),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, however: {name}={value!r}")
        if dt_rank != "auto" and (not isinstance(dt_rank, int) or dt_rank < 1):
            raise ValueError(f"dt_rank must be 'auto' or a positive integer, however: {dt_rank=}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, however: {dt_min=}, {dt_max=}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', however: {dt_init=}")
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {sorted(SCANS)}, however: {scan=}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, however: {chunk_size=}")
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.scan = scan
        self.chunk_size = chunk_size
        self.fused = fused  # the chunked scan's chunks compiled by torch.compile (None: when it works)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

        # dt_proj: weight ~ U(-s, s) (or = s), s = dt_rank^-0.5 * dt_scale; the bias is chosen so that
        # softplus(bias) = dt with dt log-uniform in [dt_min, dt_max] (floored at dt_init_floor).
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, std)
            else:
                nn.init.uniform_(self.dt_proj.weight, -std, std)
            log_lo, log_hi = math.log(dt_min), math.log(dt_max)
            dt = torch.exp(torch.rand(self.d_inner, **factory) * (log_hi - log_lo) + log_lo)
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]  (as mamba_ssm marks it)

        # S4D-real: A[d, n] = -(n + 1), stored as log(-A) so A stays negative under training.
        a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a).to(dtype or torch.float32))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device, dtype=dtype or torch.float32))
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

    def forward(self, hidden_states: Tensor) -> Tensor:
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"expected input [batch, length, {self.d_model}], however: {tuple(hidden_states.shape)}"
            )
        # Computed time-major ([L, B, .], the scan's layout), so that nothing of width d_inner is
        # transposed; x and z come from the two halves of in_proj's weight as separate contiguous
        # tensors (elementwise kernels run ~7x slower on the strided halves of one output).
        u = hidden_states.transpose(0, 1).contiguous()  # [L, B, d_model]
        w_x, w_z = self.in_proj.weight.split(self.d_inner)
        b_x, b_z = (None, None) if self.in_proj.bias is None else self.in_proj.bias.split(self.d_inner)
        x, z = F.linear(u, w_x, b_x), F.linear(u, w_z, b_z)  # [L, B, d_inner] each
        x = causal_depthwise_conv(x, self.conv1d.weight, self.conv1d.bias, time_dim=0, silu=True)
        dt, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj(dt)  # [L, B, d_inner]; the step size is softplus(delta) > 0
        A = -torch.exp(self.A_log.float())  # [d_inner, d_state], < 0
        dtype = x.dtype
        args = (x.float(), delta.float(), A, b.float(), c.float(), self.D.float())
        if self.scan == "chunked":  # softplus, skip term and gate y * silu(z) inside the chunk loop
            y = selective_scan_chunked(*args, z=z.float(), delta_softplus=True, chunk_size=self.chunk_size,
                                       time_major=True, fused=self.fused)
        else:
            batch_major = [t.transpose(0, 1) if t.ndim == 3 else t for t in args]
            y = selective_scan_sequential(*batch_major, z=z.float().transpose(0, 1), delta_softplus=True)
            y = y.transpose(0, 1)
        return self.out_proj(y.to(dtype)).transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}, scan={self.scan!r}"
        )


# --------------------------------------------------------------------------------------------
# Backend choice.
# --------------------------------------------------------------------------------------------

Backend = Literal["auto", "cpu", "cuda"]


def mamba_ssm_available() -> bool:
    """True when CUDA is usable and ``mamba_ssm`` (an optional extra, CUDA-only) imports."""
    if not torch.cuda.is_available():
        return False
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # ImportError, or a missing/mismatched CUDA extension (OSError, RuntimeError)
        return False
    return True


def make_mamba(
    d_model: int,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    backend: Backend = "auto",
    *,
    scan: ScanName = "chunked",
    chunk_size: int | None = None,
) -> nn.Module:
    """A Mamba mixer: ``mamba_ssm.Mamba`` (CUDA kernels) or :class:`MambaCPU` (same state_dict).

    ``backend``: ``"cuda"`` requires ``mamba_ssm``; ``"cpu"`` always gives :class:`MambaCPU` (which
    also runs on a GPU, only slower); ``"auto"`` takes ``mamba_ssm`` when CUDA is available and it
    imports, else :class:`MambaCPU`. ``scan`` and ``chunk_size`` only concern :class:`MambaCPU`.
    """
    if backend not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'cuda', however: {backend=}")
    use_cuda = backend == "cuda" or (backend == "auto" and mamba_ssm_available())
    if use_cuda:
        try:
            from mamba_ssm import Mamba
        except Exception as exc:
            raise ImportError(
                "backend='cuda' needs the optional mamba-ssm package (CUDA only): "
                "pip install -e '.[cuda]' --no-build-isolation; or use backend='cpu'"
            ) from exc
        return Mamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return MambaCPU(
        d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, scan=scan, chunk_size=chunk_size
    )
