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
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from shared.config import MountConfig
from shared.errors import EXIT_DONE, EXIT_RETRYABLE, REFUSED_PATH, RefusedPath, UsageError
from shared.events import WorkItem
from shared.isolation import IsolatedPool
from shared.options import options_for
from shared.outcomes import BACKFILL_EXIT_PRECEDENCE, STATUS_TABLE, TALLIES, Outcome, Status
from shared.paths import InputRef, input_from_path, not_regular, open_regular, resolve_input
from shared.runs import Run, canonical_json
from shared.worker import SNIFF_BYTES, WorkerSpec

MAX_LISTED_FAILURES = 50
FAILURE_TALLIES = ("failed", "retryable", "refused", "internal_error")  # listed by input in the summary
SLOWEST_LISTED = 5
# Upper bounds (ms) of the duration histogram's buckets: a flat-memory view of every run.
DURATION_BUCKETS_MS = (10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000)


def walk_files(top: Path) -> Iterator[tuple[str, bool]]:
    """(path, is_symlink) of every file below ``top`` that is not a folder, depth first,
    streamed, as strings: millions of paths go through here. Symlinked folders are not
    followed, so a path that is not itself a symlink is already its real path. FIFOs,
    sockets and devices are yielded too, so that :func:`route` counts them as unrouted
    and says why, rather than letting them vanish from the count."""
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
                    else:
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
    """Is this input already committed by this worker? The ``stat`` (done by the caller) and
    the run's ``_seen`` pointer answer it: no content read (:meth:`Run.known_by_stat`)."""
    normalized = _normalized_options(spec, canonical_json(dict(options)))
    return Run(cfg, spec.name, spec.version, ref, normalized).known_by_stat(st, retry_failed=retry_failed)


@dataclass
class WorkerTally:
    """One worker's counts; the keys are the status table's tallies (``Faces.tally``)."""

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
        key = outcome.faces.tally
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
    unrouted_files: list[str] = field(default_factory=list)
    slowest: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    engine: str = "local"
    throttled: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: Outcome) -> None:
        self.workers.setdefault(outcome.worker, WorkerTally()).add(outcome)
        if outcome.faces.tally in FAILURE_TALLIES and len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append(outcome.summary())
        if outcome.status is Status.DONE:
            self.slowest.append({"input": outcome.input, "worker": outcome.worker,
                                 "duration_ms": outcome.duration_ms})
            self.slowest = sorted(self.slowest, key=lambda s: -float(s["duration_ms"]))[:SLOWEST_LISTED]

    def add_unrouted(self, rel: str) -> None:
        """A file no worker accepts: counted, and named (the first few) so one can look."""
        self.unrouted += 1
        if len(self.unrouted_files) < MAX_LISTED_FAILURES:
            self.unrouted_files.append(rel)

    def total(self, key: str) -> int:
        return sum(int(getattr(t, key)) for t in self.workers.values())

    @property
    def exit_code(self) -> int:
        """The status table's ``backfill_exit`` of the gravest status counted (an interrupted
        run is retryable: run it again and it resumes)."""
        present = {faces.backfill_exit for faces in STATUS_TABLE.values() if self.total(faces.tally)}
        if self.interrupted:
            present.add(EXIT_RETRYABLE)
        return next(code for code in BACKFILL_EXIT_PRECEDENCE if code in present or code == EXIT_DONE)

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "files": self.files,
            "unrouted": self.unrouted,
            "companions": self.companions,
            **({"would_process": self.would_process} if self.would_process else {}),
            "totals": {k: self.total(k) for k in TALLIES},
            "workers": {name: {**vars(t), "seconds": round(t.seconds, 3)} for name, t in self.workers.items()},
            "failures": self.failures,
            "unrouted_files": self.unrouted_files,
            "slowest": self.slowest,
            **({"throttled": self.throttled} if self.throttled else {}),
            "interrupted": self.interrupted,
            "duration_s": round(time.monotonic() - self.started, 3),
        }


class TreeCounter:
    """Counts the files below ``top`` a slice at a time, between the backfill's own steps,
    so the progress bar gets a total and an ETA while processing has already started.
    No thread: the backfill forks its workers, and forking a threaded process is unsafe."""

    def __init__(self, top: Path, step: int = 500) -> None:
        self._walk = walk_files(top)
        self.step = step
        self.count = 0
        self.done = False

    def advance(self) -> None:
        for _ in range(0 if self.done else self.step):
            if next(self._walk, None) is None:
                self.done = True
                return
            self.count += 1

    def finish(self, count: int) -> None:
        """The backfill's own walk ended first: its count is the total."""
        self.count, self.done = count, True

    @property
    def total(self) -> int | None:
        return self.count if self.done else None


class Progress:
    """A progress bar on stderr: rewritten in place on a terminal, a line every 10 s elsewhere.

    While it is shown (:meth:`guard`), every other write to stderr (log lines, from forked
    workers too) first clears the bar's line, so a log line never lands inside the bar.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last = 0.0
        self.drawn = False  # the bar is on the terminal's current line
        self.counter: TreeCounter | None = None

    def line(self, summary: Summary) -> str:
        elapsed = max(time.monotonic() - summary.started, 1e-6)
        rate = summary.files / elapsed
        total = self.counter.total if self.counter else None
        counts = (f"done {summary.total('done')} skipped {summary.total('skipped')} failed {summary.total('failed')} "
                  f"retry {summary.total('retryable')} unrouted {summary.unrouted}")
        if total is None:
            counted = f" (counting: {self.counter.count}+)" if self.counter else ""
            return f"backfill: {summary.files} files{counted} | {counts} | {rate:.1f} files/s"
        share = min(1.0, summary.files / total) if total else 1.0
        filled = round(share * self.WIDTH)
        eta = (total - summary.files) / rate if rate > 0 and summary.files < total else 0.0
        return (f"backfill [{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%} {summary.files}/{total} files"
                f" | {counts} | {rate:.1f}/s ETA {_clock(eta)}")

    def update(self, summary: Summary, *, final: bool = False) -> None:
        if self.counter is not None:
            self.counter.advance()
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else 10.0)):
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line(summary) + ("\n" if final else ""))
            self.drawn = not final
        else:
            self.stream.write(self.line(summary) + "\n")
        self.stream.flush()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Route ``sys.stderr`` through :class:`_ClearsBar` while the bar is shown."""
        if not (self.enabled and self.tty):
            yield
            return
        saved, sys.stderr = sys.stderr, _ClearsBar(self.stream, self)
        try:
            yield
        finally:
            sys.stderr = saved


class _ClearsBar:
    """A stderr that clears the progress bar's line before any other text is written; the
    next update draws the bar again below it. A forked worker cannot know whether the bar
    is drawn (its state is a copy), so it always clears the line first."""

    def __init__(self, stream: TextIO, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress
        self._owner = os.getpid()
        self._midline = False  # the last text written did not end its line: do not clear it

    def write(self, text: str) -> int:
        if not text:
            return 0
        self._midline, midline = not text.endswith("\n"), self._midline
        if not midline and (self._progress.drawn or os.getpid() != self._owner):
            self._progress.drawn = False
            self._stream.write("\r\x1b[2K" + text)  # one write: stderr writes through, unbuffered
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
    if progress.enabled:
        progress.counter = TreeCounter(cfg.ingest_dir)
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
        if progress.counter is not None:
            progress.counter.finish(summary.files)
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
        kind = not_regular(st.st_mode)
        if kind is not None:  # a FIFO would block the sniff's read for ever; never open one
            raise RefusedPath(f"{rel} is {kind}, not a regular file; only regular files are processed")
    except (RefusedPath, OSError) as exc:
        _unrouted(summary, rel, str(exc))
        return []
    if any(s.is_companion(ref.name.name) for s in specs):
        summary.companions += 1  # e.g. a schema contract beside a CSV: read by its input's run
        return []
    hinted = [s for s in specs if s.hinted_by(ref.name.name)]
    skip = [s for s in hinted
            if _quiet(committed_without_reading, s, ref, options_for(s.name, options), st, cfg, retry_failed)]
    if skip and len(skip) == len(hinted):
        for spec in skip:
            summary.add(Outcome(Status.SKIPPED, rel, spec.name))  # committed before
        return []
    try:
        with open_regular(real) as f:  # O_NONBLOCK and fstat: a FIFO swapped in since the stat
            head = f.read(max((s.sniff_bytes for s in specs), default=SNIFF_BYTES))
    except RefusedPath as exc:
        _unrouted(summary, rel, str(exc))
        return []
    except OSError:
        head = b""
    chosen = [s for s in specs if s.accepts(head)]
    if not chosen:
        summary.add_unrouted(rel)
        return []
    work = []
    for spec in chosen:
        mine = options_for(spec.name, options)
        if spec in skip or _quiet(committed_without_reading, spec, ref, mine, st, cfg, retry_failed):
            summary.add(Outcome(Status.SKIPPED, rel, spec.name))  # committed before
        else:
            work.append((spec, WorkItem("backfill", rel, input=ref, options=mine)))
    return work


def _unrouted(summary: Summary, rel: str, reason: str) -> None:
    """A file no worker will be given (refused, not a regular file), listed with why."""
    summary.unrouted += 1
    if len(summary.failures) < MAX_LISTED_FAILURES:
        summary.failures.append({"input": rel, "status": str(Status.REFUSED),
                                 "error": {"code": REFUSED_PATH, "message": reason}})


def _quiet(check: Any, *args: Any) -> bool:
    """A committed-check whose option errors surface later, in the run itself."""
    try:
        return bool(check(*args))
    except UsageError:
        return False
