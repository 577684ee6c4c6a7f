"""parquet-normalize on tabular files written by other tools that once broke it: Arrow
types with no statistics kernel, and JSON nested deeper than the parser can go. Each
must end as a manifest or a classified error record, never as an internal error."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import Cli, Put

from workers.parquet_normalize.core import _bounds, _recorded, _scalar_json

Run = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def normalize(cli: Cli) -> Run:
    def run(rel: str, *options: str) -> tuple[int, dict[str, Any]]:
        return cli.run("parquet-normalize", rel, *options, isolate=False)

    return run


def _arrays() -> dict[str, pa.Array]:
    """One column of every Arrow type that pyarrow can write to Parquet (and read back)."""
    half = np.array([1.5, -2.0, 0.25], dtype=np.float16)
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(np.arange(12, dtype=np.float32).reshape(3, 2, 2))
    return {
        "halffloat": pa.array(half, pa.float16()),
        "halffloat_nulls": pa.array([half[0], None, half[2]], pa.float16()),
        "float32": pa.array([1.0, None, -3.0], pa.float32()),
        "uint64": pa.array([2**64 - 1, 0, None], pa.uint64()),
        "int8": pa.array([-128, 127, None], pa.int8()),
        "bool": pa.array([True, None, False]),
        "decimal128": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-3.25")], pa.decimal128(10, 2)),
        "decimal256": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-3.25")], pa.decimal256(40, 2)),
        "string": pa.array(["b", "a", None]),
        "large_string": pa.array(["b", "a", None], pa.large_string()),
        "string_view": pa.array(["b", "a", None], pa.string_view()),
        "binary": pa.array([b"a", b"b", None]),
        "large_binary": pa.array([b"a", b"b", None], pa.large_binary()),
        "binary_view": pa.array([b"a", b"b", None], pa.binary_view()),
        "fixed_binary": pa.array([b"ab", b"cd", None], pa.binary(2)),
        "date32": pa.array([0, 365, None], pa.date32()),
        "date64": pa.array([0, 86_400_000, None], pa.date64()),
        "time32": pa.array([1, 2, None], pa.time32("s")),
        "time64": pa.array([1, 2, None], pa.time64("ns")),
        "timestamp_ns_tz": pa.array([1, 2, None], pa.timestamp("ns", tz="Europe/Paris")),
        "duration_s": pa.array([1, -2, None], pa.duration("s")),
        "duration_ns": pa.array([1, -2, None], pa.duration("ns")),
        "list": pa.array([[1], [2, 3], None], pa.list_(pa.int32())),
        "large_list": pa.array([[1], [2, 3], None], pa.large_list(pa.int32())),
        "list_view": pa.ListViewArray.from_arrays([0, 1, 2], [1, 1, 1], pa.array([1, 2, 3])),
        "fixed_list": pa.array([[1, 2], [3, 4], None], pa.list_(pa.int8(), 2)),
        "list_of_halffloat": pa.array([[half[0]], [], None], pa.list_(pa.float16())),
        "struct": pa.array([{"a": 1}, {"a": 2}, None], pa.struct([("a", pa.int32())])),
        "map": pa.array([[("k", 1)], [("j", 2)], None], pa.map_(pa.string(), pa.int32())),
        "dictionary_string": pa.array(["x", "y", "x"]).dictionary_encode(),
        "dictionary_halffloat": pa.DictionaryArray.from_arrays(pa.array([0, 1, 0]), pa.array(half[:2], pa.float16())),
        "dictionary_decimal256": pa.array([1, 2, 1]).cast(pa.decimal256(40, 0)).dictionary_encode(),
        "null": pa.nulls(3),
        "uuid": pa.array([bytes(range(16)), bytes(range(1, 17)), None], pa.uuid()),
        "json_extension": pa.array(['{"a": 1}', "[]", None], pa.json_()),
        "bool8": pa.ExtensionArray.from_storage(pa.bool8(), pa.array([1, 0, None], pa.int8())),
        "fixed_shape_tensor": tensor,
    }


ARRAYS = _arrays()


@pytest.mark.parametrize("name", list(ARRAYS), ids=list(ARRAYS))
def test_every_arrow_type_that_parquet_holds_is_normalized_with_the_statistics_arrow_can_give(
        name: str, normalize: Run, put: Put, mount: Path) -> None:
    array = ARRAYS[name]
    path = mount / put(f"types/{name}.parquet", b"")
    pq.write_table(pa.table({name: array}), path)
    code, record = normalize(f"ingest/types/{name}.parquet")
    assert code == 0, record.get("error")
    [column] = record["facts"]["schema"]
    read_back = pq.read_table(path).column(0).combine_chunks()
    if pa.types.is_dictionary(read_back.type):  # written decoded
        read_back = read_back.dictionary_decode()
    data = pq.read_table(mount / next(o["path"] for o in record["outputs"] if o["path"].endswith(".parquet")))
    written = data.column(0).combine_chunks()
    if pa.types.is_large_string(read_back.type):  # text columns are written as string
        read_back = read_back.cast(pa.string())
    assert written.type == read_back.type and written.equals(read_back)
    assert column["nulls"] == read_back.null_count
    if not _recorded(read_back.type):  # nested, binary, null: bounds that are not JSON values
        assert (column["min"], column["max"]) == (None, None)
        return
    try:
        expected = pc.min_max(read_back)
    except pa.ArrowNotImplementedError:  # no kernel: the statistic is skipped, and said so
        assert (column["min"], column["max"]) == (None, None)
        assert any(f"column {column['name']}: no min/max" in w for w in record["facts"]["warnings"])
        return
    assert (column["min"], column["max"]) == (_scalar_json(expected["min"]), _scalar_json(expected["max"]))


def test_halffloat_columns_spread_over_batches_keep_the_column_and_skip_only_its_statistic(
        normalize: Run, put: Put, mount: Path) -> None:
    n = 200_000  # several Parquet batches: the skip holds for every batch, the other column keeps its bounds
    values = np.linspace(-100, 100, n).astype(np.float16)
    path = mount / put("half.parquet", b"")
    pq.write_table(pa.table({"h": pa.array(values, pa.float16()), "i": pa.array(np.arange(n))}), path,
                   row_group_size=50_000)
    code, record = normalize("ingest/half.parquet")
    assert code == 0, record.get("error")
    columns = {c["name"]: c for c in record["facts"]["schema"]}
    assert columns["h"]["type"] == "halffloat" and columns["h"]["min"] is None
    assert (columns["i"]["min"], columns["i"]["max"]) == (0, n - 1)
    assert sum("no min/max" in w for w in record["facts"]["warnings"]) == 1
    assert record["facts"]["rows"]["out"] == n


@pytest.mark.parametrize("array", [
    pa.array([pa.MonthDayNano([1, 2, 3]), None], pa.month_day_nano_interval()),
    pa.RunEndEncodedArray.from_arrays([2], [1]),
    pa.array([1, 2], pa.duration("ms")),
    pa.array(np.array([1, 2], dtype=np.float16), pa.float16()),
], ids=["month_day_nano_interval", "run_end_encoded", "duration", "halffloat"])
def test_types_with_no_min_max_kernel_give_no_bounds_instead_of_an_error(array: pa.Array) -> None:
    with pytest.raises(pa.ArrowNotImplementedError):  # the premise: Arrow has no kernel for it
        pc.min_max(array)
    assert _bounds(array) is None


DEPTH = 100_000


@pytest.mark.parametrize("text", [
    "[" * DEPTH + "]" * DEPTH,
    '[{"a": ' + "[" * DEPTH + "]" * DEPTH + "}]",
], ids=["bare-array", "inside-a-record"])
def test_a_json_document_nested_past_the_parsers_depth_is_a_named_limit(
        text: str, normalize: Run, put: Put) -> None:
    code, record = normalize(put("deep.json", text))
    assert code == 3
    assert record["error"]["code"] == "limit-exceeded"
    assert record["error"]["limit"] == "json_depth"
    assert "JSON Lines" in record["error"]["message"]


@pytest.mark.parametrize("depth", [DEPTH, 990], ids=["past-the-parser", "parsed-but-too-deep-to-write-back"])
@pytest.mark.parametrize("first", [True, False], ids=["first-line", "later-line"])
def test_a_json_lines_record_nested_too_deep_is_one_reject_and_the_rest_is_kept(
        depth: int, first: bool, normalize: Run, put: Put, mount: Path) -> None:
    deep = '{"a": ' + "[" * depth + "]" * depth + "}"
    bare = "[" * depth + "]" * depth
    lines = [deep, '{"a": 1}', bare, '{"a": 2}', '{"a": 3}', '{"a": 4}'] if first else \
        ['{"a": 1}', '{"a": 2}', deep, '{"a": 3}', bare, '{"a": 4}']
    code, record = normalize(put("deep.jsonl", "\n".join(lines) + "\n"))
    assert code == 0, record.get("error")
    assert record["facts"]["rows"] == {"in": 6, "out": 4, "rejected": 2, "duplicates": 0, "blank_lines": 0}
    kept = pq.read_table(mount / next(o["path"] for o in record["outputs"] if o["path"].endswith(".parquet")))
    assert kept.column("a").to_pylist() == ["1", "2", "3", "4"] or kept.column("a").to_pylist() == [1, 2, 3, 4]
    rejected = [json.loads(line) for line in
                (mount / next(o["path"] for o in record["outputs"] if o["path"].endswith("rejects.jsonl")))
                .read_text().splitlines()]
    assert sorted(r["line"] for r in rejected) == sorted(i + 1 for i, line in enumerate(lines) if "[[" in line)


@pytest.mark.parametrize("text", [
    "\n\n,\n,\n",
    "\n,\n,,\n",
], ids=["blank-then-empty-fields", "blank-then-delimiters"])
def test_a_csv_whose_first_line_is_blank_says_so_instead_of_an_arrow_kernel_error(
        text: str, normalize: Run, put: Put) -> None:
    code, record = normalize(put("blank-first.csv", text))
    assert code == 3
    assert record["error"]["code"] == "corrupt-input"
    assert "first line is blank" in record["error"]["message"]
    assert "kernel" not in record["error"]["message"]


@pytest.mark.parametrize(("text", "names", "rows"), [
    ("\na,b\n1,x\n2,y\n", ["a", "b"], [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    ("\r\na;b\r\n1;2\r\n3;4\r\n", ["a", "b"], [{"a": 1, "b": 2}, {"a": 3, "b": 4}]),
    ("\ufeff\nid,name\n1,x\n", ["id", "name"], [{"id": 1, "name": "x"}]),
], ids=["blank-then-header", "crlf-semicolons", "bom-then-blank"])
def test_blank_lines_before_the_header_are_skipped_and_counted(
        text: str, names: list[str], rows: list[dict[str, Any]], mount: Path, normalize: Run, put: Put) -> None:
    """A blank first line used to be refused ("remove the leading blank lines"): the table
    after it is read, and the manifest says how many records came before its header."""
    code, record = normalize(put("blank-first.csv", text))
    assert code == 0, record
    assert record["facts"]["input"]["skipped_rows"] == 1
    assert record["facts"]["input"]["preamble"] == [""]
    table = pq.read_table(mount / next(o["path"] for o in record["outputs"] if o["path"].endswith(".parquet")))
    assert table.schema.names == names and table.to_pylist() == rows
