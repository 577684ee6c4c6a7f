"""Is this the start of UTF-8 text? Decided on the first bytes of a file only.

Binary formats give themselves away early: a NUL byte (UTF-16 text, archives,
executables, most media) or bytes that are not UTF-8 (JPEG, PNG, PDF's binary comment
line). An empty file is text: it has zero lines.
"""

from __future__ import annotations

import codecs

UTF8_BOM = codecs.BOM_UTF8
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def is_text(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) is plausibly UTF-8 (or ASCII) text."""
    return text_problem(head) is None


def text_problem(head: bytes) -> str | None:
    """Why ``head`` is not UTF-8 text, or None when it is.

    ``head`` may end inside a multi-byte character (it is cut at a fixed length): an
    incomplete last character is allowed, an invalid one is not.
    """
    if head.startswith(UTF16_BOMS):
        return "it starts with a UTF-16 byte order mark (only UTF-8 text is taken)"
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"a NUL byte at offset {nul} (binary data)"
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte offset {exc.start}"
    return None
