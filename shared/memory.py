"""This process's memory, and what a child process may hold of what the function has left.

A Lambda function is killed, with nothing committed, when its processes together go over
its ``MemorySize``; the retry meets the same input and is killed again. Native decoders
(PDFium, ffmpeg) allocate what a hostile file asks of them, so a worker that runs one in
a child gives the child a share of what the function has left (:func:`share_mb`) and holds
it to it: a forked PDFium process by its data segment (:func:`cap_data_growth`: an
allocation past it is refused), an ffmpeg process by its resident set, watched by the
parent (its threads' stacks make a data-segment cap useless). The parent then records a
``limit`` instead of dying with the child.
"""

from __future__ import annotations

import contextlib
import resource

from shared import config

_FALLBACK_RESIDENT_MB = 100.0  # a warm worker process, as measured on Linux


def _status_kb(field: str, path: str = "/proc/self/status") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident_mb() -> float:
    """This process's resident set now, in MB."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else _FALLBACK_RESIDENT_MB


def resident_mb_of(pid: int) -> float | None:
    """Another process's resident set now, in MB; None once it is gone (or without /proc)."""
    kb = _status_kb("VmRSS", f"/proc/{pid}/status")
    return kb / 1024 if kb is not None else None


def share_mb(processes: int, *, reserve_mb: float, floor_mb: float, budget_mb: int = 0) -> float:
    """What each of ``processes`` children may hold (or grow by): the function's memory (or
    ``budget_mb``, an option's) less this process's resident set and ``reserve_mb`` (kept
    for this process's own work), shared out; never less than ``floor_mb``."""
    total = budget_mb or config.function_memory_mb()
    return max(float(floor_mb), (total - resident_mb() - reserve_mb) / max(1, processes))


def cap_data_growth(extra_mb: float) -> None:
    """Let this process's data segment grow by at most ``extra_mb`` from now on
    (``RLIMIT_DATA``: heap and private mappings, which is where a decoder's buffers go).
    Nothing happens where the limit cannot be read or set (no ``/proc``); call it in a
    forked child only."""
    kb = _status_kb("VmData")
    if kb is None:
        return
    limit = (kb << 10) + int(extra_mb * (1 << 20))
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def peak_mb(rusage: resource.struct_rusage) -> float:
    """The peak resident set of a reaped child (``os.wait4``), in MB (Linux reports KB)."""
    return rusage.ru_maxrss / 1024


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_heap(trim_mb: int, mmap_mb: int) -> None:
    """Tell glibc's malloc to keep up to ``trim_mb`` of freed heap (instead of giving it back
    at every ``free``) and to serve allocations below ``mmap_mb`` from the heap (instead of a
    fresh ``mmap`` each). A native library that allocates and frees its working set for every
    unit of work (PDFium, page by page) then stops paying page faults for it again and again:
    about a third of PDFium's text time in a process with a small heap. Nothing happens
    without glibc; call it in a child that runs such a library."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_mb << 20)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20)
