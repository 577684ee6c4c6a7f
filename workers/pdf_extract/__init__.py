"""pdf-extract: per-page text, document structure, attachments (and optionally images) from PDFs.

This module is what the registry imports: it must stay cheap (no pypdf or PDFium here), so that a
cold start only pays for pypdf when the first PDF is processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.worker import WorkerSpec
from workers.pdf_extract.options import parse

PDF_MAGIC = b"%PDF-"


def sniff(head: bytes) -> bool:
    """A PDF names itself with ``%PDF-``; readers tolerate some junk before it, so do we."""
    return PDF_MAGIC in head


SPEC = WorkerSpec(
    name="pdf-extract",
    version="1.1.0",  # 1.1: text from PDFium by default (option engine)
    extensions=frozenset({".pdf"}),
    sniff=sniff,
    parse_options=parse,
    core_module="workers.pdf_extract.core",
)

if TYPE_CHECKING:  # the typed seam: mypy checks this worker's process() against WorkerCore
    from shared.worker import WorkerCore
    from workers.pdf_extract import core
    from workers.pdf_extract.options import Options

    _core: WorkerCore[Options] = core
