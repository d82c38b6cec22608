"""Keep freed memory in the process on CPU, so that large tensors do not page-fault on every step.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and gives it back on ``free``; it also trims the top of the heap once more than twice that threshold
is free there. A training step that allocates and frees the same large tensors every time (an
FT-Transformer's ``[B, 425, 425]`` attention maps over the 423 OL3I features are 46 MiB at batch 64)
then has the kernel map and zero their pages again on every step. On the 2-core reference machine
this was most of the time spent encoding the FT-Transformer's tokens (1.96 ms per sample at batch 512,
20.9 s of a 28.4 s measurement in the kernel; 0.72 ms per sample with the setting below).

``keep_freed_memory()`` asks glibc, through ``mallopt``, to serve every block from the heap
(``M_MMAP_MAX = 0``) and to keep up to 2 GiB of free memory at its top (``M_TRIM_THRESHOLD``): the
process's resident size stays near its peak instead of shrinking between steps. It is what
``jemalloc`` or ``tcmalloc`` preloaded would do, without a system package. The command line calls it
at start-up (``python -m bench ...``) and search workers call it too; importing ``bench`` never does.
Set ``BENCH_MALLOC=system`` to leave glibc's defaults. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENV", "describe", "keep_freed_memory"]

ENV = "BENCH_MALLOC"
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: 2 GiB

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tune glibc's allocator as described above; ``True`` when it was done (once per process)."""
    if "done" in _state:
        return _state["done"]
    done = False
    choice = os.environ.get(ENV, "keep").strip().lower()
    if choice not in ("keep", "system"):
        # not a BenchError: this runs before the command line has a place to report it
        print(f"bench: warning: {ENV}={choice!r} is not 'keep' or 'system'; using 'keep'", file=sys.stderr)
        choice = "keep"
    if choice == "keep" and sys.platform.startswith("linux"):
        try:  # the symbols already loaded into the process: no library search at start-up
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
    _state["done"] = done
    return done


def describe() -> str:
    """What this process's allocator does, for reports (``perf`` JSON)."""
    if _state.get("done"):
        return f"glibc, freed memory kept in the process ({ENV}=keep: M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB)"
    return "the system allocator's defaults" + (f" ({ENV}=system)" if os.environ.get(ENV) == "system" else "")
