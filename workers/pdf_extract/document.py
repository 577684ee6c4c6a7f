"""pypdf's side of pdf-extract: open the document, each page's facts, the records in page
order, and document.json.

Imported by :mod:`workers.pdf_extract.core` once PDFium's page process is running, so that
pypdf's import and its pass over the document overlap PDFium's text (see
:mod:`workers.pdf_extract.text_pages`).
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import IO, Any

from pypdf import apply_configuration

from shared.errors import PAGE_RANGE_OUT_OF_BOUNDS, CorruptInput, PermanentInputError
from shared.runs import OutputDir
from shared.worker import InputFile
from workers.pdf_extract import structure
from workers.pdf_extract.budget import Budget
from workers.pdf_extract.opening import OpenDocument, check_page_count, open_document, pypdf_limits
from workers.pdf_extract.options import DEADLINE_MARGIN_SECONDS, Options
from workers.pdf_extract.pages import PageFacts, PageWriter, page_facts, serial, with_pdfium_text
from workers.pdf_extract.text_pages import PdfiumPages, workers_for


def _open(stream: IO[bytes], source: InputFile, data: bytes | None, options: Options,
          pdfium: PdfiumPages | None, budget: Budget,
          stack: contextlib.ExitStack) -> tuple[OpenDocument, PdfiumPages | None]:
    """pypdf opens the document; one it cannot open is read by PDFium alone (its page count,
    its text: page processes started now if they are not running yet)."""
    try:
        return open_document(stream, options, source.path, data), pdfium
    except CorruptInput as exc:
        doc = OpenDocument(None, False, 0, source.path, data, problem=exc.message)
        if pdfium is None:
            pdfium = PdfiumPages(doc.pdfium_source, options, budget, options.pages.first - 1, options.pages.last,
                                 workers=max(1, options.parallel))
            stack.callback(pdfium.close)
        try:
            doc.page_count = pdfium.page_count()
        except CorruptInput as pdfium_exc:
            if pdfium_exc.code != exc.code:
                raise  # a crash while PDFium opened it: that is the news
            raise CorruptInput(f"{exc.message}; PDFium cannot open it either") from exc
        check_page_count(doc.page_count, options)
        return doc, pdfium


def _pdfium_records(doc: OpenDocument, pdfium: PdfiumPages, indexes: range, options: Options,
                    budget: Budget, writer: PageWriter) -> int:
    """pypdf's facts of every page while PDFium's processes read the text, then the records;
    returns how many page processes read the text."""
    processes = pdfium.plan(indexes.stop)
    reader = doc.reader
    facts: list[PageFacts] = []
    for index in indexes:
        if reader is None:
            budget.check(index + 1)
            facts.append(PageFacts(index + 1))
            continue
        page = page_facts(reader, index, options, budget)
        if page.error is not None:
            pdfium.skip(index)
        facts.append(page)
    for page, (part, stopped) in zip(facts, pdfium.in_order(indexes), strict=True):
        writer.add(with_pdfium_text(reader, page, part, stopped, options, budget, pdfium.memory_mb))
    return processes


def extract(source: InputFile, out: OutputDir, options: Options, budget: Budget, stream: IO[bytes],
            data: bytes | None, pdfium: PdfiumPages | None) -> dict[str, Any]:
    """Everything the contract lists, PDFium's text from ``pdfium`` (None: option ``engine=pypdf``)."""
    with apply_configuration(**pypdf_limits(options)), contextlib.ExitStack() as stack:
        return _extract(source, out, options, budget, stream, data, pdfium, stack)


def _extract(source: InputFile, out: OutputDir, options: Options, budget: Budget, stream: IO[bytes],
             data: bytes | None, pdfium: PdfiumPages | None, stack: contextlib.ExitStack) -> dict[str, Any]:
    doc, pdfium = _open(io.BytesIO(data) if data is not None else stream, source, data, options, pdfium, budget,
                        stack)
    reader = doc.reader
    first = options.pages.first
    last = doc.page_count if options.pages.last is None else options.pages.last
    if doc.page_count and first > doc.page_count:
        raise PermanentInputError(f"option pages={options.pages.text()} starts after the last page "
                                  f"({doc.page_count})", code=PAGE_RANGE_OUT_OF_BOUNDS)
    last = min(last, doc.page_count)
    indexes = range(first - 1, last)

    with out.open("pages.jsonl", "application/x-ndjson") as pages_file, \
            out.open("text.txt", "text/plain; charset=utf-8") as text_file:
        writer = PageWriter(pages_file, text_file)
        if pdfium is not None:
            workers = _pdfium_records(doc, pdfium, indexes, options, budget, writer)
        elif (workers := workers_for(options, len(indexes))) == 1:
            serial(reader, indexes, options, budget, writer.add)
        elif indexes:  # pypdf's text in page ranges: the one path that needs pool.py
            from workers.pdf_extract.pool import extract_pages

            extract_pages(doc, indexes, options, budget, workers, writer.add)
    out.update_facts("pages.jsonl", pages=writer.count)
    out.update_facts("text.txt", chars=writer.chars)

    budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="before the document structure")
    if reader is not None:
        outline, outline_error = structure.outline(reader)
        fields, fields_error = structure.form_fields(reader)
        attachments = structure.attachments(reader, out, options, budget)
        images = structure.images(reader, indexes, out, options, budget) if options.images else None
        version, metadata = structure.pdf_version(reader), structure.metadata(reader)
    else:
        outline, outline_error, fields, fields_error, attachments = [], None, [], None, []
        images = [] if options.images else None
        version, metadata = None, structure.metadata(None)
    problems = [p for p in (doc.problem and f"structure: pypdf cannot open the document, PDFium read "
                                            f"its text ({doc.problem})",
                            doc.pages_problem and f"pages: {doc.pages_problem}",
                            outline_error and f"outline: {outline_error}",
                            fields_error and f"form fields: {fields_error}") if p]
    document: dict[str, Any] = {
        "page_count": doc.page_count,
        "page_range": {"first": first, "last": last},
        "pdf_version": version,
        "encrypted": doc.encrypted,
        "metadata": metadata,
        "pages": writer.sizes,
        "outline": outline,
        "form_fields": fields,
        "links": writer.links,
        "attachments": attachments,
        **({"images": images} if images is not None else {}),
        "problems": problems,
    }
    out.write_bytes("document.json", (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode(),
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
        "text_engines": writer.engines,
        "processes": workers,
    }
