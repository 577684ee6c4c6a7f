"""pdf-extract core: a PDF in, per-page text and the document's structure out.

Outputs (all listed in the manifest):

    pages.jsonl              one object per page: page, text, chars, flags, error
    text.txt                 the pages' text, UTF-8, pages separated by a form feed
    document.json            page count, metadata, PDF version, page sizes and rotation,
                             outline, form fields, links, attachments (and images)
    attachments/NNN-<name>   embedded files, bounded by MAX_ATTACHMENTS / MAX_ATTACHMENT_BYTES
    images/pNNNNN-NN.<ext>   embedded images when option ``images`` is on (MAX_IMAGES ...)

This module is the one place where pypdf's exceptions become mountworks errors
(:func:`translated`). Failures are contained at the smallest unit that still makes
sense: a broken page is recorded on that page, a broken attachment on that attachment;
only a document that cannot be opened at all is a permanent error for the input.

Time: the invocation deadline is checked between pages, and each page runs under a
``SIGALRM`` timer (main thread only) that fires at MAX_PAGE_SECONDS or just before the
deadline, whichever is first, so that one pathological page can neither hang the run
nor let Lambda kill it before it stops cleanly (DeadlineReached, nothing committed).

Large documents: the selected pages can be split over processes (option ``parallel``,
automatic above PARALLEL_MIN_PAGES pages). This process takes one share of the chunks and
each forked child opens the file itself for another; every share is written as chunk
files to a private temporary folder, then merged in page order through the very same
writer as the serial path, so the committed result is byte-for-byte the one a single
process would give.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import mimetypes
import os
import re
import select
import shutil
import signal
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pypdf import PdfReader, apply_configuration
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError
from pypdf.generic import DictionaryObject, IndirectObject

from shared.errors import (
    CorruptInput,
    DeadlineReached,
    EncryptedInput,
    LimitExceeded,
    MountworksError,
    PermanentInputError,
    UnsupportedInput,
)
from shared.runs import OutputDir
from shared.worker import Deadline, InputFile, RunContext
from workers.pdf_extract.options import DEADLINE_MARGIN_SECONDS, FORM_FEED, MAX_LINKS, Options

HEADER_SCAN_BYTES = 1024  # readers accept junk before %PDF- within the first KiB
IN_MEMORY_MAX_BYTES = 64 << 20  # smaller files are read into memory once (faster); larger ones stream
PARALLEL_MIN_PAGES = 64  # automatic page-range parallelism only pays off above this
CHUNK_PAGES = 16  # pages per unit of work handed to a process
MAX_PAGE_POINTS = 14_400.0  # PDF 1.7 (Annex C): 200 inches; larger boxes are flagged absurd
MAX_META_CHARS = 4_096  # one metadata value, one URI, one field value
MAX_OUTLINE_ENTRIES = 10_000
MAX_FORM_FIELDS = 10_000
MAX_XOBJECT_DEPTH = 4  # how deep "does this page draw an image?" looks into form XObjects

METADATA_KEYS = {
    "title": "/Title", "author": "/Author", "subject": "/Subject", "keywords": "/Keywords",
    "creator": "/Creator", "producer": "/Producer",
}
DATE_KEYS = {"creation_date": "/CreationDate", "modification_date": "/ModDate"}


# -------------------------------------------------------------------- the error boundary


def _limit_name(exc: LimitReachedError) -> str:
    """Which of our named limits a pypdf limit stands for (pypdf's own name otherwise)."""
    text = str(exc).lower()
    if "page tree" in text:
        return "MAX_PAGES"
    if any(word in text for word in ("decompress", "output length", "buffer size", "stream", "decoding")):
        return "MAX_DECOMPRESSED_BYTES"
    return "PYPDF_SAFETY_LIMIT"


def _is_cycle(exc: Exception) -> bool:
    """pypdf reports some reference cycles as a limit; they are malformed input, not big input."""
    return "cycl" in str(exc).lower()


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    """pypdf (and the malformed-input errors it lets through) -> the mountworks tree.

    Most specific first. A missing optional dependency (``cryptography`` for AES) is a
    deployment bug, not the document's fault, so it is not translated.
    """
    try:
        yield
    except MountworksError:
        raise
    except DependencyError:
        raise
    except LimitReachedError as exc:
        if _is_cycle(exc):
            raise CorruptInput(f"{doing}: malformed PDF with cyclic references ({_short(exc)})") from exc
        limit = _limit_name(exc)
        hint = {"MAX_PAGES": "; raise option max_pages", "MAX_DECOMPRESSED_BYTES": "; raise option "
                "max_decompressed_bytes"}.get(limit, "")
        raise LimitExceeded(f"{doing}: {limit} was reached ({_short(exc)}){hint}", limit=limit) from exc
    except FileNotDecryptedError as exc:
        raise EncryptedInput(f"{doing}: the document is encrypted and was not decrypted") from exc
    except RecursionError as exc:
        raise CorruptInput(f"{doing}: the document's object structure is nested too deeply "
                           "(probably cyclic)") from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError,
            NotImplementedError, zlib.error, EOFError) as exc:
        raise CorruptInput(f"{doing}: malformed or truncated PDF ({type(exc).__name__}: {_short(exc)})") from exc


def _short(value: object, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _pypdf_limits(options: Options) -> dict[str, Any]:
    """pypdf's own safety limits, driven by our named limits (pypdf >= 7: Configuration)."""
    b = options.max_decompressed_bytes
    return {
        "zlib_maximum_output_length": b,
        "lzw_maximum_output_length": b,
        "run_length_maximum_output_length": b,
        "jbig2_maximum_output_length": b,
        "brotli_maximum_output_length": b,
        "array_based_stream_maximum_output_length": b,
        "image_maximum_buffer_size": b,
        "maximum_declared_stream_length": b,
        "stream_decoding_work_maximum_length": 4 * b,
        "page_tree_maximum_entries": max(2 * options.max_pages + 16, 1_000),
        "outline_maximum_entries": MAX_OUTLINE_ENTRIES,
        "form_fields_maximum_entries": MAX_FORM_FIELDS,
        "disable_legacy_handling": True,
    }


# ------------------------------------------------------------------------ opening


@dataclass
class OpenDocument:
    reader: PdfReader
    encrypted: bool
    page_count: int


def check_header(path: Path, size: int) -> None:
    """Empty and not-a-PDF inputs, classified before pypdf sees them."""
    if size == 0:
        raise CorruptInput("the file is empty (0 bytes); a PDF starts with %PDF-", code="empty-input")
    with path.open("rb") as f:
        head = f.read(HEADER_SCAN_BYTES)
    if b"%PDF-" not in head:
        raise UnsupportedInput(f"not a PDF: no %PDF- header in the first {HEADER_SCAN_BYTES} bytes")


def open_document(stream: IO[bytes], options: Options) -> OpenDocument:
    """Open non-strictly, decrypt (empty password unless one is given), count the pages."""
    with translated("opening the document"):
        reader = PdfReader(stream, strict=False)
        encrypted = bool(reader.is_encrypted)
        if encrypted:
            outcome = reader.decrypt(options.password if options.password is not None else "")
            if not outcome:
                if options.password is None:
                    raise EncryptedInput("the document is encrypted with a password (the empty password does "
                                         "not open it); supply it with the 'password' option",
                                         code="password-required")
                raise EncryptedInput("the password supplied does not open this document", code="wrong-password")
        page_count = len(reader.pages)
    if page_count > options.max_pages:
        raise LimitExceeded(f"the document has {page_count} pages, more than MAX_PAGES={options.max_pages}; "
                            "raise option max_pages or process page ranges (option pages)", limit="MAX_PAGES")
    return OpenDocument(reader, encrypted, page_count)


@contextlib.contextmanager
def opened(path: Path, size: int, options: Options) -> Iterator[OpenDocument]:
    """The document, read into memory when small (fast) and streamed from the mount when large."""
    with path.open("rb") as f:
        stream: IO[bytes] = io.BytesIO(f.read()) if size <= IN_MEMORY_MAX_BYTES else f
        yield open_document(stream, options)


# -------------------------------------------------------------------------- pages


class _PageTimeout(BaseException):
    """Raised by the page timer; a BaseException so that pypdf's lenient ``except Exception``
    recovery cannot swallow it."""


@contextlib.contextmanager
def page_timer(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM; only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise _PageTimeout()

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
        self.deadline.check(DEADLINE_MARGIN_SECONDS, doing=f"before page {page}")
        if time.monotonic() - self.started > self.max_seconds:
            raise LimitExceeded(f"extraction took longer than MAX_SECONDS={self.max_seconds:g}s "
                                f"(stopped before page {page}); raise option max_seconds or process page "
                                "ranges (option pages)", limit="MAX_SECONDS")

    def page_seconds(self) -> tuple[float, bool]:
        """Seconds the next page may take, and whether the deadline (not the page limit) sets it."""
        limit = self.max_page_seconds
        left = self.deadline.remaining()
        if left is not None and left - DEADLINE_MARGIN_SECONDS < limit:
            return max(left - DEADLINE_MARGIN_SECONDS, 0.001), True
        return limit, False


def _resolve(value: Any) -> Any:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _text_value(value: Any) -> str | None:
    value = _resolve(value)
    if value is None:
        return None
    text = str(value)
    return text[:MAX_META_CHARS]


def _draws_images(resources: Any, depth: int, seen: set[int]) -> bool:
    """Does a resource dictionary hold an image XObject (looking into forms, bounded)?"""
    resources = _resolve(resources)
    if not isinstance(resources, DictionaryObject) or depth > MAX_XOBJECT_DEPTH:
        return False
    xobjects = _resolve(resources.get("/XObject"))
    if not isinstance(xobjects, DictionaryObject):
        return False
    for ref in xobjects.values():
        if isinstance(ref, IndirectObject):
            if ref.idnum in seen:
                continue
            seen.add(ref.idnum)
        obj = _resolve(ref)
        if not isinstance(obj, DictionaryObject):
            continue
        subtype = obj.get("/Subtype")
        if subtype == "/Image":
            return True
        if subtype == "/Form" and _draws_images(obj.get("/Resources"), depth + 1, seen):
            return True
    return False


def _page_box(page: Any, flags: list[str]) -> dict[str, Any]:
    box: dict[str, Any] = {"width": None, "height": None, "rotation": 0}
    try:
        media = page.mediabox
        width, height = abs(float(media.width)), abs(float(media.height))
        if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0 \
                or width > MAX_PAGE_POINTS or height > MAX_PAGE_POINTS:
            flags.append("absurd_mediabox")
        if math.isfinite(width) and math.isfinite(height):
            box["width"], box["height"] = round(width, 3), round(height, 3)
    except Exception:  # a malformed box is a fact about the page, not a reason to lose it
        flags.append("invalid_mediabox")
    try:
        rotation = int(page.rotation)
        if rotation % 90:
            flags.append("invalid_rotation")
        box["rotation"] = rotation % 360
    except Exception:
        flags.append("invalid_rotation")
    return box


def _page_links(page: Any) -> list[str]:
    uris: list[str] = []
    annots = _resolve(page.get("/Annots"))
    if not isinstance(annots, list):
        return uris
    for ref in annots[:MAX_LINKS]:
        annot = _resolve(ref)
        if not isinstance(annot, DictionaryObject) or annot.get("/Subtype") != "/Link":
            continue
        action = _resolve(annot.get("/A"))
        if isinstance(action, DictionaryObject) and action.get("/S") == "/URI":
            uri = _text_value(action.get("/URI"))
            if uri:
                uris.append(uri)
    return uris


def extract_page(reader: PdfReader, index: int, options: Options, budget: Budget) -> dict[str, Any]:
    """One page's record; any failure is recorded on the page, never raised (but the deadline)."""
    number = index + 1
    budget.check(number)
    flags: list[str] = []
    error: dict[str, Any] | None = None
    text = ""
    box: dict[str, Any] = {"width": None, "height": None, "rotation": 0}
    links: list[str] = []
    has_images = False
    seconds, deadline_bound = budget.page_seconds()
    try:
        with page_timer(seconds):
            page = reader.pages[index]
            box = _page_box(page, flags)
            text = page.extract_text() or ""
            links = _page_links(page)
            if not text.strip():
                has_images = _draws_images(page.get("/Resources"), 0, set())
    except _PageTimeout:
        if deadline_bound:
            raise DeadlineReached(f"stopped during page {number}: the invocation's time is nearly up") from None
        flags.append("timeout")
        error = {"code": "limit-exceeded", "limit": "MAX_PAGE_SECONDS",
                 "message": f"page {number} took longer than MAX_PAGE_SECONDS={options.max_page_seconds:g}s"}
    except LimitReachedError as exc:
        if _is_cycle(exc):
            flags.append("error")
            error = {"code": "page-error", "message": f"page {number}: cyclic references ({_short(exc)})"}
        else:
            flags.append("limit")
            error = {"code": "limit-exceeded", "limit": _limit_name(exc),
                     "message": f"page {number}: a safety limit was reached ({_short(exc)})"}
    except MountworksError:
        raise
    except Exception as exc:  # pypdf on a malformed page: record it here, keep the other pages
        flags.append("error")
        error = {"code": "page-error", "message": f"page {number}: {type(exc).__name__}: {_short(exc)}"}
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # no lone surrogates
    if len(text) > options.max_page_chars:
        text = text[: options.max_page_chars]
        flags.append("text_truncated")
    if error is None and not text.strip() and has_images:
        flags.append("needs_ocr")
    return {"page": number, "text": text, "chars": len(text), "flags": flags, "error": error,
            "box": box, "links": links}


# ------------------------------------------------------------------------- writing


_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _jsonl(value: Any) -> str:
    """One JSON Lines record: UTF-8 text kept readable, but no character that a reader
    splitting on Unicode line breaks (``str.splitlines``) would cut the record at."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)


@dataclass
class PageWriter:
    """Writes page records in page order to pages.jsonl and text.txt; keeps the small facts."""

    pages_file: IO[bytes]
    text_file: IO[bytes]
    count: int = 0
    chars: int = 0
    needs_ocr: int = 0
    errors: int = 0
    timeouts: int = 0
    sizes: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        line = {k: record[k] for k in ("page", "text", "chars", "flags", "error")}
        self.pages_file.write(_jsonl(line).encode() + b"\n")
        if self.count:
            self.text_file.write(FORM_FEED.encode())
        self.text_file.write(record["text"].encode())
        self.count += 1
        self.chars += record["chars"]
        self.needs_ocr += "needs_ocr" in record["flags"]
        self.errors += record["error"] is not None
        self.timeouts += "timeout" in record["flags"]
        box = record["box"]
        self.sizes.append({"page": record["page"], **box,
                           **({"flags": [f for f in record["flags"] if "mediabox" in f or "rotation" in f]}
                              if any("mediabox" in f or "rotation" in f for f in record["flags"]) else {})})
        for uri in record["links"]:
            if len(self.links) < MAX_LINKS:
                self.links.append({"page": record["page"], "uri": uri})


def _serial(reader: PdfReader, indexes: range, options: Options, budget: Budget,
            sink: Callable[[dict[str, Any]], None]) -> None:
    for index in indexes:
        sink(extract_page(reader, index, options, budget))


# ----------------------------------------------------------------------- parallel


def _chunks(indexes: range, workers: int) -> list[range]:
    """Units of work: at most CHUNK_PAGES pages, and at least ~4 per process (load balance)."""
    size = max(1, min(CHUNK_PAGES, math.ceil(len(indexes) / (workers * 4))))
    return [range(start, min(start + size, indexes.stop)) for start in range(indexes.start, indexes.stop, size)]


def _write_chunks(reader: PdfReader, options: Options, chunks: list[tuple[int, range]], folder: Path,
                  budget: Budget) -> None:
    for number, pages in chunks:
        with (folder / f"{number:08d}.jsonl").open("w", encoding="utf-8") as f:
            for index in pages:
                f.write(json.dumps(extract_page(reader, index, options, budget), ensure_ascii=False) + "\n")


def _child(path: Path, reader: PdfReader, options: Options, chunks: list[tuple[int, range]], folder: Path,
           remaining: float | None, max_seconds_left: float) -> dict[str, Any] | None:
    """One page-range process: write each chunk's records to a file.

    It works on the reader it inherited through ``fork`` (the document already parsed, its
    object cache warm), with a stream of its own: an in-memory copy is private after the
    fork; a file streamed from the mount is opened again, since a shared descriptor would
    share its offset with the parent. Returns None on success, else an error report.
    """
    try:
        budget = Budget(Deadline(remaining), options.max_page_seconds, max_seconds_left)
        if not isinstance(reader.stream, io.BytesIO):
            reader.stream = path.open("rb")
        with apply_configuration(**_pypdf_limits(options)):
            _write_chunks(reader, options, chunks, folder, budget)
        return None
    except MountworksError as exc:
        return {"kind": type(exc).__name__, "message": exc.message, "code": exc.code,
                "limit": getattr(exc, "limit", None)}
    except BaseException as exc:
        return {"kind": "bug", "message": f"{type(exc).__name__}: {_short(exc)}", "code": "internal", "limit": None}


def _fork(work: Callable[[], dict[str, Any] | None]) -> tuple[int, int]:
    """Run ``work`` in a forked child; its JSON report comes back on a pipe.

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


def _collect(pid: int, fd: int) -> None:
    """Read a finished child's report and reap it; raise what it reported."""
    chunks = []
    while data := os.read(fd, 65536):
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    report = json.loads(raw) if raw else "no report"
    if report is None:
        return
    if isinstance(report, dict):
        _raise_from_child(report)
    raise RuntimeError(f"a page-range process died ({_exit_text(status)})")


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
    raise RuntimeError(f"a page-range process failed: {message}")


def _parallel(source: InputFile, reader: PdfReader, indexes: range, options: Options, budget: Budget,
              workers: int, sink: Callable[[dict[str, Any]], None]) -> None:
    """Split the pages over ``workers`` processes; merge their chunk files in page order.

    This process is one of the workers: it takes its share with the reader it already has
    open while ``workers - 1`` forked children open the file for theirs.
    """
    chunks = list(enumerate(_chunks(indexes, workers)))
    folder = Path(tempfile.mkdtemp(prefix="mountworks-pdf-"))
    pending: dict[int, int] = {}  # read fd -> pid
    try:
        for w in range(1, workers):
            mine = chunks[w::workers]
            if not mine:
                continue
            remaining = budget.deadline.remaining()
            left = budget.max_seconds - (time.monotonic() - budget.started)
            pid, fd = _fork(functools.partial(_child, source.path, reader, options, mine, folder,
                                              remaining, left))
            pending[fd] = pid
        _write_chunks(reader, options, chunks[0::workers], folder, budget)
        while pending:
            budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="extracting page ranges")
            ready, _, _ = select.select(list(pending), [], [], 0.25)
            for fd in ready:
                pid = pending.pop(fd)
                try:
                    _collect(pid, fd)
                finally:
                    os.close(fd)
        for number, _pages in chunks:
            with (folder / f"{number:08d}.jsonl").open(encoding="utf-8") as f:
                for line in f:
                    sink(json.loads(line))
    finally:
        for fd, pid in pending.items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)


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


# ------------------------------------------------------------------ document level


def pdf_date(raw: str | None) -> str | None:
    """A PDF date string (``D:YYYYMMDDHHmmSSOHH'mm'``, every part after the year optional)
    as ISO 8601; None when it cannot be understood."""
    if not raw:
        return None
    match = re.match(r"^\s*(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?\s*([Zz+\-])?\s*(\d{2})?'?(\d{2})?'?",
                     raw)
    if match is None:
        return None
    year, month, day, hour, minute, second, sign, tz_h, tz_m = match.groups()
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                         int(second or 0))
        if sign in ("+", "-"):
            offset = timedelta(hours=int(tz_h or 0), minutes=int(tz_m or 0))
            tz = timezone(offset if sign == "+" else -offset)
            return naive.replace(tzinfo=tz).isoformat()
        if sign in ("Z", "z"):
            return naive.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        return naive.isoformat()
    except ValueError:
        return None


def _metadata(reader: PdfReader) -> dict[str, Any]:
    info: dict[str, Any] = {key: None for key in [*METADATA_KEYS, *DATE_KEYS]}
    with contextlib.suppress(Exception):
        raw = reader.metadata
        if raw is None:
            return info
        for key, pdf_key in METADATA_KEYS.items():
            with contextlib.suppress(Exception):
                info[key] = _text_value(raw.get(pdf_key))
        for key, pdf_key in DATE_KEYS.items():
            with contextlib.suppress(Exception):
                value = _text_value(raw.get(pdf_key))
                info[key] = pdf_date(value)
                if value and info[key] is None:
                    info[key + "_raw"] = value
    return info


def _pdf_version(reader: PdfReader) -> str | None:
    version: str | None = None
    with contextlib.suppress(Exception):
        match = re.search(r"%PDF-(\d+\.\d+)", reader.pdf_header)
        version = match.group(1) if match else None
    with contextlib.suppress(Exception):
        catalog = _resolve(reader.trailer["/Root"])
        override = catalog.get("/Version") if isinstance(catalog, DictionaryObject) else None
        if override is not None:
            text = str(override).lstrip("/")
            if re.fullmatch(r"\d+\.\d+", text) and (version is None or float(text) > float(version)):
                version = text
    return version


def _outline(reader: PdfReader) -> tuple[list[dict[str, Any]], str | None]:
    """The outline as a tree of {title, page (1-based or None), children}."""
    count = 0

    def build(items: list[Any]) -> list[dict[str, Any]]:
        nonlocal count
        nodes: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, list):
                if nodes:
                    nodes[-1]["children"] = build(item)
                continue
            count += 1
            if count > MAX_OUTLINE_ENTRIES:
                break
            page: int | None = None
            with contextlib.suppress(Exception):
                number = reader.get_destination_page_number(item)
                page = number + 1 if number is not None and number >= 0 else None
            nodes.append({"title": _short(getattr(item, "title", "") or "", MAX_META_CHARS), "page": page,
                          "children": []})
        return nodes

    try:
        return build(list(reader.outline)), None
    except Exception as exc:
        return [], f"{type(exc).__name__}: {_short(exc)}"


def _form_fields(reader: PdfReader) -> tuple[list[dict[str, Any]], str | None]:
    try:
        fields = reader.get_fields() or {}
    except Exception as exc:
        return [], f"{type(exc).__name__}: {_short(exc)}"
    result = []
    for name, spec in list(fields.items())[:MAX_FORM_FIELDS]:
        value = spec.get("/V") if isinstance(spec, dict) else None
        if isinstance(value, list):
            shown: Any = [_text_value(v) for v in value[:100]]
        else:
            shown = _text_value(value)
        result.append({"name": _short(name, MAX_META_CHARS), "type": _text_value(spec.get("/FT")),
                       "value": shown})
    return result, None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, fallback: str) -> str:
    """An untrusted embedded name as one harmless path component (no separators, no dot-files)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:100]
    return cleaned or fallback


def _attachments(reader: PdfReader, out: OutputDir, options: Options, budget: Budget) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = []
    try:
        files = iter(reader.attachment_list)
        index = 0
        while True:
            try:
                embedded = next(files)
            except StopIteration:
                break
            index += 1
            name = _short(str(embedded.name or ""), MAX_META_CHARS)
            entry: dict[str, Any] = {"name": name}
            listed.append(entry)
            if index > options.max_attachments:
                entry["skipped"] = f"more than MAX_ATTACHMENTS={options.max_attachments}"
                continue
            budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="writing attachments")
            content = _bounded_payload(entry, functools.partial(_attachment_bytes, embedded, options),
                                       options.max_attachment_bytes, "MAX_ATTACHMENT_BYTES")
            if content is None:
                continue
            target = f"attachments/{index:03d}-{safe_name(name, 'attachment')}"
            media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            out.write_bytes(target, content, media_type, original_name=name)
            entry["path"] = target
    except LimitReachedError as exc:
        listed.append({"error": f"listing attachments: MAX_DECOMPRESSED_BYTES reached ({_short(exc)})"})
    except MountworksError:
        raise
    except Exception as exc:
        listed.append({"error": f"listing attachments: {type(exc).__name__}: {_short(exc)}"})
    return listed


def _bounded_payload(entry: dict[str, Any], read: Callable[[], bytes], max_bytes: int,
                     limit: str) -> bytes | None:
    """Read an embedded file or image for ``entry``: its bytes, or None with the reason
    (a decompression limit, a broken object, too large) recorded on the entry."""
    try:
        data = read()
    except _TooLarge as exc:
        entry["size"] = exc.size
        data = None
    except LimitReachedError as exc:
        entry["skipped"] = f"MAX_DECOMPRESSED_BYTES reached ({_short(exc)})"
        return None
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {_short(exc)}"
        return None
    if data is not None:
        entry["size"] = len(data)
    if data is None or len(data) > max_bytes:
        entry["skipped"] = f"larger than {limit}={max_bytes}"
        return None
    return data


class _TooLarge(Exception):
    """An attachment whose declared size is over the limit: refused before it is inflated."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _attachment_bytes(embedded: Any, options: Options) -> bytes:
    declared = embedded.size
    if declared is not None and declared > options.max_attachment_bytes:
        raise _TooLarge(declared)
    content: bytes = embedded.content
    return content


def _image_bytes(images: Any, n: int, entry: dict[str, Any]) -> bytes:
    image = images[n]
    entry["name"] = _short(image.name, 200)
    data: bytes = image.data
    return data


def _images(reader: PdfReader, indexes: range, out: OutputDir, options: Options,
            budget: Budget) -> list[dict[str, Any]]:
    """Embedded images as files (pypdf converts non-JPEG ones with Pillow, imported lazily)."""
    listed: list[dict[str, Any]] = []
    written = 0
    for index in indexes:
        budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing=f"extracting images of page {index + 1}")
        try:
            images = reader.pages[index].images
            count = len(images)
        except Exception as exc:
            listed.append({"page": index + 1, "error": f"{type(exc).__name__}: {_short(exc)}"})
            continue
        for n in range(count):
            entry: dict[str, Any] = {"page": index + 1}
            listed.append(entry)
            if written >= options.max_images:
                entry["skipped"] = f"more than MAX_IMAGES={options.max_images}"
                continue
            try:
                seconds, _ = budget.page_seconds()
                with page_timer(seconds):
                    data = _bounded_payload(entry, functools.partial(_image_bytes, images, n, entry),
                                            options.max_image_bytes, "MAX_IMAGE_BYTES")
            except _PageTimeout:
                budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="extracting images")
                entry["skipped"] = f"took longer than MAX_PAGE_SECONDS={options.max_page_seconds:g}s"
                continue
            if data is None:
                continue
            suffix = Path(entry["name"]).suffix.lower() if "." in entry["name"] else ".png"
            suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"
            target = f"images/p{index + 1:05d}-{n + 1:02d}{suffix}"
            media_type = mimetypes.guess_type(target)[0] or "application/octet-stream"
            out.write_bytes(target, data, media_type, page=index + 1)
            entry["path"] = target
            written += 1
    return listed


# ---------------------------------------------------------------------------- process


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Extract everything the contract lists; return the manifest's facts."""
    if options.ranges:  # merge committed page-range runs; nothing is extracted again
        from workers.pdf_extract.merge import merge

        return merge(source, out, options, ctx)
    check_header(source.path, source.size)
    budget = Budget(ctx.deadline, options.max_page_seconds, options.max_seconds)
    budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="before opening the document")
    with apply_configuration(**_pypdf_limits(options)), opened(source.path, source.size, options) as doc:
        reader = doc.reader
        first = options.pages.first
        last = doc.page_count if options.pages.last is None else options.pages.last
        if doc.page_count and first > doc.page_count:
            raise PermanentInputError(f"option pages={options.pages.text()} starts after the last page "
                                      f"({doc.page_count})", code="page-range-out-of-bounds")
        last = min(last, doc.page_count)
        indexes = range(first - 1, last)
        workers = workers_for(options, len(indexes))

        with out.open("pages.jsonl", "application/x-ndjson") as pages_file, \
                out.open("text.txt", "text/plain; charset=utf-8") as text_file:
            writer = PageWriter(pages_file, text_file)
            if workers > 1:
                _parallel(source, reader, indexes, options, budget, workers, writer.add)
            else:
                _serial(reader, indexes, options, budget, writer.add)
        out.update_facts("pages.jsonl", pages=writer.count)
        out.update_facts("text.txt", chars=writer.chars)

        budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="before the document structure")
        outline, outline_error = _outline(reader)
        fields, fields_error = _form_fields(reader)
        attachments = _attachments(reader, out, options, budget)
        images = _images(reader, indexes, out, options, budget) if options.images else None
        document: dict[str, Any] = {
            "page_count": doc.page_count,
            "page_range": {"first": first, "last": last},
            "pdf_version": _pdf_version(reader),
            "encrypted": doc.encrypted,
            "metadata": _metadata(reader),
            "pages": writer.sizes,
            "outline": outline,
            "form_fields": fields,
            "links": writer.links,
            "attachments": attachments,
            **({"images": images} if images is not None else {}),
            "problems": [p for p in (outline_error and f"outline: {outline_error}",
                                     fields_error and f"form fields: {fields_error}") if p],
        }
        out.write_bytes("document.json",
                        (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode(),
                        "application/json", pages=doc.page_count)
    return {
        "pages": doc.page_count,
        "pages_extracted": writer.count,
        "chars": writer.chars,
        "needs_ocr_pages": writer.needs_ocr,
        "page_errors": writer.errors,
        "page_timeouts": writer.timeouts,
        "encrypted": doc.encrypted,
        "attachments": sum(1 for a in attachments if "path" in a),
        **({"images": sum(1 for i in images if "path" in i)} if images is not None else {}),
        "processes": workers,
    }
