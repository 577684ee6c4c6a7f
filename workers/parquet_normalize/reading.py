"""Input side of parquet-normalize: detect the format, encoding and dialect, then stream
record batches with the source line number of every row.

Every reader yields :class:`RawBatch` values of bounded size (one CSV block, a few
thousand JSON lines, one Parquet batch), so memory follows the batch, not the file.
Rows that cannot be parsed at all (ragged CSV rows, malformed JSON lines) come out as
:class:`Reject` values with their line number; they never stop the file.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.errors import (
    BAD_ENCODING,
    BINARY_INPUT,
    EMPTY_INPUT,
    CorruptInput,
    EncryptedInput,
    LimitExceeded,
    UnsupportedInput,
)
from workers.parquet_normalize.options import MAX_JSON_DOCUMENT_BYTES, MAX_JSON_LINE_BYTES, Options
from workers.parquet_normalize.sniff import (
    DELIMITERS,
    ENCRYPTED_PARQUET_MAGIC,
    MAX_PREAMBLE,
    PARQUET_MAGIC,
    RECORDS,
    UTF8_BOM,
    UTF16_BOMS,
    compression_of,
    table_start,
)

SAMPLE_BYTES = 256 * 1024
JSON_BATCH_LINES = 20_000
PARQUET_BATCH_ROWS = 64 * 1024
MAX_FOOTER_CHUNKS = 100_000  # column chunks summarized from a Parquet footer
PREAMBLE_CHARS = 200  # of each title-block (or footer) record kept in the manifest
MAX_FOOTER = 12  # lines without the delimiter after the last row, kept as the table's footer
JSON_DEPTH_LIMIT = "json_depth"  # the limit hit by JSON nested past the parser's recursion limit
TOO_DEEP = f"about {sys.getrecursionlimit():,} levels, Python's recursion limit"
LEGACY_ENCODING = "cp1252"  # what "legacy" text almost always is; latin-1 where cp1252 cannot decode
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}([T ][\d:.]+)?\s*$")


class LegacyEncodingFound(Exception):
    """Invalid UTF-8 appeared after the sample: restart decoding as a legacy encoding."""


@dataclass
class Reject:
    line: int | None
    reason: str
    record: Any
    label: str = "line"  # what ``line`` counts: "line" (text inputs) or "item" (a JSON array's records)
    fields: int | None = None  # a ragged CSV record's field count


@dataclass
class RawBatch:
    """One batch of rows as read, plus a way to find each row's source line."""

    table: pa.Table
    lines: Callable[[list[int]], list[int | None]]
    line_label: str = "line"


@dataclass
class Detected:
    """What the sniffing found out; recorded in the manifest."""

    kind: str  # csv, jsonl, json, parquet
    compression: str | None
    encoding: str | None = None
    encoding_source: str | None = None  # bom, declared, utf-8, detected
    delimiter: str | None = None
    header: bool | None = None
    skipped: int = 0  # records before the header: a title block (option skip_rows)
    preamble: list[str] = field(default_factory=list)  # the first MAX_PREAMBLE of them, as text
    footer: list[str] = field(default_factory=list)  # lines without the delimiter after the last row
    warnings: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"format": self.kind, "compression": self.compression or "none"}
        if self.encoding is not None:
            facts["encoding"] = self.encoding
            facts["encoding_source"] = self.encoding_source
        if self.delimiter is not None:
            facts["delimiter"] = self.delimiter
            facts["header"] = self.header
        if self.skipped:
            facts["skipped_rows"] = self.skipped
            facts["preamble"] = self.preamble
        if self.footer:
            facts["footer"] = self.footer
        return facts


def open_stream(path: Path, compression: str | None) -> Any:
    """A streaming (decompressing) input stream; nothing is inflated to disk or memory."""
    return pa.input_stream(str(path), compression=compression)


def read_sample(path: Path, compression: str | None) -> bytes:
    with open_stream(path, compression) as stream:
        data: bytes = stream.read(SAMPLE_BYTES)
        return data


def detect(path: Path, size: int, options: Options) -> tuple[Detected, bytes]:
    """Format, compression, encoding and CSV dialect from the first bytes."""
    if size == 0:
        raise CorruptInput("the input is a zero-byte file: no header, no rows (and not a Parquet file)",
                           code=EMPTY_INPUT)
    with path.open("rb") as f:
        head = f.read(64)
    compression = compression_of(head)
    sample = read_sample(path, compression)
    if compression and not sample:
        raise CorruptInput(f"the {compression} stream decompresses to nothing", code=EMPTY_INPUT)
    if sample.startswith(ENCRYPTED_PARQUET_MAGIC):
        raise EncryptedInput("the Parquet file is encrypted (PARE footer); its keys are not available here")
    if sample.startswith(PARQUET_MAGIC) or options.format == "parquet":
        if compression:
            raise UnsupportedInput(f"a {compression}-compressed Parquet file needs random access; store it "
                                   "uncompressed (Parquet compresses its own pages)")
        return Detected("parquet", None), sample
    detected = Detected("csv", compression)
    text = _decode_sample(sample, options, detected)
    stripped = text.lstrip()
    if options.format == "jsonl" or (options.format == "auto" and stripped.startswith("{")):
        # JSON Lines puts a whole object on its first line; a pretty-printed single document
        # ("{" alone, then fields) is a document, refused below as "not an array of records"
        detected.kind = "jsonl" if options.format == "jsonl" or _first_line_is_object(stripped) else "json"
    elif options.format == "auto" and stripped.startswith("["):
        detected.kind = "json"
    else:
        _sniff_dialect(text, options, detected)
    return detected, sample


def _decode_sample(sample: bytes, options: Options, detected: Detected) -> str:
    """Pick the text encoding: BOM, declared, UTF-8, or a detected legacy one (with a warning)."""
    if sample.startswith(UTF16_BOMS):
        detected.encoding, detected.encoding_source = "utf-16", "bom"
        return sample[: len(sample) - len(sample) % 2].decode("utf-16", errors="replace")
    if b"\x00" in sample:
        raise CorruptInput("the input holds NUL bytes: it is binary, not delimited text or JSON Lines "
                           "(UTF-16 text needs its byte order mark)", code=BINARY_INPUT)
    if options.encoding != "auto":
        detected.encoding, detected.encoding_source = options.encoding, "declared"
        try:
            return sample.decode(options.encoding, errors="strict")
        except UnicodeDecodeError as exc:
            raise CorruptInput(f"the input is not valid {options.encoding} (declared): byte "
                               f"{sample[exc.start:exc.start + 1]!r} at offset {exc.start}",
                               code=BAD_ENCODING) from exc
    if sample.startswith(UTF8_BOM):
        detected.encoding, detected.encoding_source = "utf-8-sig", "bom"
    else:
        detected.encoding, detected.encoding_source = "utf-8", "utf-8"
    try:
        return sample.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 3 and len(sample) == SAMPLE_BYTES:
            return sample[: exc.start].decode("utf-8-sig")  # a character cut by the sample's end
        text, encoding = legacy_decode(sample)
        detected.encoding, detected.encoding_source = encoding, "detected"
        detected.warnings.append(legacy_warning(encoding, sample, exc.start))
        return text


def legacy_decode(data: bytes) -> tuple[str, str]:
    try:
        return data.decode(LEGACY_ENCODING), LEGACY_ENCODING
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def legacy_warning(encoding: str, data: bytes, offset: int) -> str:
    snippet = data[max(0, offset - 20) : offset + 20]
    return (f"the input is not UTF-8 (invalid byte {data[offset:offset + 1]!r} near offset {offset}); it was "
            f"decoded as {encoding}, detected, not declared: check text such as "
            f"{snippet.decode(encoding, errors='replace')!r} and pass encoding=<name> if it is wrong")


def _sniff_dialect(text: str, options: Options, detected: Detected) -> None:
    """Delimiter (the candidate splitting the most of the first lines into one number of
    fields, two at least), where the table starts (a title block before the header:
    :func:`~workers.parquet_normalize.sniff.table_start`, or option ``skip_rows``) and header
    (a first row with no numeric or date field; after a title block, one that is not all
    numbers and dates)."""
    if not text.strip():
        raise CorruptInput("the input has no header and no rows", code=EMPTY_INPUT)
    cut = text.rfind("\n")
    body = text if cut <= 0 or len(text) < SAMPLE_BYTES // 2 else text[:cut]
    delimiter = options.delimiter
    if options.format == "tsv" and not delimiter:
        delimiter = "\t"
    if not delimiter:
        best: tuple[int, int, int] = (0, 0, 0)
        delimiter = ","
        for rank, candidate in enumerate(DELIMITERS):
            rows = _first_rows(body, candidate, 50)
            widths = [len(r) for r in rows if len(r) >= 2]  # a title block's lines may have one field
            if not widths:
                continue
            mode = max(set(widths), key=widths.count)
            score = (widths.count(mode), mode, -rank)
            if score > best:
                best, delimiter = score, candidate
    detected.delimiter = delimiter
    found = options.skip_rows < 0
    rows = _first_rows(body, delimiter, (MAX_PREAMBLE if found else options.skip_rows) + RECORDS + 1)
    start = table_start(rows) if found else options.skip_rows
    if len(rows) <= start:
        raise CorruptInput(f"option skip_rows={start} skips every record of the input's first {len(body):,} "
                           f"characters ({len(rows)} records): nothing is left for a header or rows",
                           code=EMPTY_INPUT)
    detected.skipped = start
    detected.preamble = [_preamble_text(row, delimiter) for row in rows[:min(start, MAX_PREAMBLE)]]
    if options.header != "auto":
        detected.header = options.header == "true"
    else:
        first = rows[start] if len(rows) > start else []
        figures = sum(1 for v in first if _NUMBER.match(v) or _ISO_DATE.match(v))
        # after a title block the next record is the header unless it is all figures: a
        # statistics table's "Year,2000,2001,..." names its columns with numbers
        detected.header = bool(first) and (not figures or (start > 0 and figures < sum(1 for v in first if v.strip())))


def _preamble_text(row: list[str], delimiter: str) -> str:
    """A title-block record as the manifest keeps it: its fields without the empty ones an
    export pads it with at the end, cut to PREAMBLE_CHARS."""
    while row and not row[-1].strip():
        row = row[:-1]
    return delimiter.join(row)[:PREAMBLE_CHARS]


def _first_rows(text: str, delimiter: str, limit: int) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"')
    rows: list[list[str]] = []
    try:
        for row in reader:
            rows.append(row)
            if len(rows) >= limit:
                break
    except csv.Error:
        pass
    return rows


# ----------------------------------------------------------------------------- CSV


class CsvLines:
    """Source line numbers for CSV rows, from record numbers and embedded newlines.

    pyarrow numbers records (header included, blank lines included when they are not
    ignored) and reports ragged ones to the invalid-row handler with that number.
    A valid row's record number follows from how many ragged records precede it; its
    physical line adds the newlines embedded in quoted values of earlier records.
    """

    def __init__(self) -> None:
        self.invalid: list[int] = []  # record numbers of ragged records, ascending
        self.invalid_nl: list[int] = []  # their embedded newlines
        self.valid_seen = 0  # valid records before the current batch (header included)
        self.valid_nl = 0  # embedded newlines in those records

    def add_invalid(self, number: int, text: str) -> None:
        index = bisect.bisect(self.invalid, number)
        self.invalid.insert(index, number)
        self.invalid_nl.insert(index, text.count("\n"))

    def record_numbers(self, valid_indices: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Record numbers (1-based) of valid records given their 0-based global index."""
        invalid = np.asarray(self.invalid, dtype=np.int64)
        slots = invalid - np.arange(len(invalid)) - 1
        shift = np.searchsorted(slots, valid_indices, side="right")
        result: np.ndarray[Any, Any] = valid_indices + 1 + shift
        return result

    def line_of_record(self, record: int, valid_nl_before: int) -> int:
        index = bisect.bisect_left(self.invalid, record)
        return record + valid_nl_before + sum(self.invalid_nl[:index])

    def line_of_invalid(self, number: int, first_valid: int, valid_nl_start: int,
                        cumulative: np.ndarray[Any, Any] | None) -> int | None:
        """A ragged record's line, once the batch holding the valid records before it is read."""
        index = bisect.bisect_left(self.invalid, number)
        valid_before = number - 1 - index
        if cumulative is None:
            offset = 0
        elif valid_before - first_valid >= len(cumulative):
            return None
        else:
            offset = int(cumulative[max(0, valid_before - first_valid)])
        return number + valid_nl_start + offset + sum(self.invalid_nl[:index])


def _has_newline(array: Any) -> bool:
    """Whether a string array's values hold a newline: one scan of its data buffer (numpy,
    memchr speed), so that only the rare column with one pays for per-row counts."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return True
    _, offsets, data = array.buffers()
    if data is None or not len(array):
        return False
    width = 8 if pa.types.is_large_string(array.type) else 4
    bounds = np.frombuffer(offsets, dtype=np.int64 if width == 8 else np.int32, count=len(array) + 1,
                           offset=array.offset * width)
    used = np.frombuffer(data, dtype=np.uint8)[int(bounds[0]):int(bounds[-1])]
    return bool(used.size) and int(np.count_nonzero(used == 10)) > 0


def embedded_newlines(table: pa.Table) -> np.ndarray[Any, Any]:
    """Newlines inside each row's values (quoted fields), for source line numbers."""
    total: np.ndarray[Any, Any] = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        for chunk in column.chunks:
            if not _has_newline(chunk):
                continue
            counts = pc.count_substring(column, "\n")
            if pc.max(counts).as_py():
                total += counts.to_numpy(zero_copy_only=False)
            break
    return total


@dataclass
class BatchLines:
    """Line numbers of one CSV batch's rows (``offset`` skips a header row)."""

    lines: CsvLines
    first_valid: int
    valid_nl_start: int
    cumulative: np.ndarray[Any, Any]
    offset: int

    def __call__(self, indices: list[int]) -> list[int | None]:
        rows = [i + self.offset for i in indices]
        records = self.lines.record_numbers(np.asarray(rows, dtype=np.int64) + self.first_valid)
        return [self.lines.line_of_record(int(r), self.valid_nl_start + int(self.cumulative[i]))
                for r, i in zip(records, rows, strict=True)]


@dataclass
class IndexLines:
    """Line (or record, or row) numbers kept per batch, or counted from a start."""

    numbers: list[int] | None = None
    start: int = 0

    def __call__(self, indices: list[int]) -> list[int | None]:
        if self.numbers is not None:
            return [self.numbers[i] for i in indices]
        return [self.start + i + 1 for i in indices]


class CsvReader:
    """pyarrow's streaming CSV reader, every column as text, ragged rows captured."""

    def __init__(self, path: Path, detected: Detected, options: Options, encoding: str) -> None:
        self.path = path
        self.detected = detected
        self.options = options
        self.encoding = encoding
        self.lines = CsvLines()
        self.ragged: list[tuple[int | None, str, int, int]] = []
        self.names: list[str] = []
        self.skipped_preamble = 0  # title-block records pyarrow found ragged (the rest are rows to drop)

    def _on_invalid(self, row: Any) -> str:
        if row.number is not None:
            self.lines.add_invalid(int(row.number), str(row.text))
            if row.number <= self.detected.skipped:  # the title block: in the manifest, not a reject
                self.skipped_preamble += 1
                return "skip"
        self.ragged.append((row.number, str(row.text), int(row.expected_columns), int(row.actual_columns)))
        return "skip"

    def header(self, sample_text: str) -> list[str]:
        start = self.detected.skipped
        rows = _first_rows(sample_text, self.detected.delimiter or ",", start + 1)
        if len(rows) <= start:
            raise CorruptInput("the input has no header and no rows", code=EMPTY_INPUT)
        first = rows[start]
        if not first:  # pyarrow would take the next row as names and infer its types
            raise CorruptInput("the CSV's first line is blank, so it gives no columns, and no header follows "
                               "the blank lines: remove them, or name how many records come before the header "
                               "with option skip_rows")
        if len(first) > self.options.max_columns:
            raise LimitExceeded(f"the input has {len(first)} columns; the limit is max_columns="
                                f"{self.options.max_columns}", limit="max_columns")
        return [v.strip() or f"column_{i + 1}" for i, v in enumerate(first)] if self.detected.header else [
            f"column_{i + 1}" for i in range(len(first))]

    def batches(self, width: int) -> Iterator[RawBatch | Reject]:
        """The rows in batches and the ragged records as rejects, in line order; the lines
        without the delimiter that end the file (MAX_FOOTER at most) are its footer
        (``Detected.footer``), not rejects. Only the last MAX_FOOTER of them are held back."""
        held: list[Reject] = []  # lines without the delimiter after every row and reject so far
        run_too_long = False  # the present run of them already had more than MAX_FOOTER

        def release(before: int | None) -> Iterator[Reject]:
            while held and (before is None or (held[0].line or 0) < before):
                yield held.pop(0)

        for item in self._batches(width):
            if isinstance(item, Reject) and _no_delimiter(item):
                held.append(item)
                if len(held) > MAX_FOOTER:
                    run_too_long = True
                    yield held.pop(0)
                continue
            yield from release(item.line if isinstance(item, Reject) else item.lines([item.table.num_rows - 1])[0])
            run_too_long = run_too_long and bool(held)  # a run broken by a row or a reject starts again
            yield item
        if held and not run_too_long:
            self.detected.footer = [str(r.record)[:PREAMBLE_CHARS] for r in held]
            held.clear()
        yield from release(None)

    def _batches(self, width: int) -> Iterator[RawBatch | Reject]:
        keys = [f"c{i}" for i in range(width)]
        arrow_encoding = "utf8" if self.encoding in ("utf-8", "utf-8-sig") else self.encoding
        try:
            reader = pacsv.open_csv(
                open_stream(self.path, self.detected.compression),
                read_options=pacsv.ReadOptions(column_names=keys, block_size=self.options.block_mb << 20,
                                               encoding=arrow_encoding, use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=self.detected.delimiter or ",", quote_char='"',
                                                 double_quote=True, newlines_in_values=True,
                                                 ignore_empty_lines=False, invalid_row_handler=self._on_invalid),
                convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(keys, pa.string()),
                                                     strings_can_be_null=False, check_utf8=True),
            )
        except pa.ArrowInvalid as exc:
            self._legacy_or_raise(exc, arrow_encoding)
        leading = self.detected.skipped + bool(self.detected.header)  # records before the data
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                self._legacy_or_raise(exc, arrow_encoding)
            table = pa.Table.from_batches([batch])
            newlines = embedded_newlines(table)
            cumulative: np.ndarray[Any, Any] = np.concatenate([[0], np.cumsum(newlines)])
            numbering = BatchLines(self.lines, self.lines.valid_seen, self.lines.valid_nl, cumulative, 0)
            yield from self._ready_rejects(numbering.first_valid, numbering.valid_nl_start, cumulative)
            self.lines.valid_seen += table.num_rows
            self.lines.valid_nl += int(cumulative[-1])
            if leading:  # the header, and title-block records as wide as a row, come first
                drop = min(leading - self.skipped_preamble, table.num_rows)
                table = table.slice(drop)
                numbering.offset = drop
                leading = 0
            if table.num_rows:
                yield RawBatch(table, numbering)
        yield from self._ready_rejects(self.lines.valid_seen, self.lines.valid_nl, None)

    @staticmethod
    def _legacy_or_raise(exc: Exception, arrow_encoding: str) -> NoReturn:
        if "invalid utf8" in str(exc).lower() and arrow_encoding == "utf8":
            raise LegacyEncodingFound(str(exc)) from exc
        raise exc

    def _ready_rejects(self, first_valid: int, valid_nl_start: int,
                       cumulative: np.ndarray[Any, Any] | None) -> Iterator[Reject]:
        pending: list[tuple[int | None, str, int, int]] = []
        for number, text, expected, actual in self.ragged:
            line = None if number is None else self.lines.line_of_invalid(number, first_valid, valid_nl_start,
                                                                          cumulative)
            if line is None and cumulative is not None and number is not None:
                pending.append((number, text, expected, actual))
                continue
            yield Reject(line, f"ragged row: {actual} fields where the header has {expected}", text, fields=actual)
        self.ragged = pending


def _no_delimiter(reject: Reject) -> bool:
    """A ragged record of one field with text: a footer's line ("(C) Statistisches Bundesamt")."""
    return reject.fields == 1 and bool(str(reject.record).strip())


# ------------------------------------------------------------------------ JSON Lines


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _may_hold_surrogates(text: str) -> bool:
    """JSON can escape half of a UTF-16 pair alone (\\ud800): a string no UTF-8 can hold. Only
    such an escape makes one (strictly decoded text has none), so a line without it is clean."""
    return "\\ud" in text or "\\uD" in text


def _lone_surrogate(keys: Any, cells: dict[str, str | None]) -> bool:
    try:
        for text in (*keys, *cells.values()):
            if text is not None:
                text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


LONE_SURROGATE = ("a string holds half of a UTF-16 surrogate pair alone (an escape such as \\ud800 without "
                  "its partner), which is not text: fix the writer")


def _shallow(value: Any) -> Any:
    """A non-object record as the reject file can hold it: None when it is too deep to write."""
    try:
        json.dumps(value)
    except RecursionError:
        return None
    return value


def _first_line_is_object(text: str) -> bool:
    first = text.split("\n", 1)[0].strip()
    try:
        return isinstance(json.loads(first), dict)
    except RecursionError:  # an object nested too deep to parse: still a JSON Lines record
        return first.startswith("{")
    except ValueError:
        return len(first) >= len(text.strip())  # a sample cut inside one long line: trust it


class JsonReader:
    """JSON Lines parsed line by line (exact line numbers, one bad line is one reject);
    a small JSON array document is read whole, bounded by MAX_JSON_DOCUMENT_BYTES."""

    def __init__(self, path: Path, detected: Detected, options: Options, encoding: str) -> None:
        self.path = path
        self.detected = detected
        self.options = options
        self.encoding = encoding
        self.keys: dict[str, int] = {}
        self.frozen = False
        self.surrogates = False  # the text just parsed has an escape that may be a lone surrogate

    def _text(self) -> io.TextIOWrapper:
        stream = open_stream(self.path, self.detected.compression)
        return io.TextIOWrapper(stream, encoding=self.encoding, errors="strict", newline="")

    def _records(self) -> Iterator[tuple[int, Any, str | None]]:
        """(line, parsed object or None, error) for every non-blank line."""
        if self.detected.kind == "json":
            with self._text() as text:
                data = text.read(MAX_JSON_DOCUMENT_BYTES + 1)
            if len(data) > MAX_JSON_DOCUMENT_BYTES:
                raise LimitExceeded(f"a JSON array document over {MAX_JSON_DOCUMENT_BYTES} bytes is not streamed; "
                                    "convert it to JSON Lines", limit="MAX_JSON_DOCUMENT_BYTES")
            try:
                document = json.loads(data)
            except RecursionError as exc:
                raise LimitExceeded(f"the JSON document is nested deeper than the parser allows ({TOO_DEEP}); "
                                    "flatten its records or convert it to JSON Lines",
                                    limit=JSON_DEPTH_LIMIT) from exc
            except ValueError as exc:
                raise CorruptInput(f"the JSON document does not parse: {exc}") from exc
            if not isinstance(document, list):
                raise UnsupportedInput("a JSON document that is not an array of records")
            self.surrogates = _may_hold_surrogates(data)
            for index, item in enumerate(document, start=1):
                yield index, item, None
            return
        with self._text() as text:
            for number, line in enumerate(text, start=1):
                if len(line) > MAX_JSON_LINE_BYTES:
                    yield number, None, f"line longer than {MAX_JSON_LINE_BYTES} characters"
                    continue
                if not line.strip():
                    continue
                self.surrogates = _may_hold_surrogates(line)
                try:
                    yield number, json.loads(line), None
                except RecursionError:
                    yield number, None, f"nested deeper than the JSON parser allows ({TOO_DEEP})"
                except ValueError as exc:
                    yield number, None, f"malformed JSON: {exc}"

    def batches(self) -> Iterator[RawBatch | Reject]:
        # A JSON array's records are counted by position ("item", 1-based), not by line; the
        # label must not be "record", the key that holds the rejected record itself.
        label = "item" if self.detected.kind == "json" else "line"
        rows: list[dict[str, Any]] = []
        numbers: list[int] = []
        for number, value, error in self._records():
            if error is not None:
                yield Reject(number, error, None, label)
                continue
            if not isinstance(value, dict):
                yield Reject(number, f"not a JSON object but {type(value).__name__}", _shallow(value), label)
                continue
            try:
                cells = {k: _cell(v) for k, v in value.items()}
            except RecursionError:  # parsed, but too deep to write back as a cell
                yield Reject(number, f"nested deeper than the JSON parser allows ({TOO_DEEP})", None, label)
                continue
            if self.surrogates and _lone_surrogate(value, cells):
                yield Reject(number, LONE_SURROGATE, value, label)
                continue
            new = [k for k in value if k not in self.keys]
            if new and self.frozen:
                yield Reject(number, f"key(s) {', '.join(map(repr, new))} not in the first "
                             f"{JSON_BATCH_LINES} records that fixed the columns", value, label)
                continue
            for key in new:
                if len(self.keys) >= self.options.max_columns:
                    raise LimitExceeded(f"the records have over {self.options.max_columns} distinct keys",
                                        limit="max_columns")
                self.keys[key] = len(self.keys)
            rows.append(cells)
            numbers.append(number)
            if len(rows) >= JSON_BATCH_LINES:
                yield self._batch(rows, numbers, label)
                rows, numbers = [], []
        if rows:
            yield self._batch(rows, numbers, label)

    def _batch(self, rows: list[dict[str, str | None]], numbers: list[int], label: str) -> RawBatch:
        self.frozen = True
        columns = {f"c{i}": pa.array([r.get(k) for r in rows], type=pa.string())
                   for k, i in self.keys.items()}
        table = pa.table(columns)
        return RawBatch(table, IndexLines(numbers=list(numbers)), label)


# --------------------------------------------------------------------------- Parquet


class ParquetReader:
    def __init__(self, path: Path, options: Options) -> None:
        with path.open("rb") as f:
            f.seek(-4, io.SEEK_END) if path.stat().st_size >= 4 else None
            tail = f.read(4)
        if tail == ENCRYPTED_PARQUET_MAGIC:
            raise EncryptedInput("the Parquet footer is encrypted (PARE); its keys are not available here")
        if tail != PARQUET_MAGIC:
            raise CorruptInput("the Parquet file is truncated: it does not end with the PAR1 footer magic")
        self.file = pq.ParquetFile(str(path), coerce_int96_timestamp_unit="us")
        self.rows_seen = 0
        if self.file.metadata.num_columns > options.max_columns:
            raise LimitExceeded(f"the Parquet file has {self.file.metadata.num_columns} columns; the limit is "
                                f"max_columns={options.max_columns}", limit="max_columns")

    @property
    def names(self) -> list[str]:
        return list(self.file.schema_arrow.names)

    def facts(self) -> dict[str, Any]:
        """What the input's footer declares: writer, row groups, and per column the codecs
        and null count from the column-chunk statistics (for comparison with the output's).

        Reading column-chunk statistics is where some crafted footers make pyarrow abort the
        process (a C++ exception escaping as std::terminate on 26.x); the runtime runs each
        input in its own process and commits such a crash as ``decoder-crash``.
        """
        meta = self.file.metadata
        columns: dict[str, dict[str, Any]] = {}
        if meta.num_row_groups * meta.num_columns <= MAX_FOOTER_CHUNKS:
            for r in range(meta.num_row_groups):
                group = meta.row_group(r)
                for c in range(group.num_columns):
                    chunk = group.column(c)
                    entry = columns.setdefault(chunk.path_in_schema, {"codecs": [], "nulls": 0})
                    if chunk.compression not in entry["codecs"]:
                        entry["codecs"].append(chunk.compression)
                    stats = chunk.statistics
                    if entry["nulls"] is not None and stats is not None and stats.has_null_count:
                        entry["nulls"] += stats.null_count
                    else:
                        entry["nulls"] = None
        return {"created_by": meta.created_by, "rows": meta.num_rows, "row_groups": meta.num_row_groups,
                "columns": columns}

    def batches(self) -> Iterator[RawBatch | Reject]:
        for batch in self.file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            start = self.rows_seen
            self.rows_seen += batch.num_rows
            table = pa.Table.from_batches([batch])
            table = table.rename_columns([f"c{i}" for i in range(table.num_columns)])
            yield RawBatch(table, IndexLines(start=start), "row")
