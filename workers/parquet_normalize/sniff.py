"""What parquet-normalize takes, from a file's first bytes: Parquet, a compressed stream, or
text that is a table. Pure Python and cheap: imported by the worker's SPEC (the router).

Delimited text has no magic bytes, and the backfill routes by content alone, so a source
file, a README or a JSON configuration must not pass for a table: with "a delimiter in the
first line" as the rule, 77 of this repository's 132 Python files did (a docstring's comma,
a statement's semicolon), and a backfill would have made junk Parquet of each. Text is
tabular when its first records agree (:func:`_agree`): two fields at least, split by one
delimiter, most of the records that follow as wide; or when its first line is a whole JSON
object (JSON Lines), or it opens an array of objects (a JSON document of records).

Spreadsheet and statistics exports often put a title block before the header: a title, the
units, a source line, a blank line, Excel's ``sep=;``, a bank statement's ``Account:;DE..``
lines. :func:`table_start` finds where the table starts, for the router and for the reader.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

PARQUET_MAGIC = b"PAR1"
ENCRYPTED_PARQUET_MAGIC = b"PARE"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
DELIMITERS = (",", "\t", ";", "|")
# Text that starts like these is a document for another worker (or none), not a table.
NOT_TABULAR_PREFIXES = (b"%PDF", b"<", b"#!", b"%!PS", b"{\\rtf")
SNIFF_WINDOW = 4096  # bytes the router reads for this worker: a header and the first rows
RECORDS = 8  # records compared at most
AGREEING = 2 / 3  # share of the records after the header that must have the header's field count
WIDE_HEADER_FIELDS = 16  # names a header longer than the window must show, to be taken on its own
MAX_PREAMBLE = 12  # records a title block may take before the header (title, units, source, notes, blanks)
TITLED_ROWS = 3  # rows the router must see right after a header that follows a title block
MAX_NAME_WORDS = 6  # of a column name after a title block: "Anteil an der Bevölkerung in Prozent"
# A number or a date as exports write them: 83155031, -45,00, 2.500,00, 1 234.5, 12%, 31.12.2020, 2024-01-31
_FIGURE = re.compile(r"[-+]?[\d.,' /:-]*\d[\d.,' /:-]*%?")


def compression_of(head: bytes) -> str | None:
    """The pyarrow compression name for a compressed stream's magic bytes, else None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789":
        return "bz2"
    return None


def sniff(head: bytes) -> bool:
    """Parquet, a compressed stream, or tabular text (:func:`looks_tabular_text`)."""
    if head.startswith((PARQUET_MAGIC, ENCRYPTED_PARQUET_MAGIC)):
        return True
    if compression_of(head) is not None:
        return True
    return looks_tabular_text(head)


def looks_tabular_text(head: bytes) -> bool:
    """Printable text whose first records make a table, or JSON records.

    ``head`` is the file's first SNIFF_WINDOW bytes (all of it when shorter). Control
    bytes (other than tab, CR, LF) in what is read mean binary.
    """
    whole = len(head) < SNIFF_WINDOW  # the file ends inside the window: its last record is complete
    text = _decoded(head)
    if text is None:
        return False
    stripped = text.lstrip()
    sample = _first_lines(stripped, RECORDS + 1)
    if not _printable(sample):
        return False
    if stripped.startswith("["):  # a JSON document: an array of records
        return stripped[1:].lstrip().startswith("{")
    if stripped.startswith("{"):  # JSON Lines: the first line is one whole object
        return _first_line_is_an_object(stripped, whole)
    cut = not whole and len(sample) == len(stripped)  # the window ends inside the sample's last line
    first = sample.splitlines()[0]
    if cut and first == sample:  # a header wider than the window: its names are all there is to judge
        return any(_wide_header(first.split(d)[:-1]) for d in DELIMITERS if d in first)
    if any(_agree(_records(sample, d, cut)[:RECORDS], whole and not cut) for d in DELIMITERS if d in first):
        return True
    return _after_a_title_block(stripped, whole)


def _after_a_title_block(text: str, whole: bool) -> bool:
    """A table that starts after a title block (:func:`table_start`, :func:`_titled_table`)."""
    sample = _first_lines(text, MAX_PREAMBLE + RECORDS + 1)
    if not _printable(sample):
        return False
    cut = not whole and len(sample) == len(text)
    for delimiter in DELIMITERS:
        if delimiter in sample:
            records = _records(sample, delimiter, cut)
            start = table_start(records)
            if start and _titled_table(records, start, whole and not cut):
                return True
    return False


def _titled_table(records: list[list[str]], start: int, whole: bool) -> bool:
    """A table whose header is record ``start``, after a title block. The evidence must be
    stronger than :func:`_agree`'s, since the agreement no longer starts at the first line:
    - the header names its columns in short names (:func:`_short_names`), not behind a
      comment's marker, and no record up to it opens like code (a module's docstring and
      imports);
    - TITLED_ROWS unindented records at least follow it at once, most of them exactly as
      wide, and one column holds numbers or dates in most of them (:data:`_FIGURE`).
    A heading over prose or a licence, whose lines have a comma or two, does not pass; a
    title block over a table of text only is not routed (option format=csv reads it)."""
    table = records[start:start + RECORDS]
    header = table[0]
    rows = list(itertools.takewhile(lambda r: len(r) > 1, table[1:]))  # the table's rows, up to a footer
    if (len(rows) < TITLED_ROWS or sum(len(r) == len(header) for r in rows) < AGREEING * len(rows)
            or any(r[0][:1].isspace() for r in rows)):  # indented: a paragraph's lines, a list's items
        return False
    figures = any(sum(1 for r in rows if i < len(r) and _FIGURE.fullmatch(r[i].strip().strip('"')))
                  >= AGREEING * len(rows) for i in range(len(header)))
    while len(header) > 2 and not header[-1].strip():  # a trailing delimiter names no column
        header = header[:-1]
    return (figures and _names_columns(header) and _short_names(header)
            and not header[0].lstrip().startswith(_COMMENTS)
            and not any(_opens_code(record[0].lstrip()) for record in records[:start] if record)
            and _agree(table, whole))


def _short_names(header: list[str]) -> bool:
    """A header's names, not wrapped prose: the first unindented (a line of an indented
    paragraph or list is not a header), none of more than MAX_NAME_WORDS words or holding a
    URL (a package's ``Project-URL: Docs, https://...`` metadata)."""
    return (not header[0][:1].isspace()
            and all(len(name.split()) <= MAX_NAME_WORDS and "://" not in name for name in header))


def _wide_header(names: list[str]) -> bool:
    """Many distinct short names (a few words each): a header, where a long line of prose
    has clauses, and repeats its words."""
    if len(names) < WIDE_HEADER_FIELDS or _opens_code(names[0].lstrip()) or not _names_columns(names) \
            or names[0].lstrip().startswith(_COMMENTS):
        return False
    short = sum(1 for name in names if len(name.split()) <= 3)
    distinct = len({name.strip().strip('"').lower() for name in names})
    return short >= 0.9 * len(names) and distinct >= 0.9 * len(names)


def _decoded(head: bytes) -> str | None:
    if head.startswith(UTF16_BOMS):
        body = head[2:len(head) - (len(head) % 2)]
        try:
            return body.decode("utf-16-le" if head[:2] == b"\xff\xfe" else "utf-16-be")
        except UnicodeDecodeError:
            return None
    head = head.removeprefix(UTF8_BOM)
    if head.lstrip().startswith(NOT_TABULAR_PREFIXES):
        return None
    return head.decode("utf-8", errors="ignore") if _mostly_utf8(head) else head.decode("latin-1")


def _mostly_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the end of the window
    return True


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # binary, in text that is read


def _printable(text: str) -> bool:
    return bool(text.strip()) and _CONTROL.search(text) is None


_LINE_END = re.compile("\r\n|\r|\n")  # Unix, Windows and classic Mac (Excel's "CSV (Macintosh)")


def _first_lines(text: str, count: int) -> str:
    """``text`` up to the end of its ``count``-th line (all of it if it has fewer)."""
    for n, end in enumerate(_LINE_END.finditer(text), start=1):
        if n == count:
            return text[:end.end()]
    return text


def _first_line_is_an_object(text: str, whole: bool) -> bool:
    line = text.splitlines()[0]
    if line == text and not whole:  # a record longer than the window: judged by how it starts
        return line.startswith('{"')
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _records(sample: str, delimiter: str, cut: bool) -> list[list[str]]:
    """The fields of each record of ``sample`` (blank lines skipped; quotes respected: a
    quoted field may hold delimiters and line breaks). ``cut``: the window ends inside its
    last record, which is left out."""
    if '"' not in sample:
        lines = [line for line in sample.splitlines() if line.strip()]
        if cut and lines:
            lines.pop()
        return [line.split(delimiter) for line in lines[:MAX_PREAMBLE + RECORDS]]
    records: list[list[str]] = []
    fields: list[str] = []
    field: list[str] = []
    quoted = False
    for ch in sample:
        if ch == '"':
            quoted = not quoted  # a doubled quote inside a quoted field toggles twice
            field.append(ch)
        elif quoted:
            field.append(ch)
        elif ch == delimiter:
            fields.append("".join(field))
            field = []
        elif ch in "\r\n":
            fields.append("".join(field))
            if any(f.strip() for f in fields):
                records.append(fields)
            fields, field = [], []
        else:
            field.append(ch)
    fields.append("".join(field))
    if not cut and not quoted and any(f.strip() for f in fields):
        records.append(fields)
    return records[:MAX_PREAMBLE + RECORDS]


MAX_NAME_CHARS = 64  # a column name longer than this is more likely a sentence
_NOT_IN_NAMES = set("{}[]=<>")  # code's punctuation, never a header's
_CODE_OPENERS = ("#!", "#include", "/*", '"""', "'''", "import ", "package ", "using ")  # and "from x import y"
# A line comment, or a header such as "# of items,price": a table only if the records agree
_COMMENTS = ("# ", "//", "-- ")


def _names_columns(header: list[str]) -> bool:
    """The record reads as a header: every field a short name, none of code's punctuation."""
    names = [field.strip().strip('"') for field in header]
    return (all(names) and all(len(name) <= MAX_NAME_CHARS for name in names)
            and not any(_NOT_IN_NAMES & set(name) for name in names))


def _opens_code(first: str) -> bool:
    return first.startswith(_CODE_OPENERS) or (first.startswith("from ") and " import " in first)


def _agree(records: list[list[str]], whole: bool) -> bool:
    """A table: a header of two fields at least that does not open like code (an import, a
    docstring, a shebang), and then either
    - a header that names its columns (:func:`_names_columns`; not one behind a line
      comment's marker): ragged rows after it are the run's rejects, not a reason to refuse
      the file; or
    - most records after it of one width, within one of the header's (a trailing delimiter,
      a last column the header does not name), with two columns that have a value somewhere
      (a semicolon ending each line of code leaves the second empty).
    A lone record passes only as the whole file."""
    if not records or len(records[0]) < 2 or _opens_code(records[0][0].lstrip()):
        return False
    header, rest = records[0], records[1:]
    if (rest or whole) and _names_columns(header) and not header[0].lstrip().startswith(_COMMENTS):
        return True
    if not rows_agree(header, rest):
        return False
    width = Counter(len(r) for r in rest).most_common(1)[0][0]
    return sum(1 for i in range(width) if any(i < len(r) and r[i].strip() for r in rest)) >= 2


def rows_agree(header: list[str], rest: list[list[str]]) -> bool:
    """Most records of ``rest`` (AGREEING) share one width of two fields at least, within one
    of the header's (a trailing delimiter, a last column the header does not name)."""
    if not rest:
        return False
    width, seen = Counter(len(r) for r in rest).most_common(1)[0]
    return width >= 2 and abs(width - len(header)) <= 1 and seen >= AGREEING * len(rest)


def filled(record: list[str]) -> int:
    """Fields of ``record`` that hold something (an export pads a title row with empty ones)."""
    return sum(1 for field in record if field.strip())


def table_start(records: list[list[str]]) -> int:
    """How many of the first ``records`` come before the table's header: 0, or the length
    of a title block.

    The header is the first record (within MAX_PREAMBLE) with two filled fields at least
    that the RECORDS after it agree with in width (:func:`rows_agree`; records of one field,
    such as a short table's footer, not counted). The records before it are a title block
    only if each is one of (:func:`_titles`): a blank line, a line without the delimiter (a
    title), a record clearly narrower than the header (a bank statement's ``Account:;DE..``
    lines over a header of many columns), a title cell padded with empty fields to the
    header's width, Excel's ``sep=;`` line. Otherwise the table starts at the first record,
    as it would without this rule (a header that the rows after it do not agree with gives
    rejects)."""
    for start, header in enumerate(records[:MAX_PREAMBLE + 1]):
        rows = [r for r in records[start + 1:start + 1 + RECORDS] if len(r) > 1]  # not a footer's lone cells
        if filled(header) < 2 or not rows_agree(header, rows):
            continue
        return start if start and all(_titles(record, header) for record in records[:start]) else 0
    return 0


def _titles(record: list[str], header: list[str]) -> bool:
    """``record`` can be part of a title block above ``header`` (see :func:`table_start`)."""
    count, names = filled(record), filled(header)
    if 2 * count > names:  # as full as the header, or nearly: a row of the table, or its header
        return False
    if count == 0 or len(record) == 1 or len(record) <= len(header) - 2:  # blank, no delimiter, clearly narrower
        return True
    if count <= 1 and names >= 3:  # a title cell, padded with empty fields
        return True
    return len(record) == 2 and record[0].strip().lower() == "sep=" and not record[1]  # Excel's "sep=;"
