"""Lambda entry point of pdf-extract: ``workers.pdf_extract.handler.handler``."""

from __future__ import annotations

from shared.runtime import make_handler
from workers.pdf_extract import SPEC

handler = make_handler(SPEC)
