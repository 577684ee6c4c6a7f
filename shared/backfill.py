"""Backfill: walk ``ingest/`` as a stream, route each file, skip committed runs, process.

- The walk is a generator over ``os.scandir``: the listing is never held in memory, and
  at most ``jobs`` inputs are in flight.
- Routing is by content (magic bytes); the extension is only a hint. A file whose
  hinted worker already committed it is skipped after a ``stat`` and one small read of
  the ``_seen`` pointer, without reading the input's content.
- Each input runs in its own forked child, so a native crash in a decoder (an abort or
  a segfault) ends as a classified error for that input and never stops the backfill.
- Resuming after Ctrl-C or a kill needs nothing special: committed runs are skipped and
  claims left by dead processes are taken over at once.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TextIO

from shared.config import MountConfig
from shared.errors import MountworksError, RefusedPath, UsageError
from shared.events import WorkItem
from shared.options import options_for
from shared.paths import InputRef, input_from_path, resolve_input
from shared.runs import RunLayout, canonical_json, seen_pointer_path, stat_fingerprint
from shared.runtime import Outcome, commit_crash, run_item
from shared.worker import SNIFF_BYTES, WorkerSpec

MAX_LISTED_FAILURES = 50
SLOWEST_LISTED = 5
# Upper bounds (ms) of the duration histogram's buckets: a flat-memory view of every run.
DURATION_BUCKETS_MS = (10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000)


def walk_files(top: Path) -> Iterator[tuple[str, bool]]:
    """(path, is_symlink) of every regular file (or symlink to one) below ``top``, depth
    first, streamed, as strings: millions of paths go through here. Symlinked folders are
    not followed, so a path that is not itself a symlink is already its real path."""
    stack = [str(top)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                subdirs = []
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.path)
                    elif entry.is_symlink():
                        yield entry.path, True
                    elif entry.is_file(follow_symlinks=False):
                        yield entry.path, False
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        stack.extend(sorted(subdirs, reverse=True))


@functools.lru_cache(maxsize=256)
def _normalized_options(spec: WorkerSpec, options_json: str) -> dict[str, Any]:
    """A worker's normalized options, parsed once per backfill rather than once per file."""
    return spec.parse_options(json.loads(options_json)).to_manifest()


def committed_without_reading(spec: WorkerSpec, ref: InputRef, options: Mapping[str, Any],
                              st: os.stat_result, cfg: MountConfig, retry_failed: bool) -> bool:
    """Is this input already committed by this worker? Metadata only: no content read.

    One ``stat`` (done by the caller) and one small read: the ``_seen`` pointer is written
    after its commit and says whether that commit failed. Only ``--retry-failed`` over a
    failed input (or a pointer without that flag) looks at the run directory itself.
    """
    normalized = _normalized_options(spec, canonical_json(dict(options)))
    fingerprint = stat_fingerprint(spec.name, spec.version, normalized, st)
    try:
        with open(seen_pointer_path(cfg, spec.name, ref.name.as_posix(), fingerprint), "rb") as f:
            pointer = json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    run_id, failed = pointer.get("run_id"), pointer.get("failed")
    if not isinstance(run_id, str):
        return False
    if failed is False or (failed is True and not retry_failed):
        return True
    commit = RunLayout(cfg, spec.name, ref).latest_commit(run_id)
    return commit is not None and not (retry_failed and commit.failed)


@dataclass
class WorkerTally:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    retryable: int = 0
    refused: int = 0
    internal_error: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))

    def add(self, outcome: Outcome) -> None:
        key = {"done": "done", "already-done": "skipped", "already-failed": "skipped", "skipped": "skipped",
               "failed": "failed", "retryable": "retryable", "refused": "refused"}.get(
            outcome.status, "internal_error")
        setattr(self, key, getattr(self, key) + 1)
        self.bytes_in += int(outcome.extra.get("bytes_in", 0))
        self.bytes_out += int(outcome.extra.get("bytes_out", 0))
        self.seconds += outcome.duration_ms / 1000
        if key in ("done", "failed") and outcome.duration_ms:
            self.histogram[bisect.bisect_right(DURATION_BUCKETS_MS, outcome.duration_ms)] += 1


@dataclass
class Summary:
    """What a backfill did; printed as JSON on stdout."""

    files: int = 0
    unrouted: int = 0
    companions: int = 0
    would_process: int = 0
    workers: dict[str, WorkerTally] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    slowest: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    engine: str = "local"
    throttled: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: Outcome) -> None:
        self.workers.setdefault(outcome.worker, WorkerTally()).add(outcome)
        if outcome.status in ("failed", "retryable", "refused", "internal-error") and (
            len(self.failures) < MAX_LISTED_FAILURES
        ):
            self.failures.append(outcome.summary())
        if outcome.status == "done":
            self.slowest.append({"input": outcome.input, "worker": outcome.worker,
                                 "duration_ms": outcome.duration_ms})
            self.slowest = sorted(self.slowest, key=lambda s: -float(s["duration_ms"]))[:SLOWEST_LISTED]

    def total(self, key: str) -> int:
        return sum(int(getattr(t, key)) for t in self.workers.values())

    @property
    def exit_code(self) -> int:
        if self.total("internal_error"):
            return 1
        if self.total("retryable") or self.interrupted:
            return 75
        return 0

    def to_json(self) -> dict[str, Any]:
        keys = ("done", "skipped", "failed", "retryable", "refused", "internal_error")
        return {
            "engine": self.engine,
            "files": self.files,
            "unrouted": self.unrouted,
            "companions": self.companions,
            **({"would_process": self.would_process} if self.would_process else {}),
            "totals": {k: self.total(k) for k in keys},
            "workers": {name: {**vars(t), "seconds": round(t.seconds, 3)} for name, t in self.workers.items()},
            "failures": self.failures,
            "slowest": self.slowest,
            **({"throttled": self.throttled} if self.throttled else {}),
            "interrupted": self.interrupted,
            "duration_s": round(time.monotonic() - self.started, 3),
        }


class Progress:
    """A one-line progress display on stderr (rewritten in place on a terminal)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last = 0.0

    def update(self, summary: Summary, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else 10.0)):
            return
        self.last = now
        elapsed = max(now - summary.started, 1e-6)
        handled = sum(summary.total(k) for k in ("done", "skipped", "failed", "retryable", "refused",
                                                   "internal_error"))
        line = (f"backfill: {summary.files} files | done {summary.total('done')} skipped {summary.total('skipped')} "
                f"failed {summary.total('failed')} retry {summary.total('retryable')} "
                f"unrouted {summary.unrouted} | {handled / elapsed:.1f}/s")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


MAX_INPUTS_PER_CHILD = 500  # a child is replaced after this many inputs (bounds any library leak)


def _child_loop(conn: Connection, cfg: MountConfig, specs: Mapping[str, WorkerSpec], retry_failed: bool,
                wait_seconds: float | None) -> None:
    """A pool child: run inputs sent by the parent until told to stop (None) or recycled.

    ``specs`` came with the fork (a worker's sniff may be a lambda: it is never pickled).
    """
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
        conn.send({"status": outcome.status, "run_id": outcome.run_id, "code": outcome.code,
                   "message": outcome.message, "duration_ms": outcome.duration_ms,
                   "extra": {k: v for k, v in outcome.extra.items() if k in ("bytes_in", "bytes_out")}})


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
                 specs: Iterable[WorkerSpec] = ()) -> None:
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
        args = (child_end, self.cfg, self.specs, self.retry_failed, self.wait_seconds)
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
            message: dict[str, Any] | None = None
            with contextlib.suppress(EOFError, OSError):
                if child.conn.poll():
                    message = child.conn.recv()
            if message is not None:
                finished.append(Outcome(message["status"], child.item.key, child.spec.name, message["run_id"],
                                        code=message["code"], message=message["message"],
                                        duration_ms=message["duration_ms"], extra=message["extra"]))
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


CRASH_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


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
            return commit_crash(run.spec, run.item.input, run.item.options, cfg, message)
        except MountworksError as exc:
            message += f" (and its error record could not be written: {exc.message})"
    return Outcome("retryable", run.item.key, run.spec.name, code="worker-killed", message=message)


def backfill(
    cfg: MountConfig,
    specs: list[WorkerSpec],
    *,
    jobs: int,
    options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """Process every file under ``ingest/`` with every worker that accepts it."""
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    summary = Summary()
    progress = progress or Progress(sys.stderr, enabled=False)
    pool = IsolatedPool(jobs, cfg, retry_failed, specs=specs)
    options = dict(options or {})
    try:
        root_prefix = str(cfg.root).rstrip("/") + "/"
        for path, is_symlink in walk_files(cfg.ingest_dir):
            summary.files += 1
            for outcome in pool.collect(block=False):
                summary.add(outcome)
            rel = path[len(root_prefix):]
            for spec, item in route(cfg, specs, rel, options, retry_failed, summary, walked=not is_symlink):
                if dry_run:
                    summary.would_process += 1
                    continue
                while pool.full():
                    for outcome in pool.collect(block=True):
                        summary.add(outcome)
                pool.submit(spec, item)
            progress.update(summary)
        while pool.running:
            for outcome in pool.collect(block=True):
                summary.add(outcome)
            progress.update(summary)
        pool.close()
    except KeyboardInterrupt:
        summary.interrupted = True
        pool.stop()
    progress.update(summary, final=True)
    return summary


def route(cfg: MountConfig, specs: list[WorkerSpec], rel: str, options: Mapping[str, Any],
          retry_failed: bool, summary: Summary, *, walked: bool = False) -> list[tuple[WorkerSpec, WorkItem]]:
    """The (worker, item) pairs to run for one file (``rel``: relative to the mount root).

    Shared by every engine: committed ones are tallied as skipped after a ``stat`` and a
    ``_seen`` lookup (no content read); the rest are routed by their first bytes.
    ``walked``: the local walk found it as a plain file inside ``ingest/``, so it needs no
    symlink resolution (every run resolves and confines it again before opening it).
    """
    try:
        ref = input_from_path(cfg, rel)
        if ref is None:
            return []
        real = Path(os.path.join(cfg.root, rel)) if walked else resolve_input(cfg, ref)
        st = real.stat()
    except (RefusedPath, OSError) as exc:
        summary.unrouted += 1
        summary.failures.append({"input": rel, "status": "refused", "error": {"code": "refused-path",
                                                                               "message": str(exc)}})
        return []
    if any(s.is_companion(ref.name.name) for s in specs):
        summary.companions += 1  # e.g. a schema contract beside a CSV: read by its input's run
        return []
    hinted = [s for s in specs if s.hinted_by(ref.name.name)]
    skip = [s for s in hinted
            if _quiet(committed_without_reading, s, ref, options_for(s.name, options), st, cfg, retry_failed)]
    if skip and len(skip) == len(hinted):
        for spec in skip:
            summary.add(Outcome("skipped", rel, spec.name))
        return []
    try:
        with real.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        head = b""
    chosen = [s for s in specs if s.accepts(head)]
    if not chosen:
        summary.unrouted += 1
        return []
    work = []
    for spec in chosen:
        mine = options_for(spec.name, options)
        if spec in skip or _quiet(committed_without_reading, spec, ref, mine, st, cfg, retry_failed):
            summary.add(Outcome("skipped", rel, spec.name))
        else:
            work.append((spec, WorkItem("backfill", rel, input=ref, options=mine)))
    return work


def _quiet(check: Any, *args: Any) -> bool:
    """A committed-check whose option errors surface later, in the run itself."""
    try:
        return bool(check(*args))
    except UsageError:
        return False
