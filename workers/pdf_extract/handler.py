"""Lambda entry point of pdf-extract: ``workers.pdf_extract.handler.handler``."""

from __future__ import annotations

from shared.runtime import make_handler

handler = make_handler("pdf-extract")
