"""pdf-extract page ranges as separate units of work, merged into one committed run.

Ranges are committed by separate invocations (``pages=START-END``); a merge invocation
(``ranges=...``) finds their runs by run-id, checks their bytes against their manifests
and commits the whole-document run that one invocation would have produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put
from pdfgen import Page, build_pdf, decorate, text_page

from shared.errors import UsageError
from workers import cli
from workers.pdf_extract.fanout import plan
from workers.pdf_extract.options import parse

Run = Callable[..., tuple[int, dict[str, Any], str]]
Invoke = Callable[[dict[str, Any]], int]
CommittedRanges = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def run(cli: Cli) -> Run:
    """``run(rel, *options)``: ``mountworks run pdf-extract`` in-process -> (exit code, printed record, stderr)."""

    def _run(rel: str, *options: str, isolate: bool = False) -> tuple[int, dict[str, Any], str]:
        code, record = cli.run("pdf-extract", rel, *options, isolate=isolate)
        return code, record, cli.err

    return _run


@pytest.fixture
def invoke(cli: Cli, mount: Path, tmp_path: Path) -> Invoke:
    """``invoke(payload)``: ``mountworks invoke pdf-extract`` on the payload as an event file -> exit code."""

    def _invoke(payload: dict[str, Any]) -> int:
        event = tmp_path / "event.json"
        event.write_text(json.dumps(payload))
        code, _ = cli("invoke", "pdf-extract", str(event), "--root", str(mount))
        return code

    return _invoke


def files(root: Path, record: dict[str, Any]) -> dict[str, bytes]:
    """A committed run's outputs by their name in the run directory."""
    prefix = record["run_id"] + "/"
    return {o["path"].split(prefix, 1)[1]: (root / o["path"]).read_bytes() for o in record["outputs"]}


def commits(root: Path) -> list[Path]:
    return sorted(p for p in (root / "workspace").rglob("*.json") if p.name in ("manifest.json", "error.json"))


def sample_pdf(pages: int = 10) -> bytes:
    built = [text_page(f"page {i} text", f"second line {i}") for i in range(1, pages + 1)]
    built[2] = Page(raw_content=b"xx", content_filter="/NoSuchDecode")  # a page that fails on its own
    built[4] = Page(image=True)  # needs_ocr, and an image for option images
    built[-2] = text_page("linked", links=["https://example.org/p"], rotate=90)
    return decorate(build_pdf(built), metadata={"/Title": "Big one"},
                    outline=[("Start", 0, [("Last", pages - 1)])], attachments={"notes.txt": b"attached bytes"})


@pytest.fixture
def committed_ranges(run: Run) -> CommittedRanges:
    """``committed_ranges(rel, ["1-3", "4-6"], *options)``: commit each range as its own run -> the records."""

    def _committed_ranges(rel: str, ranges: list[str], *options: str) -> list[dict[str, Any]]:
        records = []
        for pages in ranges:
            code, record, err = run(rel, f"pages={pages}", *options)
            assert code == 0, err
            records.append(record)
        return records

    return _committed_ranges


# ------------------------------------------------------------------------------ merge


def test_fanout_invocations_merge_into_the_whole_document_run(mount: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str], invoke: Invoke,
                                                              run: Run, put: Put) -> None:
    rel = put("big doc.pdf", sample_pdf())
    code, whole, err = run(rel, "images=true")  # the reference: one invocation
    assert code == 0, err

    fan = plan(rel, page_count=10, range_size=4, options={"images": True})
    assert [p["options"]["pages"] for p in fan.ranges] == ["1-4", "5-8", "9-10"]
    assert fan.merge == {"input": rel, "options": {"images": True, "ranges": "1-4,5-8,9-10"}}
    for payload in fan.ranges:  # separate direct invocations, as a Step Functions Map sends them
        assert invoke(payload) == 0
    assert invoke(fan.merge) == 0

    # the same ranges spelled otherwise are the same unit of work: already done, same run-id
    code, merged, err = run(rel, "ranges= 1-4, 5-8 ,9-10", "images=true")
    assert code == 0, err
    assert merged["run_id"] != whole["run_id"]
    ours, reference = files(mount, merged), files(mount, whole)
    assert ours["pages.jsonl"] == reference["pages.jsonl"]
    assert ours["text.txt"] == reference["text.txt"]
    assert set(ours) == set(reference)  # attachments and images came along, verified
    for name in ours:
        if name not in ("document.json",):
            assert ours[name] == reference[name], name
    document = json.loads(ours["document.json"])
    range_ids = document.pop("merged_from")
    assert document == json.loads(reference["document.json"])
    assert document["page_count"] == 10 and document["page_range"] == {"first": 1, "last": 10}
    assert len(range_ids) == 3 and merged["run_id"] not in range_ids
    assert merged["options"]["ranges"] == "1-4,5-8,9-10"
    facts = {k: v for k, v in merged["facts"].items() if k != "merged_ranges"}
    assert facts == {k: v for k, v in whole["facts"].items() if k != "processes"}
    assert merged["facts"]["page_errors"] == 1 and merged["facts"]["needs_ocr_pages"] == 1
    assert cli.main(["verify", "--root", str(mount)]) == 0
    capsys.readouterr()


def test_open_ended_last_range_merges(mount: Path, run: Run, committed_ranges: CommittedRanges, put: Put) -> None:
    rel = put("tail.pdf", sample_pdf(7))
    code, whole, _ = run(rel, "parallel=1")
    committed_ranges(rel, ["1-5", "6-"])
    code, merged, err = run(rel, "ranges=1-5,6-")
    assert code == 0, err
    assert files(mount, merged)["text.txt"] == files(mount, whole)["text.txt"]


def test_missing_range_is_retryable_and_commits_nothing(mount: Path, run: Run, committed_ranges: CommittedRanges,
                                                        put: Put) -> None:
    rel = put("wait.pdf", sample_pdf(6))
    committed_ranges(rel, ["1-3"])
    before = commits(mount)
    # isolated, as `mountworks run` and Lambda run it: the claim dies with the attempt
    code, record, err = run(rel, "ranges=1-3,4-6", isolate=True)
    assert code == 75, (record, err)
    assert "not committed yet: 4-6" in err and "retry the merge" in err
    assert commits(mount) == before  # nothing committed for the merge

    committed_ranges(rel, ["4-6"])
    code, merged, err = run(rel, "ranges=1-3,4-6", isolate=True)
    assert code == 0, err
    assert [json.loads(line)["page"] for line in files(mount, merged)["pages.jsonl"].splitlines()] == list(range(1, 7))


def test_merge_invoked_before_its_ranges_raises_retry_later(mount: Path, tmp_path: Path,
                                                           invoke: Invoke, put: Put) -> None:
    """Through the Lambda handler: RetryLater (exit 75), which a Step Functions Retry catches."""
    rel = put("early.pdf", sample_pdf(6))
    fan = plan(rel, page_count=6, range_size=3)
    assert invoke(fan.merge) == 75
    assert not commits(mount)


@pytest.mark.parametrize(("ranges", "message"), [
    ("1-3,3-6", "overlaps"),
    ("1-3,5-6", "gap (page 4 missing)"),
    ("2-6", "does not start at page 1"),
    ("1-,4-6", "only the last range may be open-ended"),
    ("4-6,1-3", "does not start at page 1"),
    ("1-3,x", "option ranges: option pages='x'"),
], ids=["overlap", "gap", "not-from-1", "open-not-last", "out-of-order", "garbage"])
def test_bad_ranges_are_usage_errors(mount: Path, run: Run, put: Put, ranges: str,
                                     message: str) -> None:
    rel = put("bad.pdf", sample_pdf(6))
    code, _, err = run(rel, f"ranges={ranges}")
    assert code == 2 and message in err, err
    assert not (mount / "workspace").exists() or not commits(mount)
    with pytest.raises(UsageError, match="do not go together"):
        parse({"ranges": "1-3,4-6", "pages": "1-3"})


@pytest.mark.parametrize("ranges", ["1-3,4-5", "1-3,4-8"], ids=["short", "past-the-end"])
def test_ranges_must_end_on_the_last_page(mount: Path, run: Run, committed_ranges: CommittedRanges, put: Put,
                                          ranges: str) -> None:
    rel = put("six.pdf", sample_pdf(6))
    committed_ranges(rel, ranges.split(","))
    code, record, _ = run(rel, f"ranges={ranges}")
    assert code == 3 and record["error"]["code"] == "page-ranges-mismatch", record
    assert "6-page document" in record["error"]["message"]


def test_a_failed_range_fails_the_merge(mount: Path, run: Run, committed_ranges: CommittedRanges, put: Put) -> None:
    rel = put("short.pdf", sample_pdf(6))
    committed_ranges(rel, ["1-6"])
    code, _, _ = run(rel, "pages=7-9")
    assert code == 3
    code, record, _ = run(rel, "ranges=1-6,7-9")
    assert code == 3 and record["error"]["code"] == "page-range-out-of-bounds"
    assert "7-9 failed for good" in record["error"]["message"]


@pytest.mark.parametrize("target", ["pages.jsonl", "document.json", "attachments/001-notes.txt", "deleted"])
def test_tampered_range_output_is_not_merged(mount: Path, run: Run, committed_ranges: CommittedRanges, put: Put,
                                             target: str) -> None:
    rel = put("tamper.pdf", sample_pdf(6))
    first, _ = committed_ranges(rel, ["1-3", "4-6"])
    run_dir = mount / Path(first["outputs"][0]["path"]).parent
    if target == "deleted":
        (run_dir / "pages.jsonl").unlink()
    else:
        path = run_dir / target
        data = path.read_bytes()
        word = {"pages.jsonl": b"second", "document.json": b"page"}.get(target, b"attached")
        index = data.index(word)  # still valid JSON: only the hash can tell
        path.write_bytes(data[:index] + data[index:index + 4].upper() + data[index + 4:])  # same size
    code, record, _ = run(rel, "ranges=1-3,4-6")
    assert code == 3 and record["error"]["code"] == "range-output-mismatch", record
    assert first["run_id"] in record["error"]["message"] and "mountworks verify" in record["error"]["message"]
    assert not list((mount / "workspace").rglob(f"{record['run_id']}/manifest.json"))


# ------------------------------------------------------------------------ options, plan


def test_ranges_option_normalizes_and_leaves_other_run_ids_alone() -> None:
    spelled = parse({"ranges": " 1-4 ,5-8,9-"}).to_manifest()
    assert spelled == parse({"ranges": ["1-4", "5-8", "9-"]}).to_manifest()
    assert spelled["ranges"] == "1-4,5-8,9-"
    assert "ranges" not in parse({"pages": "1-4"}).to_manifest()  # range runs keep their run-ids
    merge = parse({"ranges": "1-4,5-8", "max_pages": 9000})
    assert merge.for_range(merge.ranges[1]).to_manifest() == parse({"pages": "5-8", "max_pages": 9000}).to_manifest()


def test_plan_covers_the_document_exactly() -> None:
    fan = plan("ingest/big.pdf", page_count=2000, range_size=500)
    assert [p["options"]["pages"] for p in fan.ranges] == ["1-500", "501-1000", "1001-1500", "1501-2000"]
    assert fan.merge["options"]["ranges"] == "1-500,501-1000,1001-1500,1501-2000"
    assert len(plan("ingest/x.pdf", 1, 500).ranges) == 1
    with pytest.raises(UsageError):
        plan("ingest/x.pdf", 10, 5, options={"pages": "1-2"})
    with pytest.raises(UsageError):
        plan("ingest/x.pdf", 0, 5)
