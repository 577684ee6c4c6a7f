"""parquet-normalize over real-world files, and over a Parquet footer that aborts pyarrow.

Every file in ``../shared/corpus/tabular`` ends as a success or a classified permanent
error, never a traceback. The abort test crafts its file from good bytes (see
:func:`aborting_parquet`) and checks that the process isolation turns the SIGABRT into a
committed ``decoder-crash`` without stopping a backfill.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import corpus_files

from workers.cli import main

PERMANENT_CODES = {"corrupt-input", "unsupported-format", "encrypted-input", "limit-exceeded", "empty-input",
                   "binary-input", "bad-encoding", "contract-violation", "decoder-crash"}


def run_cli(mount: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--root", str(mount)])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_files("tabular"), ids=lambda p: p.name)
def test_corpus_file_succeeds_or_fails_classified(path: Path, corpus: Path, mount: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(path, mount / "ingest" / path.name)
    code, record = run_cli(mount, capsys, "run", "parquet-normalize", f"ingest/{path.name}", "--no-isolation")
    assert code in (0, 3), record
    if code == 3:
        assert record["error"]["code"] in PERMANENT_CODES and record["error"]["message"]
        return
    facts = record["facts"]
    assert facts["rows"]["out"] + facts["rows"]["rejected"] + facts["rows"]["duplicates"] == facts["rows"]["in"]
    data = next(o for o in record["outputs"] if o["path"].endswith("data.parquet"))
    table = pq.read_table(mount / data["path"])
    assert table.num_rows == data["rows"] == facts["rows"]["out"]
    assert table.column_names == [c["name"] for c in facts["schema"]]
    assert all(name.isascii() and name == name.lower() for name in table.column_names)


EXPECTED_CORPUS_ERRORS = {"PARQUET-1481.parquet": "corrupt-input", "empty.csv": "empty-input",
                          "bad.csv": "limit-exceeded"}


@pytest.mark.corpus
@pytest.mark.parametrize(("name", "code"), sorted(EXPECTED_CORPUS_ERRORS.items()))
def test_known_bad_corpus_files(name: str, code: str, corpus: Path, mount: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(corpus / "tabular" / name, mount / "ingest" / name)
    exit_code, record = run_cli(mount, capsys, "run", "parquet-normalize", f"ingest/{name}", "--no-isolation")
    assert exit_code == 3 and record["error"]["code"] == code


@pytest.mark.corpus
def test_corpus_utf16_and_bom_headers_are_clean(corpus: Path, mount: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("test_utf16_little.csv", "test_utf8_bom.csv"):
        shutil.copyfile(corpus / "tabular" / name, mount / "ingest" / name)
        code, record = run_cli(mount, capsys, "run", "parquet-normalize", f"ingest/{name}", "--no-isolation")
        assert code == 0
        first = record["facts"]["schema"][0]
        assert first["name"] in ("a", "foo") and "\ufeff" not in (first["original"] or "")


# ----------------------------------------------------------------- native aborts


def aborting_parquet() -> bytes:
    """A Parquet file whose footer declares column ``a`` (INT64 in the schema) as BOOLEAN
    in its column-chunk metadata. Found by mutating footers; on pyarrow 26.0.1 reading
    that chunk's statistics throws a C++ ParquetException through a path that cannot
    propagate it: std::terminate, SIGABRT, the whole interpreter gone."""
    table = pa.table({"a": [1, 2, 3], "s": ["x", "yy", None]})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    data = bytearray(sink.getvalue())
    footer_len = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_len
    # ColumnChunk.meta_data (struct) -> ColumnMetaData.type (i32, zigzag 2 = INT64)
    at = data.index(b"\x1c\x15\x04", start)
    data[at + 2] = 0x00  # BOOLEAN
    return bytes(data)


def _aborts_pyarrow(path: Path) -> bool:
    probe = ("import sys, pyarrow.parquet as pq\n"
             "m = pq.ParquetFile(sys.argv[1]).metadata\n"
             "[m.row_group(r).column(c).statistics for r in range(m.num_row_groups)"
             " for c in range(m.num_columns)]\n")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, timeout=60)
    return result.returncode == -6


@pytest.mark.slow
def test_parquet_that_aborts_pyarrow_ends_classified(mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mount / "ingest" / "abort.parquet"
    path.write_bytes(aborting_parquet())
    if not _aborts_pyarrow(path):
        pytest.skip(f"this footer no longer aborts pyarrow {pa.__version__}: the isolation has nothing to catch")
    (mount / "ingest" / "good.csv").write_text("a,b\n1,2\n")

    code, record = run_cli(mount, capsys, "run", "parquet-normalize", "ingest/abort.parquet")
    assert code == 3
    assert record["error"]["code"] == "decoder-crash" and "SIGABRT" in record["error"]["message"]
    run_dirs = list((mount / "workspace" / "parquet-normalize" / "abort.parquet").glob("*/error.json"))
    assert len(run_dirs) == 1

    code, summary = run_cli(mount, capsys, "backfill", "--worker", "parquet-normalize", "--jobs", "2",
                            "--retry-failed", "--no-progress")
    assert code == 0, summary
    tally = summary["workers"]["parquet-normalize"]
    assert tally["done"] == 1 and tally["failed"] == 1
    assert summary["failures"][0]["error"]["code"] == "decoder-crash"
