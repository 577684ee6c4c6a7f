"""pdf-extract core: a PDF in, per-page text and the document's structure out.

Outputs (all listed in the manifest):

    pages.jsonl              one object per page: page, text, chars, flags, error
    text.txt                 the pages' text, UTF-8, pages separated by a form feed
    document.json            page count, metadata, PDF version, page sizes and rotation,
                             outline, form fields, links, attachments (and images)
    attachments/NNN-<name>   embedded files, bounded by MAX_ATTACHMENTS / MAX_ATTACHMENT_BYTES
    images/pNNNNN-NN.<ext>   embedded images when option ``images`` is on (MAX_IMAGES ...)

This module only puts the parts together, one concern each:

    opening.py      the pypdf boundary: open, decrypt, our limits as pypdf's, error translation
    pdfium_text.py  the PDFium text engine (pypdfium2) and its error translation
    pages.py        the page loop: one record per page under the page timer, the writer
    budget.py       the page timer, MAX_SECONDS and the invocation's deadline
    pool.py         forked page processes (parallel page ranges; PDFium's crash isolation)
    structure.py    the document structure: boxes, links, metadata, outline, forms, files
    merge.py        the merge of committed page-range runs (option ``ranges``)

A document that pypdf cannot open but PDFium can still gives its text (and page sizes);
its structure is then empty and ``document.json``'s ``problems`` says why.
"""

from __future__ import annotations

import io
import json
from typing import IO, Any

from pypdf import apply_configuration

from shared.errors import PAGE_RANGE_OUT_OF_BOUNDS, CorruptInput, PermanentInputError
from shared.runs import OutputDir
from shared.worker import InputFile, RunContext
from workers.pdf_extract import pdfium_text as pdfium_text  # loaded before any fork: children share it
from workers.pdf_extract import structure
from workers.pdf_extract.budget import Budget
from workers.pdf_extract.opening import (
    IN_MEMORY_MAX_BYTES,
    OpenDocument,
    check_header,
    check_page_count,
    open_document,
    pypdf_limits,
)
from workers.pdf_extract.options import DEADLINE_MARGIN_SECONDS, Options
from workers.pdf_extract.pages import Engines, PageWriter, serial
from workers.pdf_extract.pool import extract_pages, pdfium_page_count, workers_for
from workers.pdf_extract.structure import pdf_date as pdf_date  # re-exported: a documented helper


def _open(stream: IO[bytes], source: InputFile, data: bytes | None, options: Options,
          budget: Budget) -> OpenDocument:
    """pypdf opens the document; one it cannot open goes to PDFium (in a child) for its text."""
    try:
        return open_document(stream, options, source.path, data)
    except CorruptInput as exc:
        doc = OpenDocument(None, False, 0, source.path, data, problem=exc.message)
        try:
            doc.page_count = pdfium_page_count(doc, options, budget)
        except CorruptInput as pdfium_exc:
            if pdfium_exc.code != exc.code:
                raise  # a crash while PDFium opened it: that is the news
            raise CorruptInput(f"{exc.message}; PDFium cannot open it either") from exc
        check_page_count(doc.page_count, options)
        return doc


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Extract everything the contract lists; return the manifest's facts."""
    if options.ranges:  # merge committed page-range runs; nothing is extracted again
        from workers.pdf_extract.merge import merge

        return merge(source, out, options, ctx)
    check_header(source.path, source.size)
    budget = Budget(ctx.deadline, options.max_page_seconds, options.max_seconds)
    budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="before opening the document")
    with apply_configuration(**pypdf_limits(options)), source.path.open("rb") as f:
        data = f.read() if source.size <= IN_MEMORY_MAX_BYTES else None
        doc = _open(io.BytesIO(data) if data is not None else f, source, data, options, budget)
        reader = doc.reader
        first = options.pages.first
        last = doc.page_count if options.pages.last is None else options.pages.last
        if doc.page_count and first > doc.page_count:
            raise PermanentInputError(f"option pages={options.pages.text()} starts after the last page "
                                      f"({doc.page_count})", code=PAGE_RANGE_OUT_OF_BOUNDS)
        last = min(last, doc.page_count)
        indexes = range(first - 1, last)
        workers = workers_for(options, len(indexes))
        in_process = options.engine == "pypdf" and reader is not None  # PDFium never runs in this process

        with out.open("pages.jsonl", "application/x-ndjson") as pages_file, \
                out.open("text.txt", "text/plain; charset=utf-8") as text_file:
            writer = PageWriter(pages_file, text_file)
            if in_process and workers == 1:
                serial(Engines(doc, options), indexes, options, budget, writer.add)
            elif indexes:
                extract_pages(doc, indexes, options, budget, workers, in_process, writer.add)
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
        "text_engines": writer.engines,
        "processes": workers,
    }
