"""Where a suite's work runs: the plan in this process (:func:`execute_plan`); the final fits in this
process, ``--workers N`` forked processes or on Ray; pretraining, encoding and classical models also on Ray.

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

With ``--backend ray`` (:class:`RayPlacement`) each fit is a Ray task with declared resources (CPUs, GPUs)
anywhere on the cluster, and so are each encoder pair's contrastive pretraining (:func:`pretrain_on_ray`),
the frozen features the plan reads (:func:`encode_on_ray`) and the classical models of the reference rows
(:func:`reference_fits_on_ray`, started without waiting; their rows are written before the leaderboard).
A task writes into a scratch folder on its node and returns the files; this process writes them into
``--out`` (and the pretraining checkpoint into its cache), so the nodes need no shared file system and
nothing half-written ever lands in a run directory. Files a fit reads from ``--out`` (the frozen head a
trainable run warm-starts from) travel with the task. A task whose worker or node dies is retried by Ray
(``max_retries``); finished runs are already written and are never lost. Each report names the host,
process and Ray node its fit ran on.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.hooks import RunHooks
from bench.results import FAILED, RunSpec

__all__ = ["RayPlacement", "check_order", "default_threads", "encode_on_ray", "execute_plan", "fork_available",
           "pretrain_on_ray", "process_info", "reference_fits_on_ray", "run_fits", "tasks_to_run"]

Fit = Callable[[RunSpec, RunHooks], None]
OnError = Callable[[RunSpec, BaseException, RunHooks], None]


def fork_available() -> bool:
    return "fork" in mp.get_all_start_methods()


def process_info() -> dict[str, Any]:
    """Where a fit ran, for its report: host, process id, the torch threads it had and, on Ray, the node."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": torch.get_num_threads()}
    node = ray_node_id()
    if node:
        info["ray_node_id"] = node
    return info


def ray_node_id() -> str | None:
    """The Ray node this process runs on, when it is part of a Ray cluster (None otherwise)."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - a Ray without a runtime context: not on a cluster
        return None


def default_threads(workers: int) -> int:
    """This process's torch threads divided between ``workers`` processes (at least one each)."""
    return max(1, torch.get_num_threads() // max(1, workers))


class _Relay(RunHooks):
    """A worker's hooks: every event is handed to ``put`` (a forked child's queue, a Ray task's list), and
    the parent calls the real hooks with it (:func:`_deliver`)."""

    def __init__(self, put: Callable[[tuple], Any]) -> None:
        self.put = put

    def run_start(self, spec, params):
        self.put(("run_start", spec, params))

    def epoch_end(self, spec, epoch, metrics):
        self.put(("epoch_end", spec, epoch, metrics))

    def run_end(self, spec, report, run_dir):
        self.put(("run_end", spec, str(run_dir)))  # the parent reads the written report

    def run_failed(self, spec, reason, run_dir):
        self.put(("run_failed", spec, reason, str(run_dir)))


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
        relay = _Relay(queue.put)
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
             on_done: Callable[[RunSpec], Any] | None = None, ray: RayPlacement | None = None) -> None:
    """Run ``fit(spec, hooks)`` for every spec (see the module docstring); ``on_done`` after each.

    With ``ray``, ``fit`` must also offer ``inputs(spec) -> {path under --out: bytes}`` (the files it
    reads) and ``relocated(out) -> fit`` (the same fit writing and reading under another folder), as
    :class:`bench.method.FinalFit` does, and ``run_dir_of(spec)`` must be ``--out``/<suite>/runs/<run id>.
    """
    if ray is not None:
        _run_fits_ray(specs, fit, ray, hooks=hooks, on_error=on_error, run_dir_of=run_dir_of, on_done=on_done)
        return
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


# ------------------------------------------------------------------------------------- the plan
def tasks_to_run(tasks: Sequence) -> list[bool]:
    """Which of a plan's tasks :func:`execute_plan` runs: every pending task, and every finished task whose
    output a task that runs reads."""
    runs = [False] * len(tasks)
    needed: set = set()
    for i in range(len(tasks) - 1, -1, -1):
        t = tasks[i]
        if not t.done or t.key in needed:
            runs[i] = True
            needed.update(t.deps)
    return runs


def check_order(tasks: Sequence, runs: Sequence[bool]) -> None:
    """Raise before anything runs if a task that runs is planned before, or in the same batch as, a task
    that also runs and that it reads (``deps``) or must follow (``after``): a planner bug, never a user's."""
    index = {t.key: i for i, t in enumerate(tasks)}
    batch_start: list[int] = []  # batch mates run together: a task is as early as its batch's first task
    for i, t in enumerate(tasks):
        same = i > 0 and t.batch is not None and tasks[i - 1].batch == t.batch
        batch_start.append(batch_start[-1] if same else i)
    for i, t in enumerate(tasks):
        for key in (*t.deps, *t.after) if runs[i] else ():
            j = index.get(key)
            if j is not None and runs[j] and batch_start[j] >= batch_start[i]:
                raise RuntimeError(f"plan order: {t.kind} {t.name!r} needs {key} first, but it is planned "
                                   f"{'in the same batch' if batch_start[j] == batch_start[i] else 'later'}")


def execute_plan(tasks: Sequence, handlers: dict[str, Callable], *, on_skip: Callable | None = None) -> dict:
    """Run a plan (:func:`bench.plan.plan_suite`) in its order: every pending task, and every finished
    task whose output a task that runs reads (a cached pretraining is loaded, not trained again). The
    order is checked first (:func:`check_order`): nothing runs under a plan that reads what it makes later.

    ``handlers[kind](task, inputs)`` makes a task's output, ``inputs`` being its ``deps``' outputs by key;
    consecutive tasks with one ``batch`` key go to their handler together, as a list (one method's seeds,
    for :func:`run_fits`). An output is dropped as soon as the last task reading it has run, so one pair's
    and one setting's features are released before the next ones are encoded. ``on_skip(task)`` is told of
    every task that does not need to run. Returns the outputs still held (those no task read).
    """
    runs = tasks_to_run(tasks)
    check_order(tasks, runs)
    last_read: dict = {}
    for i, t in enumerate(tasks):
        if runs[i]:
            for dep in t.deps:
                last_read[dep] = i
    store: dict = {}
    i = 0
    while i < len(tasks):
        t = tasks[i]
        j = i + 1
        if t.batch is not None:
            while j < len(tasks) and tasks[j].batch == t.batch:
                j += 1
        todo = [tasks[k] for k in range(i, j) if runs[k]]
        for k in range(i, j):
            if not runs[k] and on_skip is not None:
                on_skip(tasks[k])
        if todo:
            missing = [d for task in todo for d in task.deps if d not in store]
            if missing:
                raise RuntimeError(f"plan order: {todo[0].kind} {todo[0].name!r} reads {missing[0]}, not made before it")
            if t.batch is None:
                store[t.key] = handlers[t.kind](t, {d: store[d] for d in t.deps})
            else:
                outputs = handlers[t.kind](todo, {d: store[d] for task in todo for d in task.deps})
                store.update(zip((task.key for task in todo), outputs or [None] * len(todo)))
        for k in range(i, j):
            for dep in tasks[k].deps:
                if runs[k] and last_read.get(dep) == k:
                    store.pop(dep, None)
        i = j
    return store


# ---------------------------------------------------------------------------------------------- Ray
def _open_memmap(filename: str, dtype: str, shape: tuple, offset: int, fortran: bool):
    import numpy as np

    return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def _memmap_reducer(a):
    """A whole read-only memory-mapped array (a large dataset's images) pickles as its file, not its bytes."""
    import mmap

    import numpy as np

    if isinstance(a.base, mmap.mmap) and a.filename and a.mode == "r":
        return _open_memmap, (str(a.filename), a.dtype.str, a.shape, int(a.offset), bool(np.isfortran(a)))
    return a.__reduce_ex__(5)  # a view, or a writable map: its data


@contextlib.contextmanager
def memmaps_by_path():
    """Inside the block, whole read-only ``np.memmap`` arrays pickle by path (``copyreg``), so a task sent
    to a Ray worker carries the dataset's file name, not gigabytes of pixels; the workers must see the
    same path (the README's cluster setup). Nothing else changes how it pickles."""
    import copyreg

    import numpy as np

    before = copyreg.dispatch_table.get(np.memmap)
    copyreg.pickle(np.memmap, _memmap_reducer)
    try:
        yield
    finally:
        if before is None:
            copyreg.dispatch_table.pop(np.memmap, None)
        else:
            copyreg.dispatch_table[np.memmap] = before


@dataclass(frozen=True)
class RayPlacement:
    """What each fit and pretraining asks of the Ray cluster (budget ``cluster``, else ``search.ray``)."""

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 2

    @classmethod
    def from_budget(cls, budget: dict, address: str | None, use_gpu: bool) -> RayPlacement:
        trial = budget.get("search", {}).get("ray", {})
        cfg = {**{"cpus_per_task": trial.get("cpus_per_trial", 1), "gpus_per_task": trial.get("gpus_per_trial", 1),
                  "max_retries": trial.get("max_failures", 2)}, **budget.get("cluster", {})}
        return cls(address, float(cfg["cpus_per_task"]), float(cfg["gpus_per_task"]) if use_gpu else 0.0,
                   int(cfg["max_retries"]))

    def remote(self, fn, *, gpu: bool = True):
        """``fn`` as a Ray task with these resources (the cluster joined first); ``gpu`` False: CPU-only
        code (a classical model) that must not hold a GPU."""
        from bench.search.ray_search import connect, require_ray

        ray = require_ray()
        connect(self.address)
        return ray.remote(fn).options(num_cpus=self.cpus, num_gpus=self.gpus if gpu else 0.0,
                                      max_retries=self.max_retries, retry_exceptions=False)

    def threads(self) -> int:
        return max(1, int(self.cpus))


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ray_fit(fit, spec: RunSpec, inputs: dict[str, bytes], threads: int) -> dict:
    """One final fit on a Ray worker, in a scratch ``--out``; returns the run's files and the hook events."""
    from bench.allocator import keep_freed_memory
    from bench.results import run_dir

    keep_freed_memory()  # a worker process does not start through bench's command line
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as tmp:
        out = Path(tmp)
        for rel, blob in inputs.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(blob)
        events: list[tuple] = []  # returned with the result; the driver delivers them for its own run folder
        error = None
        try:
            fit.relocated(out)(spec, _Relay(events.append))
        except Exception as exc:  # noqa: BLE001 - recorded by the driver as the local loop records it
            error = exc
        files = _files_under(run_dir(out, spec)) if error is None else {}
    if error is not None:
        try:  # the exception travels back pickled; one that cannot is sent as its text
            import pickle

            pickle.dumps(error)
        except Exception:  # noqa: BLE001
            error = RuntimeError(f"{type(error).__name__}: {error}")
    return {"files": files, "events": events, "error": error}


def _write_files(rd: Path, files: dict[str, bytes]) -> None:
    """A fit's files into its run directory, ``DONE`` last (a crash in between leaves an unfinished run)."""
    from bench.results import FAILED, atomic_write_bytes

    for marker in ("DONE", FAILED):
        if (rd / marker).exists():
            (rd / marker).unlink()
    for rel in sorted(files, key=lambda r: r == "DONE"):
        atomic_write_bytes(rd / rel, files[rel])


def _run_fits_ray(specs, fit, placement: RayPlacement, *, hooks, on_error, run_dir_of, on_done) -> None:
    import ray

    task = placement.remote(_ray_fit)
    with memmaps_by_path():  # the features and searched settings, sent to the object store once per batch
        fit_ref = ray.put(fit)
        refs = {task.remote(fit_ref, sp, fit.inputs(sp), placement.threads()): sp for sp in specs}
    for sp, result, exc in _as_completed(ray, refs):
        if exc is not None:  # its worker or node died more often than Ray retries
            on_error(sp, RuntimeError(f"its Ray task failed after {placement.max_retries} retries "
                                      f"({type(exc).__name__}); run the suite again to redo it"), hooks)
        else:
            rd = run_dir_of(sp)
            if result["error"] is None:
                _write_files(rd, result["files"])
            for kind, spec, *rest in result["events"]:
                _deliver((kind, spec, *(rest if kind != "run_end" else [str(rd)])), hooks)
            if result["error"] is not None:
                on_error(sp, result["error"], hooks)
        if on_done:
            on_done(sp)


def _as_completed(ray, refs: dict):
    """``(key, result, exception)`` of each Ray task in ``refs`` (``{ref: key}``) as it finishes; the
    exception (None on success) is that of a task that failed more often than Ray retried it."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            result, error = ray.get(ready[0]), None
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which records or raises it
            result, error = None, exc
        yield refs[ready[0]], result, error


def _failed(doing: str, name: str, exc: BaseException) -> RuntimeError:
    return RuntimeError(f"{doing} {name} on the Ray cluster failed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})")


def _submit(ray, task, threads: int, calls: dict[str, tuple[Callable, tuple]]) -> dict:
    """``task.remote(fn, threads, *args)`` for each ``calls[name] = (fn, args)``: ``{object ref: name}``.

    An argument over 1 MiB (the images) goes to the object store once however many calls read it (memory-mapped
    arrays by their file, :func:`memmaps_by_path`); arguments are top-level, so Ray resolves the references."""
    with memmaps_by_path():
        shared: dict[int, Any] = {}  # ``calls`` keeps the arrays alive, so their ids stay theirs
        return {task.remote(fn, threads, *(_put_once(ray, shared, a) for a in args)): name
                for name, (fn, args) in calls.items()}


def _put_once(ray, shared: dict[int, Any], a, min_bytes: int = 1 << 20):
    """``a`` itself, or — when it holds more than ``min_bytes`` — its object-store reference, put there on the
    first call for this object (``shared`` maps ``id(a)`` to it; the caller keeps ``a`` alive meanwhile)."""
    if getattr(a, "nbytes", 0) <= min_bytes:
        return a
    if id(a) not in shared:
        shared[id(a)] = ray.put(a)
    return shared[id(a)]


def _ray_job(fn, threads: int, *args) -> tuple[Any, dict]:
    """``fn(*args)`` on a Ray worker with ``threads`` torch threads; returns its result and where it ran."""
    from bench.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    return fn(*args), process_info()


def jobs_on_ray(jobs: dict[str, tuple[Callable, tuple]], placement: RayPlacement, doing: str, did: str,
                say: Callable[[str], Any] = print,
                on_done: Callable[[str, Any], Any] | None = None) -> dict[str, tuple[Any, dict]]:
    """Run ``jobs[name] = (fn, args)`` at once on the cluster and wait for all: ``{name: (fn(*args), where)}``.

    The driver's stages that are not fits use it (pretraining, encoding, the importance model, the unimodal
    probes); ``on_done(name, result)`` takes each result as it arrives (stores it; what it returns is kept
    instead), so a job that fails — it raises here, naming it, after Ray's retries — loses no other finished
    job, and stored results are not held until the last one. ``doing`` / ``did`` name
    the work in that error and in the log line ("pretraining" / "pretrained")."""
    import ray

    refs = _submit(ray, placement.remote(_ray_job), placement.threads(), jobs)
    done: dict[str, tuple[Any, dict]] = {}
    for name, result, exc in _as_completed(ray, refs):
        if exc is not None:
            raise _failed(doing, name, exc) from exc
        done[name] = (on_done(name, result[0]) if on_done is not None else result[0], result[1])
        say(f"[bench] {did} {name} on Ray node {result[1].get('ray_node_id', '?')[:12]} "
            f"({result[1]['host']}, pid {result[1]['pid']})")
    return done


def _pretrained_checkpoint(kwargs: dict) -> bytes:
    """One pair's contrastive pretraining (on a Ray worker), into a scratch cache; returns the checkpoint."""
    from bench.pretrain import pretrain_pair

    before = os.environ.get("BENCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        os.environ["BENCH_CACHE"] = tmp  # never read a stale checkpoint on this node: this task trains
        try:
            _, _, info = pretrain_pair(**kwargs)
            return Path(info["cache_path"]).read_bytes()
        finally:
            if before is None:
                os.environ.pop("BENCH_CACHE", None)
            else:
                os.environ["BENCH_CACHE"] = before


def pretrain_on_ray(jobs: dict[str, tuple[dict, Path]], placement: RayPlacement,
                    say: Callable[[str], Any] = print) -> dict[str, dict]:
    """Pretrain several pairs at once on the cluster: ``jobs[name] = (pretrain_pair kwargs, local cache path)``.

    Each checkpoint is written to its local cache path, where :func:`bench.pretrain.pretrain_pair` then
    finds it; returns where each pair trained. A pair whose task fails raises here, naming it.
    """
    def store(name: str, blob: bytes) -> None:
        path = jobs[name][1]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)

    calls = {name: (_pretrained_checkpoint, ({**kw, "progress": None},)) for name, (kw, _) in jobs.items()}
    done = jobs_on_ray(calls, placement, "pretraining", "pretrained", say=say, on_done=store)
    return {name: where for name, (_, where) in done.items()}


def _encoded_on_cpu(compute, *args) -> tuple:
    """One set of frozen features (:func:`bench.features.encode_images` / ``encode_tabular``), on the CPU."""
    return tuple(None if t is None else t.cpu() for t in compute(*args))


def encode_on_ray(jobs: dict[str, tuple[Callable, tuple, Path]], placement: RayPlacement,
                  say: Callable[[str], Any] = print) -> dict[str, dict]:
    """Encode several feature sets at once on the cluster: ``jobs[name] = (compute, args, cache path)``.

    Each result is stored at its cache path (:func:`bench.features.store_features`), where the suite's
    encode tasks then find it; returns where each set was encoded. A job whose task fails raises here.
    One copy of the images goes to the object store, however many encoders read them.
    """
    from bench.features import store_features

    calls = {name: (_encoded_on_cpu, (compute, *args)) for name, (compute, args, _) in jobs.items()}
    done = jobs_on_ray(calls, placement, "encoding", "encoded", say=say,
                       on_done=lambda name, out: store_features(jobs[name][2], out))
    return {name: where for name, (_, where) in done.items()}


def _ray_reference_fit(how: str, x, y, split, task: str, seed: int, n_classes: int) -> tuple:
    """One classical model of a reference row (:data:`bench.reference.FITTERS`) on a Ray worker."""
    from bench.reference import FITTERS

    scores, info = FITTERS[how](x, y, split, task, seed, n_classes=n_classes)
    return scores, info, process_info()


def reference_fits_on_ray(jobs: dict[tuple, tuple], placement: RayPlacement) -> dict[tuple, Callable[[], tuple]]:
    """Start classical fits on the cluster without waiting: ``jobs[key] = (model, x, y, split, task, seed,
    n_classes)``; returns, by key, a promise (a function that waits for ``(scores, info, where)``), the
    value :func:`bench.reference.write_reference_runs` accepts in its ``memo``. Ray retries a fit whose
    node died; one that still fails raises when its row is written."""
    import ray

    task = placement.remote(_ray_reference_fit, gpu=False)  # scikit-learn and LightGBM run on CPUs
    inputs: dict[int, Any] = {}
    promises: dict[tuple, Callable[[], tuple]] = {}
    for key, (how, x, y, split, kind, seed, n_classes) in jobs.items():
        # one design matrix, several models and seeds (``jobs`` keeps it alive): stored once, whatever its size
        ref = task.remote(how, _put_once(ray, inputs, x, min_bytes=-1), y, split, kind, seed, n_classes)
        promises[key] = lambda ref=ref, how=how, seed=seed: _await_reference(ray, ref, how, seed, placement)
    return promises


def _await_reference(ray, ref, how: str, seed: int, placement: RayPlacement) -> tuple:
    try:
        return tuple(ray.get(ref))
    except Exception as exc:  # noqa: BLE001 - the fit raised, or its node died more often than Ray retries
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"the {how} fit (seed {seed}) on the Ray cluster failed after up to "
                           f"{placement.max_retries} retries: {first}") from exc
