"""Time limits of a pdf-extract run: the page timer and the run's budget.

Each page runs under a ``SIGALRM`` timer (main thread only) that fires at
MAX_PAGE_SECONDS or just before the invocation's deadline, whichever is first, so that
one pathological page can neither hang the run nor let Lambda kill it before it stops
cleanly (DeadlineReached, nothing committed). The deadline is also checked between pages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

from shared.errors import LimitExceeded
from shared.worker import Deadline
from workers.pdf_extract.options import DEADLINE_MARGIN_SECONDS


class PageTimeout(BaseException):
    """Raised by the page timer; a BaseException so that pypdf's lenient ``except Exception``
    recovery cannot swallow it."""


@contextlib.contextmanager
def page_timer(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM; only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise PageTimeout()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Budget:
    """Time left for pages: MAX_SECONDS for the whole extraction, and the invocation's deadline."""

    deadline: Deadline
    max_page_seconds: float
    max_seconds: float
    started: float = field(default_factory=time.monotonic)

    def check(self, page: int) -> None:
        self.check_total(f"before page {page}")

    def check_total(self, doing: str) -> None:
        """The deadline and MAX_SECONDS (also checked by a parent waiting for page processes)."""
        self.deadline.check(DEADLINE_MARGIN_SECONDS, doing=doing)
        if time.monotonic() - self.started > self.max_seconds:
            raise LimitExceeded(f"extraction took longer than MAX_SECONDS={self.max_seconds:g}s "
                                f"(stopped {doing}); raise option max_seconds or process page "
                                "ranges (option pages)", limit="MAX_SECONDS")

    def left(self) -> float:
        """Seconds of MAX_SECONDS not used yet (handed to forked page processes)."""
        return self.max_seconds - (time.monotonic() - self.started)

    def page_seconds(self) -> tuple[float, bool]:
        """Seconds the next page may take, and whether the deadline (not the page limit) sets it."""
        limit = self.max_page_seconds
        left = self.deadline.remaining()
        if left is not None and left - DEADLINE_MARGIN_SECONDS < limit:
            return max(left - DEADLINE_MARGIN_SECONDS, 0.001), True
        return limit, False



HUNG_EXIT = 72  # exit status of a page process whose native call overran its time
NATIVE_GRACE_SECONDS = 1.0  # beyond the page's time, before a native call is given up
WATCH_SECONDS = 0.1  # how often the watchdog looks


class NativeWatchdog:
    """Ends this (forked page) process with HUNG_EXIT when a native call overruns its time.

    The page timer's SIGALRM handler cannot run while the main thread is inside PDFium,
    but this thread can (ctypes releases the GIL during the call). The parent then flags
    that page ``timeout`` and carries on with the next one in a new process. The thread
    looks every WATCH_SECONDS rather than being woken for every page: a guard is then only
    an assignment, where waking a thread twice per page cost 7% of PDFium's text time.
    """

    def __init__(self) -> None:
        self._until: float | None = None
        threading.Thread(target=self._watch, name="native-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def guard(self, seconds: float) -> Iterator[None]:
        self._until = time.monotonic() + seconds + NATIVE_GRACE_SECONDS
        try:
            yield
        finally:
            self._until = None

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            until = self._until
            if until is not None and time.monotonic() > until:
                os._exit(HUNG_EXIT)
