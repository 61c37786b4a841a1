"""Keep memory that torch frees inside the process (glibc's malloc), instead of handing it back to
the kernel and faulting it in again, zeroed, on the next allocation.

A gradient update allocates and frees the same large activation tensors ([B·T, 128] floats, 3 MB
each) every time. With glibc's defaults many of them are mmap'ed and unmapped, or trimmed from the
heap's top, on every update: ~2,000 page faults and ~4 ms of kernel time per Wind update here, and
4–6 % of the update's wall time (measured side by side, README "Speed"). Memory then stays at the
process's peak, which an update reaches every time anyway."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20                  # glibc's largest allowed: blocks up to 32 MB from the heap
TRIM_THRESHOLD = 2**31 - 1                   # never give the heap's free top back


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve allocations up to 32 MB from its heap and never trim it. Returns
    whether it applied (False without glibc, e.g. macOS or musl: nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt rejected the allocator settings; glibc defaults stay")
    return ok
