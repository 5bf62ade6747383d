"""glibc's malloc told to keep the memory a request frees, for the next request, rather than hand it back.

A request allocates and frees arrays of a picture's size several times: the decoded picture, its crops, the
result, the PNG's filtered rows. By default glibc maps each block above its mmap threshold afresh and gives free
memory at the top of a heap back to the kernel (trim). It raises the threshold as it sees large blocks freed, but
in a server's many threads it rarely catches up, so the kernel faults each such array in again, page by page
(a 3 MB array: 768 faults). On a 512 px classical request that is about 3 ms of 37 here (bench/results.md,
`classical_request_vs_limit`).

`keep_freed_memory` fixes the mmap threshold at the value glibc's own adjustment stops at (32 MB: blocks up to that
come from the heaps) and lets a heap keep 16 MB free at its top. Measured on the REST server after a mix of 512 and
2048 px requests: 178 MB resident against 185 MB with glibc's defaults (peak 231 against 209 MB); a 64 MB trim
threshold kept 398 MB for no more speed. A process that sets MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_
itself keeps its own values.

It also keeps one arena for every thread. glibc gives threads arenas of their own (up to 8 per core), and what a
thread frees serves that arena only; a request's stages run on several threads (decoding on the event loop's
worker, the model on the generation thread, the seam measure, the finishing pool, the PNG strips), so each arena
kept a picture's worth of its own and the next request, on other threads, touched new memory. With one arena a
2048 px Telea request raised the server's peak RSS by 14-20 MB above idle instead of 92-96 MB, and idle was
lower too (201 against 222 MB: bench `memory_rise_2048`). The threads share its lock for large blocks only:
Python's small objects have their own allocator.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD_BYTES = 16 << 20  # above a request's worth of freed blocks at 512 px; 2048 px arrays go back
ARENAS = 1


def keep_freed_memory() -> bool:
    """Sets the thresholds on Linux with glibc; elsewhere (another libc, another system, or thresholds already set
    by the environment) leaves the allocator as it is. Returns whether it set them."""
    if not sys.platform.startswith("linux") or any(
            name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl (no mallopt), or no libc of that name
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both together: either one alone switches glibc's adjustment off, and measured slower than neither.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                and mallopt(M_ARENA_MAX, ARENAS))
