"""PDFium's half of every page, in forked page processes that start before pypdf is imported.

PDFium is native code, so it runs only in forked children: a crash on a hostile file ends
that input as ``decoder-crash``, never the process that commits (in Lambda, the only one).
The first child (the leader) is forked as soon as the input's bytes are read, before this
process imports or opens anything of pypdf; while it extracts the text, this process reads
the document with pypdf (page boxes, links, the content-size check, the structure). On two
cores the two halves overlap; on one they cost what one process would.

Work is handed out in chunks of pages through one pipe that every page process reads: the
leader, which counts the pages as PDFium opens the document, writes a token per chunk;
whoever is free takes the next one. So option ``parallel=N`` starts N processes at once,
the automatic mode adds processes as soon as pypdf has counted enough pages, and a process
that starts late (or is slowed by a neighbour) simply takes fewer chunks.

Each chunk is written to a file of its own, one JSON line per page in page order:
``{"page", "text", "box"[, "images"]}``, ``{"page", "error"}`` (PDFium cannot read the page:
pypdf reads it instead), ``{"page", "timeout": true}`` (it took longer than the page's time)
or ``{"page", "skip": true}`` (a page the content-size check rejected: its text is never
kept). This process talks to each child through a control pipe (``skip N``; ``upto N``:
pypdf's page count, past which nothing is read) and hears from it on its report pipe
(``count``, ``chunk START STOP``). A child stopped on a page (its watchdog, or out of memory)
leaves that page to this process's record and the rest of its chunk to a new child.

Memory: each page process may grow by its share of what the function has left (the
function's memory, or option ``memory_mb``, less this process's own and a reserve). A page
whose fonts or images ask PDFium for more (a flate bomb in a ToUnicode map or a font
program: a 2 MB file can ask for gigabytes) makes PDFium's allocation fail in that child
alone; the page is flagged ``limit`` (``memory``) and the rest go on in a new process, as
after a page that hangs. Without the cap the whole function would be killed, and so would
every retry.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared import memory
from shared.config import function_cpu_count, function_cpus, in_lambda
from shared.errors import CorruptInput, DeadlineReached, LimitExceeded, MountworksError
from shared.worker import Deadline
from workers.pdf_extract import forks
from workers.pdf_extract.budget import Budget, NativeWatchdog
from workers.pdf_extract.options import Options

PARENT_RESERVE_MB = 96  # kept back for this process: pypdf's reader, document.json, the commit
MIN_PAGE_PROCESS_MB = 128  # a page process may always grow this much (PDFium's working set on normal pages)
HEAP_KEPT_MB, HEAP_MMAP_MB = 64, 1  # PDFium's per-page working set stays in the heap: memory.keep_freed_heap
CHUNK_PAGES = 16  # pages per token at most (more only for documents that would need over MAX_TOKENS)
SHORT_CHUNKS = 8  # a short document is cut in this many chunks: a page process added late still finds some
HELPER_PAGES = 32  # pages left per page process the automatic mode runs: below, a process added once pypdf
#                    has counted (its fork, its start beside two busy ones, its own open of the document
#                    and first page) costs more than its share saves (48 pages, warm: 0.91x)
MAX_TOKENS = 2048  # all of them fit the pipe at once (64 KiB), so the leader never waits to write them
_TOKEN = 16  # bytes: "START STOP\n", fixed width, so that every read takes one whole token
_BATCH = 16  # tokens per write: 256 bytes, under PIPE_BUF, so each write is whole (or EAGAIN)


def page_process_memory_mb(options: Options, processes: int) -> float:
    """What each of ``processes`` page processes may add to its memory: the function's
    memory (or option ``memory_mb``) less this process's own and PARENT_RESERVE_MB."""
    return memory.share_mb(processes, reserve_mb=PARENT_RESERVE_MB, floor_mb=MIN_PAGE_PROCESS_MB,
                           budget_mb=options.memory_mb)


def free_cpus() -> float:
    """CPUs nobody keeps busy now: the function's (:func:`~shared.config.function_cpus`) less
    the processes runnable at this moment besides this one (a backfill may already run one
    input per CPU; this run's page processes count too). The instant count of
    ``/proc/loadavg``, not its 1-minute average: the choice holds for the next moments, and
    the average also counts this very run."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            runnable = int(f.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return function_cpus() - max(0, runnable - 1)


def auto_processes(pages_left: int, running: int = 0) -> int:
    """Page processes worth running (the automatic mode) for ``pages_left`` pages no process
    has taken yet, ``running`` of them running already: one more per free CPU, as long as each
    has HELPER_PAGES pages at least."""
    return max(1, running, min(running + round(free_cpus()), pages_left // HELPER_PAGES))


def workers_for(options: Options, pages: int) -> int:
    """Processes for ``pages`` pages: as asked (option ``parallel``), else :func:`auto_processes`.

    Only the speed depends on this: the result is the same for any number of processes."""
    if options.parallel >= 1:
        return max(1, min(options.parallel, pages))
    return auto_processes(pages)


def chunk_pages(pages: int) -> int:
    return max(1, min(CHUNK_PAGES, math.ceil(pages / SHORT_CHUNKS)), math.ceil(pages / MAX_TOKENS))


def chunk_file(folder: Path, start: int) -> Path:
    return folder / f"{start:08d}.jsonl"


@dataclass
class _Chunk:
    """A chunk a process took: pages ``start..stop-1``; lines for ``start..complete-1`` once
    it is done (or its process was stopped on page ``complete``)."""

    start: int
    stop: int
    complete: int | None = None


class _Control:
    """The child's end of its control pipe: messages read without waiting."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd, self._buffer = fd, b""
        self.skip: set[int] = set()
        self.upto: int | None = None

    def read(self) -> None:
        try:
            while data := os.read(self.fd, 65536):
                self._buffer += data
        except BlockingIOError:
            pass
        *lines, self._buffer = self._buffer.split(b"\n")
        for kind, value in (line.decode().split() for line in lines):
            if kind == "skip":
                self.skip.add(int(value))
            elif kind == "upto":
                self.upto = int(value)

    def past(self, index: int) -> bool:
        return self.upto is not None and index >= self.upto


class _Tokens:
    """The leader's tokens, one per chunk, in page order: written to the work pipe as far as
    it takes them without waiting (normally all at once: MAX_TOKENS fit a default pipe);
    those left over, where a pipe is smaller, the leader does itself, from the last."""

    def __init__(self, fd: int, first: int, stop: int) -> None:
        os.set_blocking(fd, False)
        size = chunk_pages(stop - first)
        self.fd = fd
        self.pending = [f"{start:07d} {min(start + size, stop):07d}\n".encode() for start in range(first, stop, size)]
        self.top_up()

    def top_up(self) -> None:
        while self.pending and self.fd >= 0:
            batch = self.pending[:_BATCH]
            try:
                os.write(self.fd, b"".join(batch))  # at most PIPE_BUF: all of it, or EAGAIN
            except BlockingIOError:
                return
            del self.pending[:len(batch)]
        if self.fd >= 0:  # all handed out: the pipe ends when the processes have read them
            os.close(self.fd)
            self.fd = -1

    def take_own(self) -> tuple[int, int] | None:
        """A token the pipe had no room for, or None once they are all in the pipe."""
        self.top_up()
        if not self.pending:
            return None
        start, stop = self.pending.pop().split()
        return int(start), int(stop)


def _next_token(fd: int) -> tuple[int, int] | None:
    data = os.read(fd, _TOKEN)
    while data and len(data) < _TOKEN:
        data += os.read(fd, _TOKEN - len(data))
    if not data:
        return None
    start, stop = data.split()
    return int(start), int(stop)


@dataclass
class _Work:
    """What a child is given: the work pipe, and (the leader) the pages to write tokens for,
    or (a child resuming after a stopped one) a chunk's rest to do first."""

    work_fd: int
    control_fd: int
    tokens: tuple[int, int | None, int] | None = None  # first, last (None: the end), write end
    first_chunk: tuple[int, int] | None = None


def _child(source: bytes | Path, options: Options, folder: Path, work: _Work,
           remaining: float | None, max_seconds_left: float, say: forks.Say) -> forks.Report:
    """One page process: PDFium's half of each page of the chunks it takes, a line each."""
    from workers.pdf_extract.pdfium_text import PdfiumPageError, PdfiumText

    try:
        budget = Budget(Deadline(remaining), options.max_page_seconds, max_seconds_left)
        control = _Control(work.control_fd)
        memory.keep_freed_heap(trim_mb=HEAP_KEPT_MB, mmap_mb=HEAP_MMAP_MB)
        try:
            pdf = PdfiumText(source, options.password)
        except MountworksError as exc:
            say("count", json.dumps(forks.error_report(exc)))
            return None
        count = pdf.page_count()
        tokens = None
        if work.tokens is not None:
            first, last, write_fd = work.tokens
            say("count", str(count))
            tokens = _Tokens(write_fd, first, count if last is None else min(last, count))
        watchdog = NativeWatchdog()

        def chunk(start: int, stop: int) -> None:
            say("chunk", f"{start} {stop}")
            fd = os.open(chunk_file(folder, start), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            index = start
            try:
                for index in range(start, stop):
                    control.read()
                    if control.past(index):
                        return
                    part: dict[str, Any] = {"page": index + 1}
                    if index in control.skip:
                        part["skip"] = True
                    else:
                        budget.check(index + 1)
                        seconds, deadline_bound = budget.page_seconds()
                        started = time.monotonic()
                        try:
                            with watchdog.guard(seconds):
                                part["text"], part["box"] = pdf.read(index)
                                if not part["text"].strip():
                                    part["images"] = pdf.draws_images(index)
                        except PdfiumPageError as exc:
                            part = {"page": index + 1, "error": str(exc)}
                        if time.monotonic() - started > seconds:  # as the page timer would have stopped it
                            if deadline_bound:
                                raise DeadlineReached(f"stopped during page {index + 1}: the invocation's time "
                                                      "is nearly up")
                            part = {"page": index + 1, "timeout": True}
                    os.write(fd, (json.dumps(part) + "\n").encode())  # ASCII: a lone surrogate travels escaped
                index = stop
            finally:
                os.close(fd)
                say("done", f"{start} {index}")  # lines for pages start..index-1

        if work.first_chunk is not None:
            chunk(*work.first_chunk)

        def next_token() -> tuple[int, int] | None:
            own = tokens.take_own() if tokens is not None else None
            return own if own is not None else _next_token(work.work_fd)

        while (token := next_token()) is not None:
            control.read()
            if not control.past(token[0]):
                chunk(*token)
        pdf.close()
        return None
    except MemoryError:  # refused by the cap in Python code (PDFium's own refusals end the process)
        return {"kind": "out_of_memory"}
    except BaseException as exc:
        return forks.error_report(exc)


class PdfiumPages:
    """The page processes of one document, from the leader's fork to the last line read.

    Use: start it, read the document with pypdf meanwhile (:meth:`skip` the pages the
    content-size check rejects; :meth:`plan` once pypdf has counted the pages), then take
    the pages' lines from :meth:`in_order` as they come. Always :meth:`close`.
    """

    def __init__(self, source: bytes | Path, options: Options, budget: Budget, first: int, last: int | None,
                 workers: int = 1) -> None:
        self.source, self.options, self.budget, self.first = source, options, budget, first
        self.folder = Path(tempfile.mkdtemp(prefix="mountworks-pdf-"))
        self.running: dict[int, forks.Child] = {}
        self._controls: dict[int, int] = {}  # child pid -> write end of its control pipe
        self.stops: dict[int, str] = {}  # page index -> why its process was stopped on it
        self.chunks: dict[int, _Chunk] = {}  # by first page: the chunk files, as the processes take them
        self.count: int | None = None  # PDFium's page count, once the leader has opened the document
        self.problem: Exception | None = None  # why PDFium cannot open the document
        self.upto: int | None = None
        self.started = 0
        self.memory_mb = page_process_memory_mb(options, workers)
        # While page processes share this process's memory (copy-on-write), the collector leaves
        # the objects of the fork alone: a full collection writes to every one of them, and the
        # kernel then copies the pages they sit on (that doubled the time pypdf takes to open a
        # document beside a page process). Unfrozen in close().
        gc.freeze()
        self._work_read, work_write = os.pipe()
        try:
            self._start(tokens=(first, last, work_write))
        finally:
            os.close(work_write)
        for _ in range(workers - 1):
            self._start()

    def _start(self, tokens: tuple[int, int | None, int] | None = None,
               first_chunk: tuple[int, int] | None = None) -> forks.Child:
        control_read, control_write = os.pipe()
        try:
            work = _Work(self._work_read, control_read, tokens, first_chunk)
            pid, fd = forks.fork(functools.partial(_child, self.source, self.options, self.folder, work,
                                                   self.budget.deadline.remaining(), self.budget.left()),
                                 self.memory_mb)
        finally:
            os.close(control_read)
        os.set_blocking(control_write, False)
        self.started += 1
        child = forks.Child(pid, fd, "a PDFium page process", self.memory_mb)
        self.running[fd], self._controls[pid] = child, control_write
        if self.upto is not None:
            self._tell(child, f"upto {self.upto}")
        return child

    def _tell(self, child: forks.Child, message: str) -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError, KeyError):
            os.write(self._controls[child.pid], message.encode() + b"\n")

    def skip(self, index: int) -> None:
        """The content-size check rejected page ``index``: no process need read it."""
        for child in self.running.values():
            self._tell(child, f"skip {index}")

    def plan(self, upto: int) -> int:
        """pypdf counts ``upto`` pages: no process reads past them. In the automatic mode
        (option ``parallel=0``), add the page processes worth running for the pages no process
        has taken yet (:func:`auto_processes`): on a cold start the leader is often done with
        a short document by now, on a warm one it has barely begun. Returns how many page
        processes read the document."""
        self.upto = upto
        for child in self.running.values():
            self._tell(child, f"upto {upto}")
        if self.options.parallel == 0:
            self._news()
            wanted = auto_processes(upto - self.first - self._taken(), len(self.running))
            if wanted > self.started:
                self.memory_mb = page_process_memory_mb(self.options, wanted)
                for child in self.running.values():  # forked for fewer processes: their shares shrink
                    child.lower_cap(self.memory_mb)
                for _ in range(wanted - self.started):
                    self._start()
        return max(1, min(self.started, upto - self.first))  # parallel=N on fewer pages: some had none

    def _news(self) -> None:
        """Read what the page processes have written so far, without waiting."""
        if forks.news(self.running):
            self._step(timeout=0)

    def _taken(self) -> int:
        """Pages the page processes have taken so far (their chunks)."""
        return sum(chunk.stop - chunk.start for chunk in self.chunks.values())

    def page_count(self) -> int:
        """PDFium's page count (pypdf cannot open the document); raise why PDFium cannot either."""
        while self.count is None and self.problem is None and self.running:
            self._step()
        if self.problem is not None:
            raise self.problem
        if self.count is None:
            raise CorruptInput("PDFium did not open the document")
        return self.count

    def _step(self, timeout: float = forks.POLL_SECONDS) -> None:
        for child, end in forks.wait(self.running, self.budget, timeout):
            self._read_messages(child)
            self._ended(child, end)
        for child in list(self.running.values()):
            self._read_messages(child)

    def _read_messages(self, child: forks.Child) -> None:
        if (count := child.take("count")) is not None:
            if count.isdigit():
                self.count = int(count)
            else:
                self.problem = forks.error_from_report(json.loads(count))
        while (chunk := child.take("chunk")) is not None:
            start, stop = (int(n) for n in chunk.split())
            child.share = (start, stop)
            self.chunks[start] = _Chunk(start, stop)
        while (done := child.take("done")) is not None:
            start, end = (int(n) for n in done.split())
            self.chunks[start].complete = end

    def _ended(self, child: forks.Child, end: forks.Report) -> None:
        os.close(self._controls.pop(child.pid))
        if end is None or end.get("kind") not in ("hung", "out_of_memory"):
            return
        if child.share is None:  # stopped before its first page: while PDFium opened the document
            if self.count is None and self.problem is None:
                self.problem = LimitExceeded(
                    f"PDFium needed more than {child.memory_mb:,.0f} MB to open the document; give the function "
                    "more memory or set option memory_mb higher" if end["kind"] == "out_of_memory" else
                    "PDFium did not open the document in time",
                    limit="memory" if end["kind"] == "out_of_memory" else "MAX_PAGE_SECONDS")
            return
        start, stop = child.share
        done = 0
        with contextlib.suppress(FileNotFoundError), chunk_file(self.folder, start).open(encoding="utf-8") as f:
            done = sum(1 for _ in f)
        stuck = start + done
        self.stops[stuck] = end["kind"]
        self.chunks[start].complete = stuck
        self._start(first_chunk=(stuck + 1, stop) if stuck + 1 < stop else None)

    def in_order(self, indexes: range) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
        """For each page of ``indexes`` in order: its line (None where no process read it:
        PDFium cannot open the document, or does not count the page) and, for a page whose
        process was stopped on it, why. Each chunk is handed out as soon as it is complete,
        so the records are written while the processes work on the next chunks."""
        chunk: _Chunk | None = None
        lines: IO[str] | None = None
        try:
            for index in indexes:
                while True:
                    if index in self.stops:
                        yield None, self.stops[index]
                        break
                    if chunk is not None and lines is not None and chunk.start <= index < (chunk.complete or 0):
                        yield json.loads(lines.readline()), None
                        break
                    found = self.chunks.get(index)
                    if found is not None and found.complete is not None and found.complete > index:
                        if lines is not None:
                            lines.close()
                        chunk, lines = found, chunk_file(self.folder, found.start).open(encoding="utf-8")
                        continue
                    if not self.running:  # no process read it, and none will
                        yield None, None
                        break
                    self._idle()
                    self._step()
        finally:
            if lines is not None:
                lines.close()

    def _idle(self) -> None:
        """This process is about to wait for its page processes: the first time, it loads
        PDFium (never calling it), so that the page processes of the next input (a warm
        invocation, a backfill's next file) inherit it instead of each loading it (~20 ms).
        Only where it costs no page process its CPU (an idle one), or pays back (Lambda: a
        function serves invocation after invocation), and only when there is a wait to fill:
        a page process that has already written its news (a short document, done while pypdf
        was imported) is read at once, not after ~20 ms of loading."""
        if "pypdfium2" in sys.modules or not (len(self.running) < self._cpus or in_lambda()):
            return
        if not forks.news(self.running):
            import workers.pdf_extract.pdfium_text  # noqa: F401

    @functools.cached_property
    def _cpus(self) -> int:  # read once: _idle runs at every wait until PDFium is loaded
        return function_cpu_count()

    def close(self) -> None:
        for fd in self._controls.values():
            os.close(fd)
        self._controls.clear()
        forks.stop(self.running)
        if self._work_read >= 0:
            os.close(self._work_read)
            self._work_read = -1
            gc.unfreeze()
        shutil.rmtree(self.folder, ignore_errors=True)
