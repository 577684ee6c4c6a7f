"""The pypdf boundary of pdf-extract: opening a document and translating pypdf's errors.

This module is the one place where pypdf's exceptions become mountworks errors
(:func:`translated`), and where our named limits become pypdf's own safety limits
(:func:`pypdf_limits`). Only a document that cannot be opened at all is a permanent
error for the input; everything after opening is contained page by page.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError
from pypdf.generic import DictionaryObject

from shared.errors import (
    PASSWORD_REQUIRED,
    WRONG_PASSWORD,
    CorruptInput,
    EncryptedInput,
    LimitExceeded,
    MountworksError,
)
from workers.pdf_extract.options import MIN_DECOMPRESSED_BYTES, Options, short

MAX_OUTLINE_ENTRIES = 10_000
MAX_FORM_FIELDS = 10_000


# -------------------------------------------------------------------- the error boundary


# pypdf's words for its limits on decoded bytes, which our max_decompressed_bytes drives
_DECODED_BYTES = ("decompress", "output length", "buffer size", "image size", "declared stream length",
                  "stream decoding", "array-based stream")
_READ_LENGTH = re.compile(r"read stream length of \d+ exceeds maximum allowed length of (\d+)")


def limit_name(exc: LimitReachedError) -> str:
    """Which of our named limits a pypdf limit stands for (pypdf's own name otherwise).

    pypdf reads a token or an unterminated stream up to a length: our decoded-bytes limit for
    a stream's data, its own few bytes for a number or a name (a 112-digit "number" in a
    damaged cross-reference table), which no option raises."""
    text = str(exc).lower()
    if "page tree" in text and "depth" not in text:  # its entries (our max_pages), not how deep it nests
        return "MAX_PAGES"
    if (read := _READ_LENGTH.search(text)) is not None:
        return "MAX_DECOMPRESSED_BYTES" if int(read.group(1)) >= MIN_DECOMPRESSED_BYTES else "PYPDF_SAFETY_LIMIT"
    if any(words in text for words in _DECODED_BYTES):
        return "MAX_DECOMPRESSED_BYTES"
    return "PYPDF_SAFETY_LIMIT"


def is_cycle(exc: Exception) -> bool:
    """pypdf reports some reference cycles as a limit; they are malformed input, not big input."""
    return "cycl" in str(exc).lower()


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    """pypdf (and the malformed-input errors it lets through) -> the mountworks tree.

    Most specific first. A missing optional dependency (``cryptography`` for AES) is a
    deployment bug, not the document's fault, so it is not translated.
    """
    try:
        yield
    except MountworksError:
        raise
    except DependencyError:
        raise
    except LimitReachedError as exc:
        if is_cycle(exc):
            raise CorruptInput(f"{doing}: malformed PDF with cyclic references ({short(exc)})") from exc
        limit = limit_name(exc)
        if limit == "PYPDF_SAFETY_LIMIT":  # pypdf's sanity checks of the structure (a cross-reference
            # table larger than the file): malformed input, not big input, that no option raises and
            # that PDFium may still read
            raise CorruptInput(f"{doing}: pypdf refuses its structure ({short(exc)})") from exc
        hint = {"MAX_PAGES": "; raise option max_pages", "MAX_DECOMPRESSED_BYTES": "; raise option "
                "max_decompressed_bytes"}.get(limit, "")
        raise LimitExceeded(f"{doing}: {limit} was reached ({short(exc)}){hint}", limit=limit) from exc
    except FileNotDecryptedError as exc:
        raise EncryptedInput(f"{doing}: the document is encrypted and was not decrypted") from exc
    except RecursionError as exc:
        raise CorruptInput(f"{doing}: the document's object structure is nested too deeply "
                           "(probably cyclic)") from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError,
            NotImplementedError, zlib.error, EOFError) as exc:
        raise CorruptInput(f"{doing}: malformed or truncated PDF ({type(exc).__name__}: {short(exc)})") from exc


def pypdf_limits(options: Options) -> dict[str, Any]:
    """pypdf's own safety limits, driven by our named limits (pypdf >= 7: Configuration)."""
    b = options.max_decompressed_bytes
    return {
        "zlib_maximum_output_length": b,
        "lzw_maximum_output_length": b,
        "run_length_maximum_output_length": b,
        "jbig2_maximum_output_length": b,
        "brotli_maximum_output_length": b,
        "array_based_stream_maximum_output_length": b,
        "image_maximum_buffer_size": b,
        "maximum_declared_stream_length": b,
        "stream_decoding_work_maximum_length": 4 * b,
        "page_tree_maximum_entries": max(2 * options.max_pages + 16, 1_000),
        "outline_maximum_entries": MAX_OUTLINE_ENTRIES,
        "form_fields_maximum_entries": MAX_FORM_FIELDS,
        "disable_legacy_handling": True,
    }


# ------------------------------------------------------------------------ opening


@dataclass
class OpenDocument:
    """The document as pypdf opened it, and its bytes for PDFium (in memory when small)."""

    reader: PdfReader | None  # None: pypdf cannot open it, PDFium alone reads it (``problem`` says why)
    encrypted: bool
    page_count: int
    path: Path
    data: bytes | None = None
    problem: str | None = None
    pages_problem: str | None = None  # the page tree promises more pages than it holds

    @property
    def pdfium_source(self) -> bytes | Path:
        return self.data if self.data is not None else self.path


def open_document(stream: IO[bytes], options: Options, path: Path, data: bytes | None) -> OpenDocument:
    """Open non-strictly, decrypt (empty password unless one is given), count the pages."""
    with translated("opening the document"):
        reader = PdfReader(stream, strict=False)
        encrypted = bool(reader.is_encrypted)
        if encrypted:
            outcome = reader.decrypt(options.password if options.password is not None else "")
            if not outcome:
                if options.password is None:
                    raise EncryptedInput("the document is encrypted with a password (the empty password does "
                                         "not open it); supply it with the 'password' option",
                                         code=PASSWORD_REQUIRED)
                raise EncryptedInput("the password supplied does not open this document", code=WRONG_PASSWORD)
        page_count = len(reader.pages)
    check_page_count(page_count, options)
    declared = declared_page_count(reader)
    if page_count == 0 and declared != 0:  # a run of no pages would hide the loss; /Count 0 says it is empty
        raise CorruptInput(f"the page tree says the document has {declared} pages (/Count), but none of them "
                           "can be read (their page objects are missing or broken)" if declared else
                           "no page of the document can be read (its page tree is missing or broken)")
    short_of = declared is not None and declared > page_count
    return OpenDocument(reader, encrypted, page_count, path, data, pages_problem=f"the page tree says {declared} "
                        f"pages (/Count); {page_count} can be read" if short_of else None)


def declared_page_count(reader: PdfReader) -> int | None:
    """The page count the root of the page tree states (``/Count``), or None where it states none."""
    with contextlib.suppress(Exception):  # a malformed root: the pages found are all there is
        pages = reader.root_object["/Pages"].get_object()
        count = pages["/Count"] if isinstance(pages, DictionaryObject) else None
        return int(count) if isinstance(count, int) else None
    return None


def check_page_count(page_count: int, options: Options) -> None:
    if page_count > options.max_pages:
        raise LimitExceeded(f"the document has {page_count} pages, more than MAX_PAGES={options.max_pages}; "
                            "raise option max_pages or process page ranges (option pages)", limit="MAX_PAGES")
