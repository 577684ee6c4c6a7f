"""parquet-normalize end to end through the CLI, in-process, on generated messy inputs
whose expected output is known: one test per rule of the contract."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import Cli, Put

from workers.cli import main
from workers.parquet_normalize import SPEC
from workers.parquet_normalize.core import snake_case

Run = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def normalize(cli: Cli) -> Run:
    """``normalize("x.csv", "key=value", ...) -> (exit code, manifest or error record)``."""

    def run(name: str, *options: str, isolation: bool = False) -> tuple[int, dict[str, Any]]:
        return cli.run("parquet-normalize", f"ingest/{name}", *options, isolate=isolation)

    return run


def output(mount: Path, manifest: dict[str, Any], suffix: str) -> Path:
    paths = [o["path"] for o in manifest["outputs"] if o["path"].endswith(suffix)]
    assert len(paths) == 1, manifest["outputs"]
    found: Path = mount / paths[0]
    return found


def rows(mount: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = pq.read_table(output(mount, manifest, "data.parquet")).to_pylist()
    return data


def rejects(mount: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output(mount, manifest, "rejects.jsonl").read_text().splitlines()]


def schema(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in manifest["facts"]["schema"]}


MESSY = (
    " Email ,Account ID,createdAt,Prénom,Score,Active,Joined,Seen At,name,Name\n"
    "  Ann@Example.COM ,1, 2024-01-05T10:00:00 ,Zoé,1.5,true,2024-01-05,2024-01-05 10:00:00, a ,b\n"
    "bob@example.com,2,2024-01-06T11:30:00Z,N/A,NULL,FALSE,2024-02-29,2024-01-05T10:00:00+02:00,,c\n"
    ",3,,Åsa,  -2.25 ,True, ,2024-03-01 00:00:00,x,\n"
)


def test_names_trimming_nulls_and_inferred_types(mount: Path, normalize: Run, put: Put) -> None:
    put("people.csv", MESSY)
    code, manifest = normalize("people.csv")
    assert code == 0
    cols = schema(manifest)
    assert list(cols) == ["email", "account_id", "created_at", "prenom", "score", "active", "joined", "seen_at",
                          "name", "name_2"]
    assert cols["email"]["original"] == " Email ".strip() and cols["prenom"]["original"] == "Prénom"
    assert cols["account_id"]["type"] == "int64" and cols["score"]["type"] == "double"
    assert cols["active"]["type"] == "bool" and cols["joined"]["type"] == "date32[day]"
    assert cols["seen_at"]["type"] == "timestamp[us, tz=UTC]"
    assert all(c["source"] == "inferred" for c in cols.values())
    data = rows(mount, manifest)
    assert data[0]["email"] == "Ann@Example.COM"  # trimmed, case kept without a contract
    assert data[0]["name"] == "a" and data[1]["name"] is None  # "" is a null token
    assert data[1]["prenom"] is None and data[1]["score"] is None  # N/A, NULL
    assert data[2]["email"] is None and data[2]["joined"] is None  # " " trims to ""
    assert data[2]["score"] == -2.25
    assert data[1]["seen_at"] == datetime(2024, 1, 5, 8, 0, tzinfo=UTC)  # +02:00 -> UTC
    assert cols["score"]["nulls"] == 1 and cols["score"]["min"] == -2.25 and cols["score"]["max"] == 1.5
    assert cols["joined"]["min"] == "2024-01-05" and cols["joined"]["max"] == "2024-02-29"
    assert manifest["facts"]["rows"] == {"in": 3, "out": 3, "rejected": 0, "duplicates": 0, "blank_lines": 0}
    parquet = pq.ParquetFile(output(mount, manifest, "data.parquet"))
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"


def test_numbers_with_leading_zeros_are_codes_and_keep_their_zeros(mount: Path, normalize: Run, put: Put) -> None:
    """ZIP codes, account and phone numbers: read as integers, 08123 became 8123 (csv-spectrum's
    comma_in_quotes.csv). A column with such a value stays a string; 0 and 0.5 are numbers."""
    put("codes.csv", "zip,account,phone,id,ratio\n08123,007,0612345678,1,0.5\n90210,120,0698765432,2,0\n")
    code, manifest = normalize("codes.csv")
    assert code == 0
    cols = schema(manifest)
    assert {name: cols[name]["type"] for name in cols} == {
        "zip": "string", "account": "string", "phone": "string", "id": "int64", "ratio": "double"}
    assert rows(mount, manifest)[0] == {"zip": "08123", "account": "007", "phone": "0612345678", "id": 1,
                                        "ratio": 0.5}


def test_a_leading_zero_after_the_inferred_rows_is_a_reject_not_a_shortened_number(
        mount: Path, normalize: Run, put: Put) -> None:
    body = "".join(f"{n},{10000 + n}\n" for n in range(150_000))  # more than the first 1 MB block
    put("late.csv", "n,zip\n" + body + "150000,01234\n")
    code, manifest = normalize("late.csv", "block_mb=1")
    assert code == 0 and schema(manifest)["zip"]["type"] == "int64"
    [bad] = rejects(mount, manifest)
    assert "zip: '01234' is not a valid integer (inferred from the first rows)" in bad["reason"]
    assert manifest["facts"]["rows"]["out"] == 150_000


def test_records_that_are_all_rejected_say_so_instead_of_empty_input(mount: Path, normalize: Run, put: Put) -> None:
    """JSON Lines whose every line is an array, or holds a lone surrogate (JSONTestSuite's
    i_string_* files): the input is not empty, every record was rejected, and the rejects
    file keeps each one (a lone surrogate as JSON's own escape; it was an internal error)."""
    put("arrays.jsonl", '["a"]\n[1, 2]\n')
    code, record = normalize("arrays.jsonl", "format=jsonl")
    assert code == 3 and record["error"]["code"] == "limit-exceeded"
    assert "2 of 2 rows were rejected" in record["error"]["message"]
    put("halves.jsonl", '{"a": "x\\udfaa y", "b": 1}\n{"a": "ok", "b": 2}\n["\\ud800"]\n')
    code, manifest = normalize("halves.jsonl", "max_reject_ratio=0.9")
    assert code == 0 and rows(mount, manifest) == [{"a": "ok", "b": 2}]
    lone, listed = rejects(mount, manifest)
    assert "surrogate" in lone["reason"] and lone["record"] == {"a": "x\udfaa y", "b": 1}
    assert "not a JSON object" in listed["reason"] and listed["record"] == ["\ud800"]


def test_custom_null_tokens(mount: Path, normalize: Run, put: Put) -> None:
    put("nulls.csv", "a,b\nN/A,missing\n-, x \n")
    code, manifest = normalize("nulls.csv", "null_tokens=missing,-")
    assert code == 0
    assert rows(mount, manifest) == [{"a": "N/A", "b": None}, {"a": None, "b": "x"}]


@pytest.mark.parametrize(("name", "expected"), [
    (" Email ", "email"), ("Account ID", "account_id"), ("createdAt", "created_at"), ("HTTPStatus", "http_status"),
    ("Prénom", "prenom"), ("2024 sales", "col_2024_sales"), ("a--b__c", "a_b_c"), ("日本", ""),
])
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


CONTRACT = {
    "columns": {
        "email": {"type": "lower_string", "required": True},
        "account_id": {"type": "integer", "required": True},
        "amount": {"type": "decimal(6,2)"},
        "active": {"type": "boolean"},
        "joined": {"type": "date", "formats": ["%Y-%m-%d", "%d/%m/%Y"]},
        "seen": {"type": "timestamp", "formats": ["%Y-%m-%d %H:%M", "iso8601"], "timezone": "Europe/Paris"},
        "note": "string",
    },
    "dedupe": [],
}

CONTRACT_CSV = (
    "Email,Account ID,Amount,Active,Joined,Seen,Note\n"              # line 1
    " Ann@Example.COM ,1,12.5,yes,2024-01-05,2024-07-01 12:00,ok\n"  # 2
    "bob@x.org,2,-0.75,N,05/02/2024,2024-01-15T08:00:00Z,\"two\n"    # 3
    "lines\"\n"                                                      # 4
    "\n"                                                             # 5 (blank line)
    "carl@x.org,three,1,true,2024-01-01,2024-01-01 00:00,bad int\n"  # 6
    "dan@x.org,4,1234.567,true,2024-01-01,2024-01-01 00:00,too many decimals\n"  # 7
    ",5,1,true,2024-01-01,2024-01-01 00:00,no email\n"               # 8
    "eve@x.org,6,1,maybe,31/31/2024,noon,three bad\n"                # 9
    "fay@x.org,7,1\n"                                                # 10 ragged
    "gus@x.org,8,99.99,false,2024-12-31,2024-03-31 02:30,dst gap\n"  # 11
)


def test_contract_types_rejects_and_line_numbers(mount: Path, normalize: Run, put: Put) -> None:
    put("accounts.csv", CONTRACT_CSV)
    put("accounts.csv.schema.json", json.dumps(CONTRACT))
    code, manifest = normalize("accounts.csv", "max_reject_ratio=1")
    assert code == 0, manifest
    facts = manifest["facts"]
    assert facts["contract"] == "accounts.csv.schema.json"
    cols = schema(manifest)
    assert {n: c["type"] for n, c in cols.items()} == {
        "email": "string", "account_id": "int64", "amount": "decimal128(6, 2)", "active": "bool",
        "joined": "date32[day]", "seen": "timestamp[us, tz=UTC]", "note": "string"}
    assert cols["email"]["nullable"] is False and cols["amount"]["nullable"] is True
    data = rows(mount, manifest)
    assert [r["email"] for r in data] == ["ann@example.com", "bob@x.org", "gus@x.org"]
    assert data[0]["amount"] == Decimal("12.50") and data[1]["amount"] == Decimal("-0.75")
    assert [r["active"] for r in data] == [True, False, False]
    assert data[1]["joined"] == date(2024, 2, 5)  # the second accepted format
    assert data[0]["seen"] == datetime(2024, 7, 1, 10, 0, tzinfo=UTC)  # Paris summer time -> UTC
    assert data[1]["seen"] == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)  # explicit Z wins over the zone
    assert data[1]["note"] == "two\nlines"
    bad = {r["line"]: r["reason"] for r in rejects(mount, manifest)}
    assert set(bad) == {6, 7, 8, 9, 10}
    assert "account_id: 'three' is not a valid integer" in bad[6]
    assert "amount: '1234.567' is not a valid decimal(6,2)" in bad[7]
    assert "required column email is empty" in bad[8]
    assert all(f"{c}:" in bad[9] for c in ("active", "joined", "seen"))
    assert bad[10].startswith("ragged row: 3 fields")
    assert facts["rows"] == {"in": 8, "out": 3, "rejected": 5, "duplicates": 0, "blank_lines": 1}
    assert output(mount, manifest, "rejects.jsonl").exists()
    assert [o.get("rows") for o in manifest["outputs"] if o["path"].endswith("rejects.jsonl")] == [5]
    record = next(r for r in rejects(mount, manifest) if r["line"] == 6)["record"]
    assert record["Account ID"] == "three"  # the row as read, under its original names


def test_contract_yaml_named_in_options_and_missing_required(mount: Path, normalize: Run, put: Put) -> None:
    put("in/a.csv", "Email,Other\nA@B.C,1\n")
    put("in/rules.yaml", "columns:\n  email: {type: lower_string, required: true}\n"
        "  account_id: {type: integer, required: true}\n")
    code, record = normalize("in/a.csv", "schema=rules.yaml")
    assert code == 3
    assert record["error"]["code"] == "contract-violation" and "account_id" in record["error"]["message"]
    put("in/b.csv", "Email,Other\nA@B.C,1\n")
    put("in/ok.yaml", "columns:\n  email: lower_string\nextra_columns: drop\n")
    code, manifest = normalize("in/b.csv", "schema=ok.yaml")
    assert code == 0
    assert rows(mount, manifest) == [{"email": "a@b.c"}] and manifest["facts"]["dropped_columns"] == ["Other"]


def test_contract_file_outside_the_folder_is_refused(mount: Path, normalize: Run, put: Put) -> None:
    put("a.csv", "x\n1\n")
    code = main(["run", "parquet-normalize", "ingest/a.csv", "--root", str(mount), "-o", "schema=../x.json",
                 "--no-isolation"])
    assert code == 2


def _many_bad(n_good: int, n_bad: int) -> str:
    lines = ["id,v"] + [f"{i},{i}" for i in range(n_good)] + [f"{i},{i},extra" for i in range(n_bad)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("option", "limit"), [("max_rejects=2", "max_rejects"),
                                               ("max_reject_ratio=0.1", "max_reject_ratio")])
def test_reject_threshold_is_a_permanent_limit(mount: Path, normalize: Run, option: str, limit: str, put: Put) -> None:
    put("t.csv", _many_bad(20, 3))
    code, record = normalize("t.csv", option)
    assert code == 3
    assert record["error"]["code"] == "limit-exceeded" and record["error"]["limit"] == limit
    code, manifest = normalize("t.csv")  # default ratio 0.5: 3 of 23 is fine
    assert code == 0 and manifest["facts"]["rows"]["rejected"] == 3


def test_mostly_ragged_csv_is_a_classified_error(mount: Path, normalize: Run, put: Put) -> None:
    put("ragged.csv", _many_bad(2, 10))
    code, record = normalize("ragged.csv")
    assert code == 3 and record["error"]["limit"] == "max_reject_ratio"


def test_dedupe_and_hive_partitioning(mount: Path, normalize: Run, put: Put) -> None:
    put("d.csv", "Email,Country,n\nA@x.org,FR,1\na@x.org ,FR,2\nb@x.org,DE,3\nc@x.org,,4\nb@x.org,DE,5\n")
    put("d.csv.schema.json", json.dumps({"columns": {"email": "lower_string", "country": "string",
                                                            "n": "integer"}, "dedupe": ["email"]}))
    code, manifest = normalize("d.csv", "partition_by=country", "row_group_rows=1000")
    assert code == 0, manifest
    assert manifest["facts"]["rows"]["duplicates"] == 2 and manifest["facts"]["rows"]["out"] == 3
    paths = sorted(o["path"].split("/data/")[1] for o in manifest["outputs"] if o["path"].endswith(".parquet"))
    assert paths == ["country=DE/part-0.parquet", "country=FR/part-0.parquet",
                     "country=__HIVE_DEFAULT_PARTITION__/part-0.parquet"]
    base = output(mount, manifest, "country=FR/part-0.parquet").parents[1]
    table = ds.dataset(base, format="parquet", partitioning="hive").to_table()
    got = sorted((r["email"], r["n"], r["country"]) for r in table.to_pylist())
    assert got == [("a@x.org", 1, "FR"), ("b@x.org", 3, "DE"), ("c@x.org", 4, None)]


def test_dedupe_key_option_must_name_a_column(mount: Path, normalize: Run, put: Put) -> None:
    put("k.csv", "a\n1\n")
    code, record = normalize("k.csv", "dedupe_keys=nope")
    assert code == 3 and record["error"]["code"] == "missing-column"


TEXT = "Name,City\nZoé,Málaga\nJürgen,Köln\n"
EXPECTED = [{"name": "Zoé", "city": "Málaga"}, {"name": "Jürgen", "city": "Köln"}]


@pytest.mark.parametrize(("data", "options", "encoding", "warned"), [
    (TEXT.encode("utf-8"), (), "utf-8", False),
    (b"\xef\xbb\xbf" + TEXT.encode("utf-8"), (), "utf-8-sig", False),
    (TEXT.encode("utf-16"), (), "utf-16", False),
    (b"\xfe\xff" + TEXT.encode("utf-16-be"), (), "utf-16", False),
    (TEXT.encode("latin-1"), (), "cp1252", True),
    (TEXT.encode("latin-1"), ("encoding=latin-1",), "iso8859-1", False),
], ids=["utf8", "utf8-bom", "utf16-le-bom", "utf16-be-bom", "latin1-detected", "latin1-declared"])
def test_encodings(mount: Path, normalize: Run, data: bytes, options: tuple[str, ...], encoding: str,
                   warned: bool, put: Put) -> None:
    put("enc.csv", data)
    code, manifest = normalize("enc.csv", *options)
    assert code == 0, manifest
    assert rows(mount, manifest) == EXPECTED
    assert manifest["facts"]["input"]["encoding"] == encoding
    warnings = manifest["facts"]["warnings"]
    assert bool(warnings) is warned
    if warned:
        assert "detected, not declared" in warnings[0] and "cp1252" in warnings[0]


def test_legacy_bytes_after_the_sample_restart_with_a_warning(mount: Path, normalize: Run, put: Put) -> None:
    body = "".join(f"{i},plain ascii row number {i}\n" for i in range(12_000))
    put("late.csv", ("id,text\n" + body).encode() + "99999,Málaga\n".encode("latin-1"))
    code, manifest = normalize("late.csv")
    assert code == 0
    assert rows(mount, manifest)[-1] == {"id": 99999, "text": "Málaga"}
    assert manifest["facts"]["input"]["encoding"] == "cp1252"
    assert "later bytes are not" in manifest["facts"]["warnings"][0]
    assert len([o for o in manifest["outputs"] if o["path"].endswith("data.parquet")]) == 1


def _compress(data: bytes, compression: str) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, compression) as stream:
        stream.write(data)
    return bytes(sink.getvalue())


@pytest.mark.parametrize("compression", ["gzip", "zstd", "bz2"])
def test_compressed_inputs(mount: Path, normalize: Run, compression: str, put: Put) -> None:
    suffix = {"gzip": ".gz", "zstd": ".zst", "bz2": ".bz2"}[compression]
    packed = _compress(TEXT.encode("utf-8"), compression)
    assert SPEC.sniff(packed[:64])
    put(f"c.csv{suffix}", packed)
    code, manifest = normalize(f"c.csv{suffix}")
    assert code == 0 and rows(mount, manifest) == EXPECTED
    assert manifest["facts"]["input"]["compression"] == compression


def test_truncated_gzip_is_corrupt(mount: Path, normalize: Run, put: Put) -> None:
    packed = _compress(("a,b\n" + "1,2\n" * 50_000).encode(), "gzip")
    put("cut.csv.gz", packed[: len(packed) // 2])
    code, record = normalize("cut.csv.gz")
    assert code == 3 and record["error"]["code"] == "corrupt-input"


def test_tsv_and_semicolon_are_sniffed(mount: Path, normalize: Run, put: Put) -> None:
    put("t.tsv", "a b\tc\n1\t2\n")
    put("s.csv", "a;b\n\"x;y\";2\n")
    code, manifest = normalize("t.tsv")
    assert code == 0 and rows(mount, manifest) == [{"a_b": 1, "c": 2}]
    code, manifest = normalize("s.csv")
    assert code == 0 and rows(mount, manifest) == [{"a": "x;y", "b": 2}]
    assert manifest["facts"]["input"]["delimiter"] == ";"


# ---------------------------------------------------------------- title blocks


GENESIS = ("GENESIS-Tabelle: 12411-0001\nBev\u00f6lkerung: Deutschland, Stichtag\nDeutschland\n\n"
           "Stichtag;Anzahl\n31.12.2020;83155031\n31.12.2021;83237124\n31.12.2022;84358845\n"
           "__________\n(C)opyright Statistisches Bundesamt (Destatis), 2023\n")
BANK = ('"Kontonummer:";"DE12 1203 0000 1234 5678 90";\n"Von:";"01.01.2023";\n"Bis:";"31.01.2023";\n\n'
        '"Buchungstag";"Empf\u00e4nger";"Zweck";"Betrag (EUR)";\n"31.01.2023";"Stadtwerke";"Strom";"-45,00";\n'
        '"30.01.2023";"ACME GmbH";"Gehalt";"2.500,00";\n"29.01.2023";"REWE";"Einkauf";"-23,17";\n')
PADDED = ('"Emissions by sector, 2000 to 2002",,\nthousand tonnes,,\n,,\nSector,Y2000,Y2001\nTimber,1,2\n'
          'Steel,3\nGlass,5,6\n"Clay,\nceramic",7,8\nPaper,9,10\nFood,11,12\nTextiles,13\n')
SEP_LINE = "sep=;\nname;city;zip\nAnna;Berlin;10115\nBen;Hamburg;20095\nCara;Bremen;28195\n"


@pytest.mark.parametrize(("text", "skipped", "preamble", "names", "first", "rejected_lines"), [
    (GENESIS, 4, ["GENESIS-Tabelle: 12411-0001", "Bev\u00f6lkerung: Deutschland, Stichtag", "Deutschland", ""],
     ["stichtag", "anzahl"], {"stichtag": "31.12.2020", "anzahl": 83155031}, []),
    (BANK, 4, ["Kontonummer:;DE12 1203 0000 1234 5678 90", "Von:;01.01.2023", "Bis:;31.01.2023", ""],
     ["buchungstag", "empfanger", "zweck", "betrag_eur", "column_5"],
     {"buchungstag": "31.01.2023", "empfanger": "Stadtwerke", "zweck": "Strom", "betrag_eur": "-45,00",
      "column_5": None}, []),
    (PADDED, 3, ["Emissions by sector, 2000 to 2002", "thousand tonnes", ""], ["sector", "y2000", "y2001"],
     {"sector": "Timber", "y2000": 1, "y2001": 2}, [6, 12]),
    (SEP_LINE, 1, ["sep="], ["name", "city", "zip"], {"name": "Anna", "city": "Berlin", "zip": 10115}, []),
], ids=["genesis-export", "bank-statement", "padded-title-rows", "excel-sep-line"])
def test_a_title_block_before_the_header_is_skipped_and_kept_in_the_manifest(
        mount: Path, normalize: Run, put: Put, text: str, skipped: int, preamble: list[str], names: list[str],
        first: dict[str, Any], rejected_lines: list[int]) -> None:
    """Spreadsheet, statistics-office and bank exports put a title block before the header:
    the table starts at the header (the title block's records are in the manifest, not in
    the data or the rejects), and rejects after it keep their source line numbers (a quoted
    value over two lines included). Before, these were unrouted, or read with the title as
    the header and every row ragged."""
    rel = put("export.csv", text)
    assert SPEC.accepts(text.encode())
    code, manifest = normalize(rel.removeprefix("ingest/"))
    assert code == 0, manifest
    assert manifest["facts"]["input"]["skipped_rows"] == skipped
    assert manifest["facts"]["input"]["preamble"] == preamble
    table = rows(mount, manifest)
    assert list(table[0]) == names and table[0] == first
    rejected = rejects(mount, manifest) if rejected_lines else []
    assert [r["line"] for r in rejected] == rejected_lines and manifest["facts"]["rows"]["rejected"] == len(rejected)
    if text is PADDED:  # the title rows as wide as the table are not rows of it
        assert [r["sector"] for r in table] == ["Timber", "Glass", "Clay,\nceramic", "Paper", "Food"]
    if text is GENESIS:  # the lines after the table, without the delimiter: its footer
        assert manifest["facts"]["input"]["footer"] == ["__________",
                                                        "(C)opyright Statistisches Bundesamt (Destatis), 2023"]


def test_lines_without_the_delimiter_that_end_the_file_are_its_footer(mount: Path, normalize: Run, put: Put) -> None:
    """A short table's footer is not half its rows rejected (max_reject_ratio): up to 12
    lines without the delimiter after the last row go to facts.input.footer. The same line
    between rows, or a longer run at the end, stays a reject with its line number."""
    put("short.csv", "a;b\n1;2\n3;4\n-----\nSource: the office\nStand: 2023\n")
    code, manifest = normalize("short.csv")
    assert code == 0, manifest
    assert manifest["facts"]["input"]["footer"] == ["-----", "Source: the office", "Stand: 2023"]
    assert manifest["facts"]["rows"]["rejected"] == 0 and len(rows(mount, manifest)) == 2
    put("middle.csv", "a;b\n1;2\nlost\n3;4\nSource: the office\n")
    code, manifest = normalize("middle.csv")
    assert code == 0 and [r["line"] for r in rejects(mount, manifest)] == [3]
    assert manifest["facts"]["input"]["footer"] == ["Source: the office"]
    put("long.csv", "a;b\n" + "".join(f"{i};{i}\n" for i in range(40)) + "".join(f"note {i}\n" for i in range(13)))
    code, manifest = normalize("long.csv")
    assert code == 0 and "footer" not in manifest["facts"]["input"]
    assert [r["line"] for r in rejects(mount, manifest)] == list(range(42, 55))


def test_a_header_of_years_after_a_title_block_is_a_header(mount: Path, normalize: Run, put: Put) -> None:
    """A statistics table names its columns with years: after a title block the record is the
    header unless every field is a number or a date (then the table has no header)."""
    put("years.csv", "Emissions by sector,,\n,,\nSector,2000,2001\nTimber,1,2\nSteel,3,4\nGlass,5,6\n")
    code, manifest = normalize("years.csv")
    assert code == 0 and manifest["facts"]["input"]["header"] is True
    assert rows(mount, manifest)[0] == {"sector": "Timber", "col_2000": 1, "col_2001": 2}
    put("figures.csv", "Emissions by sector,,\n,,\n1999,1,2\n2000,3,4\n2001,5,6\n")
    code, manifest = normalize("figures.csv")
    assert code == 0 and manifest["facts"]["input"]["header"] is False
    assert rows(mount, manifest)[0] == {"column_1": 1999, "column_2": 1, "column_3": 2}
    put("plain-years.csv", "2000,2001\n1,2\n3,4\n")  # no title block: all figures, so no header, as before
    code, manifest = normalize("plain-years.csv")
    assert code == 0 and manifest["facts"]["input"]["header"] is False


def test_option_skip_rows_sets_or_turns_off_the_title_block(mount: Path, normalize: Run, put: Put) -> None:
    put("t.csv", "Report 2024\n\nname;qty\nx;1\ny;2\nz;3\n")
    code, manifest = normalize("t.csv", "skip_rows=0")  # the first record is the header, whatever it is
    assert code == 3 and manifest["error"]["code"] == "limit-exceeded"  # every row ragged against "Report 2024"
    code, manifest = normalize("t.csv", "skip_rows=2")
    assert code == 0 and rows(mount, manifest) == [{"name": "x", "qty": 1}, {"name": "y", "qty": 2},
                                                   {"name": "z", "qty": 3}]
    assert manifest["options"]["skip_rows"] == 2 and manifest["facts"]["input"]["preamble"] == ["Report 2024", ""]
    code, manifest = normalize("t.csv", "skip_rows=3")  # after skipped records, "x;1" is a header: not all figures
    assert code == 0 and rows(mount, manifest) == [{"x": "y", "col_1": 2}, {"x": "z", "col_1": 3}]
    code, manifest = normalize("t.csv", "skip_rows=3", "header=false")
    assert code == 0 and rows(mount, manifest)[0] == {"column_1": "x", "column_2": 1}
    code, manifest = normalize("t.csv", "skip_rows=40")
    assert code == 3 and manifest["error"]["code"] == "empty-input" and "skip_rows=40" in manifest["error"]["message"]
    code, manifest = normalize("t.csv")
    assert code == 0 and manifest["options"]["skip_rows"] == "auto" and manifest["facts"]["input"]["skipped_rows"] == 2


def test_a_table_whose_first_record_is_its_header_has_no_title_block(mount: Path, normalize: Run, put: Put) -> None:
    """Headers with unnamed columns stay headers: a pandas index (",a,b"), one named column
    of two, a header as wide as its rows."""
    for name, text, names in (("index.csv", ",a,b\n0,1,2\n1,3,4\n", ["column_1", "a", "b"]),
                              ("half.csv", "name,\nx,1\ny,2\nz,3\n", ["name", "column_2"])):
        put(name, text)
        code, manifest = normalize(name)
        assert code == 0, manifest
        assert "skipped_rows" not in manifest["facts"]["input"]
        assert list(rows(mount, manifest)[0]) == names


def test_headerless_csv_gets_generated_names(mount: Path, normalize: Run, put: Put) -> None:
    put("h.csv", "1,2024-01-01,x\n2,2024-01-02,y\n")
    code, manifest = normalize("h.csv")
    assert code == 0 and manifest["facts"]["input"]["header"] is False
    assert rows(mount, manifest)[0] == {"column_1": 1, "column_2": date(2024, 1, 1), "column_3": "x"}


def test_json_lines_with_bad_lines(mount: Path, normalize: Run, put: Put) -> None:
    lines = ['{"User Name": " Ann ", "age": 30, "tags": ["a"], "ok": true}',
             '{"User Name": "Bob", "age": null}',
             "",
             "{not json",
             "[1, 2]",
             '{"User Name": "Cy", "age": "old"}']
    put("j.jsonl", "\n".join(lines) + "\n")
    code, manifest = normalize("j.jsonl")
    assert code == 0
    data = rows(mount, manifest)
    assert data[0] == {"user_name": "Ann", "age": "30", "tags": '["a"]', "ok": True}
    bad = {r["line"]: r["reason"] for r in rejects(mount, manifest)}
    assert set(bad) == {4, 5} and bad[4].startswith("malformed JSON") and "not a JSON object" in bad[5]


def test_json_array_rejects_say_which_record_and_keep_it(mount: Path, normalize: Run, put: Put) -> None:
    """A JSON array's records are counted by position (``item``); the count used to be
    written under ``record``, the very key of the rejected record, so one of them was lost."""
    put("arr.json", json.dumps([{"a": 1, "b": "x"}, [1, 2], {"a": "two", "b": "y"}, {"a": 4, "b": "z"}]))
    put("arr.json.schema.json", json.dumps({"columns": {"a": "integer", "b": "string"}}))
    code, manifest = normalize("arr.json")
    assert code == 0, manifest
    got = rejects(mount, manifest)
    assert [(r["item"], r["record"]) for r in got] == [(2, [1, 2]), (3, {"a": "two", "b": "y"})], got
    assert "not a JSON object" in got[0]["reason"] and "a: 'two' is not a valid integer" in got[1]["reason"]
    assert not any("line" in r for r in got)
    assert [r["a"] for r in rows(mount, manifest)] == [1, 4]


def test_parquet_input_is_normalized(mount: Path, normalize: Run, put: Put) -> None:
    table = pa.table({"Customer Name": [" Ann ", "NULL", "Bob"], "Amount": [1, 2, 3],
                      "Tag": pa.array(["x", "y", "x"]).dictionary_encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    put("p.parquet", sink.getvalue())
    code, manifest = normalize("p.parquet")
    assert code == 0
    assert rows(mount, manifest) == [{"customer_name": "Ann", "amount": 1, "tag": "x"},
                                     {"customer_name": None, "amount": 2, "tag": "y"},
                                     {"customer_name": "Bob", "amount": 3, "tag": "x"}]
    assert schema(manifest)["amount"]["type"] == "int64"


def _parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(100)), "b": [str(i) for i in range(100)]}), sink)
    return sink.getvalue()


@pytest.mark.parametrize(("data", "code"), [
    (b"", "empty-input"),
    (_parquet_bytes()[:-30], "corrupt-input"),
    (_parquet_bytes()[:200] + b"\x00" * 50 + _parquet_bytes()[250:], "corrupt-input"),
    (b"PAR1" + b"\x00" * 64 + b"\x10\x00\x00\x00PARE", "encrypted-input"),
    (_parquet_bytes()[:-4] + b"PARE", "encrypted-input"),
], ids=["zero-byte", "truncated", "zeroed-pages", "encrypted-footer", "encrypted-magic"])
def test_hostile_parquet_is_classified(mount: Path, normalize: Run, data: bytes, code: str, put: Put) -> None:
    put("bad.parquet", data)
    exit_code, record = normalize("bad.parquet")
    assert exit_code == 3, record
    assert record["error"]["code"] == code


def test_binary_csv_is_classified(mount: Path, normalize: Run, put: Put) -> None:
    put("bin.csv", b"a,b\n\x00\x01\x02\x03,\xff\xfe\x00\n" * 10)
    code, record = normalize("bin.csv")
    assert code == 3 and record["error"]["code"] == "binary-input"


@pytest.mark.parametrize(("head", "accepted"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", False),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", False),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", False),
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2", False),
    (b"GIF89a\x01\x00\x01\x00", False),
    (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01", False),
    (b"<svg xmlns='http://www.w3.org/2000/svg'>", False),
    (b"Hello, this is prose.\x00", False),
    (b"just some words without delimiters\n", False),
    (b"PAR1\x15\x04\x15", True),
    (b"\x1f\x8b\x08\x00", True),
    (b"\x28\xb5\x2f\xfd\x04", True),
    (b"BZh91AY&SY", True),
    (b"id,name\n1,x\n", True),
    (b"id\tname\n", True),
    (b'{"a": 1}\n', True),
    ("a,b\nZo\xe9,1\n".encode("latin-1"), True),
    (b"\xff\xfe" + "a,b\n".encode("utf-16-le"), True),
], ids=lambda v: v.hex()[:12] if isinstance(v, bytes) else str(v))
def test_sniff_claims_tables_only(head: bytes, accepted: bool) -> None:
    assert SPEC.sniff(head[:64]) is accepted


NOT_TABLES = {  # text a backfill finds beside data: with "a delimiter in the first line", all were tables
    "python-module": '"""Crash isolation: each input runs in a forked child, so a crash costs one input.\n\n'
                     "A child handles inputs one by one, and sends back each outcome.\n\"\"\"\n\nimport os\n",
    "python-import": "from collections.abc import Iterable, Mapping\nfrom typing import Any, NamedTuple\n\n"
                     "def f(a, b):\n    return a, b\n",
    "java": "package org.example;\n\nimport java.util.List;\nimport java.util.Map;\n\npublic class A {\n}\n",
    "go": "package main;func main(){}",
    "c": "int main;\n",
    "markdown": "# mountworks\n\nContainer-image AWS Lambda workers for media, documents and tables, on an S3\n"
                "Files mount: no downloads, no uploads. It reads, writes and commits in place.\n",
    "json-config": '{\n  "name": "mountworks",\n  "version": "1.0.0",\n  "private": true\n}\n',
    "ini": "[server]\nhost = example.org, backup.example.org\nport = 8080\n",
    "license-comment": "# Copyright 2024, Example Inc.\n# All rights reserved.\n\nimport os\n",
}
TABLES = {
    "ragged": 'column_a,column_b,column_c\n1,27,,"I\'m too long!"\n,"I\'m too short!"\n0,mixed types.... uh oh,17\n',
    "title-row": "Combined Land-Ocean Temperature Anomaly (C),,,,\nYear,Jan,Feb,Mar,Apr\n1880,-43,-27,-26,-36\n"
                 "1881,-20,-18,-3,-1\n",
    "headerless": "1,2.5,x\n2,3.5,y\n3,4.5,z\n",
    "quoted-newlines": 'id,note\n1,"one line\nand another, with a comma"\n2,plain\n',
    "semicolons": "Name;Betrag;Datum\nA;1,50;2024-01-01\nB;2,75;2024-01-02\n",
    "header-only": "id|name|email",
    "genesis-title-block": GENESIS,
    "bank-statement": BANK,
    "excel-sep-line": SEP_LINE,
    "hash-column": "# of items,price,total\n3,4.50,13.50\n5,6.00,30.00\n",
    "json-lines": '{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n',
    "json-records": '[\n  {"id": 1, "name": "a"},\n  {"id": 2, "name": "b"}\n]\n',
}


@pytest.mark.parametrize(("text", "table"), [*((t, False) for t in NOT_TABLES.values()),
                                             *((t, True) for t in TABLES.values())],
                         ids=[*NOT_TABLES, *TABLES])
def test_text_is_a_table_when_its_first_records_agree(text: str, table: bool) -> None:
    """The router reads a file's first bytes; source code, documents and configuration beside
    the data stay unrouted instead of becoming junk Parquet (77 of this repository's 132
    Python files were taken for tables)."""
    assert SPEC.accepts(text.encode()) is table


def test_a_header_wider_than_the_window_is_still_a_table() -> None:
    header = ",".join(f"measurement_{n:04d}" for n in range(400))  # 6.8 kB before the first row
    assert SPEC.accepts((header + "\n" + ",".join("1" * 400) + "\n").encode()[:SPEC.sniff_bytes])
    for prose in ("This line of prose has clauses, which go on and on, and never end, " * 80, "word, " * 1000):
        assert not SPEC.accepts(prose.encode()[:SPEC.sniff_bytes])  # one long line of text is no header


def test_a_table_is_judged_on_its_first_records_not_its_first_64_bytes() -> None:
    long_title = "Combined Land--Ocean Temperature Anomaly (C) CR 1200km 1880 to 2012." + ",," * 9
    rows = "".join(f"{1880 + n}," + ",".join(str(-n - k) for k in range(18)) + "\r" for n in range(40))
    text = long_title + "\r" + "Year," + ",".join(f"m{k}" for k in range(18)) + "\r" + rows  # classic Mac CR lines
    assert SPEC.accepts(text.encode()[:SPEC.sniff_bytes])


def test_schema_sidecar_is_not_processed_as_data(mount: Path, normalize: Run, put: Put) -> None:
    put("x.schema.json", '{"columns": {"a": "integer"}}\n')
    code, record = normalize("x.schema.json")
    assert code == 3 and record["error"]["code"] == "unsupported-format"


def test_options_are_checked() -> None:
    from shared.errors import UsageError

    for bad in ({"delimiter": "ab"}, {"encoding": "klingon"}, {"timezone": "Mars/Base"}, {"max_reject_ratio": 2},
                {"nope": 1}, {"format": "xlsx"}, {"skip_rows": -1}, {"skip_rows": "some"}):
        with pytest.raises(UsageError):
            SPEC.parse_options(bad)


def test_a_pretty_printed_json_object_is_refused_as_not_records(mount: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (mount / "ingest" / "event.json").write_text('{\n  "Records": [\n    {"a": 1}\n  ]\n}\n')
    assert main(["run", "parquet-normalize", "ingest/event.json", "--root", str(mount)]) == 3
    record = json.loads(capsys.readouterr().out)
    assert record["error"]["code"] == "unsupported-format"
    assert "not an array of records" in record["error"]["message"]
