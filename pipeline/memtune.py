"""glibc malloc tuning applied once at daemon start-up (before any thread exists).

OTLP requests are tens of KiB to a few MiB: just under glibc's dynamic mmap
threshold, so they land in malloc arenas, and grpc's poller threads get arenas
of their own. Freed request buffers then fragment those arenas and RSS keeps
the high-water mark of every burst (measured: 2× the live data under the
shared benchmark load). Two settings fix it, as the usual MALLOC_ARENA_MAX /
MALLOC_MMAP_THRESHOLD_ advice for Python gRPC servers says: few arenas, and a
fixed mmap threshold so that large buffers (merged batches, big requests)
return to the OS when freed. The threshold is 1 MiB: at 64 KiB every request
buffer of the shared load (67 KB) and every copy a processor makes of it was a
fresh mmap, page-faulted in and unmapped again, which cost ~8 % of the OTLP
pass-through pipeline's CPU with no RSS benefit (bench/RESULTS.md). Environment
variables of the same names, when set, win.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
DEFAULT_MMAP_THRESHOLD = 1024 * 1024
DEFAULT_ARENA_MAX = 2


def tune_malloc() -> bool:
    """Apply the settings through mallopt(3); returns False where glibc is not the allocator."""
    libc = _libc()
    if libc is None:
        return False
    try:
        mallopt = libc.mallopt
    except AttributeError:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = True
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = mallopt(M_ARENA_MAX, DEFAULT_ARENA_MAX) == 1 and ok
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD) == 1 and ok
    return ok


def release_free_memory() -> bool:
    """Give memory that is free inside malloc's heaps back to the OS (glibc `malloc_trim(0)`).

    After a burst, freed request buffers stay resident in the heaps (a live
    allocation above them keeps the heap from shrinking), so RSS overstates
    what the process holds by hundreds of MiB and a limiter reading RSS keeps
    refusing long after the burst. `malloc_trim(0)` releases the free pages of
    every arena. Returns False where glibc is not the allocator.
    """
    libc = _libc()
    if libc is None:
        return False
    try:
        trim = libc.malloc_trim
    except AttributeError:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None
