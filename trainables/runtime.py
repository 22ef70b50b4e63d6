"""Process-wide settings for the processes mixsweep owns (a trial, `python -m trainables.train`, a benchmark).

Never applied on import: a library must not change its host process's allocator behind its back.

Why: on CPU, each torch op allocates fresh multi-megabyte tensors. glibc serves blocks above its
(dynamic) mmap threshold with mmap/munmap, so every op pays first-touch page faults, which are
expensive in virtual machines; measured on this project's 2-core VM, batched fine-grained saliency
took 22 ms with the default allocator and 14 ms with freed memory kept in the heap (spectral
residual 55 ms -> 37 ms). PyTorch's CPU performance guide recommends tuning the allocator (or
jemalloc/tcmalloc) for the same reason. The cost is that freed memory is returned to the OS later.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  #: glibc's maximum: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 256 * 1024 * 1024  #: give memory back to the OS only above 256 MiB of free heap
_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where there is no glibc."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                        TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    _done = ok
    return ok
