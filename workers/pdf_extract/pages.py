"""One page's record of pdf-extract, from its two halves, and the writer of the records.

pypdf's half (:func:`page_facts`): the page's box, links, and the decoded size of its
content streams (and of the forms it draws), under the page timer; always read with pypdf
when pypdf can open the document, so page flags mean the same with either text engine. The
text: PDFium's (default), read in page processes (:mod:`.text_pages`) and joined here by
:func:`with_pdfium_text`, or pypdf's (option ``engine=pypdf``: :func:`extract_page`). A page
PDFium cannot load gets pypdf's text; each record says which engine produced it, and the
manifest's facts list the pages of each engine.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from pypdf.errors import LimitReachedError

from shared.errors import LIMIT_EXCEEDED, PAGE_ERROR, DeadlineReached, MountworksError
from workers.pdf_extract.budget import Budget, PageTimeout, page_timer
from workers.pdf_extract.opening import is_cycle, limit_name
from workers.pdf_extract.options import FORM_FEED, MAX_LINKS, Options, add_engine_page, short
from workers.pdf_extract.structure import content_problem, draws_images, page_box, page_links

PYPDF = "pypdf"
PDFIUM = "pdfium"


@dataclass
class PageFacts:
    """pypdf's half of a page record: its box, links and flags, and an error that leaves the
    page without text (a content stream over the limit, a malformed page, its timer)."""

    number: int
    box: dict[str, Any] = field(default_factory=lambda: {"width": None, "height": None, "rotation": 0})
    links: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None


def timed_out(facts: PageFacts, options: Options, where: str = "") -> None:
    """Flag the page ``timeout``: it took longer than MAX_PAGE_SECONDS (``where``: how it was stopped)."""
    facts.flags.append("timeout")
    facts.error = {"code": LIMIT_EXCEEDED, "limit": "MAX_PAGE_SECONDS",
                   "message": f"page {facts.number} took longer than MAX_PAGE_SECONDS={options.max_page_seconds:g}s"
                              + where}


@contextlib.contextmanager
def contained(facts: PageFacts, options: Options, budget: Budget) -> Iterator[None]:
    """Run a step of page ``facts.number`` under the page timer; any failure is recorded on
    the page (its flags and error), never raised, but the invocation's deadline."""
    number = facts.number
    seconds, deadline_bound = budget.page_seconds()
    try:
        with page_timer(seconds):
            yield
    except PageTimeout:
        if deadline_bound:
            raise DeadlineReached(f"stopped during page {number}: the invocation's time is nearly up") from None
        timed_out(facts, options)
    except LimitReachedError as exc:
        if is_cycle(exc):
            facts.flags.append("error")
            facts.error = {"code": PAGE_ERROR, "message": f"page {number}: cyclic references ({short(exc)})"}
        else:
            facts.flags.append("limit")
            facts.error = {"code": LIMIT_EXCEEDED, "limit": limit_name(exc),
                           "message": f"page {number}: a safety limit was reached ({short(exc)})"}
    except MountworksError:
        raise
    except Exception as exc:  # a malformed page: record it here, keep the other pages
        facts.flags.append("error")
        facts.error = {"code": PAGE_ERROR, "message": f"page {number}: {type(exc).__name__}: {short(exc)}"}


def page_facts(reader: Any, index: int, options: Options, budget: Budget) -> PageFacts:
    """pypdf's half of page ``index``: box, links, and the content-size check that gives a
    flate bomb its ``limit`` flag whatever the text engine."""
    facts = PageFacts(index + 1)
    budget.check(facts.number)
    with contained(facts, options, budget):
        page = reader.pages[index]
        facts.box = page_box(page, facts.flags)
        facts.links = page_links(page)
        problem = content_problem(page, options.max_decompressed_bytes)
        if problem is not None and problem[0] == "limit":
            facts.flags.append("limit")
            facts.error = {"code": LIMIT_EXCEEDED, "limit": "MAX_DECOMPRESSED_BYTES",
                           "message": f"page {facts.number}: {problem[1]}; raise option max_decompressed_bytes"}
        elif problem is not None:
            facts.flags.append("error")
            facts.error = {"code": PAGE_ERROR, "message": f"page {facts.number}: {problem[1]}"}
    return facts


def pypdf_text(reader: Any, facts: PageFacts, options: Options, budget: Budget) -> tuple[str, bool]:
    """pypdf's text of the page (option ``engine=pypdf``, or where PDFium cannot read it), and
    whether a page without text draws images."""
    text, has_images = "", False
    with contained(facts, options, budget):
        page = reader.pages[facts.number - 1]
        text = page.extract_text() or ""
        if not text.strip():
            has_images = draws_images(page.get("/Resources"), 0, set())
    return (text, has_images) if facts.error is None else ("", False)


def record(facts: PageFacts, text: str, engine: str | None, has_images: bool, options: Options) -> dict[str, Any]:
    """The page's record from its facts and its text (cut to MAX_PAGE_CHARS, no lone surrogates)."""
    flags = list(facts.flags)
    if facts.error is not None:
        text, engine, has_images = "", None, False
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if len(text) > options.max_page_chars:
        text = text[: options.max_page_chars]
        flags.append("text_truncated")
    if facts.error is None and not text.strip() and has_images:
        flags.append("needs_ocr")
    return {"page": facts.number, "text": text, "chars": len(text), "flags": flags, "error": facts.error,
            "box": facts.box, "links": facts.links, "engine": engine}


def extract_page(reader: Any, index: int, options: Options, budget: Budget) -> dict[str, Any]:
    """One page's record with pypdf's text (option ``engine=pypdf``)."""
    facts = page_facts(reader, index, options, budget)
    text, has_images = pypdf_text(reader, facts, options, budget) if facts.error is None else ("", False)
    return record(facts, text, PYPDF, has_images, options)


def with_pdfium_text(reader: Any, facts: PageFacts, part: dict[str, Any] | None, stopped: str | None,
                     options: Options, budget: Budget, memory_mb: float) -> dict[str, Any]:
    """A page's record from pypdf's facts and PDFium's half (``part``, from a page process:
    see :mod:`workers.pdf_extract.text_pages`). A page PDFium could not read gets pypdf's
    text; a page whose process was stopped on it (``stopped``) gets none."""
    if facts.error is not None:  # the facts decide: PDFium's text of a flate-bomb page is not kept
        return record(facts, "", None, False, options)
    if stopped is not None:
        return stopped_record(facts, why=stopped, options=options, memory_mb=memory_mb)
    if part is not None and part.get("timeout"):
        timed_out(facts, options)
        return record(facts, "", None, False, options)
    if part is not None and "text" in part:
        text, has_images = part["text"], False
        if reader is None:
            facts.box, has_images = part["box"], bool(part.get("images"))
        elif not text.strip():  # whether it needs OCR: pypdf's answer, as with engine=pypdf
            with contained(facts, options, budget):
                has_images = draws_images(reader.pages[facts.number - 1].get("/Resources"), 0, set())
        return record(facts, text, PDFIUM, has_images, options)
    if reader is not None:  # PDFium could not load the page (or does not count it): pypdf reads it
        text, has_images = pypdf_text(reader, facts, options, budget)
        return record(facts, text, PYPDF, has_images, options)
    facts.flags.append("error")
    facts.error = {"code": PAGE_ERROR, "message": f"page {facts.number}: PdfiumPageError: " + (
        part["error"] if part is not None and "error" in part else "PDFium does not count this page")}
    return record(facts, "", None, False, options)


def stopped_record(facts: PageFacts, *, why: str, options: Options, memory_mb: float) -> dict[str, Any]:
    """The record of a page whose process ended inside a native call: stopped by the
    NativeWatchdog (``why="hung"``: flagged ``timeout``, as a page the page timer stopped) or
    out of its memory cap (``"out_of_memory"``: flagged ``limit``)."""
    number = facts.number
    if why == "hung":
        timed_out(facts, options, " (inside PDFium: its process was stopped)")
    else:
        facts.flags.append("limit")
        facts.error = {"code": LIMIT_EXCEEDED, "limit": "memory",
                       "message": f"page {number}: PDFium needed more than the {memory_mb:,.0f} MB its process may "
                                  "use (the function's memory less the run's own); give the function more memory, "
                                  "or set option memory_mb higher, and process the document again"}
    return record(facts, "", None, False, options)


# ------------------------------------------------------------------------- writing


_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _jsonl(value: Any) -> str:
    """One JSON Lines record: UTF-8 text kept readable, but no character that a reader
    splitting on Unicode line breaks (``str.splitlines``) would cut the record at."""
    line = json.dumps(value, ensure_ascii=False)
    return line.translate(_LINE_BREAKS) if "\u2028" in line or "\u2029" in line or "\x85" in line else line


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


def serial(reader: Any, indexes: range, options: Options, budget: Budget,
           sink: Callable[[dict[str, Any]], None]) -> None:
    for index in indexes:
        sink(extract_page(reader, index, options, budget))

