"""pypdf's page processes (option ``engine=pypdf`` with page ranges): forked children that
extract pages with the reader they inherit, merged in page order.

With option ``parallel`` (automatic: :func:`.text_pages.workers_for`) the selected pages are
split over processes; this process takes one share of the chunks while each child takes
another. Every share is written as chunk files to a private temporary folder, then merged
in page order through the very same writer, so the result is byte-for-byte the same for
any number of processes. A parent waiting for children still holds the deadline and
MAX_SECONDS. (PDFium's text has page processes of its own: :mod:`.text_pages`.)
"""

from __future__ import annotations

import functools
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypdf import apply_configuration

from shared.worker import Deadline
from workers.pdf_extract import forks
from workers.pdf_extract.budget import Budget
from workers.pdf_extract.opening import OpenDocument, pypdf_limits
from workers.pdf_extract.options import Options
from workers.pdf_extract.pages import extract_page, page_facts, stopped_record
from workers.pdf_extract.text_pages import page_process_memory_mb

CHUNK_PAGES = 16  # pages per unit of work handed to a process


def _chunks(indexes: range, workers: int) -> list[range]:
    """Units of work: at most CHUNK_PAGES pages, and at least ~4 per process (load balance)."""
    size = max(1, min(CHUNK_PAGES, math.ceil(len(indexes) / (workers * 4))))
    return [range(start, min(start + size, indexes.stop)) for start in range(indexes.start, indexes.stop, size)]


def _write_chunks(doc: OpenDocument, options: Options, chunks: list[tuple[int, range]], folder: Path,
                  budget: Budget) -> None:
    """Append each page's record to its chunk's file, one whole line at a time: after a page
    process is stopped, the lines tell the parent which page it was on."""
    for number, pages in chunks:
        with (folder / f"{number:08d}.jsonl").open("a", encoding="utf-8") as f:
            for index in pages:
                f.write(json.dumps(extract_page(doc.reader, index, options, budget), ensure_ascii=False) + "\n")
                f.flush()


def _own_stream(doc: OpenDocument) -> None:
    """After a fork: an in-memory copy is private already; a file streamed from the mount is
    opened again, since a shared descriptor would share its offset with the parent."""
    if doc.reader is not None and not isinstance(doc.reader.stream, io.BytesIO):
        doc.reader.stream = doc.path.open("rb")


def _child(doc: OpenDocument, options: Options, chunks: list[tuple[int, range]], folder: Path,
           remaining: float | None, max_seconds_left: float, say: forks.Say) -> forks.Report:
    """One page process: write each chunk's records to a file, with the reader it inherited
    through ``fork`` (the document already parsed, its object cache warm)."""
    try:
        budget = Budget(Deadline(remaining), options.max_page_seconds, max_seconds_left)
        _own_stream(doc)
        with apply_configuration(**pypdf_limits(options)):
            _write_chunks(doc, options, chunks, folder, budget)
        return None
    except MemoryError:  # refused by the cap
        return {"kind": "out_of_memory"}
    except BaseException as exc:
        return forks.error_report(exc)


def _resume_after_stop(share: list[tuple[int, range]], folder: Path,
                       record: Callable[[int], dict[str, Any]]) -> list[tuple[int, range]]:
    """A page process stopped on a page (out of memory): write ``record`` of the page it was
    on (in its chunk file) and return the rest of its share, for a new process."""
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


def extract_pages(doc: OpenDocument, indexes: range, options: Options, budget: Budget, workers: int,
                  sink: Callable[[dict[str, Any]], None]) -> None:
    """Split the pages over ``workers`` processes (this one and ``workers - 1`` forked
    children); hand their records to ``sink`` in page order."""
    chunks = list(enumerate(_chunks(indexes, workers)))
    shares = [chunks[w::workers] for w in range(workers)]
    folder = Path(tempfile.mkdtemp(prefix="mountworks-pdf-"))
    running: dict[int, forks.Child] = {}
    memory_mb = page_process_memory_mb(options, workers - 1)

    def start(share: list[tuple[int, range]]) -> None:
        pid, fd = forks.fork(functools.partial(_child, doc, options, share, folder, budget.deadline.remaining(),
                                               budget.left()), memory_mb)
        first, last = share[0][1].start + 1, share[-1][1].stop
        running[fd] = forks.Child(pid, fd, f"the process extracting pages {first}-{last}", memory_mb, share)

    def stopped(index: int) -> dict[str, Any]:
        facts = page_facts(doc.reader, index, options, budget)
        return stopped_record(facts, why="out_of_memory", options=options, memory_mb=memory_mb)

    try:
        for share in shares[1:]:
            if share:
                start(share)
        _write_chunks(doc, options, shares[0], folder, budget)
        while running:
            for child, end in forks.wait(running, budget):
                if end is not None and (rest := _resume_after_stop(child.share, folder, stopped)):
                    start(rest)
        for number, _pages in chunks:
            with (folder / f"{number:08d}.jsonl").open(encoding="utf-8") as f:
                for line in f:
                    sink(json.loads(line))
    finally:
        forks.stop(running)
        shutil.rmtree(folder, ignore_errors=True)
