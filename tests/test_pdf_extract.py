"""pdf-extract: known text from generated PDFs, structure, hostile documents, limits, the
deadline, secrets, and page-range parallelism; end to end through the CLI and a handler."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put
from pdfgen import Line, Page, build_pdf, decorate, text_heavy, text_page, two_columns

from shared import observability as obs
from shared.config import MountConfig
from shared.errors import DeadlineReached, UsageError
from shared.paths import input_from_path
from shared.runtime import execute
from shared.worker import Deadline
from workers import cli
from workers.pdf_extract import SPEC, sniff, structure
from workers.pdf_extract import core as pdf_core
from workers.pdf_extract import pages as pdf_pages
from workers.pdf_extract.options import parse, parse_pages

SECRET = "Tr0ub4dor-&-3-horse"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def run(put: Put, cli: Cli) -> Any:
    """``run(name, data, *options)`` -> (exit code, record) through ``mountworks run`` in-process."""

    def _run(name: str, data: bytes | None, *options: str, isolate: bool = False,
             root: Path | None = None) -> tuple[int, dict[str, Any]]:
        rel = put(name, data, root=root) if data is not None else f"ingest/{name}"
        return cli.run("pdf-extract", rel, *options, isolate=isolate, root=root)

    return _run


def outputs(root: Path, record: dict[str, Any]) -> dict[str, Path]:
    """Outputs by their name inside the run directory."""
    found = {}
    for output in record["outputs"]:
        path = root / output["path"]
        assert path.is_file(), output
        found[output["path"].split(record["run_id"] + "/", 1)[1]] = path
    return found


def pages_of(root: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in outputs(root, record)["pages.jsonl"].read_text().splitlines()]


def document_of(root: Path, record: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(outputs(root, record)["document.json"].read_text())
    return value


def commits(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.json") if p.name in ("manifest.json", "error.json")]


SAMPLE = [
    text_page("Hello Helvetica", "second line (with parens)"),
    text_page("Times Roman text", font="F2"),
    text_page("Courier on a rotated page", font="F3", rotate=90),
    two_columns(["Left one", "Left two", "Left three"], ["Right one", "Right two", "Right three"]),
    Page(image=True),
    text_page("Landscape page", mediabox=(0, 0, 842, 595), links=["https://example.org/a?b=1"]),
]


# ------------------------------------------------------------------------------- text


def test_known_text_fonts_rotation_and_columns(mount: Path, run: Any) -> None:
    code, record = run("doc.pdf", build_pdf(SAMPLE))
    assert code == 0, record
    pages = pages_of(mount, record)
    assert [p["page"] for p in pages] == [1, 2, 3, 4, 5, 6]
    assert pages[0]["text"] == "Hello Helvetica\nsecond line (with parens)"
    assert pages[1]["text"] == "Times Roman text"
    assert pages[2]["text"] == "Courier on a rotated page"
    column_text = pages[3]["text"]
    order = [column_text.index(t) for t in ("Left one", "Left two", "Left three", "Right one", "Right two",
                                            "Right three")]
    assert order == sorted(order), column_text  # each column read whole, left before right
    assert all(p["chars"] == len(p["text"]) for p in pages)
    assert pages[4]["flags"] == ["needs_ocr"] and pages[4]["text"] == ""
    assert not any(p["flags"] for i, p in enumerate(pages) if i != 4)
    text = outputs(mount, record)["text.txt"].read_text(encoding="utf-8")
    assert text.split("\f") == [p["text"] for p in pages]
    facts = record["facts"]
    assert facts["pages"] == 6 and facts["needs_ocr_pages"] == 1 and facts["page_errors"] == 0
    assert facts["chars"] == sum(p["chars"] for p in pages)
    by_name = {o["path"].rsplit("/", 1)[1]: o for o in record["outputs"]}
    assert by_name["pages.jsonl"]["pages"] == 6 and by_name["text.txt"]["media_type"].startswith("text/plain")


def test_document_json_structure(mount: Path, run: Any) -> None:
    pdf = decorate(build_pdf(SAMPLE),
                   metadata={"/Title": "A Title", "/Author": "Ann Author", "/Subject": "Subj",
                             "/Keywords": "k1, k2", "/Creator": "pdfgen", "/Producer": "hand",
                             "/CreationDate": "D:20240131235959+01'00'", "/ModDate": "D:2023"},
                   outline=[("Chapter 1", 0, [("Section 1.1", 1)]), ("Chapter 2", 3, [])],
                   attachments={"notes.txt": b"attached bytes", "../../evil name.sh": b"#!/bin/sh\n"})
    code, record = run("doc.pdf", pdf)
    assert code == 0, record
    doc = document_of(mount, record)
    assert doc["page_count"] == 6
    assert doc["metadata"] == {"title": "A Title", "author": "Ann Author", "subject": "Subj", "keywords": "k1, k2",
                               "creator": "pdfgen", "producer": "hand",
                               "creation_date": "2024-01-31T23:59:59+01:00",
                               "modification_date": "2023-01-01T00:00:00"}
    assert doc["pdf_version"] == pdf[5:8].decode()  # from the %PDF-x.y header
    assert doc["pages"][0] == {"page": 1, "width": 612.0, "height": 792.0, "rotation": 0}
    assert doc["pages"][2]["rotation"] == 90
    assert doc["pages"][5]["width"] == 842.0 and doc["pages"][5]["height"] == 595.0
    assert doc["outline"] == [
        {"title": "Chapter 1", "page": 1, "children": [{"title": "Section 1.1", "page": 2, "children": []}]},
        {"title": "Chapter 2", "page": 4, "children": []},
    ]
    assert doc["links"] == [{"page": 6, "uri": "https://example.org/a?b=1"}]
    names = {a["name"]: a for a in doc["attachments"]}
    assert set(names) == {"notes.txt", "../../evil name.sh"}
    files = outputs(mount, record)
    assert files[names["notes.txt"]["path"]].read_bytes() == b"attached bytes"
    evil = names["../../evil name.sh"]["path"]
    assert evil.startswith("attachments/") and ".." not in evil and "/" not in evil[len("attachments/"):]
    assert files[evil].read_bytes() == b"#!/bin/sh\n"
    assert record["facts"]["attachments"] == 2


@pytest.mark.parametrize(("raw", "iso"), [
    ("D:20240131235959+01'00'", "2024-01-31T23:59:59+01:00"),
    ("D:20090401163925-07'00'", "2009-04-01T16:39:25-07:00"),
    ("D:20120224010252Z00'00'", "2012-02-24T01:02:52Z"),
    ("D:199812", "1998-12-01T00:00:00"),
    ("20200229", "2020-02-29T00:00:00"),
    ("D:20231345", None),
    ("yesterday", None),
], ids=["offset", "negative", "zulu", "partial", "no-prefix", "invalid-month", "garbage"])
def test_pdf_dates_to_iso(raw: str, iso: str | None) -> None:
    assert structure.pdf_date(raw) == iso


def test_images_option_writes_images(mount: Path, run: Any) -> None:
    code, record = run("img.pdf", build_pdf([Page(image=True), text_page("no image")]), "images=true")
    assert code == 0, record
    doc = document_of(mount, record)
    written = [i for i in doc["images"] if "path" in i]
    assert len(written) == 1 and written[0]["page"] == 1
    assert outputs(mount, record)[written[0]["path"]].read_bytes()[:4] == b"\x89PNG"
    assert record["facts"]["images"] == 1


def test_image_limit_skips_but_lists(mount: Path, run: Any) -> None:
    code, record = run("img.pdf", build_pdf([Page(image=True), Page(image=True)]), "images=true", "max_images=1")
    assert code == 0
    images = document_of(mount, record)["images"]
    assert [("path" in i, i.get("skipped", "")) for i in images] == [(True, ""), (False, "more than MAX_IMAGES=1")]


# --------------------------------------------------------------------- broken inputs


@pytest.mark.parametrize("engine", ["pdfium", "pypdf"])
def test_failing_page_is_recorded_and_others_come_out(mount: Path, run: Any, engine: str) -> None:
    """An undecodable content stream is a page error with either engine; a syntax error is
    one for pypdf, while PDFium recovers what it can (here: nothing) without one."""
    broken = Page(raw_content=b"BT /F1 12 Tf 1 0 0 Tm (abc) Tj ] ET")
    unsupported = Page(raw_content=b"xx", content_filter="/NoSuchDecode")
    code, record = run("bad.pdf", build_pdf([text_page("first"), broken, unsupported, text_page("last")]),
                       f"engine={engine}")
    assert code == 0, record
    pages = pages_of(mount, record)
    assert [p["text"] for p in pages] == ["first", "", "", "last"]
    bad_pages = pages[1:3] if engine == "pypdf" else pages[2:3]
    for bad in bad_pages:
        assert bad["flags"] == ["error"] and bad["error"]["code"] == "page-error"
        assert bad["error"]["message"].startswith(f"page {bad['page']}:")
    assert record["facts"]["page_errors"] == len(bad_pages)


@pytest.mark.parametrize(("data", "code", "words"), [
    (b"", "empty-input", "empty"),
    (b"PK\x03\x04 this is a zip file, not a PDF" * 10, "unsupported-format", "not a PDF"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "unsupported-format", "not a PDF"),
], ids=["empty", "zip", "png"])
def test_not_a_pdf_and_empty_are_classified(run: Any, data: bytes, code: str, words: str) -> None:
    exit_code, record = run("x.pdf", data)
    assert exit_code == 3
    assert record["error"]["code"] == code and words in record["error"]["message"]


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9], ids=["20%", "50%", "90%"])
def test_truncated_is_corrupt_input(run: Any, fraction: float) -> None:
    pdf = build_pdf(SAMPLE)
    exit_code, record = run("cut.pdf", pdf[: int(len(pdf) * fraction)])
    assert exit_code == 3
    assert record["error"]["code"] == "corrupt-input" and "truncated" in record["error"]["message"]


@pytest.mark.parametrize("engine", ["pdfium", "pypdf"])
def test_cyclic_page_tree_falls_back_to_pdfium(mount: Path, run: Any, engine: str) -> None:
    """pypdf refuses a cyclic page tree; PDFium reads the pages it can, with either engine
    asked for: the structure is empty and ``problems`` says why, the facts name the engine."""
    exit_code, record = run("cycle.pdf", build_pdf([text_page("x")], cyclic=True), f"engine={engine}")
    assert exit_code == 0, record
    pages = pages_of(mount, record)
    assert pages[0]["text"] == "x"
    assert record["facts"]["text_engines"] == {"pdfium": [[1, 1]]}
    [problem] = document_of(mount, record)["problems"]
    assert problem.startswith("structure: pypdf cannot open the document") and "cyclic" in problem


def test_a_document_neither_engine_opens_is_corrupt_input(run: Any) -> None:
    exit_code, record = run("junk.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 8)
    assert exit_code == 3
    assert record["error"]["code"] == "corrupt-input" and "PDFium cannot open it either" in record["error"]["message"]


def test_absurd_mediabox_is_flagged(mount: Path, run: Any) -> None:
    code, record = run("box.pdf", build_pdf([text_page("huge", mediabox=(0, 0, 99999999999, 5))]))
    assert code == 0
    assert pages_of(mount, record)[0]["flags"] == ["absurd_mediabox"]
    assert pages_of(mount, record)[0]["text"] == "huge"
    assert document_of(mount, record)["pages"][0]["flags"] == ["absurd_mediabox"]


# ------------------------------------------------------------------------- encryption


@pytest.mark.parametrize("algorithm", ["AES-256", "AES-128", "RC4-128"])
def test_empty_user_password_opens_by_default(mount: Path, run: Any, algorithm: str) -> None:
    pdf = decorate(build_pdf([text_page("secret text")]), user_password="", algorithm=algorithm)
    code, record = run("enc.pdf", pdf)
    assert code == 0, record
    assert pages_of(mount, record)[0]["text"] == "secret text"
    assert record["facts"]["encrypted"] is True


_DEFERRED_PROBE = """
import glob, json, sys
from workers import cli
from workers.pdf_extract import pypdf_loader
root, runs = sys.argv[1], json.loads(sys.argv[2])
result = {}
for name, options in runs:
    argv = ["run", "pdf-extract", "ingest/" + name, "--root", root, "--no-isolation"]
    code = cli.main(argv + [a for o in options for a in ("--option", o)])
    [pages] = glob.glob(root + "/workspace/pdf-extract/" + name + "/*/pages.jsonl")
    folder = pages[:-len("pages.jsonl")]
    with open(pages, encoding="utf-8") as f:
        text = json.loads(f.readline())["text"]
    result[name] = {"code": code, "text": text, "images": sorted(glob.glob("images/*.png", root_dir=folder)),
                    "ciphers": "cryptography.hazmat.primitives.ciphers" in sys.modules,
                    "pillow": "PIL.Image" in sys.modules}
import pypdf._crypt_providers as providers
result["names"] = sorted(set(providers.__all__) - {"CryptBase", "CryptIdentity", "crypt_provider"})
result["deferred"] = sorted(pypdf_loader.DEFERRED)
result["provider"] = list(providers.crypt_provider)
print(json.dumps(result))
"""


def test_pypdf_is_imported_without_its_ciphers_and_pillow(tmp_path: Path) -> None:
    """pypdf's cipher provider (~20 ms of a cold start) and Pillow (~10 ms) are not imported
    for a plain document; the first encrypted one imports the ciphers, and AES-256, AES-128
    and RC4 documents still open (with the empty user password, or with option password);
    option images still writes the images, Pillow imported by then. The stand-in's names are
    the ones this pypdf imports, so a newer pypdf that asks for more is noticed here."""
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    runs: list[tuple[str, list[str]]] = [("plain.pdf", [])]
    (ingest / "plain.pdf").write_bytes(build_pdf([text_page("no secret")]))
    for algorithm in ("AES-256", "AES-128", "RC4-128"):
        runs.append((f"{algorithm}.pdf", []))
        (ingest / f"{algorithm}.pdf").write_bytes(
            decorate(build_pdf([text_page(f"sealed {algorithm}")]), user_password="", algorithm=algorithm))
    runs.append(("pw-aes.pdf", ["password=opened-with-it"]))
    (ingest / "pw-aes.pdf").write_bytes(decorate(build_pdf([text_page("with a password")]),
                                                 user_password="opened-with-it"))
    runs.append(("image.pdf", ["images=true"]))
    (ingest / "image.pdf").write_bytes(build_pdf([Page(lines=[Line("drawn")], image=True)]))
    out = subprocess.run([sys.executable, "-c", _DEFERRED_PROBE, str(tmp_path), json.dumps(runs)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.pop("plain.pdf") == {"code": 0, "text": "no secret", "images": [], "ciphers": False,
                                       "pillow": False}
    for algorithm in ("AES-256", "AES-128", "RC4-128"):
        assert result.pop(f"{algorithm}.pdf") == {"code": 0, "text": f"sealed {algorithm}", "images": [],
                                                  "ciphers": True, "pillow": False}
    assert result.pop("pw-aes.pdf")["text"] == "with a password"
    image = result.pop("image.pdf")
    assert image["code"] == 0 and image["text"] == "drawn" and image["pillow"] is True
    assert image["images"] == ["images/p00001-01.png"]
    assert result["names"] == result["deferred"]
    import cryptography

    assert result["provider"] == ["cryptography", cryptography.__version__]


def test_password_required_is_a_clear_permanent_error(run: Any) -> None:
    pdf = decorate(build_pdf([text_page("locked")]), user_password=SECRET)
    code, record = run("locked.pdf", pdf)
    assert code == 3
    assert record["error"]["code"] == "password-required"
    assert "password" in record["error"]["message"] and "option" in record["error"]["message"]


def test_password_option_opens_and_never_leaks(mount: Path, capfd: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, put: Put) -> None:
    """Wrong, then right password through the CLI with DEBUG logs: the secret is nowhere."""
    obs.set_log_level("DEBUG")
    monkeypatch.setattr(obs, "_emit_metrics", True)  # metrics are recorded too, as in Lambda
    rel = put("locked.pdf", decorate(build_pdf([text_page("unlocked text")]), user_password=SECRET))
    base = ["run", "pdf-extract", rel, "--root", str(mount), "--no-isolation"]
    assert cli.main([*base, "--option", "password=not-" + SECRET]) == 3
    wrong = json.loads(capfd.readouterr().out)
    assert wrong["error"]["code"] == "wrong-password"
    # the wrong and the right password share a run-id (the password is not part of it) ...
    assert cli.main([*base, "--option", f"password={SECRET}"]) == 3
    # ... so the right one is given with --retry-failed: a new attempt directory
    assert cli.main([*base, "--retry-failed", "--option", f"password={SECRET}"]) == 0
    captured_runs = capfd.readouterr()
    record = json.loads(captured_runs.out[captured_runs.out.rindex('{\n  "schema"'):])
    assert record["options"]["password_supplied"] is True and "password" not in record["options"]
    assert pages_of(mount, record)[0]["text"] == "unlocked text"
    scanned = [path for path in mount.rglob("*") if path.is_file() and path.suffix != ".pdf"]
    assert any(path.name == "manifest.json" for path in scanned)  # the scan covers the committed runs
    for path in scanned:
        assert SECRET.encode() not in path.read_bytes(), path
    everything = json.dumps(wrong) + captured_runs.out + captured_runs.err
    assert SECRET not in everything
    assert SECRET not in repr(parse({"password": SECRET}))
    obs.set_log_level("WARNING")


def test_password_never_reaches_handler_logs_or_metrics(mount: Path, capfd: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch, put: Put) -> None:
    """The Lambda path: handler with EMF metrics and DEBUG logs, a wrong then a right password."""
    from shared.runtime import make_handler
    from workers.registry import get_worker

    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    monkeypatch.setenv("MOUNTWORKS_LOG_LEVEL", "DEBUG")
    monkeypatch.setattr(obs, "_emit_metrics", False)
    put("l.pdf", decorate(build_pdf([text_page("lambda text")]), user_password=SECRET))
    handler = make_handler(get_worker("pdf-extract"))
    obs.set_log_level("DEBUG")
    context = cli.LocalContext("pdf-extract", 60)
    wrong = handler({"input": "ingest/l.pdf", "options": {"password": SECRET[::-1]}}, context)
    assert wrong["results"][0]["error"]["code"] == "wrong-password"
    handler({"input": "ingest/l.pdf", "options": {"password": SECRET, "pages": "1-1"}}, context)
    captured = capfd.readouterr()
    assert "_aws" in captured.out  # EMF metrics were emitted
    assert SECRET not in captured.out + captured.err
    assert SECRET[::-1] not in captured.out + captured.err
    records = list(mount.rglob("*.json"))
    assert any(path.name == "manifest.json" for path in records)  # the scan covers the committed run
    for path in records:
        assert SECRET.encode() not in path.read_bytes()
    obs.set_log_level("WARNING")


def test_corpus_style_password_document_with_option(run: Any, mount: Path) -> None:
    pdf = decorate(build_pdf([text_page("one"), text_page("two")]), user_password="openpassword",
                   algorithm="RC4-128")
    code, record = run("p.pdf", pdf, "password=openpassword")
    assert code == 0
    assert [p["text"] for p in pages_of(mount, record)] == ["one", "two"]


# ----------------------------------------------------------------------------- limits


@pytest.mark.parametrize(("pages", "limit"), [(5, 4), (1_100, 1)], ids=["page-count", "page-tree-walk"])
def test_max_pages_is_a_permanent_limit(run: Any, pages: int, limit: int) -> None:
    """Counted after opening, or (far beyond the limit) stopped while pypdf walks the page tree."""
    code, record = run("many.pdf", build_pdf([text_page(str(i)) for i in range(pages)]), f"max_pages={limit}")
    assert code == 3
    assert record["error"] == {"code": "limit-exceeded", "limit": "MAX_PAGES",
                               "message": record["error"]["message"]}
    assert "raise option max_pages" in record["error"]["message"]


def test_flate_bomb_is_flagged_on_its_page(mount: Path, run: Any) -> None:
    bomb = zlib.compress(b" " * 20_000_000, 9)
    pdf = build_pdf([text_page("before"), Page(raw_content=bomb, content_filter="/FlateDecode"),
                     text_page("after")])
    code, record = run("bomb.pdf", pdf, f"max_decompressed_bytes={1 << 20}")
    assert code == 0, record
    pages = pages_of(mount, record)
    assert [p["text"] for p in pages] == ["before", "", "after"]
    assert pages[1]["flags"] == ["limit"]
    assert pages[1]["error"]["limit"] == "MAX_DECOMPRESSED_BYTES"


@pytest.mark.parametrize("size", [10_000, 1_000_000, 5_000_000])
def test_a_stream_over_the_limit_is_never_skipped_by_the_deflate_bound(size: int) -> None:
    """The content check skips inflating a stream too short to reach the limit (deflate
    expands at most 1032:1); the most compressible input there is must still be caught."""
    from pypdf.generic import NameObject, StreamObject

    from workers.pdf_extract.structure import _inflated_size

    stream = StreamObject()
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    stream._data = zlib.compress(bytes(size), 9)  # zeros: about as close to 1032:1 as zlib gets
    for limit in (size - 1, size // 2):
        assert _inflated_size(stream, limit) > limit
    assert _inflated_size(stream, size * 2000) <= size * 2000  # far under: no inflating needed


def test_image_bomb_is_bounded(mount: Path, run: Any) -> None:
    """A 30000x30000 image whose pixels inflate from a few KB: listed as skipped, never decoded whole."""
    bomb = zlib.compress(bytes(30_000 * 30_000 // 100), 9)  # the declared size is 100x the data, too
    pdf = build_pdf([Page(image=True), text_page("text after the bomb")], image=(30_000, 30_000, bomb))
    code, record = run("imgbomb.pdf", pdf, "images=true", f"max_decompressed_bytes={1 << 20}")
    assert code == 0, record
    pages = pages_of(mount, record)
    assert pages[0]["flags"] == ["needs_ocr"] and pages[1]["text"] == "text after the bomb"
    [image] = document_of(mount, record)["images"]
    assert "path" not in image and image["skipped"].startswith("MAX_DECOMPRESSED_BYTES reached")
    assert record["facts"]["images"] == 0


def test_page_time_limit_flags_the_slow_page(mount: Path, run: Any) -> None:
    slow = text_page(*[f"line {i} of a very long page" for i in range(20_000)], leading=0.01)
    pdf = build_pdf([slow, text_page("quick")])
    code, record = run("slow.pdf", pdf, "max_page_seconds=0.05")
    assert code == 0, record
    pages = pages_of(mount, record)
    assert pages[0]["flags"] == ["timeout"] and pages[0]["error"]["limit"] == "MAX_PAGE_SECONDS"
    assert pages[1]["text"] == "quick" and pages[1]["error"] is None
    assert record["facts"]["page_timeouts"] == 1


@pytest.mark.parametrize("engine", ["pdfium", "pypdf"])
def test_total_time_limit_is_permanent(run: Any, engine: str) -> None:
    """With PDFium the pages are a child's: the waiting parent holds MAX_SECONDS."""
    code, record = run("long.pdf", text_heavy(40 if engine == "pypdf" else 600), "max_seconds=0.1",
                       "parallel=1", f"engine={engine}")
    assert code == 3
    assert record["error"]["limit"] == "MAX_SECONDS"


def test_page_text_limit_truncates(mount: Path, run: Any) -> None:
    code, record = run("t.pdf", build_pdf([text_page("abcdefghijkl")]), "max_page_chars=5")
    assert code == 0
    page = pages_of(mount, record)[0]
    assert page["text"] == "abcde" and page["flags"] == ["text_truncated"]


def test_attachment_limits_list_what_was_skipped(mount: Path, run: Any) -> None:
    pdf = decorate(build_pdf([text_page("x")]),
                   attachments={"a.txt": b"a" * 10, "b.bin": b"b" * 5000, "c.txt": b"c"})
    code, record = run("att.pdf", pdf, "max_attachments=2", "max_attachment_bytes=100")
    assert code == 0
    listed = {a["name"]: a for a in document_of(mount, record)["attachments"]}
    assert "path" in listed["a.txt"]
    assert listed["b.bin"]["skipped"] == "larger than MAX_ATTACHMENT_BYTES=100" and "path" not in listed["b.bin"]
    assert listed["c.txt"]["skipped"] == "more than MAX_ATTACHMENTS=2"
    assert record["facts"]["attachments"] == 1


def test_a_brotli_compressed_attachment_is_written_decoded(mount: Path, run: Any) -> None:
    """BrotliDecode (PDF's 2025 extension): pypdf decodes it only with ``brotli`` installed,
    a dependency of the worker now. PDFium already decodes Brotli content streams."""
    import brotli
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject, StreamObject

    words = b"attached words " * 20
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(build_pdf([text_page("x")]))))
    writer.add_attachment("notes.txt", words)
    for ref in writer._objects:
        stream = ref.get_object() if ref is not None else None
        if isinstance(stream, StreamObject) and stream.get("/Type") == "/EmbeddedFile":
            stream._data = brotli.compress(words)
            stream[NameObject("/Filter")] = NameObject("/BrotliDecode")
    buffer = io.BytesIO()
    writer.write(buffer)
    assert b"/BrotliDecode" in buffer.getvalue()
    code, record = run("brotli.pdf", buffer.getvalue())
    assert code == 0, record
    [attachment] = document_of(mount, record)["attachments"]
    run_dir = mount / "workspace" / "pdf-extract" / "brotli.pdf" / record["run_id"]
    assert (run_dir / attachment["path"]).read_bytes() == words


@pytest.mark.parametrize(("raw", "message"), [
    ({"pages": "5-2"}, "not a valid range"),
    ({"pages": "abc"}, "must look like"),
    ({"max_pages": 0}, "out of range"),
    ({"parallel": 99}, "out of range"),
    ({"passwd": "x"}, "unknown pdf-extract option"),
], ids=["reversed-range", "bad-range", "max-pages-zero", "too-parallel", "typo"])
def test_bad_options_are_usage_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(raw)


def test_options_normalize() -> None:
    assert parse_pages("7") == parse_pages("7-7")
    assert parse({"pages": "3-"}).to_manifest()["pages"] == "3-"
    assert parse({"parallel": 2}).to_manifest() == parse(None).to_manifest()  # speed is not identity
    assert parse({"password": ""}).to_manifest()["password_supplied"] is True
    assert sniff(b"%PDF-1.7\n") and sniff(b"\x00junk%PDF-1.4") and not sniff(b"PK\x03\x04")


# -------------------------------------------------------------------------- deadline


def _ref(mount: Path, rel: str) -> Any:
    cfg = MountConfig.load(mount)
    ref = input_from_path(cfg, rel)
    assert ref is not None
    return cfg, ref


def test_tiny_deadline_is_retryable_and_commits_nothing(mount: Path, put: Put) -> None:
    cfg, ref = _ref(mount, put("d.pdf", build_pdf(SAMPLE)))
    with pytest.raises(DeadlineReached):
        execute(SPEC, ref, {}, cfg, deadline=Deadline(0.01))
    assert commits(mount) == []


@pytest.mark.parametrize("parallel", [1, 2], ids=["serial", "parallel"])
def test_deadline_between_pages_stops_cleanly(mount: Path, monkeypatch: pytest.MonkeyPatch, parallel: int,
                                              put: Put) -> None:
    monkeypatch.setattr(pdf_core, "DEADLINE_MARGIN_SECONDS", 0.0)
    cfg, ref = _ref(mount, put("long.pdf", text_heavy(300)))
    with pytest.raises(DeadlineReached):
        execute(SPEC, ref, {"parallel": parallel}, cfg, deadline=Deadline(0.4))
    assert commits(mount) == []


def test_invoke_with_short_timeout_is_retryable(mount: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], put: Put) -> None:
    put("d.pdf", build_pdf(SAMPLE))
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"input": "ingest/d.pdf", "options": {}}))
    assert cli.main(["invoke", "pdf-extract", str(event), "--root", str(mount), "--timeout", "1"]) == 75
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "deadline"
    assert commits(mount) == []


# ----------------------------------------------------------------------- page ranges


def _result_bytes(root: Path, record: dict[str, Any]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in outputs(root, record).items()}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pdfium", "pypdf"])  # PDFium: every share a child's; pypdf: this process takes one
def test_parallel_page_ranges_equal_serial(tmp_path: Path, run: Any, engine: str) -> None:
    pages = [text_page(f"page {i} text", f"second line {i}") for i in range(90)]
    pages[10] = Page(raw_content=b"xx", content_filter="/NoSuchDecode")  # a failing page, with either engine
    pages[40] = Page(image=True)
    pdf = build_pdf(pages)
    results = {}
    for mode in ("1", "2", "0"):
        root = tmp_path / mode
        (root / "ingest").mkdir(parents=True)
        code, record = run("big.pdf", pdf, f"parallel={mode}", f"engine={engine}", root=root)
        assert code == 0, record
        results[mode] = (_result_bytes(root, record), record)
    serial, parallel, auto = results["1"], results["2"], results["0"]
    assert serial[0] == parallel[0] == auto[0]
    assert serial[1]["run_id"] == parallel[1]["run_id"]  # the same unit of work, however it is run
    assert parallel[1]["facts"]["processes"] == 2 and serial[1]["facts"]["processes"] == 1
    assert auto[1]["facts"]["processes"] >= 1
    assert serial[1]["facts"]["page_errors"] == 1 and serial[1]["facts"]["needs_ocr_pages"] == 1


def test_parallel_on_a_streamed_file_equals_serial(tmp_path: Path, run: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A file too large to read into memory is streamed from the mount: the forked page-range
    process must reopen it (a shared descriptor would share its offset with the parent)."""
    from workers.pdf_extract import core

    monkeypatch.setattr(core, "IN_MEMORY_MAX_BYTES", 0)
    lines = [[f"streamed page {i} line {j} " + "words " * 12 for j in range(40)] for i in range(120)]
    pdf = build_pdf([text_page(*page) for page in lines])  # large enough that reads leave the buffer
    results = {}
    for mode in ("1", "2"):
        root = tmp_path / mode
        (root / "ingest").mkdir(parents=True)
        code, record = run("big.pdf", pdf, f"parallel={mode}", root=root)
        assert code == 0, record
        results[mode] = _result_bytes(root, record)
    assert results["1"] == results["2"]


def test_a_page_tree_that_promises_more_pages_than_it_holds(mount: Path, run: Any) -> None:
    """/Count says 9, the tree holds 3: the 3 come out, and document.json says what is missing."""
    pdf = re.sub(rb"/Count \d+", b"/Count 9", build_pdf([text_page(f"p{i}") for i in range(1, 4)]))
    code, record = run("short.pdf", pdf)
    assert code == 0, record
    assert [p["text"] for p in pages_of(mount, record)] == ["p1", "p2", "p3"]
    assert document_of(mount, record)["problems"] == ["pages: the page tree says 9 pages (/Count); 3 can be read"]


def test_a_page_tree_whose_pages_are_all_missing_is_not_an_empty_success(mount: Path, run: Any) -> None:
    """pypdf finds none of the pages /Count promises (their objects are gone): not a run of no
    pages, which would hide the loss. PDFium counts them and cannot load one: each page is an
    error, and document.json says why."""
    pdf = re.sub(rb"/Kids \[[^\]]*\]", b"/Kids [90 0 R 91 0 R]", build_pdf([text_page("a"), text_page("b")]))
    code, record = run("hollow.pdf", pdf)
    assert code == 0, record
    assert record["facts"]["pages"] == 2 and record["facts"]["page_errors"] == 2, record["facts"]
    assert all(p["flags"] == ["error"] for p in pages_of(mount, record))
    problem = document_of(mount, record)["problems"][0]
    assert "the page tree says the document has 2 pages (/Count), but none of them can be read" in problem


def test_a_structure_pypdf_refuses_as_unsafe_is_read_by_pdfium(mount: Path, run: Any) -> None:
    """A cross-reference table declared larger than the file is pypdf's safety limit, not a
    limit an option raises: malformed input, so PDFium reads the text (it once ended as
    limit-exceeded, PYPDF_SAFETY_LIMIT, with nothing extracted)."""
    pdf = re.sub(rb"(xref\s+0 )\d+", rb"\g<1>65535", build_pdf([text_page("kept by PDFium")]))
    code, record = run("oversized-xref.pdf", pdf)
    assert code == 0, record
    assert [p["text"] for p in pages_of(mount, record)] == ["kept by PDFium"]
    problem = document_of(mount, record)["problems"][0]
    assert problem.startswith("structure: pypdf cannot open the document") and "refuses its structure" in problem


def test_a_number_too_long_for_pypdf_is_malformed_structure_not_a_decompression_limit(mount: Path,
                                                                                      run: Any) -> None:
    """pypdf reads a number up to 64 characters: a 100 kB comment inside the cross-reference
    table (pdf.js's filled-background.pdf) ends as a 112-character "number", which was
    limit-exceeded MAX_DECOMPRESSED_BYTES, with advice to raise an option that cannot help.
    It is malformed structure: PDFium reads the document."""
    pdf = build_pdf([text_page("kept by PDFium")])
    comment = b"% " + b"31415926" * 12_500 + b"\n"  # 100 kB of digits in a comment, inside the table
    pdf = re.sub(rb"(xref\s+0 \d+\s+\d{10} 65535 f \n)", lambda m: m.group(1) + comment, pdf, count=1)
    code, record = run("long-number.pdf", pdf)
    assert code == 0, record
    assert [p["text"] for p in pages_of(mount, record)] == ["kept by PDFium"]
    problem = document_of(mount, record)["problems"][0]
    assert "refuses its structure" in problem and "maximum allowed length of 64" in problem


@pytest.mark.parametrize(("message", "limit"), [
    ("Read stream length of 75000016 exceeds maximum allowed length of 75000000.", "MAX_DECOMPRESSED_BYTES"),
    ("Read stream length of 112 exceeds maximum allowed length of 64.", "PYPDF_SAFETY_LIMIT"),
    ("Limit reached while decompressing: 80000000 > 75000000", "MAX_DECOMPRESSED_BYTES"),
    ("Declared stream length of 90000000 exceeds maximum allowed length.", "MAX_DECOMPRESSED_BYTES"),
    ("Reached maximum number of tokens per stream.", "PYPDF_SAFETY_LIMIT"),
    ("Maximum page tree entry limit reached: 10016", "MAX_PAGES"),
    ("Maximum page tree depth reached: 101 > 100.", "PYPDF_SAFETY_LIMIT"),  # qpdf's deep-pages.pdf
])
def test_each_pypdf_limit_is_named_for_what_raises_it(message: str, limit: str) -> None:
    """Only a limit an option drives is named after that option (and its error says to raise it)."""
    from pypdf.errors import LimitReachedError

    from workers.pdf_extract.opening import limit_name

    assert limit_name(LimitReachedError(message)) == limit


def test_a_page_tree_deeper_than_pypdf_walks_is_read_by_pdfium(mount: Path, run: Any) -> None:
    """qpdf's deep-pages.pdf nests its page tree 101 levels deep: pypdf stops at 100, and that
    was limit-exceeded MAX_PAGES ("raise option max_pages", which cannot help)."""
    code, record = run("deep-pages.pdf", build_pdf([text_page("deep down")], depth=101))
    assert code == 0, record
    assert [p["text"].strip() for p in pages_of(mount, record)] == ["deep down"]
    assert "refuses its structure" in document_of(mount, record)["problems"][0]
    code, record = run("nested.pdf", build_pdf([text_page("a"), text_page("b")], depth=3))  # pypdf walks this
    assert code == 0 and document_of(mount, record)["problems"] == [] and record["facts"]["pages"] == 2


def test_a_document_that_says_it_has_no_pages_is_an_empty_run(mount: Path, run: Any) -> None:
    """/Count 0 and no kids: nothing is missing, so a run of no pages (not an error)."""
    code, record = run("empty.pdf", build_pdf([]))
    assert code == 0, record
    assert record["facts"]["pages"] == 0 and pages_of(mount, record) == []
    assert document_of(mount, record)["problems"] == []


def test_page_range_option_selects_pages(mount: Path, run: Any) -> None:
    pdf = build_pdf([text_page(f"p{i}") for i in range(1, 11)])
    code, record = run("r.pdf", pdf, "pages=4-6")
    assert code == 0
    assert [p["page"] for p in pages_of(mount, record)] == [4, 5, 6]
    assert [p["text"] for p in pages_of(mount, record)] == ["p4", "p5", "p6"]
    doc = document_of(mount, record)
    assert doc["page_count"] == 10 and doc["page_range"] == {"first": 4, "last": 6}
    code, tail = run("r.pdf", None, "pages=9-")
    assert [p["page"] for p in pages_of(mount, tail)] == [9, 10] and tail["run_id"] != record["run_id"]
    code, outside = run("r.pdf", None, "pages=11-12")
    assert code == 3 and outside["error"]["code"] == "page-range-out-of-bounds"


# ------------------------------------------------------------------------- end to end


def test_cli_run_isolated_and_verify(mount: Path, run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The default ``run`` forks an isolated (daemonic) child; page ranges fork again inside it."""
    code, record = run("iso.pdf", build_pdf(SAMPLE * 4), "parallel=2", isolate=True)
    assert code == 0 and record["worker"] == "pdf-extract", record
    assert record["facts"]["processes"] == 2 and record["facts"]["pages"] == 24
    again, same = run("iso.pdf", None, "parallel=2", isolate=True)
    assert again == 0 and same["run_id"] == record["run_id"]
    assert cli.main(["verify", "--root", str(mount)]) == 0
    capsys.readouterr()


def test_invoke_direct_event(mount: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], put: Put) -> None:
    put("sub dir/e.pdf", build_pdf([text_page("via invoke")]))
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"input": "ingest/sub dir/e.pdf", "options": {"pages": "1"}}))
    assert cli.main(["invoke", "pdf-extract", str(event), "--root", str(mount)]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["results"][0]["status"] == "done"
    manifest = next(mount.rglob("manifest.json"))
    record = json.loads(manifest.read_text())
    assert pages_of(mount, record)[0]["text"] == "via invoke"


def test_backfill_routes_pdfs_by_content(mount: Path, capsys: pytest.CaptureFixture[str], put: Put) -> None:
    put("misnamed.bin", build_pdf([text_page("routed")]))
    assert cli.main(["backfill", "--root", str(mount), "--worker", "pdf-extract", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["totals"]["done"] == 1


def test_import_is_cheap() -> None:
    """The registry import must not pull pypdf, Pillow or pyarrow (cold start)."""
    code = ("import sys, workers.pdf_extract, workers.pdf_extract.handler; "
            "bad = [m for m in ('pypdf', 'PIL', 'pyarrow', 'ffmpeg') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lines_helper_escapes() -> None:
    """The generator itself: parentheses and backslashes survive into the extracted text."""
    import io

    from pypdf import PdfReader

    pdf = build_pdf([Page(lines=[Line("a (b) \\ c")])])
    assert PdfReader(io.BytesIO(pdf)).pages[0].extract_text() == "a (b) \\ c"


def test_pages_jsonl_survives_unicode_line_splitting() -> None:
    """U+2028/U+2029/U+0085 in page text must not split a record for str.splitlines readers."""
    import io

    pages, text = io.BytesIO(), io.BytesIO()
    writer = pdf_pages.PageWriter(pages, text)
    tricky = "a\u2028b\u2029c\x85d"
    writer.add({"page": 1, "text": tricky, "chars": 7, "flags": [], "error": None,
                "box": {"width": 1.0, "height": 1.0, "rotation": 0}, "links": []})
    lines = pages.getvalue().decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["text"] == tricky
    assert text.getvalue().decode() == tricky
