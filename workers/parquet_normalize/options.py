"""Options of parquet-normalize: how to read the input and what "normalized" means.

Parsed without pyarrow (cold start). Limits are module constants, overridable per run;
hitting one raises :class:`shared.errors.LimitExceeded` naming the option to raise.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.errors import UsageError
from shared.options import OptionReader
from shared.paths import check_key

WORKER = "parquet-normalize"

BLOCK_MB = 1  # bytes of input parsed per record batch: bounds memory, not the file size
ROW_GROUP_ROWS = 64 * 1024  # rows per Parquet row group (buffered before a write)
MAX_COLUMNS = 4096
MAX_PARTITIONS = 1024  # distinct values of partition_by (one open writer each)
MAX_DEDUPE_KEYS = 20_000_000  # distinct dedupe keys remembered across the stream
MAX_REJECT_RATIO = 0.5  # rejected / read rows above this fail the file: a mostly ragged file is misparsed
MAX_SKIP_ROWS = 10_000  # option skip_rows: records before the header, all within the first 256 KiB read
MAX_JSON_LINE_BYTES = 16 * 1024 * 1024  # one JSON Lines record
MAX_JSON_DOCUMENT_BYTES = 64 * 1024 * 1024  # a whole JSON array document (not streamed)

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet")
HEADER_CHOICES = ("auto", "true", "false")
DEFAULT_NULL_TOKENS = ("", "NULL", "null", "Null", "N/A", "n/a", "NA", "None", "none", "NaN", "nan", "-")
DELIMITER_NAMES = {"auto": "", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


class Options(NamedTuple):
    format: str = "auto"
    encoding: str = "auto"
    delimiter: str = ""  # "" = sniffed
    header: str = "auto"
    skip_rows: int = -1  # records before the header (a title block); -1 = found (sniff.table_start)
    null_tokens: tuple[str, ...] = DEFAULT_NULL_TOKENS
    schema: str = ""  # a contract file in the input's folder; "" = look for <input>.schema.json/yaml
    infer_types: bool = True
    timezone: str = "UTC"
    dedupe_keys: tuple[str, ...] = ()
    partition_by: str = ""
    max_rejects: int = -1  # -1: no absolute limit
    max_reject_ratio: float = MAX_REJECT_RATIO
    block_mb: int = BLOCK_MB
    row_group_rows: int = ROW_GROUP_ROWS
    max_columns: int = MAX_COLUMNS
    max_partitions: int = MAX_PARTITIONS
    max_dedupe_keys: int = MAX_DEDUPE_KEYS

    def to_manifest(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "encoding": self.encoding,
            "delimiter": self.delimiter or "auto",
            "header": self.header,
            "skip_rows": "auto" if self.skip_rows < 0 else self.skip_rows,
            "null_tokens": list(self.null_tokens),
            "schema": self.schema,
            "infer_types": self.infer_types,
            "timezone": self.timezone,
            "dedupe_keys": list(self.dedupe_keys),
            "partition_by": self.partition_by,
            "max_rejects": self.max_rejects,
            "max_reject_ratio": self.max_reject_ratio,
            "block_mb": self.block_mb,
            "row_group_rows": self.row_group_rows,
            "max_columns": self.max_columns,
            "max_partitions": self.max_partitions,
            "max_dedupe_keys": self.max_dedupe_keys,
        }


def _null_tokens(reader: OptionReader) -> tuple[str, ...]:
    """``null_tokens``: a JSON list (may hold "") or a comma-separated string ("" kept)."""
    reader.used.add("null_tokens")
    value = reader.raw.get("null_tokens")
    if value is None:
        return DEFAULT_NULL_TOKENS
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, list | tuple):
        parts = [str(p).strip() for p in value]
    else:
        raise UsageError(f"option null_tokens must be a list or a comma-separated string, got {value!r}")
    return tuple(dict.fromkeys(parts))


def _skip_rows(reader: OptionReader) -> int:
    """``skip_rows``: ``auto`` (a title block before the header is found and skipped) or the
    number of records to skip (0: the first record is the header, whatever it looks like)."""
    if str(reader.raw.get("skip_rows", "auto")).strip().lower() == "auto":
        reader.used.add("skip_rows")
        return -1
    return reader.integer("skip_rows", -1, lo=0, hi=MAX_SKIP_ROWS)


def parse(raw: Mapping[str, Any] | None) -> Options:
    """Options from an event (JSON values) or the CLI (strings); unknown keys are refused."""
    r = OptionReader(raw, WORKER)
    encoding = r.text("encoding", "auto", max_len=40).strip().lower() or "auto"
    if encoding != "auto":
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise UsageError(f"option encoding={encoding!r} is not a known text encoding") from None
    delimiter = r.text("delimiter", "auto", max_len=10)
    delimiter = DELIMITER_NAMES.get(delimiter.strip().lower(), delimiter)
    if delimiter == "\\t":
        delimiter = "\t"
    if len(delimiter) > 1 or delimiter in ('"', "\n", "\r"):
        raise UsageError(f"option delimiter must be one character (or tab/comma/semicolon/pipe), got {delimiter!r}")
    schema = r.text("schema", "", max_len=512).strip()
    if schema:
        check_key(schema, what="option schema")  # relative, no '..': stays in the input's folder
    timezone = r.text("timezone", "UTC", max_len=64).strip() or "UTC"
    _check_timezone(timezone)
    partition_by = r.text("partition_by", "", max_len=128).strip()
    options = Options(
        format=r.choice("format", "auto", FORMATS),
        encoding=encoding,
        delimiter=delimiter,
        header=r.choice("header", "auto", HEADER_CHOICES),
        skip_rows=_skip_rows(r),
        null_tokens=_null_tokens(r),
        schema=schema,
        infer_types=r.boolean("infer_types", True),
        timezone=timezone,
        dedupe_keys=r.items("dedupe_keys", ()),
        partition_by=partition_by,
        max_rejects=r.integer("max_rejects", -1, lo=-1, hi=10**12),
        max_reject_ratio=r.number("max_reject_ratio", MAX_REJECT_RATIO, lo=0.0, hi=1.0),
        block_mb=r.integer("block_mb", BLOCK_MB, lo=1, hi=256),
        row_group_rows=r.integer("row_group_rows", ROW_GROUP_ROWS, lo=1000, hi=10_000_000),
        max_columns=r.integer("max_columns", MAX_COLUMNS, lo=1, hi=100_000),
        max_partitions=r.integer("max_partitions", MAX_PARTITIONS, lo=1, hi=100_000),
        max_dedupe_keys=r.integer("max_dedupe_keys", MAX_DEDUPE_KEYS, lo=1, hi=10**9),
    )
    r.finish()
    return options


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"option timezone={name!r} is not an IANA time zone (for example UTC, Europe/Paris)") from None
