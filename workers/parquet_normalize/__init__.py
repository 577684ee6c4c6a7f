"""parquet-normalize: messy CSV/TSV/JSON Lines/Parquet in, clean typed zstd Parquet out.

This module is imported on every cold start and by the backfill router, so it holds
only the registration and the content sniff; pyarrow lives in :mod:`.core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.worker import WorkerSpec
from workers.parquet_normalize.options import parse

PARQUET_MAGIC = b"PAR1"
ENCRYPTED_PARQUET_MAGIC = b"PARE"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
DELIMITERS = (",", "\t", ";", "|")
# Text that starts like these is a document for another worker (or none), not a table.
# Schema contracts that sit beside an input: configuration, never inputs themselves.
CONTRACT_SUFFIXES = (".schema.json", ".schema.yaml", ".schema.yml")
NOT_TABULAR_PREFIXES = (b"%PDF", b"<", b"#!", b"%!PS", b"{\\rtf")


def compression_of(head: bytes) -> str | None:
    """The pyarrow compression name for a compressed stream's magic bytes, else None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789":
        return "bz2"
    return None


def looks_tabular_text(head: bytes) -> bool:
    """Printable text holding a JSON object or a delimited header line.

    Strict on purpose: the backfill routes by content, so an image, PDF or video must
    never be claimed here. Control bytes (other than tab, CR, LF) mean binary.
    """
    if head.startswith(UTF16_BOMS):
        try:
            text = head[2 : len(head) - (len(head) % 2)].decode("utf-16-le" if head[:2] == b"\xff\xfe" else "utf-16-be")
        except UnicodeDecodeError:
            return False
    else:
        head = head.removeprefix(UTF8_BOM)
        if head.lstrip().startswith(NOT_TABULAR_PREFIXES):
            return False
        text = head.decode("utf-8", errors="ignore") if _mostly_utf8(head) else head.decode("latin-1")
    if not text.strip() or any(ord(ch) < 32 and ch not in "\t\r\n" for ch in text):
        return False
    if any(0x7F <= ord(ch) < 0xA0 for ch in text):
        return False
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("[{") or stripped.startswith("[\n"):
        return '"' in stripped and ":" in stripped
    first_line = stripped.splitlines()[0] if stripped else ""
    return any(d in first_line for d in DELIMITERS)


def _mostly_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the 64-byte window
    return True


def sniff(head: bytes) -> bool:
    """Parquet, a compressed stream, or delimited/JSON text."""
    if head.startswith((PARQUET_MAGIC, ENCRYPTED_PARQUET_MAGIC)):
        return True
    if compression_of(head) is not None:
        return True
    return looks_tabular_text(head)


SPEC = WorkerSpec(
    name="parquet-normalize",
    version="1.1.0",  # 1.1: inferred numbers never take a leading zero (codes stay strings)
    extensions=frozenset({".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq",
                          ".gz", ".zst", ".bz2"}),
    sniff=sniff,
    parse_options=parse,
    core_module="workers.parquet_normalize.core",
    companions=CONTRACT_SUFFIXES,
)

if TYPE_CHECKING:  # the typed seam: mypy checks this worker's process() against WorkerCore
    from shared.worker import WorkerCore
    from workers.parquet_normalize import core
    from workers.parquet_normalize.options import Options

    _core: WorkerCore[Options] = core
