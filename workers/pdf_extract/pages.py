"""The page loop of pdf-extract: one record per page, under the page timer, in page order.

Text comes from one of two engines (option ``engine``): PDFium (default: fast, and maths,
CJK and right-to-left scripts come out as written) or pypdf (pure Python). The page's
structure (box, links, whether it draws images, the size of its content) is always read
with pypdf when pypdf can open the document, so page flags mean the same with either
engine. A page PDFium cannot load falls back to pypdf; each record says which engine
produced its text, and the manifest's facts list the pages of each engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from pypdf.errors import LimitReachedError

from shared.errors import LIMIT_EXCEEDED, PAGE_ERROR, DeadlineReached, MountworksError
from workers.pdf_extract.budget import Budget, NativeWatchdog, PageTimeout, page_timer
from workers.pdf_extract.opening import OpenDocument, is_cycle, limit_name, short
from workers.pdf_extract.options import FORM_FEED, MAX_LINKS, Options, add_engine_page
from workers.pdf_extract.structure import content_problem, draws_images, page_box, page_links

PYPDF = "pypdf"


class Engines:
    """The text engines of one process. PDFium is opened on first use, in the process that
    uses it (a forked page process: :mod:`workers.pdf_extract.pool`), never before a fork."""

    def __init__(self, doc: OpenDocument, options: Options, watchdog: NativeWatchdog | None = None) -> None:
        self.doc, self.options, self.watchdog = doc, options, watchdog
        self._pdfium: Any = None
        self.pdfium_problem: str | None = None

    def pdfium(self) -> Any:
        """The PDFium document, or None when PDFium cannot open it (pypdf reads the text then)."""
        if self._pdfium is None and self.pdfium_problem is None:
            from workers.pdf_extract.pdfium_text import PdfiumText

            try:
                self._pdfium = PdfiumText(self.doc.pdfium_source, self.options.password)
            except MountworksError as exc:
                if self.doc.reader is None:
                    raise
                self.pdfium_problem = exc.message
        return self._pdfium

    def text(self, index: int, page: Any, seconds: float) -> tuple[str, str]:
        """The page's text and the engine that produced it (PDFium under the watchdog, if any)."""
        if self.options.engine == "pdfium" or page is None:
            from workers.pdf_extract.pdfium_text import ENGINE, PdfiumPageError

            pdfium = self.pdfium()
            if pdfium is not None:
                try:
                    if self.watchdog is None:
                        return pdfium.text(index), ENGINE
                    with self.watchdog.guard(seconds):
                        return pdfium.text(index), ENGINE
                except PdfiumPageError:
                    if page is None:
                        raise
        return page.extract_text() or "", PYPDF

    def close(self) -> None:
        if self._pdfium is not None:
            self._pdfium.close()
            self._pdfium = None


def extract_page(engines: Engines, index: int, options: Options, budget: Budget) -> dict[str, Any]:
    """One page's record; any failure is recorded on the page, never raised (but the deadline)."""
    number = index + 1
    budget.check(number)
    flags: list[str] = []
    error: dict[str, Any] | None = None
    text = ""
    engine: str | None = None
    box: dict[str, Any] = {"width": None, "height": None, "rotation": 0}
    links: list[str] = []
    has_images = False
    reader = engines.doc.reader
    seconds, deadline_bound = budget.page_seconds()
    try:
        with page_timer(seconds):
            page = reader.pages[index] if reader is not None else None
            problem = None
            if page is not None:
                box = page_box(page, flags)
                links = page_links(page)
                problem = content_problem(page, options.max_decompressed_bytes)
            else:
                box = engines.pdfium().box(index)
            if problem is not None and problem[0] == "limit":
                flags.append("limit")
                error = {"code": LIMIT_EXCEEDED, "limit": "MAX_DECOMPRESSED_BYTES",
                         "message": f"page {number}: {problem[1]}; raise option max_decompressed_bytes"}
            elif problem is not None:
                flags.append("error")
                error = {"code": PAGE_ERROR, "message": f"page {number}: {problem[1]}"}
            else:
                text, engine = engines.text(index, page, seconds)
                if not text.strip():
                    has_images = draws_images(page.get("/Resources"), 0, set()) if page is not None \
                        else engines.pdfium().draws_images(index)
    except PageTimeout:
        if deadline_bound:
            raise DeadlineReached(f"stopped during page {number}: the invocation's time is nearly up") from None
        flags.append("timeout")
        error = {"code": LIMIT_EXCEEDED, "limit": "MAX_PAGE_SECONDS",
                 "message": f"page {number} took longer than MAX_PAGE_SECONDS={options.max_page_seconds:g}s"}
    except LimitReachedError as exc:
        if is_cycle(exc):
            flags.append("error")
            error = {"code": PAGE_ERROR, "message": f"page {number}: cyclic references ({short(exc)})"}
        else:
            flags.append("limit")
            error = {"code": LIMIT_EXCEEDED, "limit": limit_name(exc),
                     "message": f"page {number}: a safety limit was reached ({short(exc)})"}
    except MountworksError:
        raise
    except Exception as exc:  # a malformed page: record it here, keep the other pages
        flags.append("error")
        error = {"code": PAGE_ERROR, "message": f"page {number}: {type(exc).__name__}: {short(exc)}"}
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # no lone surrogates
    if len(text) > options.max_page_chars:
        text = text[: options.max_page_chars]
        flags.append("text_truncated")
    if error is None and not text.strip() and has_images:
        flags.append("needs_ocr")
    return {"page": number, "text": text, "chars": len(text), "flags": flags, "error": error,
            "box": box, "links": links, "engine": engine if error is None else None}


def stopped_record(engines: Engines, index: int, *, options: Options, why: str, memory_mb: float) -> dict[str, Any]:
    """The record of a page whose process ended inside a native call: stopped by the
    NativeWatchdog (``why="hung"``: flagged ``timeout``, as a page the page timer stopped) or
    out of its memory cap (``"out_of_memory"``: flagged ``limit``). Its box and links are
    read again with pypdf here."""
    flags: list[str] = []
    box: dict[str, Any] = {"width": None, "height": None, "rotation": 0}
    links: list[str] = []
    reader = engines.doc.reader
    if reader is not None:
        try:
            page = reader.pages[index]
            box, links = page_box(page, flags), page_links(page)
        except Exception:  # the box is a fact worth having, not worth failing for
            pass
    number = index + 1
    if why == "hung":
        flags.append("timeout")
        error = {"code": LIMIT_EXCEEDED, "limit": "MAX_PAGE_SECONDS",
                 "message": f"page {number} took longer than MAX_PAGE_SECONDS={options.max_page_seconds:g}s "
                            "(inside PDFium: its process was stopped)"}
    else:
        flags.append("limit")
        error = {"code": LIMIT_EXCEEDED, "limit": "memory",
                 "message": f"page {number}: PDFium needed more than the {memory_mb:,.0f} MB its process may use "
                            "(the function's memory less the run's own); give the function more memory, or set "
                            "option memory_mb higher, and process the document again"}
    return {"page": number, "text": "", "chars": 0, "flags": flags, "error": error,
            "box": box, "links": links, "engine": None}


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
    engines: dict[str, list[list[int]]] = field(default_factory=dict)  # engine -> [[first, last], ...]

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
        add_engine_page(self.engines, record.get("engine"), record["page"])
        for uri in record["links"]:
            if len(self.links) < MAX_LINKS:
                self.links.append({"page": record["page"], "uri": uri})


def serial(engines: Engines, indexes: range, options: Options, budget: Budget,
           sink: Callable[[dict[str, Any]], None]) -> None:
    for index in indexes:
        sink(extract_page(engines, index, options, budget))

