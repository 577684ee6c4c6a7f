"""pdf-extract over every real-world PDF in ../shared/corpus/pdf, through the real CLI.

Each file either succeeds (with the text and structure its SOURCES.md note describes)
or ends as a classified permanent error; never a traceback (exit 1) or a hang (each run
is a subprocess bounded by a timeout).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, corpus_files

pytestmark = pytest.mark.corpus

TIMEOUT_SECONDS = 120
PERMANENT_CODES = {"corrupt-input", "unsupported-format", "password-required", "wrong-password", "empty-input",
                   "limit-exceeded", "encrypted-input"}

Check = Callable[[dict[str, Any], list[dict[str, Any]], dict[str, Any]], None]


def _text(pages: list[dict[str, Any]]) -> str:
    return "\f".join(p["text"] for p in pages)


def _habibi(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    # PDFium gives this file's Arabic in the order it is drawn (test_text_is_pdfiums checks it is PDFium's)
    assert len(pages) == 4 and all("habibi" in p["text"] and set("حَبيبي") <= set(p["text"]) for p in pages)
    assert any(p["rotation"] for p in doc["pages"])


def _sizes(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    assert [(p["width"], p["height"]) for p in doc["pages"]] == [(612.0, 792.0), (649.0, 323.0), (792.0, 612.0)]
    assert _text(pages) == "Normal\fEnvelope\fLandscape"


def _forms(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    fields = {f["name"]: f for f in doc["form_fields"]}
    assert set(fields) == {"Name", "Check", "Submit"}
    assert fields["Name"]["type"] == "/Tx" and fields["Check"]["value"] == "/Off"


def _attachment(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    [attachment] = doc["attachments"]
    assert attachment["name"] == "image.png" and attachment["path"].startswith("attachments/")
    assert record["facts"]["attachments"] == 1


def _bad_info(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    meta = doc["metadata"]  # indirect Info values are resolved, dates normalized
    assert meta["author"] == "Yury" and meta["creation_date"] == "2012-02-24T01:02:52Z"
    assert _text(pages) == "pdf.js test"


def _contains(text: str) -> Check:
    def check(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
        assert text in _text(pages)

    return check


def _tracemonkey(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    assert len(pages) == 14 and not any(p["error"] for p in pages)
    assert "Trace-based Just-in-Time Type Specialization" in pages[0]["text"]
    assert doc["metadata"]["creation_date"] == "2009-04-01T16:39:25-07:00"


def _r6(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    assert "pdf encryption test" in pages[0]["text"] and record["facts"]["encrypted"] is True


def _cyclic_tree(record: dict[str, Any], pages: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    # pypdf refuses the cyclic /Pages tree; PDFium opens it, and a page it cannot load is a page error
    assert doc["problems"][0].startswith("structure: pypdf cannot open") and record["facts"]["page_errors"] >= 1


# file -> (exit code, error code or a check of the success)
EXPECTED: dict[str, tuple[int, str | Check]] = {
    "bug1020226.pdf": (3, "corrupt-input"),
    "Pages-tree-refs.pdf": (0, _cyclic_tree),
    "libreoffice-writer-password.pdf": (3, "password-required"),
    "habibi-rotated.pdf": (0, _habibi),
    "minimal-document.pdf": (0, _contains("Lorem ipsum dolor sit amet")),
    "noembed-sjis.pdf": (0, _contains("あいうえお")),
    "pdfjsbad1586.pdf": (0, _bad_info),
    "pdflatex-forms.pdf": (0, _forms),
    "r6-empty-password.pdf": (0, _r6),
    "sizes.pdf": (0, _sizes),
    "tracemonkey.pdf": (0, _tracemonkey),
    "with-attachment.pdf": (0, _attachment),
    "xref_command_missing.pdf": (0, _contains("Reduced test-case")),
}


def run_cli(mount: Path, source: Path, *options: str) -> tuple[int, dict[str, Any]]:
    target = mount / "ingest" / source.name
    if not target.exists():
        shutil.copyfile(source, target)
    argv = [sys.executable, "-m", "workers", "run", "pdf-extract", f"ingest/{source.name}", "--root", str(mount)]
    for option in options:
        argv += ["--option", option]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT_SECONDS)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def _load(mount: Path, record: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    files = {o["path"].rsplit("/", 1)[1]: mount / o["path"] for o in record["outputs"]}
    pages = [json.loads(line) for line in files["pages.jsonl"].read_text(encoding="utf-8").splitlines()]
    return pages, json.loads(files["document.json"].read_text(encoding="utf-8"))


@pytest.mark.parametrize("source", corpus_files("pdf"), ids=lambda p: p.name)
def test_corpus_file(corpus: Path, mount: Path, source: Path) -> None:
    code, record = run_cli(mount, source)
    # done or a classified permanent error, never an internal error (1) or a retry (75), listed or not
    assert code in (0, 3), record
    expectation: str | Check = ""
    if source.name in EXPECTED:  # a file SOURCES.md describes ends the way it says
        expected_code, expectation = EXPECTED[source.name]
        assert code == expected_code, record
    if code == 3:
        assert record["error"]["code"] in PERMANENT_CODES and record["error"]["message"]
        if isinstance(expectation, str) and expectation:
            assert record["error"]["code"] == expectation
        return
    pages, doc = _load(mount, record)
    assert doc["page_count"] == len(pages) == record["facts"]["pages"]
    if callable(expectation):
        expectation(record, pages, doc)


def test_corpus_password_document_opens_with_its_password(corpus: Path, mount: Path) -> None:
    source = corpus / "pdf" / "libreoffice-writer-password.pdf"
    if not source.is_file():
        pytest.skip("libreoffice-writer-password.pdf is not in this corpus")
    code, record = run_cli(mount, source, "password=openpassword")
    assert code == 0, record
    pages, _doc = _load(mount, record)
    assert _text(pages).strip() and record["options"]["password_supplied"] is True
    assert "openpassword" not in json.dumps(record)


@pytest.mark.parametrize("source", corpus_files("pdf"), ids=lambda p: p.name)
def test_text_is_pdfiums(corpus: Path, mount: Path, source: Path) -> None:
    """engine=pdfium (the default) gives each page's text exactly as bare pypdfium2 does
    (maths, CJK, right-to-left), line breaks as \\n; page flags are the worker's own."""
    import pypdfium2

    code, record = run_cli(mount, source)
    if code != 0:  # a document no engine can read as asked: its classified error is the result
        assert code == 3 and record["error"]["code"], record
        if source.name in EXPECTED:
            assert (code, record["error"]["code"]) == EXPECTED[source.name], record
        return
    pages, _doc = _load(mount, record)
    document = pypdfium2.PdfDocument(source)
    try:
        for page in pages:
            if page["error"] is not None:
                continue
            bare = document[page["page"] - 1].get_textpage().get_text_range()
            assert page["text"] == bare.replace("\r\n", "\n").replace("\r", "\n"), page["page"]
    finally:
        document.close()
    pdfium_pages = sum(last - first + 1 for first, last in record["facts"]["text_engines"].get("pdfium", []))
    assert pdfium_pages == sum(1 for p in pages if p["error"] is None)
