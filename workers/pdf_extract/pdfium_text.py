"""The PDFium text engine (pypdfium2): page text as Chrome's PDF reader extracts it.

PDFium gives maths symbols, CJK, vertical and right-to-left text as written, several
times faster than pypdf's pure-Python interpreter. It is native code, so it runs only in
forked page processes (:mod:`workers.pdf_extract.text_pages`): a crash on a hostile file ends
that input as ``decoder-crash`` and never the process that commits (in Lambda, the only
one). This is the one module that imports pypdfium2, and the one place its errors are
translated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from shared.errors import PASSWORD_REQUIRED, WRONG_PASSWORD, CorruptInput, EncryptedInput
from workers.pdf_extract.options import short

ENGINE = "pdfium"


class PdfiumPageError(Exception):
    """PDFium could not load or read one page (the page loop may fall back to pypdf)."""


@contextlib.contextmanager
def translated(doing: str, password: str | None) -> Iterator[None]:
    """PDFium's load errors -> the mountworks tree (a bad password is never a fallback case)."""
    try:
        yield
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
            if password is None:
                raise EncryptedInput("the document is encrypted with a password (the empty password does "
                                     "not open it); supply it with the 'password' option",
                                     code=PASSWORD_REQUIRED) from None
            raise EncryptedInput("the password supplied does not open this document", code=WRONG_PASSWORD) from None
        raise CorruptInput(f"{doing}: PDFium cannot read it ({short(exc)})") from None


class PdfiumText:
    """One open PDFium document of this process: page count, page text, page facts."""

    def __init__(self, source: bytes | Path, password: str | None) -> None:
        # PDFium tries the empty user password itself when none is given.
        with translated("opening the document with PDFium", password):
            self.doc = pdfium.PdfDocument(source, password=password)

    def page_count(self) -> int:
        return len(self.doc)

    @contextlib.contextmanager
    def _page(self, index: int) -> Iterator[Any]:
        try:
            page = self.doc[index]
        except pdfium.PdfiumError as exc:
            raise PdfiumPageError(f"PDFium cannot load page {index + 1} ({short(exc)})") from None
        try:
            yield page
        finally:
            page.close()

    def read(self, index: int) -> tuple[str, dict[str, Any]]:
        """The page's text in reading order (line breaks as ``\\n``: PDFium writes ``\\r\\n``)
        and its box, from one load of the page."""
        with self._page(index) as page:
            box = _box(page)
            try:
                textpage = page.get_textpage()
            except pdfium.PdfiumError as exc:
                raise PdfiumPageError(f"PDFium cannot read the text of page {index + 1} ({short(exc)})") from None
            try:
                text: str = textpage.get_text_range()
            finally:
                textpage.close()
        return text.replace("\r\n", "\n").replace("\r", "\n"), box

    def draws_images(self, index: int) -> bool:
        with self._page(index) as page:
            return any(True for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4))

    def close(self) -> None:
        self.doc.close()


def _box(page: Any) -> dict[str, Any]:
    width, height = page.get_size()
    return {"width": round(float(width), 3), "height": round(float(height), 3),
            "rotation": int(page.get_rotation()) % 360}
