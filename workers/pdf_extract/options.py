"""Options of pdf-extract, and its named limits.

Every limit is a module constant (the default) that an option can override; hitting one
ends as :class:`shared.errors.LimitExceeded` naming it, or as a per-page / per-item flag
where the rest of the document can still come out.

The ``password`` option is a secret: it is kept out of ``repr``, out of the manifest and
out of the run-id (``to_manifest`` records only *that* one was supplied). A wrong
password therefore commits an ``error.json`` under the same run-id as the right one
would use: process the input again with ``--retry-failed`` (a new attempt directory).
``engine`` picks the text engine: ``pdfium`` (default) or ``pypdf`` (the structure is always
pypdf's); it changes the text, so it is part of the run-id. ``parallel`` only changes how
fast the same result is produced, so it is not part of the run-id either.

``ranges`` (``1-500,501-1000,1001-``) asks for the merge of page-range runs that separate
invocations committed with ``pages=1-500`` and so on (the same other options): see
:mod:`workers.pdf_extract.merge`. It is normalized, so the same ranges give the same run-id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.errors import UsageError
from shared.options import OptionReader

WORKER = "pdf-extract"

MAX_PAGES = 5_000  # pages in the document (a page-range run still counts the whole document)
MAX_DECOMPRESSED_BYTES = 75_000_000  # per stream, every filter (flate, LZW, run-length, JBIG2, images)
MIN_DECOMPRESSED_BYTES = 1 << 16  # the lowest the option may go
MAX_PAGE_SECONDS = 30.0  # wall time for one page; the page is flagged ``timeout`` and skipped
MAX_SECONDS = 900.0  # wall time for the whole extraction (Lambda's longest invocation)
MAX_PAGE_CHARS = 1_000_000  # characters kept per page; more is flagged ``text_truncated``
MAX_ATTACHMENTS = 100  # embedded files written; the rest are listed with ``skipped``
MAX_ATTACHMENT_BYTES = 50_000_000  # one embedded file; a larger one is listed with ``skipped``
MAX_IMAGES = 1_000  # embedded images written (option ``images``)
MAX_IMAGE_BYTES = 20_000_000  # one embedded image
MAX_PARALLEL = 32  # worker processes for the local page-range mode
MAX_RANGES = 1_000  # page ranges one merge may name
MAX_LINKS = 10_000  # links listed in document.json
DEADLINE_MARGIN_SECONDS = 5.0  # stop this long before the invocation's end: hash, commit, report
FORM_FEED = "\f"  # separates the pages of text.txt
ENGINES = ("pdfium", "pypdf")  # text engines; the first is the default

_RANGE = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?$")


def short(value: object, limit: int = 300) -> str:
    """A message's detail, cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def add_engine_page(ranges: dict[str, list[list[int]]], engine: str | None, first: int,
                    last: int | None = None) -> None:
    """Record that ``engine`` produced the text of pages ``first..last`` (ranges kept coalesced)."""
    if engine is None:
        return
    last = first if last is None else last
    spans = ranges.setdefault(engine, [])
    if spans and spans[-1][1] + 1 == first:
        spans[-1][1] = last
    else:
        spans.append([first, last])


class PageRange(NamedTuple):
    """1-based, inclusive; ``last`` None means "to the end of the document"."""

    first: int = 1
    last: int | None = None

    def text(self) -> str:
        if self.first == 1 and self.last is None:
            return ""
        return f"{self.first}-{'' if self.last is None else self.last}"


def parse_pages(value: str) -> PageRange:
    """``""`` (all), ``"7"``, ``"10-20"`` or ``"500-"`` -> a :class:`PageRange`."""
    if not value.strip():
        return PageRange()
    match = _RANGE.match(value)
    if match is None:
        raise UsageError(f"option pages={value!r} must look like 10-20, 500- or 7 (1-based, inclusive)")
    first = int(match.group(1))
    last = first if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
    if first < 1 or (last is not None and last < first):
        raise UsageError(f"option pages={value!r} is not a valid range: pages count from 1 and END >= START")
    return PageRange(first, last)


def parse_ranges(items: tuple[str, ...]) -> tuple[PageRange, ...]:
    """``("1-500", "501-1000", "1001-")`` -> ranges that tile the document from page 1.

    They must be in order, contiguous and non-overlapping, each closed but the last; whether
    the last one ends on the last page is only known from the range runs (merge time).
    """
    if len(items) > MAX_RANGES:
        raise UsageError(f"option ranges names {len(items)} ranges, more than MAX_RANGES={MAX_RANGES}")
    try:
        ranges = tuple(parse_pages(item) for item in items)
    except UsageError as exc:
        raise UsageError(f"option ranges: {exc.message}") from None
    expected = 1
    for n, r in enumerate(ranges):
        shown = r.text() or "1-"
        if r.first != expected:
            gap = f"{expected}" if r.first - 1 == expected else f"{expected}-{r.first - 1}"
            what = "overlaps the one before" if r.first < expected else f"leaves a gap (page {gap} missing)"
            if n == 0:
                what = "does not start at page 1"
            raise UsageError(f"option ranges: range {shown} {what}; ranges must be contiguous, in order, "
                             "from page 1 (for example 1-500,501-1000,1001-)")
        if r.last is None and n != len(ranges) - 1:
            raise UsageError(f"option ranges: only the last range may be open-ended (got {shown} before others)")
        expected = (r.last or 0) + 1
    return ranges


class Options(NamedTuple):
    pages: PageRange = PageRange()
    ranges: tuple[PageRange, ...] = ()  # merge these committed page-range runs (see merge.py)
    images: bool = False
    engine: str = ENGINES[0]
    parallel: int = 0  # page processes; 0: one per idle CPU for the pages left (text_pages.auto_processes)
    max_pages: int = MAX_PAGES
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES
    max_page_seconds: float = MAX_PAGE_SECONDS
    max_seconds: float = MAX_SECONDS
    max_page_chars: int = MAX_PAGE_CHARS
    max_attachments: int = MAX_ATTACHMENTS
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES
    max_images: int = MAX_IMAGES
    max_image_bytes: int = MAX_IMAGE_BYTES
    memory_mb: int = 0  # what the page processes may fill; 0: the function's (Lambda) or the machine's
    password: str | None = None  # a secret: never recorded anywhere, not even in repr

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
                          if name != "password")
        return f"Options({shown}, password_supplied={self.password is not None})"

    def ranges_text(self) -> str:
        return ",".join(r.text() or "1-" for r in self.ranges)

    def for_range(self, page_range: PageRange) -> Options:
        """The options a range run was (or will be) committed with: these, with ``pages`` set."""
        return self._replace(pages=page_range, ranges=())

    def to_manifest(self) -> dict[str, Any]:
        """Normalized options for the manifest and the run-id: never the password itself.

        ``ranges`` and ``memory_mb`` appear only when set, so that the run-ids of every other
        run stay as they were before the options existed. (``memory_mb`` left at 0 follows
        the function's memory; set, it can decide whether a page gets its text, and a run
        with more memory is then a new run, not one already committed.)"""
        return {
            **({"ranges": self.ranges_text()} if self.ranges else {}),
            **({"memory_mb": self.memory_mb} if self.memory_mb else {}),
            "pages": self.pages.text(),
            "images": self.images,
            "engine": self.engine,
            "password_supplied": self.password is not None,
            "max_pages": self.max_pages,
            "max_decompressed_bytes": self.max_decompressed_bytes,
            "max_page_seconds": self.max_page_seconds,
            "max_seconds": self.max_seconds,
            "max_page_chars": self.max_page_chars,
            "max_attachments": self.max_attachments,
            "max_attachment_bytes": self.max_attachment_bytes,
            "max_images": self.max_images,
            "max_image_bytes": self.max_image_bytes,
        }


def parse(raw: Mapping[str, Any] | None) -> Options:
    """Options from an event (JSON values) or the CLI (strings); bad ones are UsageError."""
    r = OptionReader(raw, WORKER)
    password_given = r.raw.get("password") is not None
    password = r.text("password", "", max_len=1024)
    pages = parse_pages(r.text("pages", "", max_len=64))
    ranges = parse_ranges(r.items("ranges", ()))
    if ranges and pages != PageRange():
        raise UsageError("options pages and ranges do not go together: ranges merges the runs of "
                         "pages=START-END invocations into one whole-document run")
    options = Options(
        pages=pages,
        ranges=ranges,
        images=r.boolean("images", False),
        engine=r.choice("engine", ENGINES[0], ENGINES),
        parallel=r.integer("parallel", 0, lo=0, hi=MAX_PARALLEL),
        max_pages=r.integer("max_pages", MAX_PAGES, lo=1, hi=1_000_000),
        max_decompressed_bytes=r.integer("max_decompressed_bytes", MAX_DECOMPRESSED_BYTES,
                                         lo=MIN_DECOMPRESSED_BYTES, hi=1 << 32),
        max_page_seconds=r.number("max_page_seconds", MAX_PAGE_SECONDS, lo=0.01, hi=3600),
        max_seconds=r.number("max_seconds", MAX_SECONDS, lo=0.1, hi=86_400),
        max_page_chars=r.integer("max_page_chars", MAX_PAGE_CHARS, lo=1, hi=100_000_000),
        max_attachments=r.integer("max_attachments", MAX_ATTACHMENTS, lo=0, hi=100_000),
        max_attachment_bytes=r.integer("max_attachment_bytes", MAX_ATTACHMENT_BYTES, lo=1, hi=1 << 32),
        max_images=r.integer("max_images", MAX_IMAGES, lo=0, hi=1_000_000),
        max_image_bytes=r.integer("max_image_bytes", MAX_IMAGE_BYTES, lo=1, hi=1 << 32),
        memory_mb=r.integer("memory_mb", 0, lo=0, hi=1 << 20),
        password=password if password_given else None,
    )
    r.finish()
    return options
