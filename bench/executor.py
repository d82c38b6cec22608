"""Where a suite's final fits run: one after another in this process, or in ``--workers N`` forked processes.

The expensive, embarrassingly parallel part of a suite is the final fit of each seed (frozen heads, then
the trainable runs that warm-start from them). :func:`run_fits` runs one batch of such fits — the seeds
of one (fusion, strategy, protocol) — and returns when all are written:

* ``workers == 1``: in this process, in order, with the process's torch threads (the sequential loop);
* ``workers > 1``: in up to ``workers`` processes forked from this one, each with ``threads`` torch
  threads (by default this process's threads divided between them). A fork inherits the encoded
  features and the searched hyper-parameters without copying or pickling them; each child writes its own
  run directory, exactly as the sequential loop would, and reports its hook events (run start, epoch end,
  run end, failure) back over a queue, so hooks such as the MLflow logger run only in this process.

A fit that raises is recorded as failed by the child itself; a child that dies without writing its run
(killed, out of memory) is recorded as failed here, and the other fits go on. Results equal a sequential
execution of the same fits with the same threads per fit and the same seeds. ``fork`` exists on Linux
and macOS only; elsewhere the fits run in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.hooks import RunHooks
from bench.results import FAILED, RunSpec

__all__ = ["default_threads", "fork_available", "process_info", "run_fits"]

Fit = Callable[[RunSpec, RunHooks], None]
OnError = Callable[[RunSpec, BaseException, RunHooks], None]


def fork_available() -> bool:
    return "fork" in mp.get_all_start_methods()


def process_info() -> dict[str, Any]:
    """Where a fit ran, for its report: host, process id and the torch threads it had."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": torch.get_num_threads()}


def default_threads(workers: int) -> int:
    """This process's torch threads divided between ``workers`` processes (at least one each)."""
    return max(1, torch.get_num_threads() // max(1, workers))


class _Relay(RunHooks):
    """A child's hooks: every event goes over the queue to the parent, which calls the real hooks."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def run_start(self, spec, params):
        self.queue.put(("run_start", spec, params))

    def epoch_end(self, spec, epoch, metrics):
        self.queue.put(("epoch_end", spec, epoch, metrics))

    def run_end(self, spec, report, run_dir):
        self.queue.put(("run_end", spec, str(run_dir)))  # the parent reads the written report

    def run_failed(self, spec, reason, run_dir):
        self.queue.put(("run_failed", spec, reason, str(run_dir)))


def _child(fit: Fit, on_error: OnError, spec: RunSpec, queue, threads: int) -> None:
    """The body of one worker process: one fit, its failure recorded on the spot."""
    code = 0
    try:
        torch.set_num_threads(threads)
        try:  # Inductor's compile workers belong to the parent: compile in this process
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = 1
        except Exception:  # noqa: BLE001 - no Inductor: nothing to compile
            pass
        relay = _Relay(queue)
        try:
            fit(spec, relay)
        except Exception as exc:  # noqa: BLE001 - recorded as the sequential loop records it
            on_error(spec, exc, relay)
    except BaseException:  # noqa: BLE001 - never let a child unwind into the parent's code
        code = 1
    finally:
        os._exit(code)  # skip the parent's atexit handlers and finalizers, inherited by the fork


def _deliver(event: tuple, hooks: RunHooks) -> None:
    from bench.results import RunReport, check_json

    kind, spec, *rest = event
    if kind == "run_start":
        hooks.run_start(spec, rest[0])
    elif kind == "epoch_end":
        hooks.epoch_end(spec, rest[0], rest[1])
    elif kind == "run_end":
        rd = Path(rest[0])
        hooks.run_end(spec, RunReport.from_dict(check_json(rd / "report.json")), rd)
    elif kind == "run_failed":
        hooks.run_failed(spec, rest[0], Path(rest[1]))


def run_fits(specs: Sequence[RunSpec], fit: Fit, *, workers: int, hooks: RunHooks, on_error: OnError,
             run_dir_of: Callable[[RunSpec], Path], threads: int | None = None,
             on_done: Callable[[RunSpec], Any] | None = None) -> None:
    """Run ``fit(spec, hooks)`` for every spec (see the module docstring); ``on_done`` after each."""
    if workers <= 1 or len(specs) <= 1 or not fork_available():
        for sp in specs:
            try:
                fit(sp, hooks)
            except Exception as exc:  # noqa: BLE001 - a broken plug-in, a NaN loss: record, go on
                on_error(sp, exc, hooks)
            if on_done:
                on_done(sp)
        return
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    threads = threads or default_threads(workers)
    pending, running = list(specs), {}

    def drain() -> None:
        while not queue.empty():
            _deliver(queue.get(), hooks)

    while pending or running:
        while pending and len(running) < workers:
            sp = pending.pop(0)
            proc = ctx.Process(target=_child, args=(fit, on_error, sp, queue, threads), daemon=True)
            proc.start()
            running[sp] = proc
        drain()
        for sp, proc in list(running.items()):
            if proc.is_alive():
                continue
            proc.join()
            drain()
            del running[sp]
            rd = run_dir_of(sp)
            if proc.exitcode != 0 and not (rd / "DONE").exists() and not (rd / FAILED).exists():
                on_error(sp, RuntimeError(f"its worker process died (exit code {proc.exitcode}) before writing "
                                          "the run; run the suite again to redo it"), hooks)
            if on_done:
                on_done(sp)
        if running:
            time.sleep(0.02)
    drain()
