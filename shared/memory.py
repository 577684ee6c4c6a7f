"""This process's memory, and a cap on what a forked child may add to it.

A Lambda function is killed, with nothing committed, when its processes together go over
its ``MemorySize``; the retry meets the same input and is killed again. Native decoders
(PDFium, ffmpeg) allocate what a hostile file asks of them, so a worker that runs one in
a forked child caps the child's data segment below what the function has left: the child
then fails on its own (an allocation is refused), the parent sees how it ended and records
a ``limit`` instead of dying with it.
"""

from __future__ import annotations

import resource

_FALLBACK_RESIDENT_MB = 100.0  # a warm worker process, as measured on Linux


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
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


def cap_data_growth(extra_mb: float) -> bool:
    """Let this process's data segment grow by at most ``extra_mb`` from now on
    (``RLIMIT_DATA``: heap and private mappings, which is where a decoder's buffers go).
    False where the limit cannot be set (no ``/proc``); call it in a forked child only."""
    kb = _status_kb("VmData")
    if kb is None:
        return False
    limit = (kb << 10) + int(extra_mb * (1 << 20))
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        return False
    return True


def peak_mb(rusage: resource.struct_rusage) -> float:
    """The peak resident set of a reaped child (``os.wait4``), in MB (Linux reports KB)."""
    return rusage.ru_maxrss / 1024

