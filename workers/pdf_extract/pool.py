"""The page processes of pdf-extract: forked children that extract pages, merged in page order.

Two reasons to fork. Speed: the selected pages can be split over processes (option
``parallel``, automatic above PARALLEL_MIN_PAGES pages); this process may take one share
of the chunks while each child takes another. Safety: PDFium is native code, so with
``engine=pdfium`` every page is extracted in a child, also with one process and also in
Lambda (where no parent isolates the run): a child killed by a crash signal makes the
input a ``decoder-crash``, while this process, which commits, never runs PDFium. Every
share is written as chunk files to a private temporary folder, then merged in page order
through the very same writer, so the result is byte-for-byte the same for any number of
processes. A parent waiting for children still holds the deadline and MAX_SECONDS.

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
import io
import json
import math
import os
import select
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pypdf import apply_configuration

from shared import memory
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
from shared.worker import Deadline
from workers.pdf_extract.budget import HUNG_EXIT, Budget, NativeWatchdog
from workers.pdf_extract.opening import OpenDocument, pypdf_limits, short
from workers.pdf_extract.options import Options
from workers.pdf_extract.pages import Engines, extract_page, stopped_record

PARALLEL_MIN_PAGES = 64  # automatic page-range parallelism only pays off above this
CHUNK_PAGES = 16  # pages per unit of work handed to a process
POLL_SECONDS = 0.25  # how often a waiting parent checks the deadline and MAX_SECONDS
PARENT_RESERVE_MB = 96  # kept back for this process: merging, document.json, the commit
MIN_PAGE_PROCESS_MB = 128  # a page process may always grow this much (PDFium's working set on normal pages)
# A child that crashed after growing by at least this share of its cap ran out of it. Not
# all of it: the refused request may be a large one (a buffer doubling asks for as much
# again as it holds), and a crash from a bug rarely comes with this much memory in use.
OUT_OF_MEMORY_SHARE = 0.5

Report = dict[str, Any] | None


def _chunks(indexes: range, workers: int) -> list[range]:
    """Units of work: at most CHUNK_PAGES pages, and at least ~4 per process (load balance)."""
    size = max(1, min(CHUNK_PAGES, math.ceil(len(indexes) / (workers * 4))))
    return [range(start, min(start + size, indexes.stop)) for start in range(indexes.start, indexes.stop, size)]


def _write_chunks(engines: Engines, options: Options, chunks: list[tuple[int, range]], folder: Path,
                  budget: Budget) -> None:
    """Append each page's record to its chunk's file, one whole line at a time: after a page
    process is stopped, the lines tell the parent which page it was on."""
    for number, pages in chunks:
        with (folder / f"{number:08d}.jsonl").open("a", encoding="utf-8") as f:
            for index in pages:
                f.write(json.dumps(extract_page(engines, index, options, budget), ensure_ascii=False) + "\n")
                f.flush()


def _error_report(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MountworksError):
        return {"kind": type(exc).__name__, "message": exc.message, "code": exc.code,
                "limit": getattr(exc, "limit", None)}
    return {"kind": "bug", "message": f"{type(exc).__name__}: {short(exc)}", "code": "internal", "limit": None}


def _own_stream(doc: OpenDocument) -> None:
    """After a fork: an in-memory copy is private already; a file streamed from the mount is
    opened again, since a shared descriptor would share its offset with the parent."""
    if doc.reader is not None and not isinstance(doc.reader.stream, io.BytesIO):
        doc.reader.stream = doc.path.open("rb")


def _child(doc: OpenDocument, options: Options, chunks: list[tuple[int, range]], folder: Path,
           remaining: float | None, max_seconds_left: float) -> Report:
    """One page process: write each chunk's records to a file.

    It works on the reader it inherited through ``fork`` (the document already parsed, its
    object cache warm) and opens PDFium itself. Returns None on success, else an error report.
    """
    try:
        budget = Budget(Deadline(remaining), options.max_page_seconds, max_seconds_left)
        _own_stream(doc)
        engines = Engines(doc, options, NativeWatchdog() if options.engine == "pdfium" or doc.reader is None
                          else None)
        with apply_configuration(**pypdf_limits(options)):
            _write_chunks(engines, options, chunks, folder, budget)
        engines.close()
        return None
    except MemoryError:  # refused by the cap in Python code (PDFium's own refusals end the process)
        return {"kind": "out_of_memory"}
    except BaseException as exc:
        return _error_report(exc)


def page_process_memory_mb(options: Options, processes: int) -> float:
    """What each of ``processes`` page processes may add to its memory: the function's
    memory (or option ``memory_mb``) less this process's own and PARENT_RESERVE_MB."""
    return memory.share_mb(processes, reserve_mb=PARENT_RESERVE_MB, floor_mb=MIN_PAGE_PROCESS_MB,
                           budget_mb=options.memory_mb)


def _pdfium_count(doc: OpenDocument, options: Options) -> Report:
    try:
        return {"kind": "ok", "page_count": Engines(doc, options).pdfium().page_count()}
    except BaseException as exc:
        return _error_report(exc)


def _fork(work: Callable[[], Report], memory_mb: float) -> tuple[int, int]:
    """Run ``work`` in a forked child that may grow by ``memory_mb``; on a pipe come its
    resident set at the start (a line of KB: what it grew from, see :func:`_collect`), then
    its JSON report.

    A bare ``os.fork`` rather than ``multiprocessing``: the runtime may already run us in a
    daemonic ``multiprocessing`` child (which may not have children), and Lambda has no
    ``/dev/shm`` for ``multiprocessing``'s pools and queues. The child never returns into
    the caller's stack: it always leaves through ``os._exit``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 0
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            memory.cap_data_growth(memory_mb)
            os.write(write_fd, b"%d\n" % int(memory.resident_mb() * 1024))
            report = json.dumps(work()).encode()
            view = memoryview(report)
            while view:
                view = view[os.write(write_fd, view):]
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


@dataclass
class _Running:
    pid: int
    what: str
    memory_mb: float  # its cap: what it may grow by
    share: list[tuple[int, range]] = field(default_factory=list)


def _collect(running: _Running, fd: int) -> dict[str, Any] | None:
    """Read a finished child's report and reap it; raise what it reported, or what killed it.

    A child that crashed (SIGSEGV, SIGABRT, ...) after growing by OUT_OF_MEMORY_SHARE of its
    memory cap ran out of it: ``out_of_memory``, for the page it was on. Growing: from the resident set
    it reported at its start, which holds what it shares with this process since the fork
    (not all of this one's: the kernel copies no mapping of a file it has not written). Any
    other crash died in native code on this input: a permanent ``decoder-crash``, as when the
    CLI's isolation sees its own child crash."""
    chunks = []
    while data := os.read(fd, 65536):
        chunks.append(data)
    _, status, usage = os.wait4(running.pid, 0)
    start, newline, raw = b"".join(chunks).partition(b"\n")
    started_mb = int(start) / 1024 if newline and start.isdigit() else memory.peak_mb(usage)
    report = json.loads(raw) if raw else "no report"
    if report is None:
        return None
    if isinstance(report, dict):
        if report.get("kind") in ("ok", "out_of_memory"):
            return report
        _raise_from_child(report)
    if os.WIFEXITED(status) and os.waitstatus_to_exitcode(status) == HUNG_EXIT:
        return {"kind": "hung"}
    from shared.isolation import CRASH_SIGNALS

    crashed = os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASH_SIGNALS
    if crashed and memory.peak_mb(usage) - started_mb >= OUT_OF_MEMORY_SHARE * running.memory_mb:
        return {"kind": "out_of_memory"}
    if crashed:
        raise CorruptInput(f"{running.what} was {_exit_text(status)} inside the PDF library (PDFium or pypdf) on this "
                           "document: it cannot be processed", code=DECODER_CRASH)
    raise RuntimeError(f"{running.what} died ({_exit_text(status)})")


def _wait(pending: dict[int, _Running], budget: Budget) -> list[tuple[_Running, dict[str, Any]]]:
    """Collect every child (by read fd), holding the deadline and MAX_SECONDS meanwhile;
    the reports of those that reported something (a result, or that they were stopped:
    hung, or out of memory)."""
    reports = []
    while pending:
        budget.check_total("while pages were extracted")
        ready, _, _ = select.select(list(pending), [], [], POLL_SECONDS)
        for fd in ready:
            running = pending.pop(fd)
            try:
                report = _collect(running, fd)
            finally:
                os.close(fd)
            if report is not None:
                reports.append((running, report))
    return reports


def _stop(pending: dict[int, _Running]) -> None:
    for fd, running in pending.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)
        os.waitpid(running.pid, 0)
        os.close(fd)
    pending.clear()


def _resume_after_stop(share: list[tuple[int, range]], folder: Path,
                       record: Callable[[int], dict[str, Any]]) -> list[tuple[int, range]]:
    """A page process stopped on a page (its watchdog, or out of memory): write ``record``
    of the page it was on (in its chunk file) and return the rest of its share, for a new
    process."""
    for n, (number, pages) in enumerate(share):
        path = folder / f"{number:08d}.jsonl"
        done = 0
        if path.exists():
            with path.open(encoding="utf-8") as f:
                done = sum(1 for _ in f)
        if done < len(pages):
            stuck = pages.start + done
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record(stuck), ensure_ascii=False) + "\n")
            rest = range(stuck + 1, pages.stop)
            return ([(number, rest)] if rest else []) + share[n + 1:]
    return []


def pdfium_page_count(doc: OpenDocument, options: Options, budget: Budget) -> int:
    """Open the document with PDFium in a child (pypdf could not open it): its page count."""
    pending: dict[int, _Running] = {}
    memory_mb = page_process_memory_mb(options, 1)
    try:
        pid, fd = _fork(functools.partial(_pdfium_count, doc, options), memory_mb)
        pending[fd] = _Running(pid, "the process opening the document with PDFium", memory_mb)
        [(_running, report)] = _wait(pending, budget)
        if report["kind"] == "out_of_memory":
            raise LimitExceeded(f"PDFium needed more than {memory_mb:,.0f} MB to open the document; give the "
                                "function more memory or set option memory_mb higher", limit="memory")
        if report["kind"] != "ok":
            raise LimitExceeded("PDFium did not open the document in time", limit="MAX_PAGE_SECONDS")
        return int(report["page_count"])
    finally:
        _stop(pending)


def extract_pages(doc: OpenDocument, indexes: range, options: Options, budget: Budget, workers: int,
                  in_process: bool, sink: Callable[[dict[str, Any]], None]) -> None:
    """Split the pages over ``workers`` processes; hand their records to ``sink`` in page order.

    ``in_process``: this process is one of the workers (pypdf only: pure Python cannot
    crash it), taking its share with the reader it already has open while ``workers - 1``
    forked children take theirs. Otherwise every share, even a single one, is a child's.
    """
    chunks = list(enumerate(_chunks(indexes, workers)))
    shares = [chunks[w::workers] for w in range(workers)]
    folder = Path(tempfile.mkdtemp(prefix="mountworks-pdf-"))
    pending: dict[int, _Running] = {}
    memory_mb = page_process_memory_mb(options, workers - 1 if in_process else workers)

    def start(share: list[tuple[int, range]]) -> None:
        pid, fd = _fork(functools.partial(_child, doc, options, share, folder, budget.deadline.remaining(),
                                          budget.left()), memory_mb)
        first, last = share[0][1].start + 1, share[-1][1].stop
        pending[fd] = _Running(pid, f"the process extracting pages {first}-{last}", memory_mb, share)

    try:
        for share in shares[1:] if in_process else shares:
            if share:
                start(share)
        if in_process:
            _write_chunks(Engines(doc, options), options, shares[0], folder, budget)
        while pending:
            for running, report in _wait(pending, budget):  # only stopped processes report here
                engines = Engines(doc, options)
                rest = _resume_after_stop(running.share, folder, functools.partial(
                    stopped_record, engines, options=options, why=report["kind"], memory_mb=memory_mb))
                if rest:
                    start(rest)
        for number, _pages in chunks:
            with (folder / f"{number:08d}.jsonl").open(encoding="utf-8") as f:
                for line in f:
                    sink(json.loads(line))
    finally:
        _stop(pending)
        shutil.rmtree(folder, ignore_errors=True)


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _raise_from_child(report: dict[str, Any]) -> None:
    kind, message, code = report["kind"], report["message"], report["code"]
    classes: dict[str, type[MountworksError]] = {
        "DeadlineReached": DeadlineReached, "CorruptInput": CorruptInput, "EncryptedInput": EncryptedInput,
        "UnsupportedInput": UnsupportedInput, "PermanentInputError": PermanentInputError,
    }
    if kind == "LimitExceeded":
        raise LimitExceeded(message, limit=report["limit"] or "?", code=code)
    if kind in classes:
        raise classes[kind](message, code=code)
    raise RuntimeError(f"a page process failed: {message}")


def workers_for(options: Options, pages: int) -> int:
    """Processes for ``pages`` pages: as asked, or one per idle CPU above PARALLEL_MIN_PAGES.

    Only the speed depends on this: the result is the same for any number of processes."""
    if options.parallel >= 1:
        return max(1, min(options.parallel, pages))
    if pages < PARALLEL_MIN_PAGES:
        return 1
    cpus = len(os.sched_getaffinity(0))
    idle = cpus - os.getloadavg()[0]  # a backfill may already run one input per CPU: do not pile on
    return max(1, min(cpus, round(idle), pages // CHUNK_PAGES))

