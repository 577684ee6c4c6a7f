"""What a downstream consumer relies on: ``mountworks show``, the reader API, object identity.

The echo worker (tests/echo_worker.py) keeps these about the look-up, not a media library;
``test_show_and_the_reader_agree_with_run_for_every_worker`` runs every registered worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put
from jsonschema import Draft202012Validator
from s3support import S3Mount, s3_notification
from test_runtime import echo_cli, handler_response
from worker_samples import SMALL_OPTIONS, sample_for

from shared.errors import NotCommitted, OutputMismatch, RetryLater, UsageError
from shared.reader import MountReader, S3Reader
from workers.registry import get_worker, worker_names

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("echo_registered")


def show(cli: Cli, rel: str, *extra: str) -> tuple[int, dict[str, Any]]:
    return cli("show", "test-echo", rel, "--root", str(cli.mount), *extra)


# ------------------------------------------------------------------------------- show


def test_show_prints_the_manifest_run_printed(put: Put, cli: Cli) -> None:
    rel = put("a b.echo", b"ECHO hello")
    code, ran = cli.run("test-echo", rel)
    assert code == 0
    code, shown = show(cli, rel)
    assert (code, shown) == (0, ran)
    assert cli.err == ""  # the pointer answered: nothing hashed, nothing said


def test_show_prints_the_error_record_and_exits_3(put: Put, cli: Cli) -> None:
    rel = put("bad.echo", b"ECHO-BAD")
    code, ran = cli.run("test-echo", rel)
    assert code == 3 and ran["error"]["code"] == "corrupt-input"
    assert show(cli, rel) == (3, ran)


def test_show_exits_5_for_an_input_never_processed(put: Put, cli: Cli) -> None:
    rel = put("new.echo", b"ECHO new")
    assert show(cli, rel) == (5, {})
    assert "nothing of test-echo is committed" in cli.err
    assert not (cli.mount / "workspace").exists()  # a reader writes nothing


def test_show_exits_5_when_the_file_changed_since_its_run(put: Put, cli: Cli) -> None:
    rel = put("c.echo", b"ECHO one")
    assert cli.run("test-echo", rel)[0] == 0
    put("c.echo", b"ECHO two, longer")
    assert show(cli, rel) == (5, {})
    assert "hashed" in cli.err


def test_show_reads_no_content_when_the_pointer_matches(put: Put, cli: Cli, mount: Path) -> None:
    rel = put("d.echo", b"ECHO one")
    ran = cli.run("test-echo", rel)[1]
    src = mount / rel
    st = src.stat()
    src.write_bytes(b"ECHO two")  # other content, same size and mtime: only a hash could tell
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert show(cli, rel) == (0, ran)  # as a backfill's skip: answered by stat + pointer


def test_show_hashes_when_the_pointer_does_not_match_and_says_so(put: Put, cli: Cli, mount: Path) -> None:
    rel = put("e.echo", b"ECHO same")
    ran = cli.run("test-echo", rel)[1]
    os.utime(mount / rel, ns=(1_000_000_000, 1_000_000_000))  # touched: same content, other mtime
    assert show(cli, rel) == (0, ran)
    assert "its content was hashed" in cli.err


def test_show_takes_the_options_that_decide_the_run_id(put: Put, cli: Cli) -> None:
    rel = put("f.echo", b"ECHO f")
    assert cli.run("test-echo", rel)[0] == 0
    assert show(cli, rel, "-o", "mode=fail")[0] == 5
    assert show(cli, rel, "-o", "bogus=1")[0] == 2


@pytest.mark.slow
def test_show_exits_75_while_a_live_claim_holds_the_run(put: Put, mount: Path) -> None:
    rel = put("slow.echo", b"ECHO slow")
    first = subprocess.Popen(echo_cli("run", "test-echo", rel, "--root", str(mount), "-o", "sleep=2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list((mount / "workspace").rglob(".claim.0.json")):
            time.sleep(0.05)
        shown = subprocess.run(echo_cli("show", "test-echo", rel, "--root", str(mount)),
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 75, shown.stderr
        assert "live claim" in shown.stderr and shown.stdout == ""
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert subprocess.run(echo_cli("show", "test-echo", rel, "--root", str(mount)),
                          capture_output=True, timeout=60).returncode == 0


def test_show_all_lists_every_committed_run_newest_first(put: Put, cli: Cli) -> None:
    rel = put("g.echo", b"ECHO g1")
    first = cli.run("test-echo", rel)[1]
    put("g.echo", b"ECHO g2!")
    second = cli.run("test-echo", rel)[1]
    failed = cli.run("test-echo", rel, "mode=fail")[1]
    code, listing = show(cli, rel, "--all")
    assert code == 0
    assert [r["run_id"] for r in listing["runs"]] == [failed["run_id"], second["run_id"], first["run_id"]]
    assert [r["status"] for r in listing["runs"]] == ["failed", "done", "done"]
    assert listing["runs"][1]["record"] == second
    assert show(cli, put("never.echo", b"ECHO"), "--all")[0] == 5


# ----------------------------------------------------------------------------- reader


def test_the_reader_returns_listed_outputs_checked_against_the_manifest(put: Put, cli: Cli, mount: Path) -> None:
    rel = put("h.echo", b"ECHO reader")
    ran = cli.run("test-echo", rel)[1]
    reader = MountReader(mount)
    result = reader.result(get_worker("test-echo"), rel)
    assert result.status == "done" and result.record == ran and not result.hashed
    assert result.commit is not None
    assert reader.read_output(result.commit, "upper.txt") == b"ECHO READER"
    with reader.open_output(result.commit, "copy.bin") as stream:
        assert b"".join(stream) == b"ECHO reader"
    assert [c.run_id for c in reader.runs("test-echo", rel)] == [ran["run_id"]]


def test_the_reader_never_returns_an_output_the_manifest_does_not_list(put: Put, cli: Cli, mount: Path) -> None:
    rel = put("i.echo", b"ECHO i")
    ran = cli.run("test-echo", rel)[1]
    run_dir = mount / "workspace" / "test-echo" / "i.echo" / str(ran["run_id"])
    (run_dir / "stray.txt").write_bytes(b"left by a crashed attempt")
    reader = MountReader(mount)
    commit = reader.result(get_worker("test-echo"), rel).commit
    assert commit is not None
    with pytest.raises(NotCommitted, match="not listed"):
        reader.read_output(commit, "stray.txt")
    with pytest.raises(NotCommitted):
        reader.read_output(commit, "../../../../../ingest/i.echo")


def test_the_reader_refuses_an_output_changed_after_its_commit(put: Put, cli: Cli, mount: Path) -> None:
    rel = put("j.echo", b"ECHO j")
    ran = cli.run("test-echo", rel)[1]
    target = mount / "workspace" / "test-echo" / "j.echo" / str(ran["run_id"]) / "upper.txt"
    target.write_bytes(b"ECHO X")  # same size, other bytes
    reader = MountReader(mount)
    commit = reader.result(get_worker("test-echo"), rel).commit
    assert commit is not None
    with pytest.raises(OutputMismatch, match="sha256"):
        reader.read_output(commit, "upper.txt")
    target.write_bytes(b"ECHO J and more")  # longer: caught before the extra bytes are returned
    with reader.open_output(commit, "upper.txt") as stream, pytest.raises(OutputMismatch):
        stream.read(100)


def test_a_failed_run_lists_no_outputs_to_the_reader(put: Put, cli: Cli, mount: Path) -> None:
    rel = put("k.echo", b"ECHO k")
    cli.run("test-echo", rel, "mode=fail-late")  # wrote copy.bin, then failed for good
    reader = MountReader(mount)
    result = reader.result(get_worker("test-echo"), rel, {"mode": "fail-late"})
    assert result.status == "failed" and result.commit is not None
    with pytest.raises(NotCommitted, match="failed"):
        reader.read_output(result.commit, "copy.bin")


@pytest.mark.slow
@pytest.mark.parametrize("worker", [w for w in worker_names() if w != "test-echo"])
def test_show_and_the_reader_agree_with_run_for_every_worker(put: Put, cli: Cli, mount: Path, worker: str) -> None:
    name, data = sample_for(worker)
    rel = put(f"{worker}/{name}", data)
    options = [f"{k}={v}" for k, v in SMALL_OPTIONS.get(worker, {}).items()]
    code, ran = cli.run(worker, rel, *options)
    assert code == 0, cli.err
    argv = ["show", worker, rel, "--root", str(mount)] + [a for o in options for a in ("-o", o)]
    assert cli(*argv) == (0, ran)
    reader = MountReader(mount)
    result = reader.result(get_worker(worker), rel, dict(SMALL_OPTIONS.get(worker, {})))
    assert result.record == ran and result.commit is not None
    for output in ran["outputs"]:
        name_in_run = str(output["path"]).split(f"/{ran['run_id']}/", 1)[1]
        assert len(reader.read_output(result.commit, name_in_run)) == output["size"]


# -------------------------------------------------------------------- object identity


def notification(key: str, **obj: Any) -> dict[str, Any]:
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "b"}, "object": {"key": key, **obj}}}]}


def test_the_manifest_records_the_object_identity_the_trigger_carried(mount: Path) -> None:
    (mount / "ingest" / "obj.echo").write_bytes(b"ECHO obj")
    event = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": "b"}, "object": {
                              "key": "ingest/obj.echo", "size": 8, "eTag": "0123abcd",
                              "versionId": "v-1", "sequencer": "0065A1B2C3D4E5F601"}}}]}
    response = handler_response(mount, event)
    [result] = response["results"]
    record = MountReader(mount).runs("test-echo", "ingest/obj.echo")[0].record
    assert record["input"]["version_id"] == "v-1"
    assert record["input"]["etag"] == "0123abcd"
    assert record["input"]["sequencer"] == "0065A1B2C3D4E5F601"
    assert record["run_id"] == result["run_id"]


def test_object_identity_does_not_change_the_run_id(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "same.echo").write_bytes(b"ECHO same")
    ran = cli.run("test-echo", "ingest/same.echo")[1]
    event = {"version": "0", "detail-type": "Object Created", "source": "aws.s3",
             "detail": {"bucket": {"name": "b"}, "object": {"key": "ingest/same.echo", "size": 9,
                                                           "etag": "ffee", "version-id": "v-2", "sequencer": "01"}}}
    [again] = handler_response(mount, event)["results"]
    assert again["status"] == "already-done" and again["run_id"] == ran["run_id"]


def test_a_map_item_s_etag_is_recorded_without_its_quotes(mount: Path) -> None:
    (mount / "ingest" / "m.echo").write_bytes(b"ECHO map")
    handler_response(mount, {"Key": "ingest/m.echo", "Etag": '"9f86d0"', "Size": 8})
    record = MountReader(mount).runs("test-echo", "ingest/m.echo")[0].record
    assert record["input"]["etag"] == "9f86d0"
    assert "version_id" not in record["input"] and "sequencer" not in record["input"]


# -------------------------------------------------------------------------- schemas


def test_the_published_schemas_are_shipped_and_documented_alike() -> None:
    from shared import schemas

    docs = TESTS.parent / "docs" / "schemas"
    assert schemas.names() == sorted(p.name for p in docs.glob("*.schema.json"))
    assert {"manifest.schema.json", "error.schema.json", "pdf-extract.pages.schema.json",
            "pdf-extract.document.schema.json", "parquet-normalize.rejects.schema.json"} <= set(schemas.names())
    for name in schemas.names():
        assert (docs / name).read_bytes() == (schemas.SCHEMA_DIR / name).read_bytes(), name
        Draft202012Validator.check_schema(schemas.load(name))
    assert {name for name, _ in schemas.STRUCTURED_OUTPUTS.values()} | set(schemas.RECORD_SCHEMAS.values()) \
        | set(schemas.EVENT_SCHEMAS.values()) == set(schemas.names())


def test_the_record_check_names_what_breaks_a_schema(put: Put, cli: Cli, mount: Path) -> None:
    """The teardown check that validates every test's records is not vacuous."""
    from recordcheck import problems

    rel = put("s.echo", b"ECHO s")
    ran = cli.run("test-echo", rel)[1]
    failed = cli.run("test-echo", rel, "mode=fail")[1]
    assert problems(mount) == []
    manifest = mount / "workspace" / "test-echo" / "s.echo" / str(ran["run_id"]) / "manifest.json"
    manifest.write_text(json.dumps({**ran, "input": {**ran["input"], "size": "6"}, "run_id": "not-a-run-id"}))
    error = mount / "workspace" / "test-echo" / "s.echo" / str(failed["run_id"]) / "error.json"
    error.write_text(json.dumps({**failed, "error": {"message": "no code"}}))
    found = problems(mount)
    assert any("input/size" in p and "manifest.schema.json" in p for p in found), found
    assert any(p.endswith("run_id: 'not-a-run-id' does not match '^[0-9a-f]{32}(\\\\.[0-9]+)?$' "
                          "[manifest.schema.json]") for p in found), found
    assert any("error: 'code' is a required property [error.schema.json]" in p for p in found), found
    manifest.write_text("")  # a torn commit is left to the torn-commit tests, and error.json too
    error.write_text("{")
    assert problems(mount) == []


def test_a_pdf_page_record_that_breaks_its_schema_is_named(put: Put, cli: Cli, mount: Path) -> None:
    import hashlib

    from recordcheck import problems

    name, data = sample_for("pdf-extract")
    ran = cli.run("pdf-extract", put(name, data))[1]
    run_dir = mount / "workspace" / "pdf-extract" / name / str(ran["run_id"])
    assert problems(mount) == []
    pages = run_dir / "pages.jsonl"
    pages.write_text('{"page": 0, "text": "", "chars": 0, "flags": [], "error": null}\n')
    manifest = run_dir / "manifest.json"
    record = json.loads(manifest.read_text())
    for output in record["outputs"]:  # as if the worker had committed it so
        if output["path"].endswith("/pages.jsonl"):
            output.update(size=pages.stat().st_size, sha256=hashlib.sha256(pages.read_bytes()).hexdigest())
    manifest.write_text(json.dumps(record))
    assert problems(mount) == [f"workspace/pdf-extract/{name}/{ran['run_id']}/pages.jsonl:1: page: "
                               "0 is less than the minimum of 1 [pdf-extract.pages.schema.json]"]
    pages.write_text('{"page": 1, "text": "", "chars": 0, "flags": [], "error": null}\n')


# ----------------------------------------------------------------- on the S3 mount


def _s3_run(s3_mount: S3Mount, worker: str, key: str, data: bytes) -> dict[str, Any]:
    from test_s3_mount import run_handler

    put = s3_mount.put(key, data)
    [result] = run_handler(s3_mount, worker, s3_notification(s3_mount.bucket, key, put, len(data)))["results"]
    assert result["status"] in ("done", "failed"), result
    name = "manifest.json" if result["status"] == "done" else "error.json"
    record: dict[str, Any] = json.loads(s3_mount.get(
        f"workspace/{worker}/{key.removeprefix('ingest/')}/{result['run_id']}/{name}"))
    return record


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.parametrize("worker", [w for w in worker_names() if w != "test-echo"])
def test_show_and_both_readers_agree_with_the_handler_on_an_s3_mount(s3_mount: S3Mount, cli: Cli,
                                                                     worker: str) -> None:
    name, data = sample_for(worker)
    key = f"ingest/{worker}/up load+1 {name}"
    manifest = _s3_run(s3_mount, worker, key, data)
    spec = get_worker(worker)
    assert cli("show", worker, key, "--root", str(s3_mount.root)) == (0, manifest)
    on_mount = MountReader(s3_mount.root).result(spec, key)
    over_s3 = S3Reader(s3_mount.bucket, client=s3_mount.s3)
    found = over_s3.result(spec, key)
    assert (found.status, found.hashed, found.record) == ("done", False, manifest)  # matched by its ETag
    assert on_mount.record == manifest and on_mount.commit is not None and found.commit is not None
    for output in manifest["outputs"]:
        inside = str(output["path"]).split(f"/{manifest['run_id']}/", 1)[1]
        assert over_s3.read_output(found.commit, inside) == MountReader(s3_mount.root).read_output(
            on_mount.commit, inside)
    assert [c.record for c in over_s3.runs(worker, key)] == [manifest]


@pytest.mark.s3
def test_the_s3_reader_trusts_only_what_the_manifest_lists(s3_mount: S3Mount, echo_registered: None) -> None:
    key = "ingest/notes/a.echo"
    manifest = _s3_run(s3_mount, "test-echo", key, b"ECHO over s3")
    reader = S3Reader(s3_mount.bucket, client=s3_mount.s3)
    spec = get_worker("test-echo")
    found = reader.result(spec, key)
    assert found.commit is not None and found.record == manifest and not found.hashed
    assert reader.read_output(found.commit, "upper.txt") == b"ECHO OVER S3"
    run_key = f"workspace/test-echo/notes/a.echo/{manifest['run_id']}"
    s3_mount.put(f"{run_key}/extra.txt", b"not committed")
    with pytest.raises(NotCommitted, match="not listed"):
        reader.read_output(found.commit, "extra.txt")
    # export lag: a listed output that S3 does not show yet is retryable, not missing for good
    s3_mount.s3.delete_object(Bucket=s3_mount.bucket, Key=f"{run_key}/copy.bin")
    with pytest.raises(RetryLater, match="not exported"):
        reader.read_output(found.commit, "copy.bin")
    s3_mount.put(f"{run_key}/upper.txt", b"ECHO OVER S4")
    with pytest.raises(OutputMismatch):
        reader.read_output(found.commit, "upper.txt")
    s3_mount.put(f"{run_key}/upper.txt", b"ECHO OVER S3")
    s3_mount.put(f"{run_key}/copy.bin", b"ECHO over s3")

    # the same bytes uploaded again keep their ETag: still matched without reading them
    s3_mount.put(key, b"ECHO over s3")
    assert reader.result(spec, key).hashed is False
    # other bytes: no recorded identity matches, the object is hashed, and nothing is committed for it
    s3_mount.put(key, b"ECHO changed")
    changed = reader.result(spec, key)
    assert (changed.status, changed.hashed, changed.commit) == ("not-committed", True, None)
    with pytest.raises(NotCommitted):
        reader.result(spec, "ingest/notes/missing.echo")


def test_an_identity_whose_size_is_not_the_file_s_is_not_recorded(mount: Path) -> None:
    """The object was overwritten between its event and the read: the event names another version."""
    (mount / "ingest" / "newer.echo").write_bytes(b"ECHO the newer, longer version")
    handler_response(mount, notification("ingest/newer.echo", size=8, eTag="0ld", versionId="v-old"))
    record = MountReader(mount).runs("test-echo", "ingest/newer.echo")[0].record
    assert set(record["input"]) == {"path", "size", "sha256"}
    (mount / "ingest" / "same.echo").write_bytes(b"ECHO same size")
    handler_response(mount, notification("ingest/same.echo", size=14, eTag="e", versionId="v"))
    record = MountReader(mount).runs("test-echo", "ingest/same.echo")[0].record
    assert (record["input"]["version_id"], record["input"]["etag"], record["input"]["size"]) == ("v", "e", 14)


def test_show_says_what_is_wrong_with_an_input_it_cannot_look_up(put: Put, cli: Cli, mount: Path) -> None:
    assert show(cli, "ingest/missing.echo") == (5, {})
    assert "does not exist" in cli.err
    (mount / "ingest" / "folder.echo").mkdir()
    assert show(cli, "ingest/folder.echo") == (2, {})
    assert "not a regular file" in cli.err
    assert show(cli, "ingest/../outside.echo")[0] == 2
    assert show(cli, "photos/a.echo")[0] == 2  # not under ingest/
    with pytest.raises(UsageError):
        MountReader(mount).runs("../test-echo", put("r.echo", b"ECHO"))
