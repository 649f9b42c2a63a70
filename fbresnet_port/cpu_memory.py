"""Keep freed memory inside the process while training on CPU (Linux with glibc).

glibc hands every allocation above its mmap threshold (at most 32 MiB) its own mapping and unmaps it
when freed, and gives the free top of its heap back to the OS.  A training step frees and re-allocates
the same large activations every iteration, so each one is page-faulted (zero-filled by the kernel)
anew: on this project's 2-core machine that is about a fifth of a DenseNet step
(``benchmarks/optmemory.py --malloc default`` against the default ``--malloc retain``).  Allocators
made for this (jemalloc, tcmalloc via ``LD_PRELOAD``) keep such memory; :func:`retain_freed_memory`
gets the same effect from glibc itself: no mmap for large blocks and no trimming of the heap, so the
process keeps its peak size and reuses it.  ``main.py`` calls it for CPU runs; set
``FBRESNET_RETAIN_MEMORY=0`` to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory", "mallopt", "ENV_VAR", "M_TRIM_THRESHOLD", "M_MMAP_THRESHOLD", "M_MMAP_MAX"]

ENV_VAR = "FBRESNET_RETAIN_MEMORY"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4


def mallopt(option: int, value: int) -> bool:
    """glibc's ``mallopt(option, value)``; False where it failed or does not exist (not Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(fn(option, value))


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True when that took effect.

    No-op (False) off Linux, with another C library or allocator, or when ``FBRESNET_RETAIN_MEMORY=0``.
    """
    if os.environ.get(ENV_VAR, "1") == "0":
        return False
    return mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)
