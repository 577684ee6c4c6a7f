"""parquet-normalize core: stream an input's record batches through one plan
(names, trimming, nulls, types or a contract, rejects, dedupe) into zstd Parquet.

This module is the one boundary where pyarrow's exceptions become mountworks errors
(:func:`process`, :func:`_guarded`). Memory follows the batch: one CSV block (or a few
thousand JSON lines, or one Parquet batch) plus the row group being buffered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import queue
import re
import threading
import unicodedata
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.errors import (
    BAD_ENCODING,
    CONTRACT_VIOLATION,
    EMPTY_INPUT,
    MISSING_COLUMN,
    BadContract,
    CorruptInput,
    LimitExceeded,
    MountworksError,
    PermanentInputError,
    UnsupportedInput,
    environment_fault,
)
from shared.runs import OutputDir
from shared.worker import InputFile, RunContext
from workers.parquet_normalize import CONTRACT_SUFFIXES
from workers.parquet_normalize.contract import ColumnRule, Contract, load_contract
from workers.parquet_normalize.options import Options
from workers.parquet_normalize.reading import (
    LEGACY_ENCODING,
    CsvReader,
    Detected,
    JsonReader,
    LegacyEncodingFound,
    ParquetReader,
    RawBatch,
    Reject,
    detect,
    legacy_decode,
)


def _use_jemalloc() -> None:
    """Arrow's jemalloc pool, returning freed pages at once: streaming a CSV through
    mimalloc (pyarrow's default) left the process 30-50 MB larger for the same work
    (bench/README.md). Process-wide, which is what a worker's function or child is."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a pyarrow built without it
        pass


_use_jemalloc()

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
REJECTS_NAME = "rejects.jsonl"
DATA_NAME = "data.parquet"
SCHEMA_SUFFIXES = CONTRACT_SUFFIXES
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
DEADLINE_MARGIN = 10.0
TRUE_TOKENS = ("true", "t", "yes", "y", "1")
FALSE_TOKENS = ("false", "f", "no", "n", "0")
_INTEGER = r"^[+-]?\d{1,18}$"
# A digit after a leading zero (08123, 007, -012, 00.5) makes a code: a ZIP, an account or
# phone number. Read as a number, its zeros would be gone; an inferred number never takes one.
_LEADING_ZERO = r"^[+-]?0\d"
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
_ISO_NAIVE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$"
_ISO_ZONED = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)$"
UTC_TS = pa.timestamp("us", tz="UTC")


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Normalize one input; returns the manifest facts (schema, stats, warnings)."""
    if source.path.name.lower().endswith(SCHEMA_SUFFIXES):
        raise UnsupportedInput(f"{source.path.name} is a schema contract for another input, not data")
    contract = _find_contract(source, options)
    try:
        return Normalizer(source, out, options, ctx, contract).run(encoding=None)
    except LegacyEncodingFound as found:
        _discard(out)
        return Normalizer(source, out, options, ctx, contract).run(encoding=LEGACY_ENCODING, late=str(found))


def _discard(out: OutputDir) -> None:
    """Drop the outputs of an attempt that has to start over (never committed)."""
    for output in out.outputs:
        out.run_dir.joinpath(*output.name.split("/")).unlink(missing_ok=True)
    out.outputs.clear()


def _find_contract(source: InputFile, options: Options) -> Contract | None:
    """The contract named by ``schema`` (in the input's folder) or ``<input>.schema.json|yaml``."""
    folder = source.path.parent
    if options.schema:
        path = folder.joinpath(*options.schema.split("/"))
        if not path.resolve().is_relative_to(folder.resolve()):
            raise BadContract(f"the schema contract {options.schema!r} leaves the input's folder")
        if not path.is_file():
            raise BadContract(f"the schema contract {options.schema!r} is not in the input's folder")
        return load_contract(path)
    stems = [source.path.name]
    for suffix in (".gz", ".zst", ".bz2"):
        if stems[0].lower().endswith(suffix):
            stems.append(stems[0][: -len(suffix)])
    stems += [s.rsplit(".", 1)[0] for s in list(stems) if "." in s]
    for stem in stems:
        for suffix in SCHEMA_SUFFIXES:
            candidate = folder / (stem + suffix)
            if candidate.is_file():
                return load_contract(candidate)
    return None


# ------------------------------------------------------------------------------ names


def snake_case(name: str) -> str:
    """``" Email "`` -> ``email``, ``"Account ID"`` -> ``account_id``, ``"createdAt"`` -> ``created_at``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text.strip())
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    if text and text[0].isdigit():
        text = "col_" + text
    return text


def unique_names(originals: list[str]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for index, original in enumerate(originals):
        base = snake_case(original) or f"column_{index + 1}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------ plan


@dataclass
class Column:
    key: str  # c<i> in the raw batch
    name: str
    original: str
    rule: ColumnRule | None
    inferred: bool = False
    arrow_type: pa.DataType | None = None
    nulls: int = 0
    lows: list[Any] = field(default_factory=list)  # per-batch bounds, folded by _fold
    highs: list[Any] = field(default_factory=list)
    unordered: bool = False  # Arrow has no min/max kernel for this type: no bounds are recorded

    @property
    def kind(self) -> str:
        return self.rule.type if self.rule else "native"

    def bound(self, which: str) -> Any:
        values = self.lows if which == "min" else self.highs
        if not values or self.unordered:
            return None
        try:
            return _fold(values, which)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
            return None


def arrow_type_of(rule: ColumnRule) -> pa.DataType:
    return {
        "string": pa.string(), "lower_string": pa.string(), "integer": pa.int64(), "float": pa.float64(),
        "boolean": pa.bool_(), "date": pa.date32(), "timestamp": UTC_TS,
    }.get(rule.type) or pa.decimal128(rule.precision, rule.scale)


def clean_strings(array: Any, null_tokens: pa.Array) -> Any:
    """Trim, then turn null tokens (after trimming) into nulls."""
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    trimmed = pc.utf8_trim_whitespace(array)
    is_null = pc.is_in(trimmed, value_set=null_tokens)
    return pc.if_else(is_null, pa.scalar(None, pa.string()), trimmed)


def _matches(array: Any, pattern: str) -> Any:
    return pc.fill_null(pc.match_substring_regex(array, pattern), False)


def convert(strings: Any, rule: ColumnRule, default_tz: str, *, inferred: bool = False) -> tuple[Any, Any]:
    """Cleaned strings -> (typed array, mask of values present but invalid). ``inferred``: the
    rule came from the first rows, so a number with a leading zero is invalid, not shortened."""
    kind = rule.type
    if kind == "string":
        return strings, None
    if kind == "lower_string":
        return pc.utf8_lower(strings), None
    if kind in ("integer", "float", "decimal"):
        if kind == "integer":
            pattern, target = _INTEGER, pa.int64()
        elif kind == "float":
            pattern, target = _FLOAT, pa.float64()
        else:
            whole, frac = rule.precision - rule.scale, rule.scale
            fraction = rf"(\.\d{{0,{frac}}})?" if frac else r"(\.0*)?"
            pattern = rf"^[+-]?(\d{{1,{max(whole, 1)}}}{fraction}|\.\d{{1,{max(frac, 1)}}})$"
            if not whole:
                pattern = rf"^[+-]?0?\.\d{{1,{frac}}}$"
            target = pa.decimal128(rule.precision, rule.scale)
        ok = _matches(strings, pattern)
        if inferred and kind != "decimal":
            ok = pc.and_(ok, pc.invert(_matches(strings, _LEADING_ZERO)))
        values = pc.cast(pc.if_else(ok, strings, pa.scalar(None, pa.string())), target)
        return values, pc.and_(pc.is_valid(strings), pc.invert(ok))
    if kind == "boolean":
        lowered = pc.utf8_lower(strings)
        true = pc.is_in(lowered, value_set=pa.array(TRUE_TOKENS))
        false = pc.is_in(lowered, value_set=pa.array(FALSE_TOKENS))
        values = pc.if_else(true, True, pc.if_else(false, False, pa.scalar(None, pa.bool_())))
        return values, pc.and_(pc.is_valid(strings), pc.invert(pc.or_(true, false)))
    parsed = None
    tz = rule.timezone or default_tz
    for fmt in rule.formats:
        attempt = _parse_time(strings, fmt, kind, tz)
        parsed = attempt if parsed is None else pc.coalesce(parsed, attempt)
    assert parsed is not None
    if kind == "date":
        parsed = pc.cast(parsed, pa.date32()) if parsed.type != pa.date32() else parsed
    return parsed, pc.and_(pc.is_valid(strings), pc.is_null(parsed))


def _parse_time(strings: Any, fmt: str, kind: str, tz: str) -> Any:
    if kind == "date":
        if fmt.lower() == "iso8601":
            fmt = "%Y-%m-%d"
        return pc.cast(pc.strptime(strings, format=fmt, unit="s", error_is_null=True), pa.date32())
    if fmt.lower() == "iso8601":
        naive_ok = _matches(strings, _ISO_NAIVE)
        zoned_ok = _matches(strings, _ISO_ZONED)
        date_ok = _matches(strings, _ISO_DATE)
        nul = pa.scalar(None, pa.string())
        naive = pc.cast(pc.if_else(naive_ok, strings, nul), pa.timestamp("us"))
        day = pc.cast(pc.cast(pc.strptime(pc.if_else(date_ok, strings, nul), format="%Y-%m-%d", unit="s",
                                          error_is_null=True), pa.timestamp("us")), pa.timestamp("us"))
        local = _localize(pc.coalesce(naive, day), tz)
        zoned = pc.cast(pc.if_else(zoned_ok, strings, nul), UTC_TS)
        return pc.coalesce(zoned, local)
    parsed = pc.strptime(strings, format=fmt, unit="us", error_is_null=True)
    if parsed.type.tz is None:
        return _localize(parsed, tz)
    return pc.cast(parsed, UTC_TS)


def _localize(naive: Any, tz: str) -> Any:
    if tz == "UTC":
        return pc.cast(naive, UTC_TS)
    local = pc.assume_timezone(naive, timezone=tz, ambiguous="earliest", nonexistent="earliest")
    return pc.cast(local, UTC_TS)


def infer_rule(strings: Any, name: str) -> ColumnRule:
    """The narrowest type every present value of the first batch fits (else string)."""
    present = pc.drop_null(strings)
    if len(present) == 0:
        return ColumnRule(name, "string")
    lowered = pc.utf8_lower(present)
    if pc.all(pc.is_in(lowered, value_set=pa.array(["true", "false"]))).as_py():
        return ColumnRule(name, "boolean")
    codes = pc.any(_matches(present, _LEADING_ZERO)).as_py()
    for kind, pattern in (("integer", _INTEGER), ("float", _FLOAT)):
        if not codes and pc.all(_matches(present, pattern)).as_py():
            return ColumnRule(name, kind)
    if pc.all(_matches(present, _ISO_DATE)).as_py():
        rule = ColumnRule(name, "date", formats=("%Y-%m-%d",))
        if not pc.any(convert(present, rule, "UTC")[1]).as_py():
            return rule
    if pc.all(pc.or_(_matches(present, _ISO_NAIVE), _matches(present, _ISO_ZONED))).as_py():
        rule = ColumnRule(name, "timestamp", formats=("iso8601",))
        try:
            if not pc.any(convert(present, rule, "UTC")[1]).as_py():
                return rule
        except pa.ArrowInvalid:
            pass
    return ColumnRule(name, "string")


BOUNDS_FOLD = 256  # per-batch bounds kept before they are folded into one (memory stays flat)


def _fold(values: list[pa.Scalar], which: str) -> pa.Scalar:
    """The min (or max) of per-batch bounds, compared by Arrow from the scalars themselves
    (Python cannot hold every Arrow value, e.g. INT96 timestamps past year 9999)."""
    if len(values) == 1:
        return values[0]
    return pc.min_max(pa.array(values, type=values[0].type))[which]


def _recorded(kind: pa.DataType) -> bool:
    """Whether a column of this type gets min/max in the manifest: not nested, binary or
    null columns (their bounds are not JSON values)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return not (pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind) or pa.types.is_null(kind))


def _bounds(array: Any) -> tuple[pa.Scalar, pa.Scalar] | None:
    """(min, max) of a column, or None where Arrow has no min/max kernel for its type
    (halffloat, duration, interval, view and extension types on pyarrow 26)."""
    try:
        bounds = pc.min_max(array)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return bounds["min"], bounds["max"]


def _scalar_json(value: Any) -> Any:
    if isinstance(value, pa.Scalar):
        try:
            value = value.as_py()
        except (OverflowError, ValueError):
            try:
                return pc.cast(value, pa.string()).as_py()
            except pa.ArrowException:
                return getattr(value, "value", None)
    return _json_value(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return None
    if isinstance(value, float) and value != value:
        return None
    return value


# ----------------------------------------------------------------------------- sinks


class ParquetSink:
    """Buffers rows into row groups of ``row_group_rows`` and writes zstd Parquet,
    one file per Hive partition value when ``partition_by`` is set."""

    def __init__(self, out: OutputDir, schema: pa.Schema, options: Options, partition: str | None) -> None:
        self.out = out
        self.options = options
        self.partition = partition
        self.schema = schema.remove(schema.get_field_index(partition)) if partition else schema
        self.writers: dict[str, tuple[str, pq.ParquetWriter]] = {}
        self.buffers: dict[str, list[pa.Table]] = {}
        self.buffered: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.row_groups: dict[str, int] = {}
        # row groups are compressed and written on a thread of their own (pyarrow releases the
        # GIL), overlapping the next batches' transform; at most one row group is in flight
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-normalize-writer")
        self.pending: Future[None] | None = None

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # a write error is raised here, in the caller's thread

    def release(self) -> None:
        """Stop the writer thread (a run that ended early): nothing is written after this."""
        self.background.shutdown(wait=True, cancel_futures=True)

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self.partition is None:
            self._buffer("", table)
            return
        values = table.column(self.partition)
        rest = table.drop_columns([self.partition])
        keys = pc.cast(values, pa.string()) if not pa.types.is_string(values.type) else values
        keys = pc.fill_null(keys, HIVE_NULL)
        for key in pc.unique(keys).to_pylist():
            self._buffer(str(key), rest.filter(pc.equal(keys, key)))

    def _buffer(self, key: str, table: pa.Table) -> None:
        if key not in self.buffers:
            if len(self.buffers) >= self.options.max_partitions:
                raise LimitExceeded(f"partition_by={self.partition} has over {self.options.max_partitions} "
                                    "distinct values", limit="max_partitions")
            self.buffers[key], self.buffered[key] = [], 0
        self.buffers[key].append(table)
        self.buffered[key] += table.num_rows
        if self.buffered[key] >= self.options.row_group_rows:
            self._flush(key)
        elif sum(self.buffered.values()) > 2 * self.options.row_group_rows:
            self._flush(max(self.buffered, key=lambda k: self.buffered[k]))

    def _flush(self, key: str) -> None:
        if not self.buffered.get(key):
            return
        table = pa.concat_tables(self.buffers[key]).cast(self.schema)
        self.buffers[key], self.buffered[key] = [], 0
        if key not in self.writers:
            name = DATA_NAME if self.partition is None else f"data/{self.partition}={_hive_escape(key)}/part-0.parquet"
            path = self.out.path(name, PARQUET_MEDIA_TYPE)
            writer = pq.ParquetWriter(str(path), self.schema, compression="zstd", write_statistics=True)
            self.writers[key] = (name, writer)
            self.rows[key], self.row_groups[key] = 0, 0
        self._wait()
        self.pending = self.background.submit(self.writers[key][1].write_table, table,
                                              row_group_size=self.options.row_group_rows)
        self.rows[key] += table.num_rows
        self.row_groups[key] += -(-table.num_rows // self.options.row_group_rows)

    def close(self) -> None:
        for key in list(self.buffers):
            self._flush(key)
        self._wait()
        self.background.shutdown()
        if not self.writers and self.partition is None:
            self.writers[""] = (DATA_NAME, pq.ParquetWriter(str(self.out.path(DATA_NAME, PARQUET_MEDIA_TYPE)),
                                                             self.schema, compression="zstd"))
            self.rows[""], self.row_groups[""] = 0, 0
        for key, (name, writer) in self.writers.items():
            writer.close()
            facts: dict[str, Any] = {"rows": self.rows[key], "row_groups": self.row_groups[key]}
            if self.partition is not None:
                facts["partition"] = {self.partition: None if key == HIVE_NULL else key}
            self.out.update_facts(name, **facts)


def _hive_escape(value: str) -> str:
    """Path-safe partition value (Hive's escaping of '/', '=', '%', controls...)."""
    return "".join(ch if ch.isalnum() or ch in "-_.~ " else f"%{ord(ch):02X}" for ch in value)[:200] or HIVE_NULL


class RejectSink:
    """Rejected rows as JSON Lines: source line, reason, and the row as read."""

    def __init__(self, out: OutputDir) -> None:
        self.out = out
        self.count = 0
        self.file: IO[str] | None = None

    def add(self, line: int | None, reason: str, record: Any, label: str = "line") -> None:
        if self.file is None:
            self.file = self.out.path(REJECTS_NAME, "application/x-ndjson").open("w", encoding="utf-8")
        entry = {label: line, "reason": reason, "record": record}
        text = json.dumps(entry, ensure_ascii=False, default=str)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the record: kept as JSON's own escape
            text = json.dumps(entry, ensure_ascii=True, default=str)
        self.file.write(text + "\n")
        self.count += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.out.update_facts(REJECTS_NAME, rows=self.count)

    def release(self) -> None:
        """Close the file without recording it (the run stops; nothing is committed from it)."""
        if self.file is not None and not self.file.closed:
            self.file.close()


# ------------------------------------------------------------------------ normalizer


@dataclass
class Tally:
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    duplicates: int = 0
    blank_lines: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Normalizer:
    def __init__(self, source: InputFile, out: OutputDir, options: Options, ctx: RunContext,
                 contract: Contract | None) -> None:
        self.source = source
        self.out = out
        self.options = options
        self.ctx = ctx
        self.contract = contract
        self.null_tokens = pa.array(list(options.null_tokens), type=pa.string())
        self.columns: list[Column] = []
        self.sink: ParquetSink | None = None
        self.rejects = RejectSink(out)
        self.tally = Tally()
        self.dedupe = tuple(options.dedupe_keys) or (contract.dedupe if contract else ())
        self.seen_keys: set[tuple[Any, ...]] = set()
        self.warnings: list[str] = []
        self.dropped: list[str] = []
        self.input_facts: dict[str, Any] = {}

    # -- reading

    def run(self, encoding: str | None, late: str | None = None) -> dict[str, Any]:
        try:
            return self._run(encoding, late)
        finally:
            self.rejects.release()  # a run stopped early (a limit, a bad contract) leaves no file open
            if self.sink is not None:
                self.sink.release()

    def _run(self, encoding: str | None, late: str | None) -> dict[str, Any]:
        detected, sample = _guarded_call(detect, self.source.path, self.source.size, self.options)
        if encoding is not None:  # invalid UTF-8 after the sample: start over as legacy text
            text, encoding = legacy_decode(sample)
            detected.encoding, detected.encoding_source = encoding, "detected"
            detected.warnings.append(f"the input's first {len(sample)} bytes were UTF-8 but later bytes are not "
                                     f"({late}); the whole file was decoded as {encoding}, detected, not "
                                     "declared: pass encoding=<name> if it is wrong")
        self.warnings.extend(detected.warnings)
        if detected.kind == "parquet":
            reader = _guarded_call(ParquetReader, self.source.path, self.options)
            self.input_facts["parquet"] = _guarded_call(reader.facts)
            originals = reader.names
            batches = reader.batches()
        elif detected.kind in ("jsonl", "json"):
            json_reader = JsonReader(self.source.path, detected, self.options, detected.encoding or "utf-8")
            batches = json_reader.batches()
            originals = []
        else:
            csv_reader = CsvReader(self.source.path, detected, self.options, detected.encoding or "utf-8")
            text = sample.decode(detected.encoding or "utf-8", errors="replace") if detected.encoding not in (
                "utf-8", "utf-8-sig") else sample.decode("utf-8-sig", errors="ignore")
            originals = csv_reader.header(text)
            batches = csv_reader.batches(len(originals))
        for item in _prefetch(_guarded(batches)):
            self.ctx.deadline.check(DEADLINE_MARGIN, doing="normalizing rows")
            if isinstance(item, Reject):
                self.tally.rows_in += 1
                self._reject(item.line, item.reason, item.record, item.label)
                continue
            if not self.columns:
                if detected.kind in ("jsonl", "json"):
                    originals = list(json_reader.keys)
                self._plan(originals, item)
            self._process(item)
        if not self.columns:
            if not originals and self.tally.rejected:  # not empty: every record was rejected
                self._check_ratio()
                raise CorruptInput(f"no record could be kept: all {self.tally.rejected} were rejected (reasons: "
                                   f"{self._top_reasons()}, in {REJECTS_NAME})")
            if not originals:
                raise CorruptInput("the input has no columns and no rows", code=EMPTY_INPUT)
            self._plan(originals, None)
        self._check_ratio()
        assert self.sink is not None
        self.sink.close()
        self.rejects.close()
        return self._facts(detected)

    # -- planning

    def _plan(self, originals: list[str], first: RawBatch | None) -> None:
        names = unique_names(originals)
        contract = self.contract
        columns: list[Column] = []
        for index, (name, original) in enumerate(zip(names, originals, strict=True)):
            key = f"c{index}"
            rule = contract.rule_for(name, original) if contract else None
            if rule is not None:
                columns.append(Column(key, rule.name, original, rule))
                continue
            if contract is not None and contract.extra_columns == "drop":
                self.dropped.append(original)
                continue
            if contract is not None and contract.extra_columns == "reject":
                raise BadContract(f"column {original!r} is not in the schema contract {contract.origin} "
                                    "(extra_columns: reject)", code=CONTRACT_VIOLATION)
            column = Column(key, name, original, None)
            raw_type = first.table[key].type if first is not None else pa.string()
            if pa.types.is_dictionary(raw_type):
                raw_type = raw_type.value_type
            if first is not None and self.options.infer_types and first.line_label != "row" and \
                    pa.types.is_string(raw_type):
                column.rule = infer_rule(clean_strings(first.table[key], self.null_tokens), name)
                column.inferred = True
            elif pa.types.is_string(raw_type) or pa.types.is_large_string(raw_type):
                column.rule = ColumnRule(name, "string")
            columns.append(column)
        if contract is not None:
            present = {c.name for c in columns}
            missing = [r for r in contract.columns if r.name not in present]
            required = [r.name for r in missing if r.required]
            if required:
                raise BadContract(f"required column(s) {', '.join(required)} of the schema contract "
                                    f"{contract.origin} are missing from the input (columns: {', '.join(names)})",
                                    code=CONTRACT_VIOLATION)
            for rule in missing:
                columns.append(Column("", rule.name, "", rule))
                self.warnings.append(f"contract column {rule.name} is absent from the input: written as nulls")
        out_names = {c.name for c in columns}
        for key in (*self.dedupe, *([self.options.partition_by] if self.options.partition_by else [])):
            if key not in out_names:
                raise PermanentInputError(f"column {key!r} (dedupe key or partition_by) is not among the output "
                                          f"columns: {', '.join(sorted(out_names))}", code=MISSING_COLUMN)
        self.columns = columns
        fields = []
        for column in columns:
            if column.rule is not None:
                column.arrow_type = arrow_type_of(column.rule)
            elif first is not None:
                kind = first.table[column.key].type
                column.arrow_type = kind.value_type if pa.types.is_dictionary(kind) else kind
            else:
                column.arrow_type = pa.string()
            nullable = not (column.rule is not None and column.rule.required)
            fields.append(pa.field(column.name, column.arrow_type, nullable=nullable))
        self.sink = ParquetSink(self.out, pa.schema(fields), self.options, self.options.partition_by or None)

    # -- one batch

    def _process(self, batch: RawBatch) -> None:
        raw = batch.table
        n = raw.num_rows
        blank = None
        blank_count = 0
        if batch.line_label == "line" and all(pa.types.is_string(t) for t in raw.schema.types) and raw.num_columns:
            total = None
            for col in raw.columns:
                length = pc.binary_length(col)
                total = length if total is None else pc.add(total, length)
            blank = pc.equal(total, 0)
            blank_count = int(pc.sum(blank).as_py() or 0)
            if blank_count:
                self.tally.blank_lines += blank_count
            else:
                blank = None
        arrays: dict[str, Any] = {}
        bad: list[tuple[Column, Any]] = []
        for column in self.columns:
            if not column.key:
                arrays[column.name] = pa.nulls(n, column.arrow_type)
                continue
            values = raw[column.key]
            if pa.types.is_dictionary(values.type):
                values = pc.cast(values, values.type.value_type)
            if column.rule is None:
                arrays[column.name] = values
                continue
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                try:
                    arrays[column.name] = pc.cast(values, column.arrow_type)
                    continue
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    values = pc.cast(values, pa.string())
            strings = clean_strings(values, self.null_tokens)
            typed, invalid = convert(strings, column.rule, self.options.timezone, inferred=column.inferred)
            if invalid is not None and pc.any(invalid).as_py():
                bad.append((column, invalid))
            if column.rule.required:
                missing = pc.is_null(strings)
                if pc.any(missing).as_py():
                    bad.append((column, missing))
            arrays[column.name] = typed
        table = pa.table(arrays)
        keep = None
        if bad:
            reject_mask = bad[0][1]
            for _, mask in bad[1:]:
                reject_mask = pc.or_(reject_mask, mask)
            if blank is not None:
                reject_mask = pc.and_(reject_mask, pc.invert(blank))
            self._reject_rows(batch, reject_mask, bad)
            keep = pc.invert(reject_mask)
        if blank is not None:
            keep = pc.invert(blank) if keep is None else pc.and_(keep, pc.invert(blank))
        self.tally.rows_in += n - blank_count
        if keep is not None:
            table = table.filter(keep)
        if self.dedupe:
            table = self._dedupe(table)
        self._stats(table)
        self.tally.rows_out += table.num_rows
        assert self.sink is not None
        self.sink.write(table)
        if 0 <= self.options.max_rejects < self.tally.rejected:
            raise LimitExceeded(f"{self.tally.rejected} rows were rejected, over max_rejects="
                                f"{self.options.max_rejects}; see the reasons: {self._top_reasons()}",
                                limit="max_rejects")

    def _reject_rows(self, batch: RawBatch, mask: Any, bad: list[tuple[Column, Any]]) -> None:
        indices = pc.indices_nonzero(mask).to_pylist()
        lines = batch.lines(indices)
        taken = batch.table.take(indices)
        originals = {c.key: c.original for c in self.columns if c.key}
        records = taken.rename_columns([originals.get(k, k) for k in taken.column_names]).to_pylist()
        flags = {id(mask_): pc.take(mask_, indices).to_pylist() for _, mask_ in bad}
        for position, (line, record) in enumerate(zip(lines, records, strict=True)):
            reasons, kinds = [], []
            for column, mask_ in bad:
                if flags[id(mask_)][position]:
                    value = record.get(column.original)
                    if value is None or not str(value).strip() or str(value).strip() in self.options.null_tokens:
                        reasons.append(f"required column {column.name} is empty")
                        kinds.append(f"{column.name}: required but empty")
                    else:
                        origin = "inferred from the first rows" if column.inferred else "contract"
                        reasons.append(f"{column.name}: {_json_value(value)!r} is not a valid "
                                       f"{column.rule.describe() if column.rule else 'value'} ({origin})")
                        kinds.append(f"{column.name}: not a valid {column.rule.describe() if column.rule else 'value'}")
            self._reject(line, "; ".join(dict.fromkeys(reasons)), {k: _json_value(v) for k, v in record.items()},
                         batch.line_label, "; ".join(dict.fromkeys(kinds)))

    def _reject(self, line: int | None, reason: str, record: Any, label: str = "line",
                kind: str | None = None) -> None:
        self.tally.rejected += 1
        kind = kind or reason.split(":")[0]
        self.tally.reasons[kind] = self.tally.reasons.get(kind, 0) + 1
        self.rejects.add(line, reason, record, label)

    def _top_reasons(self) -> str:
        top = sorted(self.tally.reasons.items(), key=lambda kv: -kv[1])[:3]
        return "; ".join(f"{k} ({v})" for k, v in top) + f" (in {REJECTS_NAME})"

    def _dedupe(self, table: pa.Table) -> pa.Table:
        """Keep the first row of each key across the whole stream (keys held in memory,
        bounded by max_dedupe_keys)."""
        keys = zip(*(table.column(k).to_pylist() for k in self.dedupe), strict=True)
        keep = []
        for key in keys:
            if key in self.seen_keys:
                keep.append(False)
                continue
            self.seen_keys.add(key)
            keep.append(True)
        if len(self.seen_keys) > self.options.max_dedupe_keys:
            raise LimitExceeded(f"over max_dedupe_keys={self.options.max_dedupe_keys} distinct dedupe keys",
                                limit="max_dedupe_keys")
        dropped = keep.count(False)
        if dropped:
            self.tally.duplicates += dropped
            table = table.filter(pa.array(keep))
        return table

    def _stats(self, table: pa.Table) -> None:
        for column in self.columns:
            array = table.column(column.name)
            column.nulls += array.null_count
            if column.unordered or array.null_count == len(array):
                continue
            if not _recorded(array.type):
                column.unordered = True
                continue
            bounds = _bounds(array)
            if bounds is None:
                # no ordering kernel for this type (halffloat, duration, views, extensions, ...):
                # the statistic is skipped, never the input
                column.unordered = True
                self.warnings.append(f"column {column.name}: no min/max recorded (Arrow cannot order "
                                     f"{array.type})")
                continue
            column.lows.append(bounds[0])
            column.highs.append(bounds[1])
            if len(column.lows) >= BOUNDS_FOLD:
                try:
                    column.lows, column.highs = [_fold(column.lows, "min")], [_fold(column.highs, "max")]
                except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
                    column.unordered = True

    def _check_ratio(self) -> None:
        rows = self.tally.rows_in
        if rows and self.tally.rejected / rows > self.options.max_reject_ratio:
            raise LimitExceeded(f"{self.tally.rejected} of {rows} rows were rejected "
                                f"({self.tally.rejected / rows:.1%}), over max_reject_ratio="
                                f"{self.options.max_reject_ratio}; reasons: {self._top_reasons()}",
                                limit="max_reject_ratio")

    def _facts(self, detected: Detected) -> dict[str, Any]:
        t = self.tally
        return {
            "input": {**detected.facts(), **self.input_facts},
            "rows": {"in": t.rows_in, "out": t.rows_out, "rejected": t.rejected, "duplicates": t.duplicates,
                     "blank_lines": t.blank_lines},
            "reject_reasons": dict(sorted(t.reasons.items(), key=lambda kv: -kv[1])[:20]),
            "schema": [
                {"name": c.name, "original": c.original or None, "type": str(c.arrow_type),
                 "source": "contract" if c.rule and not c.inferred and self.contract else
                 ("inferred" if c.inferred else "input"),
                 "nullable": not (c.rule is not None and c.rule.required),
                 "nulls": c.nulls, "min": _scalar_json(c.bound("min")), "max": _scalar_json(c.bound("max"))}
                for c in self.columns
            ],
            "contract": self.contract.origin if self.contract else None,
            "dedupe_keys": list(self.dedupe),
            "partition_by": self.options.partition_by or None,
            "dropped_columns": self.dropped,
            "warnings": self.warnings,
        }


# ------------------------------------------------------------------ error boundary


def _translate(exc: Exception) -> MountworksError:
    """pyarrow/codec errors met while *reading* the input -> our classes, most specific first."""
    fault = environment_fault(exc, doing="reading the input")
    if fault is not None:  # the disk or the mount failed, not the table
        return fault
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, UnicodeError):
        return CorruptInput(f"the text does not decode: {text}", code=BAD_ENCODING)
    if "encrypt" in lowered:
        from shared.errors import EncryptedInput

        return EncryptedInput(f"the Parquet file is encrypted: {text}")
    if isinstance(exc, pa.ArrowNotImplementedError):
        return UnsupportedInput(f"pyarrow cannot read this input: {text}")
    if isinstance(exc, pa.ArrowMemoryError | MemoryError):
        return LimitExceeded(f"the input needs more memory than is available: {text}", limit="memory")
    if "straddling" in lowered or "csv parse error" in lowered:
        return CorruptInput(f"the CSV does not parse: {text}")
    return CorruptInput(f"the input cannot be read: {text}")


_READ_ERRORS = (pa.ArrowException, OSError, UnicodeError, EOFError, ValueError)


PREFETCH_BATCHES = 1  # parsed batches waiting for the transform: parsing overlaps the rest


def _prefetch(items: Iterator[RawBatch | Reject]) -> Iterator[RawBatch | Reject]:
    """Run the reader one step ahead in a thread (pyarrow releases the GIL while it
    parses), so reading and transforming/writing use both cores; memory grows by at
    most PREFETCH_BATCHES batches. Exceptions are re-raised in the caller's thread."""
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put((None, exc))

    thread = threading.Thread(target=produce, name="parquet-normalize-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                slots.get_nowait()
        thread.join(timeout=5)


def _guarded(items: Iterator[RawBatch | Reject]) -> Iterator[RawBatch | Reject]:
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except (MountworksError, LegacyEncodingFound):
            raise
        except _READ_ERRORS as exc:
            raise _translate(exc) from exc
        yield item


def _guarded_call(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except (MountworksError, LegacyEncodingFound):
        raise
    except _READ_ERRORS as exc:
        raise _translate(exc) from exc

