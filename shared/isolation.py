"""Crash isolation: each input runs in a forked child, so a native crash costs one input.

``mountworks run`` and ``backfill`` share :class:`IsolatedPool`. A child handles inputs
one by one (forking per input cost more than a small input's whole run) and sends back
each :class:`~shared.outcomes.Outcome`. When a child dies without reporting, the input
it was on is classified by how it died: a crash signal inside a decoder (abort, segfault)
is a permanent ``decoder-crash``, committed by the parent in the dead child's run; a kill
from outside (the OOM killer, an operator) is retryable.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any

from shared.children import CRASH_SIGNALS, die_with_parent
from shared.config import MountConfig
from shared.errors import WORKER_KILLED, MountworksError
from shared.events import WorkItem
from shared.outcomes import Outcome, Status
from shared.runtime import commit_crash, run_item
from shared.worker import WorkerSpec

MAX_INPUTS_PER_CHILD = 500  # a child is replaced after this many inputs (bounds any library leak)


def _child_loop(conn: Connection, inherited: list[Connection], parent_pid: int, cfg: MountConfig,
                specs: Mapping[str, WorkerSpec], retry_failed: bool, wait_seconds: float | None,
                keep_records: bool) -> None:
    """A pool child: run inputs sent by the parent until told to stop (None) or recycled.

    ``specs`` came with the fork (a worker's sniff may be a lambda: it is never pickled).
    ``inherited`` are the parent's ends of this child's pipe and of its siblings' pipes,
    copied by the fork: they are closed first, so that the parent's death closes this
    child's pipe (``recv`` ends) instead of leaving it waiting on an end it holds itself.
    """
    for end in inherited:
        end.close()
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    for _ in range(MAX_INPUTS_PER_CHILD):
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        worker_name, item = message
        outcome = run_item(specs[worker_name], item, cfg, retry_failed=retry_failed,
                           wait_seconds=wait_seconds)
        conn.send(outcome._replace(record=outcome.record if keep_records else None,
                                   extra={k: v for k, v in outcome.extra.items() if k in ("bytes_in", "bytes_out")}))


@dataclass
class _Child:
    process: Any
    conn: Connection
    knows: frozenset[str]  # the workers it inherited when it was forked
    handled: int = 0
    spec: WorkerSpec | None = None  # the input it is working on, if any
    item: WorkItem | None = None


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
        self.context = get_context("fork")
        self.children: list[_Child] = []

    @property
    def running(self) -> list[_Child]:
        return [c for c in self.children if c.item is not None]

    def full(self) -> bool:
        return len(self.running) >= self.jobs

    def _idle_child(self, worker: str) -> _Child:
        for child in self.children:
            if child.item is None and child.handled < MAX_INPUTS_PER_CHILD and child.process.is_alive() \
                    and worker in child.knows:
                return child
        for child in [c for c in self.children if c.item is None]:  # recycled, dead or unaware: replace
            self._retire(child)
        parent_end, child_end = self.context.Pipe(duplex=True)
        inherited = [parent_end, *(c.conn for c in self.children)]
        args = (child_end, inherited, os.getpid(), self.cfg, self.specs, self.retry_failed, self.wait_seconds,
                self.keep_records)
        process = self.context.Process(target=_child_loop, args=args, daemon=True)
        process.start()
        child_end.close()
        child = _Child(process, parent_end, knows=frozenset(self.specs))
        self.children.append(child)
        return child

    def submit(self, spec: WorkerSpec, item: WorkItem) -> None:
        spec.core()  # import the library once in the parent, so every child starts warm
        self.specs[spec.name] = spec
        child = self._idle_child(spec.name)
        child.spec, child.item = spec, item
        child.handled += 1
        child.conn.send((spec.name, item))

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
        waitables: list[Any] = [c.conn for c in busy] + [c.process.sentinel for c in busy]
        ready = wait(waitables, timeout=None if block else 0)
        finished: list[Outcome] = []
        for child in busy:
            if child.conn not in ready and child.process.sentinel not in ready:
                continue
            assert child.spec is not None and child.item is not None
            outcome: Outcome | None = None
            with contextlib.suppress(EOFError, OSError):
                if child.conn.poll():
                    outcome = child.conn.recv()
            if outcome is not None:
                finished.append(outcome)
                child.spec, child.item = None, None
            else:  # its pipe closed: the child died (its exit status may lag a moment behind)
                child.process.join(timeout=10)
                if child.process.is_alive():
                    continue
                finished.append(_crashed(child, self.cfg, self.retry_failed))
                child.conn.close()
                self.children.remove(child)
        return finished

    def _retire(self, child: _Child) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            child.conn.send(None)
        child.process.join(timeout=5)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.conn.close()
        self.children.remove(child)

    def close(self) -> None:
        """Let every child finish and exit (call after the last collect)."""
        for child in list(self.children):
            self._retire(child)

    def stop(self) -> None:
        """Kill every child now (Ctrl-C): their claims are taken over by the next run."""
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            child.process.join()
            child.conn.close()
        self.children.clear()


# How native code dies on a bad input: SIGTRAP too, since Chromium's code (PDFium) ends a
# failed CHECK with an int3 (IMMEDIATE_CRASH) before its ud2 (SIGILL).
def _crashed(run: _Child, cfg: MountConfig, retry_failed: bool) -> Outcome:
    """A child that died without reporting: a native crash is a permanent input error
    (committed as ``decoder-crash``); a kill from outside (OOM killer, operator) is retryable."""
    assert run.spec is not None and run.item is not None
    code = run.process.exitcode or 0
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
