"""glibc malloc's thresholds fixed high for the run's process, before PyTorch allocates.

A CNN on the CPU allocates and frees activation buffers of megabytes every layer. glibc's defaults map
each block above its threshold (128 KiB, raised by use up to 32 MiB) with mmap and hand it back on free, so
the next layer faults the same pages in again: a pass spends much of its time in the kernel, most on
virtual machines, where unmapping is dearer. Fixed high thresholds keep freed blocks in the heap for
reuse (figures: docs/design.md). Hand-written because no pip-installable allocator replaces glibc's without
LD_PRELOAD before the interpreter starts; mallopt(3) is one call on the running one.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # malloc.h: free memory at the heap's top kept rather than returned to the system
M_MMAP_THRESHOLD = -3  # malloc.h: blocks at least this large are mapped, and unmapped when freed
THRESHOLD_BYTES = 1 << 30  # above any activation buffer of the models and batch sizes the project trains
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Set both thresholds on Linux's glibc, unless the environment already chose (its own thresholds or
    tunables, or another allocator preloaded); True when they were set."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    )
