"""Crash isolation: each input runs in a forked child, so a native crash costs one input.

``mountworks run`` and ``backfill`` share :class:`IsolatedPool`. A child handles inputs
one by one (forking per input cost more than a small input's whole run) and sends back
each :class:`~shared.outcomes.Outcome`. When a child dies without reporting, the input
it was on is classified by how it died: a crash signal inside a decoder (abort, segfault)
is a permanent ``decoder-crash``, committed by the parent in the dead child's run; a kill
from outside (the OOM killer, an operator) is retryable.

A bare ``os.fork`` and two pipes per child, not ``multiprocessing``: its import and its
process objects cost each one-shot ``mountworks run`` ~6 ms (of ~120 for a small image),
and Lambda has no ``/dev/shm`` for its queues anyway.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.children import CRASH_SIGNALS, die_with_parent
from shared.config import MountConfig
from shared.errors import WORKER_KILLED, MountworksError
from shared.events import WorkItem
from shared.outcomes import Outcome, Status
from shared.runtime import commit_crash, run_item
from shared.worker import WorkerSpec

MAX_INPUTS_PER_CHILD = 500  # a child is replaced after this many inputs (bounds any library leak)
_LENGTH = 8  # hex digits of the length before each pickled message
CHILD_FAILED = 70  # a child's status when its own loop raised (EX_SOFTWARE): not a decoder's crash


def send(fd: int, message: Any) -> None:
    """Write one pickled message, its length first (whole: the reader waits for all of it)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(b"%08x" % len(data) + data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd: int) -> Any:
    """Read one message :func:`send` wrote; EOFError when the writer is gone before one is whole."""
    size = int(_read_exactly(fd, _LENGTH), 16)
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _child_loop(inbox: int, outbox: int, cfg: MountConfig, specs: Mapping[str, WorkerSpec],
                retry_failed: bool, wait_seconds: float | None, keep_records: bool) -> None:
    """A pool child: run inputs sent by the parent until told to stop (None), the parent's
    end closes, or it is recycled. ``specs`` came with the fork (a worker's sniff may be a
    lambda: it is never pickled)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    for _ in range(MAX_INPUTS_PER_CHILD):
        try:
            message = receive(inbox)
        except EOFError:
            return
        if message is None:
            return
        worker_name, item = message
        outcome = run_item(specs[worker_name], item, cfg, retry_failed=retry_failed,
                           wait_seconds=wait_seconds)
        send(outbox, outcome._replace(record=outcome.record if keep_records else None,
                                      extra={k: v for k, v in outcome.extra.items() if k in ("bytes_in", "bytes_out")}))


@dataclass
class _Child:
    """A forked child, its two pipe ends, and how it ended (once it has)."""

    pid: int
    to_child: int  # write end: inputs
    from_child: int  # read end: outcomes (its end of file: the child has died)
    knows: frozenset[str]  # the workers it inherited when it was forked
    handled: int = 0
    spec: WorkerSpec | None = None  # the input it is working on, if any
    item: WorkItem | None = None
    exitcode: int | None = None  # as multiprocessing's: -N for a signal

    def alive(self) -> bool:
        if self.exitcode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode is None

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to end; whether it has."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def kill(self) -> None:
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self.exitcode = os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        for fd in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):
                os.close(fd)


def _fork(loop: Callable[[int, int], None], inherited: Iterable[int]) -> tuple[int, int, int]:
    """Fork a child running ``loop(inbox, outbox)``; return its pid and the parent's two ends.

    The child closes ``inherited`` (its siblings' parent ends, copied by the fork) first, so
    that the parent's death ends this child's inbox instead of leaving it waiting on an end
    it holds itself; it never returns into the caller's stack (``os._exit``)."""
    inbox, to_child = os.pipe()
    from_child, outbox = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would write the parent's buffer again
        with contextlib.suppress(Exception):
            stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            for fd in (to_child, from_child, *inherited):
                os.close(fd)
            die_with_parent(parent)
            loop(inbox, outbox)
        except BaseException:  # a bug in the loop itself: said on stderr, never a decoder-crash
            status = CHILD_FAILED
            with contextlib.suppress(Exception):
                import traceback

                traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(status)
    os.close(inbox)
    os.close(outbox)
    return pid, to_child, from_child


class IsolatedPool:
    """Runs inputs in forked children, at most ``jobs`` at a time, each child reused.

    A child handles inputs one by one (forking per input cost more than a small input's
    whole run); when one dies in native code, only the input it was on is lost (classified
    by :func:`_crashed`) and a fresh child takes its place.
    """

    def __init__(self, jobs: int, cfg: MountConfig, retry_failed: bool, wait_seconds: float | None = None,
                 specs: Iterable[WorkerSpec] = (), keep_records: bool = False) -> None:
        """``keep_records``: outcomes carry their committed record (``run`` prints it; a backfill
        only counts, so its children do not send every manifest through the pipe)."""
        self.keep_records = keep_records
        self.specs = {s.name: s for s in specs}  # the workers new children inherit (more are added on submit)
        self.jobs = jobs
        self.wait_seconds = wait_seconds
        self.cfg = cfg
        self.retry_failed = retry_failed
        self.children: list[_Child] = []

    @property
    def running(self) -> list[_Child]:
        return [c for c in self.children if c.item is not None]

    def full(self) -> bool:
        return len(self.running) >= self.jobs

    def _idle_child(self, worker: str) -> _Child:
        for child in self.children:
            if child.item is None and child.handled < MAX_INPUTS_PER_CHILD and child.alive() \
                    and worker in child.knows:
                return child
        for child in [c for c in self.children if c.item is None]:  # recycled, dead or unaware: replace
            self._retire(child)
        specs = dict(self.specs)

        def loop(inbox: int, outbox: int) -> None:
            _child_loop(inbox, outbox, self.cfg, specs, self.retry_failed, self.wait_seconds, self.keep_records)

        inherited = [fd for c in self.children for fd in (c.to_child, c.from_child)]
        pid, to_child, from_child = _fork(loop, inherited)
        child = _Child(pid, to_child, from_child, knows=frozenset(specs))
        self.children.append(child)
        return child

    def submit(self, spec: WorkerSpec, item: WorkItem) -> None:
        spec.core()  # import the library once in the parent, so every child starts warm
        self.specs[spec.name] = spec
        child = self._idle_child(spec.name)
        child.spec, child.item = spec, item
        child.handled += 1
        send(child.to_child, (spec.name, item))

    def collect(self, block: bool) -> list[Outcome]:
        """Outcomes of the inputs that finished (at least one if ``block`` and any is running)."""
        finished = self._collect_once(block)
        while block and not finished and self.running:
            finished = self._collect_once(block)
        return finished

    def _collect_once(self, block: bool) -> list[Outcome]:
        busy = self.running
        if not busy:
            return []
        poller = select.poll()  # not select(): a large backfill's descriptors may pass FD_SETSIZE
        for child in busy:
            poller.register(child.from_child, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(None if block else 0)}  # POLLHUP too: a dead child's end
        finished: list[Outcome] = []
        for child in busy:
            if child.from_child not in ready:
                continue
            assert child.spec is not None and child.item is not None
            try:
                outcome: Outcome = receive(child.from_child)
            except (EOFError, OSError):  # its pipe closed: the child died (its exit status may lag a moment)
                if not child.join(timeout=10):
                    continue
                finished.append(_crashed(child, self.cfg, self.retry_failed))
                child.close()
                self.children.remove(child)
            else:
                finished.append(outcome)
                child.spec, child.item = None, None
        return finished

    def _retire(self, child: _Child) -> None:
        with contextlib.suppress(OSError):
            send(child.to_child, None)
        if not child.join(timeout=5):
            child.kill()
        child.close()
        self.children.remove(child)

    def close(self) -> None:
        """Let every child finish and exit (call after the last collect)."""
        for child in list(self.children):
            self._retire(child)

    def stop(self) -> None:
        """Kill every child now (Ctrl-C): their claims are taken over by the next run."""
        for child in self.children:
            child.kill()
            child.close()
        self.children.clear()


# How native code dies on a bad input: SIGTRAP too, since Chromium's code (PDFium) ends a
# failed CHECK with an int3 (IMMEDIATE_CRASH) before its ud2 (SIGILL).
def _crashed(run: _Child, cfg: MountConfig, retry_failed: bool) -> Outcome:
    """A child that died without reporting: a native crash is a permanent input error
    (committed as ``decoder-crash``); a kill from outside (OOM killer, operator) is retryable."""
    assert run.spec is not None and run.item is not None
    code = run.exitcode or 0
    sig = signal.Signals(-code) if code < 0 else None
    how = f"was killed by {sig.name}" if sig else f"exited with status {code}"
    message = f"the process handling this input {how} inside the {run.spec.name} library"
    if sig in CRASH_SIGNALS and run.item.input is not None:
        try:
            return commit_crash(run.spec, run.item.input, run.item.options, cfg, message,
                                source_object=run.item.source_object)
        except MountworksError as exc:
            message += f" (and its error record could not be written: {exc.message})"
    return Outcome(Status.RETRYABLE, run.item.key, run.spec.name, code=WORKER_KILLED, message=message)
