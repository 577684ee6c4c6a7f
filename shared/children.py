"""Forked children: what their deaths mean, and tying their lives to their parents'.

Light on purpose (no ``multiprocessing``): the CLI's isolation pool and pdf-extract's page
processes both use it, and a Lambda handler imports it for its first input.
"""

from __future__ import annotations

import contextlib
import os
import signal

# Signals a native library dies of on a bad input (SIGTRAP: Chromium's code ends a failed
# CHECK with int3); a child killed by one of them crashed on its input, while SIGKILL and
# SIGTERM come from outside (the OOM killer, an operator).
CRASH_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP}

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this child when its parent dies (a kill -9 of a backfill or
    a CLI run must not leave children of ~100 MB each behind), and exit now if that already
    happened. Call it in the child, first thing after ``fork``."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's pipes still end
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)
