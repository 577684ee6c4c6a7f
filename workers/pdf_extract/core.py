"""pdf-extract core: a PDF in, per-page text and the document's structure out.

Outputs (all listed in the manifest):

    pages.jsonl              one object per page: page, text, chars, flags, error
    text.txt                 the pages' text, UTF-8, pages separated by a form feed
    document.json            page count, metadata, PDF version, page sizes and rotation,
                             outline, form fields, links, attachments (and images)
    attachments/NNN-<name>   embedded files, bounded by MAX_ATTACHMENTS / MAX_ATTACHMENT_BYTES
    images/pNNNNN-NN.<ext>   embedded images when option ``images`` is on (MAX_IMAGES ...)

This module only puts the parts together, one concern each:

    text_pages.py   PDFium's half of every page, in forked page processes
    pdfium_text.py  the PDFium text engine (pypdfium2) and its error translation
    document.py     pypdf's side: opening, page facts, the records, document.json
    opening.py      the pypdf boundary: open, decrypt, our limits as pypdf's, error translation
    pages.py        one page's record: pypdf's facts (box, links, content-size check), its text
    pypdf_loader.py pypdf's import, without its ciphers (until a document is encrypted) or Pillow
    budget.py       the page timer, MAX_SECONDS and the invocation's deadline
    forks.py        forked children and what their ends mean
    pool.py         pypdf's page processes (option ``engine=pypdf`` with page ranges)
    structure.py    the document structure: boxes, links, metadata, outline, forms, files
    merge.py        the merge of committed page-range runs (option ``ranges``)

With PDFium's text (the default) the first page process is forked as soon as the bytes are
read, before pypdf is imported or opens anything: the two halves of the work overlap where
there is a second core. A document that pypdf cannot open but PDFium can still gives its
text (and page sizes); its structure is then empty and ``document.json``'s ``problems``
says why.
"""

from __future__ import annotations

from typing import Any

from shared.errors import EMPTY_INPUT, CorruptInput, UnsupportedInput
from shared.runs import OutputDir
from shared.worker import InputFile, RunContext
from workers.pdf_extract import pypdf_loader
from workers.pdf_extract.budget import Budget
from workers.pdf_extract.options import DEADLINE_MARGIN_SECONDS, Options
from workers.pdf_extract.text_pages import PdfiumPages

HEADER_SCAN_BYTES = 1024  # readers accept junk before %PDF- within the first KiB
IN_MEMORY_MAX_BYTES = 64 << 20  # smaller files are read into memory once (faster); larger ones stream


def check_header(source: InputFile) -> None:
    """Empty and not-a-PDF inputs, classified before either library sees them."""
    if source.size == 0:
        raise CorruptInput("the file is empty (0 bytes); a PDF starts with %PDF-", code=EMPTY_INPUT)
    with source.path.open("rb") as f:
        head = f.read(HEADER_SCAN_BYTES)
    if b"%PDF-" not in head:
        raise UnsupportedInput(f"not a PDF: no %PDF- header in the first {HEADER_SCAN_BYTES} bytes")


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Extract everything the contract lists; return the manifest's facts."""
    if options.ranges:  # merge committed page-range runs; nothing is extracted again
        from workers.pdf_extract.merge import merge

        return merge(source, out, options, ctx)
    check_header(source)
    budget = Budget(ctx.deadline, options.max_page_seconds, options.max_seconds)
    budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="before opening the document")
    with source.path.open("rb") as f:
        data = f.read() if source.size <= IN_MEMORY_MAX_BYTES else None
        text = None
        if options.engine == "pdfium":
            text = PdfiumPages(data if data is not None else source.path, options, budget,
                               options.pages.first - 1, options.pages.last, workers=max(1, options.parallel))
        try:
            # pypdf's side is imported only now: on a cold start its import overlaps PDFium's work
            pypdf_loader.load()
            from workers.pdf_extract.document import extract

            return extract(source, out, options, budget, f, data, text)
        finally:
            if text is not None:
                text.close()
