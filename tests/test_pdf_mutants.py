"""pdf-extract on damaged PDFs: documents cut short, overwritten here and there, and lying
about their lengths, page counts and cross-references, as a bucket of millions of files
holds them. Every one must end as a committed run or as a classified error record of its
own (the run goes on with the next): never an internal error, a retry that would fail the
same way, a claim left behind, or a run without its outputs. Beyond tests/test_damage.py
(every worker's sample), this damages a PDF's own structure and checks each run's outputs.

The damage is deterministic (seeded), so a failure names a file that fails again."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from damage import KINDS, Damage, backfill_all_classified, damaged
from pdfgen import Page, build_pdf, decorate, text_page

# What a damaged document may end as: the classified, permanent errors of the README.
PERMANENT = {"corrupt-input", "password-required", "limit-exceeded", "unsupported-format", "empty-input",
             "decoder-crash"}


def _sub(pattern: bytes, replacement: bytes) -> Damage:
    return lambda data, _rng: re.sub(pattern, replacement, data)


# Damage of a PDF's own structure, beside the kinds every file gets (tests/damage.py).
PDF_DAMAGE: dict[str, Damage] = {
    "startxref-zero": _sub(rb"startxref\s*\d+", b"startxref\n0"),
    "endobj-gone": lambda data, _rng: data.replace(b"endobj", b"", 3),
    "first-half-twice": lambda data, _rng: data[:len(data) // 2] + data,
    "page-count-lie": _sub(rb"/Count\s+\d+", b"/Count 999999"),
    "page-count-negative": _sub(rb"/Count\s+\d+", b"/Count -5"),
    "stream-length-lie": _sub(rb"/Length\s+\d+", b"/Length 99999999"),
    "stream-length-zero": _sub(rb"/Length\s+\d+", b"/Length 0"),
    "streams-unterminated": lambda data, _rng: data.replace(b"endstream", b"endstrea"),
    "stream-starts-garbled": lambda data, rng: re.sub(
        rb"stream\r?\n(.{8})", lambda m: b"stream\n" + bytes(rng.randrange(256) for _ in range(8)), data, flags=re.S),
}


def mutants(stem: str, data: bytes) -> dict[str, bytes]:
    return damaged(stem, ".pdf", data, {**KINDS, **PDF_DAMAGE})


def _generated() -> dict[str, bytes]:
    pages = [text_page(f"page {n} of a generated document", "a second line") for n in range(1, 5)]
    pages.append(Page(image=True))
    pages.append(Page(lines=text_page("links").lines, links=["https://example.com/a"]))
    plain = build_pdf(pages)
    rich = decorate(plain, metadata={"/Title": "mutated"}, outline=[("One", 0, [("Two", 1)])],
                    attachments={"notes.txt": b"attached"})
    return {"plain": plain, "rich": rich, "encrypted": decorate(plain, user_password="")}


def _backfill(cli: Cli, mount: Path, sources: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Every mutant of ``sources`` in one backfill; each input's committed record."""
    folder = mount / "ingest" / "mutants"
    folder.mkdir(parents=True)
    names = {}
    for stem, data in sources.items():
        for name, content in mutants(stem, data).items():
            (folder / name).write_bytes(content)
            names[f"ingest/mutants/{name}"] = name
    summary = backfill_all_classified(cli, mount, "pdf-extract", len(names))
    unrouted = summary["unrouted_files"]  # damage that hit the %PDF- header: no longer a PDF to route
    assert all(b"%PDF-" not in (mount / rel).read_bytes()[:1024] for rel in unrouted), unrouted
    for rel in unrouted:
        del names[rel]
    records = {}
    for path in (mount / "workspace" / "pdf-extract" / "mutants").rglob("*.json"):
        if path.name in ("manifest.json", "error.json"):
            record = json.loads(path.read_text())
            records[record["input"]["path"]] = record
    assert set(records) == set(names)
    leftovers = [p for p in (mount / "workspace").rglob(".claim*")]
    assert not leftovers, leftovers
    return records


def _check(mount: Path, records: dict[str, dict[str, Any]]) -> None:
    """Each error classified and said; each run whole: every output listed is there, with its
    size and hash, and pages.jsonl has a line for every page extracted."""
    for rel, record in records.items():
        if "error" in record:
            assert record["error"]["code"] in PERMANENT, (rel, record["error"])
            assert record["error"]["message"], rel
            continue
        facts = record["facts"]
        assert 0 < facts["pages_extracted"] <= facts["pages"], (rel, facts)
        files = {Path(o["path"]).name: (mount / o["path"], o) for o in record["outputs"]}
        for path, listed in files.values():
            data = path.read_bytes()
            assert len(data) == listed["size"] and hashlib.sha256(data).hexdigest() == listed["sha256"], rel
        lines = files["pages.jsonl"][0].read_text(encoding="utf-8").splitlines()
        assert len(lines) == facts["pages_extracted"], rel


def test_damaged_generated_documents_end_classified(cli: Cli, mount: Path) -> None:
    records = _backfill(cli, mount, _generated())
    _check(mount, records)
    outcomes = {"error" in record for record in records.values()}
    assert outcomes == {True, False}, "every mutant failed, or none did: the damage exercised one path only"


@pytest.mark.slow
def test_damaged_corpus_documents_end_classified(cli: Cli, mount: Path, corpus: Path) -> None:
    sources = {path.stem: path.read_bytes() for path in sorted((corpus / "pdf").glob("*.pdf"))}
    _check(mount, _backfill(cli, mount, sources))
