"""How a node's process keeps its memory: freed memory kept for reuse, and
what start-up made kept out of the cyclic collector's way.

glibc's malloc serves a block over its mmap threshold (128 KiB at first,
then raised to the largest block freed) with fresh pages, and gives the top
of its heap back past twice that. So a loop that makes and drops a MiB at a
time (hypercorn's and h11's reads of a request body, a file read a MiB at a
time, a stream's frames) faults in every page of every MiB again: on the
development machine, 256 MiB of request body through h11 took 0.9 s, 0.6 s
of it in the kernel, and 0.065 s once the heap kept what it freed. Fixed
thresholds keep blocks under 8 MiB on the heap and up to 32 MiB of freed
heap for the next ones: a little more resident memory after a burst, against
several CPU-seconds per GiB moved.
"""

from __future__ import annotations

import ctypes
import gc

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 32 << 20


def reuse_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False where the C library is
    not glibc (musl, macOS), whose malloc stays as it is."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, classes, functions, schemas: some
    100,000 objects that live as long as the process) out of the cyclic
    collector's reach, after one last collection.

    A full collection walks every tracked object. Left in, those objects made
    each full collection of a busy peer take 80-300 ms, during which it
    answers nothing; frozen, a peer tracks some 50,000 and a 300-job burst on
    the development machine ran with none of those pauses (`gc.freeze`)."""
    gc.collect()
    gc.freeze()
