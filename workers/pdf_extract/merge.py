"""Merge committed page-range runs into one whole-document run, without re-extracting.

A 2,000-page PDF need not fit one invocation: separate invocations each commit a range
run (option ``pages=1-500``, ``pages=501-1000``, ...), then one more invocation with option
``ranges=1-500,501-1000,...`` (and the same other options) commits the whole-document run
that a single invocation would have produced: ``pages.jsonl`` and ``text.txt`` byte for
byte, ``document.json`` plus ``merged_from`` (the range run-ids).

How it finds the ranges: a range run-id is deterministic (worker, version, the range's
normalized options, the input's sha256), so the merge computes it and reads that run's
latest attempt; no listing, no search, no pypdf.

What it trusts: only what a range manifest lists, and only after the bytes it reads hash
to the manifest's sha256 and size (hashed while streaming, so nothing is read twice).

Outcomes:
- a range not committed yet: RetryableError ``ranges-pending``, nothing committed (the
  orchestrator retries the merge later; the merge never extracts a range itself, so its
  time and memory stay small and predictable);
- a range committed as failed: the merge fails for good with that range's error code;
- ranges that do not end on the last page: ``page-ranges-mismatch`` (permanent);
- a range output whose bytes differ from its manifest: ``range-output-mismatch``
  (permanent; run ``mountworks verify``, reprocess that range, merge with --retry-failed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from shared.errors import (
    PAGE_RANGES_MISMATCH,
    RANGE_FAILED,
    RANGES_PENDING,
    PermanentInputError,
    RangeOutputMismatch,
    RetryableError,
    UsageError,
)
from shared.runs import Commit, OutputDir, Run
from shared.worker import InputFile, RunContext
from workers.pdf_extract.options import (
    DEADLINE_MARGIN_SECONDS,
    FORM_FEED,
    MAX_LINKS,
    Options,
    PageRange,
    add_engine_page,
)

MAX_DOCUMENT_JSON_BYTES = 256 << 20  # one range's document.json is read whole (page sizes, outline, ...)
COPY_CHUNK = 1 << 20
SHOWN_PENDING = 5  # pending ranges named in the retryable message


@dataclass(frozen=True)
class RangeRun:
    """One committed range run and the outputs its manifest lists, by name in its directory."""

    page_range: PageRange
    commit: Commit
    outputs: dict[str, dict[str, Any]]

    @property
    def run_id(self) -> str:
        return str(self.commit.record["run_id"])

    def label(self) -> str:
        return f"pages {self.page_range.text() or '1-'} (run {self.commit.run_dir.name})"


def find_ranges(options: Options, source: InputFile, run: Run) -> list[RangeRun]:
    """The committed run of every range; retryable if any is missing, permanent if any failed.

    A range's run is the same input's run with the range's options (:meth:`Run.with_options`):
    its run-id is computed, never searched for.
    """
    found: list[RangeRun] = []
    pending: list[str] = []
    for page_range in options.ranges:
        range_run = run.with_options(options.for_range(page_range).to_manifest())
        commit = range_run.committed()
        label = page_range.text() or "1-"
        if commit is None:
            pending.append(f"{label} (run {range_run.base_id})")
            continue
        if commit.failed:
            raise PermanentInputError(
                f"page range {label} failed for good (run {commit.run_id}): {commit.error.get('message')}; "
                "reprocess it with --retry-failed, then merge again with --retry-failed",
                code=str(commit.error.get("code") or RANGE_FAILED))
        if commit.record.get("input", {}).get("sha256") != source.sha256:
            raise RangeOutputMismatch(f"range run {commit.run_dir.name} records another input's sha256")
        found.append(RangeRun(page_range, commit, commit.listed()))
    if pending:
        more = len(pending) - SHOWN_PENDING
        raise RetryableError(
            f"{len(pending)} of {len(options.ranges)} page range(s) not committed yet: "
            f"{', '.join(pending[:SHOWN_PENDING])}{f' and {more} more' if more > 0 else ''}; "
            "process them with the same options and pages=START-END, then retry the merge",
            code=RANGES_PENDING)
    return found


# ------------------------------------------------------------------- verified reads


def _entry(run: RangeRun, name: str) -> dict[str, Any]:
    entry = run.outputs.get(name)
    if entry is None:
        raise RangeOutputMismatch(f"{run.label()}: its manifest does not list {name}")
    return entry


def _mismatch(run: RangeRun, name: str, entry: dict[str, Any], digest: str, size: int) -> RangeOutputMismatch:
    return RangeOutputMismatch(
        f"{run.label()}: {name} does not match its manifest (sha256 {digest[:12]}..., {size} bytes; the "
        f"manifest says {str(entry.get('sha256'))[:12]}..., {entry.get('size')} bytes): it was changed after "
        "its commit. Run `mountworks verify`, reprocess that range, then merge again with --retry-failed")


def _verified_lines(run: RangeRun, name: str) -> Iterator[bytes]:
    """The lines of a listed output; raises after the last one if the bytes were not the committed ones."""
    entry = _entry(run, name)
    digest = hashlib.sha256()
    size = 0
    try:
        with (run.commit.run_dir / name).open("rb") as f:
            for line in f:
                digest.update(line)
                size += len(line)
                yield line
    except FileNotFoundError:
        raise RangeOutputMismatch(f"{run.label()}: {name} is listed in its manifest but missing; run "
                                  "`mountworks verify`, reprocess that range, then merge with --retry-failed") from None
    if digest.hexdigest() != entry.get("sha256") or size != entry.get("size"):
        raise _mismatch(run, name, entry, digest.hexdigest(), size)


def _verified_bytes(run: RangeRun, name: str, limit: int) -> bytes:
    entry = _entry(run, name)
    if int(entry.get("size") or 0) > limit:
        raise RangeOutputMismatch(f"{run.label()}: {name} is larger than {limit} bytes")
    return b"".join(_verified_lines(run, name))


def _verified_copy(run: RangeRun, name: str, target: IO[bytes]) -> None:
    """Copy a listed output (an attachment, an image) while hashing it; bounded memory."""
    entry = _entry(run, name)
    digest = hashlib.sha256()
    size = 0
    try:
        with (run.commit.run_dir / name).open("rb") as f:
            while chunk := f.read(COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                target.write(chunk)
    except FileNotFoundError:
        raise RangeOutputMismatch(f"{run.label()}: {name} is listed in its manifest but missing") from None
    if digest.hexdigest() != entry.get("sha256") or size != entry.get("size"):
        raise _mismatch(run, name, entry, digest.hexdigest(), size)


def _copy_listed(run: RangeRun, name: str, out: OutputDir) -> None:
    entry = _entry(run, name)
    facts = {k: v for k, v in entry.items() if k not in ("path", "size", "sha256", "media_type")}
    with out.open(name, str(entry.get("media_type") or "application/octet-stream"), **facts) as target:
        _verified_copy(run, name, target)


# -------------------------------------------------------------------------- merge


def merge(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Write the whole-document outputs from the committed range runs; the manifest's facts."""
    if ctx.run is None:
        raise UsageError("option ranges needs the run it merges into (run it through mountworks run/invoke)")
    deadline = ctx.deadline
    runs = find_ranges(options, source, ctx.run)
    documents = []
    for run in runs:
        deadline.check(DEADLINE_MARGIN_SECONDS, doing=f"reading {run.label()}")
        documents.append(json.loads(_verified_bytes(run, "document.json", MAX_DOCUMENT_JSON_BYTES)))
    page_count = int(documents[0]["page_count"])
    for n, (run, document) in enumerate(zip(runs, documents, strict=True)):
        want_last = page_count if run.page_range.last is None else run.page_range.last
        got = document.get("page_range") or {}
        if int(document["page_count"]) != page_count or got.get("first") != run.page_range.first \
                or got.get("last") != want_last or (n == len(runs) - 1 and want_last != page_count):
            raise PermanentInputError(
                f"option ranges={options.ranges_text()} does not tile this {page_count}-page document: "
                f"{run.label()} holds pages {got.get('first')}-{got.get('last')}; the last range must end "
                f"on page {page_count} (or be open-ended, like {run.page_range.first}-)",
                code=PAGE_RANGES_MISMATCH)

    count = chars = needs_ocr = errors = timeouts = 0
    with out.open("pages.jsonl", "application/x-ndjson") as pages_file, \
            out.open("text.txt", "text/plain; charset=utf-8") as text_file:
        for run in runs:
            deadline.check(DEADLINE_MARGIN_SECONDS, doing=f"merging {run.label()}")
            expected = run.page_range.first
            lines = _verified_lines(run, "pages.jsonl")
            for line in lines:
                try:
                    record = json.loads(line)
                    page, text, flags, error = record["page"], str(record["text"]), record["flags"], record["error"]
                    record_chars = int(record["chars"])
                    wrong = None if page == expected else f"holds page {page} where page {expected} belongs"
                except (ValueError, KeyError, TypeError) as exc:
                    wrong = f"holds a malformed record where page {expected} belongs ({type(exc).__name__})"
                if wrong is not None:
                    for _ in lines:  # a changed file is reported as such (the hash, at its end)
                        pass
                    raise RangeOutputMismatch(f"{run.label()}: pages.jsonl {wrong}")
                expected += 1
                pages_file.write(line)
                if count:
                    text_file.write(FORM_FEED.encode())
                text_file.write(text.encode())
                count += 1
                chars += record_chars
                needs_ocr += "needs_ocr" in flags
                errors += error is not None
                timeouts += "timeout" in flags
            want_last = page_count if run.page_range.last is None else run.page_range.last
            if expected != want_last + 1:
                raise RangeOutputMismatch(f"{run.label()}: pages.jsonl ends at page {expected - 1}, "
                                          f"not {want_last}")
    out.update_facts("pages.jsonl", pages=count)
    out.update_facts("text.txt", chars=chars)
    text_engines: dict[str, list[list[int]]] = {}
    for run in runs:  # which engine produced each page: the ranges' facts, joined in page order
        for engine, spans in (run.commit.record.get("facts", {}).get("text_engines") or {}).items():
            for first_page, last_page in spans:
                add_engine_page(text_engines, engine, int(first_page), int(last_page))

    first = documents[0]
    # Document-level parts (metadata, outline, form fields, attachments) are the same in
    # every range run: take the first range's, with the files it wrote.
    attachments = first.get("attachments") or []
    for entry in attachments:
        if "path" in entry:
            _copy_listed(runs[0], entry["path"], out)
    images: list[dict[str, Any]] | None = None
    if "images" in first:
        images = []
        written = 0
        for run, document in zip(runs, documents, strict=True):
            deadline.check(DEADLINE_MARGIN_SECONDS, doing=f"copying images of {run.label()}")
            for entry in document.get("images") or []:
                entry = dict(entry)
                if "path" in entry:
                    if written >= options.max_images:
                        del entry["path"]
                        entry["skipped"] = f"more than MAX_IMAGES={options.max_images}"
                    else:
                        _copy_listed(run, entry["path"], out)
                        written += 1
                images.append(entry)
    links = [link for document in documents for link in document.get("links") or []][:MAX_LINKS]
    problems = list(dict.fromkeys(p for document in documents for p in document.get("problems") or []))
    document_out: dict[str, Any] = {
        **first,
        "page_range": {"first": 1, "last": page_count},
        "pages": [page for document in documents for page in document.get("pages") or []],
        "links": links,
        **({"images": images} if images is not None else {}),
        "problems": problems,
        "merged_from": [run.run_id for run in runs],
    }
    out.write_bytes("document.json", (json.dumps(document_out, ensure_ascii=False, indent=1) + "\n").encode(),
                    "application/json", pages=page_count)
    return {
        "pages": page_count,
        "pages_extracted": count,
        "chars": chars,
        "needs_ocr_pages": needs_ocr,
        "page_errors": errors,
        "page_timeouts": timeouts,
        "encrypted": bool(first.get("encrypted")),
        "attachments": sum(1 for a in attachments if "path" in a),
        **({"images": sum(1 for i in images if "path" in i)} if images is not None else {}),
        "text_engines": text_engines,
        "merged_ranges": len(runs),
    }

