"""Keep freed memory in the process: the CPU inference fix for glibc's give-back-and-fault-again cycle.

Eager PyTorch on the CPU allocates and frees large activation buffers at every layer. glibc serves
allocations above its mmap threshold with ``mmap`` and returns them to the system on ``free``, so the next
forward pass page-faults the same memory in again: at batch 32 the ResNet50 teacher took 86.9k minor page
faults per image and spent 43 % of its CPU time in the kernel (README, "Batch 32 slower than batch 1, and
the allocator"). ``keep_freed_memory`` sets what the environment variables ``MALLOC_MMAP_MAX_=0`` and
``MALLOC_TRIM_THRESHOLD_=<large>`` set before a process starts, from inside a running one (glibc's
``mallopt``): large buffers come from the heap and stay there after ``free``. The process keeps its peak
memory resident instead of returning it. eval.py and retrieve.py call it; in a notebook, call it once.
"""
import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # free memory kept at the heap's top: the largest value mallopt's int takes (2 GiB)


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it; True where glibc took both settings
    (Linux with glibc), False elsewhere (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
