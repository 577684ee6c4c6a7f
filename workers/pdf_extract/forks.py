"""Forked children of pdf-extract and what their ends mean (no pypdf, no PDFium here).

A child talks to its parent in lines on one pipe: ``rss KB`` first (its resident set at
the start: what it grew from), then any messages of its kind (``count``, ``end``), then
``report JSON`` (None for success, else an error report) before it leaves. Its end is read
from those lines and its exit status: a crash signal after growing by OUT_OF_MEMORY_SHARE
of its memory cap is out of memory, any other crash a ``decoder-crash`` of the input,
HUNG_EXIT a native call that overran its time (see :class:`~.budget.NativeWatchdog`).

A bare ``os.fork`` rather than ``multiprocessing``, as the CLI's isolation pool: Lambda has
no ``/dev/shm`` for ``multiprocessing``'s pools and queues, and its import alone costs a
cold start ~7 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared import children, memory
from shared.errors import (
    DECODER_CRASH,
    CorruptInput,
    DeadlineReached,
    EncryptedInput,
    LimitExceeded,
    MountworksError,
    PermanentInputError,
    UnsupportedInput,
)
from workers.pdf_extract.budget import HUNG_EXIT, Budget
from workers.pdf_extract.options import short

POLL_SECONDS = 0.25  # how often a waiting parent checks the deadline and MAX_SECONDS
# A child that crashed after growing by at least this share of its cap ran out of it. Not
# all of it: the refused request may be a large one (a buffer doubling asks for as much
# again as it holds), and a crash from a bug rarely comes with this much memory in use.
OUT_OF_MEMORY_SHARE = 0.5

Report = dict[str, Any] | None
Say = Callable[[str, str], None]


def fork(work: Callable[[Say], Report], memory_mb: float) -> tuple[int, int]:
    """Run ``work(say)`` in a child that may grow by ``memory_mb``; return its pid and the
    read end of its pipe. The child never returns into the caller's stack (``os._exit``)."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        status = 0
        try:
            children.die_with_parent(parent)
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            memory.cap_data_growth(memory_mb)

            def say(tag: str, payload: str) -> None:
                view = memoryview(f"{tag} {payload}\n".encode())
                while view:
                    view = view[os.write(write_fd, view):]

            say("rss", str(int(memory.resident_mb() * 1024)))
            say("report", json.dumps(work(say)))
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


@dataclass
class Child:
    """A running child: its pipe, its memory cap (what it may grow by) and its messages."""

    pid: int
    fd: int
    what: str
    memory_mb: float
    share: Any = None  # what the caller gave it to do
    started_mb: float | None = None
    messages: list[tuple[str, str]] = field(default_factory=list)
    _buffer: bytes = b""

    def pump(self) -> bool:
        """Read what the child wrote; False at the end of its pipe (it has left)."""
        data = os.read(self.fd, 65536)
        if not data:
            return False
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            tag, _, payload = line.decode("utf-8", "replace").partition(" ")
            if tag == "rss" and payload.isdigit():
                self.started_mb = int(payload) / 1024
            else:
                self.messages.append((tag, payload))
        return True

    def take(self, tag: str) -> str | None:
        """The first message with ``tag`` not taken yet."""
        for n, (t, payload) in enumerate(self.messages):
            if t == tag:
                del self.messages[n]
                return payload
        return None

    def lower_cap(self, memory_mb: float) -> None:
        """Lower what the child may still grow by to ``memory_mb`` (``prlimit`` on its data
        segment), when it is to share the function's memory with new siblings."""
        cut = int((self.memory_mb - memory_mb) * (1 << 20))
        if cut <= 0:
            return
        with contextlib.suppress(ValueError, OSError):
            soft, hard = resource.prlimit(self.pid, resource.RLIMIT_DATA)
            if soft != resource.RLIM_INFINITY:
                resource.prlimit(self.pid, resource.RLIMIT_DATA, (max(soft - cut, 0), hard))
                self.memory_mb = memory_mb


def reap(child: Child) -> dict[str, Any] | None:
    """Reap a child whose pipe has ended; raise what it reported, or what killed it.

    Returns None on success, else ``{"kind": "hung"}`` or ``{"kind": "out_of_memory"}``
    (the child stopped on a page, see the module docstring) or the report of a child that
    reports a result of its own (``"ok"``)."""
    _, status, usage = os.wait4(child.pid, 0)
    os.close(child.fd)
    raw = child.take("report")
    report = json.loads(raw) if raw else "no report"
    if report is None:
        return None
    if isinstance(report, dict):
        if report.get("kind") in ("ok", "out_of_memory"):
            return report
        raise error_from_report(report)
    if os.WIFEXITED(status) and os.waitstatus_to_exitcode(status) == HUNG_EXIT:
        return {"kind": "hung"}
    crashed = os.WIFSIGNALED(status) and os.WTERMSIG(status) in children.CRASH_SIGNALS
    started_mb = child.started_mb if child.started_mb is not None else memory.peak_mb(usage)
    if crashed and memory.peak_mb(usage) - started_mb >= OUT_OF_MEMORY_SHARE * child.memory_mb:
        return {"kind": "out_of_memory"}
    if crashed:
        raise CorruptInput(f"{child.what} was {exit_text(status)} inside the PDF library (PDFium or pypdf) on this "
                           "document: it cannot be processed", code=DECODER_CRASH)
    raise RuntimeError(f"{child.what} died ({exit_text(status)})")


def wait(running: dict[int, Child], budget: Budget, timeout: float = POLL_SECONDS) -> list[tuple[Child, Report]]:
    """Read every child that wrote something within ``timeout``, holding the deadline and
    MAX_SECONDS; reap those that ended and return them with their ends."""
    budget.check_total("while pages were extracted")
    ended = []
    ready, _, _ = select.select(list(running), [], [], timeout)
    for fd in ready:
        child = running[fd]
        if not child.pump():
            del running[fd]
            ended.append((child, reap(child)))
    return ended


def news(running: dict[int, Child]) -> bool:
    """Whether a child has written something (or ended) that is not read yet: no wait."""
    return bool(select.select(list(running), [], [], 0)[0])


def stop(running: dict[int, Child]) -> None:
    """Kill and reap every child still running."""
    for child in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        os.close(child.fd)
    running.clear()


def error_report(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MountworksError):
        return {"kind": type(exc).__name__, "message": exc.message, "code": exc.code,
                "limit": getattr(exc, "limit", None)}
    return {"kind": "bug", "message": f"{type(exc).__name__}: {short(exc)}", "code": "internal", "limit": None}


def error_from_report(report: dict[str, Any]) -> Exception:
    kind, message, code = report["kind"], report["message"], report["code"]
    classes: dict[str, type[MountworksError]] = {
        "DeadlineReached": DeadlineReached, "CorruptInput": CorruptInput, "EncryptedInput": EncryptedInput,
        "UnsupportedInput": UnsupportedInput, "PermanentInputError": PermanentInputError,
    }
    if kind == "LimitExceeded":
        return LimitExceeded(message, limit=report["limit"] or "?", code=code)
    if kind in classes:
        return classes[kind](message, code=code)
    return RuntimeError(f"a page process failed: {message}")


def exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
