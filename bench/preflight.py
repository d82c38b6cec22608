"""Checks that need no data, run before a suite loads anything, and the lock on an output folder.

:func:`preflight` is called at the top of :func:`bench.pipeline.run_suite` (after the suite file and
the CLI values were checked by :func:`bench.suite.load_suite`): ``--out`` and the cache are writable,
``--storage`` is reachable, and every unreadable file under the suite's output folder and the cache is
named and set aside. All of it takes seconds; a problem is a one-line :class:`ConfigError` (exit 2).

:func:`suite_lock` keeps two ``bench run`` from training the same suite into one ``--out`` at once:
the second one refuses with the first one's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path

from bench.errors import ConfigError

LOCK_FILE = ".bench.lock"


def check_writable(folder: Path, what: str, fix: str) -> None:
    """``folder`` exists (or can be made) and a file can be written in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {str(folder)!r} is not writable ({exc.strerror or type(exc).__name__}); {fix}") from None


def check_out(out) -> Path:
    """``--out`` as a path; an empty value is refused (it would write into the current folder)."""
    if out is None or not str(out).strip():
        raise ConfigError("--out is empty; give an output folder such as --out runs")
    return Path(out)


def check_storage(backend: str, storage: str | None) -> None:
    """An Optuna ``--storage`` database answers (SQLite: its folder is writable) before any training."""
    if backend != "optuna" or not storage or "://" not in storage:
        return
    if storage.startswith("sqlite:"):
        path = storage.split(":///", 1)[-1] if ":///" in storage else ""
        if path and path != ":memory:":
            check_writable(Path(path).expanduser().parent, "the folder of --storage",
                           "give a database URL in a folder you can write to")
        return
    try:
        import sqlalchemy
        from sqlalchemy.engine import make_url

        url = make_url(storage)
        if url.host:  # a quick TCP check first: a driver may wait minutes on a dead host
            port = url.port or {"postgresql": 5432, "mysql": 3306}.get(url.get_backend_name(), None)
            if port:
                socket.create_connection((url.host, int(port)), timeout=5).close()
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means the searches could not be stored
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"--storage {storage!r} is not reachable ({type(exc).__name__}: {first[:120]}); "
                          "start the database, fix the URL or drop --storage for the default SQLite file") from None


def preflight(suite, out: Path, *, backend: str = "optuna", storage: str | None = None, say=None) -> None:
    """Everything about ``out``, the cache and the storage that can be checked before loading data."""
    from bench.pretrain import cache_root
    from bench.results import check_cache, check_suite_dir

    out = check_out(out)
    check_writable(out / suite.name, "--out", "choose a folder you can write to with --out DIR")
    cache = cache_root()
    check_writable(cache, "the cache folder", "set BENCH_CACHE to a folder you can write to")
    check_storage(backend, storage)
    kw = {"say": say} if say else {}
    check_suite_dir(out / suite.name, **kw)
    check_cache(cache, **kw)


@contextlib.contextmanager
def suite_lock(suite_dir: Path):
    """Hold ``<suite_dir>/.bench.lock`` while a suite runs; a second ``bench run`` on it refuses."""
    suite_dir = Path(suite_dir)
    check_writable(suite_dir, "--out", "choose a folder you can write to with --out DIR")
    path = suite_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(f"{str(suite_dir)!r} is in use by another `bench run` ({holder}); wait for it to "
                              "finish or pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
