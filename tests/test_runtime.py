"""The runtime's promises, through the CLI and the handler, with a tiny test worker.

The echo worker (tests/echo_worker.py) keeps media libraries out of these tests, so
each one is about the contract: exit codes, commits, duplicates, crashes, waiting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from shared.config import MountConfig
from shared.runtime import handle_event
from workers.cli import LocalContext, main

TESTS = Path(__file__).resolve().parent
LAUNCH = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import workers.registry as r; "
    "r.WORKERS['test-echo'] = 'echo_worker'; from workers.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


pytestmark = pytest.mark.usefixtures("echo_registered")


def echo_cli(*argv: str) -> list[str]:
    return [sys.executable, "-c", LAUNCH, *argv]


def manifests(root: Path) -> list[Path]:
    return sorted((root / "workspace").rglob("manifest.json"))


def test_run_commits_a_manifest_then_reports_already_done(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "a b.echo").write_bytes(b"ECHO hello")
    code, first = cli("run", "test-echo", "ingest/a b.echo", "--root", str(mount))
    assert code == 0
    assert first["input"] == {"path": "ingest/a b.echo", "size": 10, "sha256": first["input"]["sha256"]}
    run_dir = mount / "workspace" / "test-echo" / "a b.echo" / first["run_id"]
    assert (run_dir / "manifest.json").is_file()
    assert [o["path"] for o in first["outputs"]] == [
        f"workspace/test-echo/a b.echo/{first['run_id']}/copy.bin",
        f"workspace/test-echo/a b.echo/{first['run_id']}/upper.txt"]
    code, second = cli("run", "test-echo", "ingest/a b.echo", "--root", str(mount))
    assert code == 0 and second == first
    assert len(manifests(mount)) == 1


def test_already_committed_is_answered_without_reading_the_input(mount: Path, cli: Cli) -> None:
    src = mount / "ingest" / "a.echo"
    src.write_bytes(b"ECHO one")
    code, first = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    assert code == 0
    st = src.stat()
    src.write_bytes(b"ECHO two")  # same size; the stat fingerprint is restored below
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, second = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    # had the content been read, the new bytes would give a new run-id and a new commit
    assert code == 0 and second["run_id"] == first["run_id"]
    assert len(manifests(mount)) == 1
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    code, third = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    assert code == 0 and third["run_id"] != first["run_id"]


def test_same_content_uploaded_again_keeps_its_run_id(mount: Path, cli: Cli) -> None:
    src = mount / "ingest" / "a.echo"
    src.write_bytes(b"ECHO same")
    _, first = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    os.utime(src, (time.time() + 50, time.time() + 50))  # re-uploaded: new mtime, same bytes
    code, second = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    assert code == 0 and second["run_id"] == first["run_id"]
    assert second["started_at"] == first["started_at"]  # the committed manifest, not a new one


def test_options_change_the_run_id(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO x")
    _, ok = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    code, failed = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount), "-o", "mode=fail")
    assert code == 3 and failed["run_id"] != ok["run_id"]


def test_a_permanent_error_commits_error_json_and_exits_3(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "bad.echo").write_bytes(b"ECHO-BAD")
    code, record = cli("run", "test-echo", "ingest/bad.echo", "--root", str(mount))
    assert code == 3
    assert record["error"] == {"code": "corrupt-input", "message": "this echo input is marked bad"}
    error_files = list((mount / "workspace").rglob("error.json"))
    assert len(error_files) == 1 and not manifests(mount)
    assert "outputs" not in record  # an error record lists nothing a reader could trust
    assert json.loads(error_files[0].read_text()) == record
    code, again = cli("run", "test-echo", "ingest/bad.echo", "--root", str(mount))
    assert code == 3 and again["run_id"] == record["run_id"]


def test_partial_outputs_of_a_failed_run_are_never_listed_or_verified(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "late.echo").write_bytes(b"ECHO fails after writing")
    code, record = cli("run", "test-echo", "ingest/late.echo", "--root", str(mount), "-o", "mode=fail-late")
    assert code == 3 and record["error"]["code"] == "corrupt-input"
    run_dir = mount / "workspace" / "test-echo" / "late.echo" / record["run_id"]
    assert (run_dir / "copy.bin").is_file()  # left where the core wrote it (outputs are never moved) ...
    assert "outputs" not in record and "copy.bin" not in (run_dir / "error.json").read_text()  # ... never listed
    assert not (run_dir / "manifest.json").exists()
    code, report = cli("verify", "--root", str(mount))
    assert code == 0 and (report["manifests"], report["outputs"]) == (0, 0)  # nor verified as a result


def test_retry_failed_makes_a_new_attempt_and_touches_nothing_committed(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "bad.echo").write_bytes(b"ECHO-BAD")
    _, first = cli("run", "test-echo", "ingest/bad.echo", "--root", str(mount))
    first_record = next((mount / "workspace").rglob("error.json")).read_bytes()
    code, second = cli("run", "test-echo", "ingest/bad.echo", "--root", str(mount), "--retry-failed")
    assert code == 3 and second["run_id"] == first["run_id"] + ".2"
    assert (mount / "workspace" / "test-echo" / "bad.echo" / first["run_id"] / "error.json").read_bytes() == (
        first_record)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "no-such-worker", "ingest/a.echo"], "unknown worker"),
        (["run", "test-echo", "ingest/a.echo", "-o", "mode=explode"], "is not one of"),
        (["run", "test-echo", "ingest/a.echo", "-o", "sleep=1e9"], "out of range"),
        (["run", "test-echo", "ingest/a.echo", "-o", "colour=red"], "unknown test-echo option"),
        (["run", "test-echo", "ingest/a.echo", "-o", "novalue"], "not KEY=VALUE"),
        (["run", "test-echo", "workspace/x.echo"], "must be a path under ingest/"),
        (["run", "test-echo", "../outside.echo"], "'..' component"),
        (["run", "test-echo", "/etc/passwd"], "absolute"),
        (["backfill", "--jobs", "0"], "--jobs must be at least 1"),
    ],
    ids=["unknown-worker", "bad-choice", "out-of-range", "unknown-option", "not-key-value", "outside-ingest",
         "escape", "absolute", "zero-jobs"],
)
def test_bad_requests_are_usage_errors(mount: Path, capsys: pytest.CaptureFixture[str],
                                       argv: list[str], fragment: str) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO")
    code = main([*argv, "--root", str(mount)])
    captured = capsys.readouterr()
    assert code == 2
    assert fragment in captured.err
    assert not (mount / "workspace").exists()


def test_an_input_that_is_not_visible_exits_75_after_its_wait(mount: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = main(["run", "test-echo", "ingest/late.echo", "--root", str(mount), "--wait", "0.3"])
    assert code == 75 and time.monotonic() - started >= 0.3
    err = capsys.readouterr().err
    assert "ingest/late.echo does not exist on the mount" in err and "--wait SECONDS" in err


def test_an_input_that_shows_up_while_waiting_is_processed(mount: Path, cli: Cli) -> None:
    late = mount / "ingest" / "late.echo"
    timer = threading.Timer(0.4, lambda: late.write_bytes(b"ECHO late"))
    timer.start()
    try:
        code, record = cli("run", "test-echo", "ingest/late.echo", "--root", str(mount), "--wait", "10")
    finally:
        timer.join()
    assert code == 0 and record["input"]["size"] == 9


def test_a_native_crash_is_a_classified_error_not_a_dead_run(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "boom.echo").write_bytes(b"ECHO boom")
    code, record = cli("run", "test-echo", "ingest/boom.echo", "--root", str(mount), "-o", "mode=abort")
    assert code == 3
    assert record["error"]["code"] == "decoder-crash" and "SIGABRT" in record["error"]["message"]


def test_backfill_isolates_a_crashing_input_and_processes_the_rest(mount: Path, cli: Cli) -> None:
    for i in range(4):
        (mount / "ingest" / f"ok{i}.echo").write_bytes(f"ECHO {i}".encode())
    code, summary = cli("backfill", "--root", str(mount), "--jobs", "2", "-o", "mode=abort")
    assert code == 0  # every input ended committed (as failed for good)
    assert summary["totals"]["failed"] == 4
    assert {f["error"]["code"] for f in summary["failures"]} == {"decoder-crash"}
    (mount / "ingest" / "fine.echo").write_bytes(b"ECHO fine")
    code, summary = cli("backfill", "--root", str(mount), "--jobs", "2")
    assert code == 0 and summary["totals"]["done"] == 5


def test_backfill_routes_by_content_skips_committed_and_counts_unrouted(mount: Path, cli: Cli) -> None:
    (mount / "ingest" / "deep" / "er").mkdir(parents=True)
    (mount / "ingest" / "deep" / "er" / "a.echo").write_bytes(b"ECHO a")
    (mount / "ingest" / "named-wrong.txt").write_bytes(b"ECHO by content")
    (mount / "ingest" / "b.echo").write_bytes(b"not echo at all")  # the extension lies
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    assert code == 0
    assert (summary["files"], summary["unrouted"], summary["totals"]["done"]) == (3, 1, 2)
    committed = sorted(str(p) for p in (mount / "workspace").rglob("*.json"))
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    assert code == 0 and summary["totals"]["skipped"] == 2 and summary["totals"]["done"] == 0
    assert sorted(str(p) for p in (mount / "workspace").rglob("*.json")) == committed
    code, summary = cli("backfill", "--root", str(mount), "--dry-run", "--worker", "test-echo")
    assert code == 0 and summary["dry_run"] is True


def test_verify_passes_then_names_a_changed_output(mount: Path, capsys: pytest.CaptureFixture[str], cli: Cli) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO verify me")
    cli("run", "test-echo", "ingest/a.echo", "--root", str(mount))
    code, report = cli("verify", "--root", str(mount))
    assert code == 0 and report["manifests"] == 1 and report["outputs"] == 2
    victim = next((mount / "workspace").rglob("upper.txt"))
    victim.write_bytes(victim.read_bytes().replace(b"E", b"F"))
    code = main(["verify", "--root", str(mount)])
    captured = capsys.readouterr()
    assert code == 4 and "upper.txt does not match its sha256" in captured.err
    victim.unlink()
    assert main(["verify", "--root", str(mount), "workspace/test-echo"]) == 4
    assert "upper.txt is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_concurrent_duplicates_make_exactly_one_commit(mount: Path) -> None:
    (mount / "ingest" / "dup.echo").write_bytes(b"ECHO duplicate delivery")
    procs = [subprocess.Popen(echo_cli("run", "test-echo", "ingest/dup.echo", "--root", str(mount),
                                       "-o", "sleep=0.3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(6)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]  # communicate() closes the pipes
    results = [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
    codes = sorted(code for code, _ in results)
    assert set(codes) <= {0, 75} and codes.count(0) >= 1
    assert len(manifests(mount)) == 1
    run_ids = {json.loads(out)["run_id"] for code, out in results if code == 0}
    assert len(run_ids) == 1


@pytest.mark.slow
def test_kill_9_mid_run_leaves_no_manifest_and_a_rerun_commits(mount: Path) -> None:
    (mount / "ingest" / "victim.echo").write_bytes(b"ECHO kill me")
    proc = subprocess.Popen(echo_cli("run", "test-echo", "ingest/victim.echo", "--root", str(mount),
                                     "-o", "sleep=5", "--no-isolation"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    copy = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and copy is None:
        copy = next((mount / "workspace").rglob("copy.bin"), None) if (mount / "workspace").exists() else None
        time.sleep(0.05)
    assert copy is not None, "the run never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not manifests(mount)
    rerun = subprocess.run(echo_cli("run", "test-echo", "ingest/victim.echo", "--root", str(mount)),
                           capture_output=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert len(manifests(mount)) == 1
    code = subprocess.run(echo_cli("verify", "--root", str(mount)), capture_output=True, timeout=60).returncode
    assert code == 0


@pytest.mark.slow
def test_a_live_duplicate_exits_75(mount: Path) -> None:
    (mount / "ingest" / "slow.echo").write_bytes(b"ECHO slow")
    first = subprocess.Popen(echo_cli("run", "test-echo", "ingest/slow.echo", "--root", str(mount),
                                      "-o", "sleep=2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list((mount / "workspace").rglob(".claim.0.json")):
            time.sleep(0.05)
        second = subprocess.run(echo_cli("run", "test-echo", "ingest/slow.echo", "--root", str(mount)),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 75, second.stderr
        assert "being processed" in second.stderr
    finally:
        first.communicate(timeout=60)
        assert first.returncode == 0


# ----------------------------------------------------------------------------- handler


def handler_response(mount: Path, event: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    from workers.registry import get_worker

    return handle_event(get_worker("test-echo"), event, LocalContext("test-echo", timeout),
                        MountConfig.load(mount))


def test_direct_invocation_and_map_items_are_processed(mount: Path) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    (mount / "ingest" / "b.echo").write_bytes(b"ECHO b")
    response = handler_response(mount, {"input": "ingest/a.echo"})
    assert [r["status"] for r in response["results"]] == ["done"]
    response = handler_response(mount, {"Items": [{"Key": "ingest/a.echo"}, {"Key": "ingest/b.echo"},
                                                  {"Key": "elsewhere/c.echo"}], "BatchInput": {}})
    assert [r["status"] for r in response["results"]] == ["already-done", "done", "skipped"]


def test_a_retryable_item_makes_the_handler_raise_after_the_others_ran(mount: Path) -> None:
    from shared.errors import RetryLater

    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    with pytest.raises(RetryLater, match="does not exist on the mount"):
        handler_response(mount, {"Items": [{"Key": "ingest/missing.echo"}, {"Key": "ingest/a.echo"}]},
                         timeout=5.5)
    assert len(manifests(mount)) == 1


def test_sqs_reports_only_retryable_messages_as_batch_failures(mount: Path) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")

    def message(mid: str, body: Any) -> dict[str, Any]:
        return {"messageId": mid, "receiptHandle": "h", "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}

    def s3(key: str) -> dict[str, Any]:
        return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                             "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 1}}}]}

    event = {"Records": [message("ok", s3("ingest/a.echo")), message("late", s3("ingest/missing.echo")),
                         message("junk", "not json"), message("escape", s3("ingest/..%2F..%2Fetc%2Fpasswd"))]}
    response = handler_response(mount, event, timeout=5.5)
    assert response["batchItemFailures"] == [{"itemIdentifier": "late"}]
    by_message = {r["message_id"]: r["status"] for r in response["results"]}
    assert by_message == {"ok": "done", "late": "retryable", "junk": "refused", "escape": "refused"}


def test_s3_notifications_fanned_out_by_sns_are_processed_and_retried_like_s3s(mount: Path) -> None:
    """S3 -> SNS -> Lambda (an SNS event) and S3 -> SNS -> SQS (an SQS body that is SNS's
    envelope): the S3 event inside is the work; a file not yet visible raises for Lambda's
    retry (SNS invokes asynchronously) or fails only its own message (SQS)."""
    from shared.errors import RetryLater

    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")

    def s3(key: str) -> str:
        return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 6}}}]})

    def envelope(key: str) -> dict[str, Any]:
        return {"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                "Subject": "Amazon S3 Notification", "Message": s3(key)}

    def sns(key: str) -> dict[str, Any]:
        return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": envelope(key)}]}

    assert [r["status"] for r in handler_response(mount, sns("ingest/a.echo"))["results"]] == ["done"]
    with pytest.raises(RetryLater, match="does not exist on the mount"):
        handler_response(mount, sns("ingest/missing.echo"), timeout=5.5)
    event = {"Records": [{"messageId": mid, "receiptHandle": "h", "body": json.dumps(envelope(key)),
                          "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                          "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}
                         for mid, key in (("ok", "ingest/a.echo"), ("late", "ingest/missing.echo"))]}
    response = handler_response(mount, event, timeout=5.5)
    assert response["batchItemFailures"] == [{"itemIdentifier": "late"}]
    assert {r["message_id"]: r["status"] for r in response["results"]} == {"ok": "already-done", "late": "retryable"}


def test_an_sqs_record_without_a_message_id_is_a_refused_event_not_a_crash(mount: Path) -> None:
    """Only a hand-made event lacks messageId; a retryable message without one could not be
    named in the partial batch response (Powertools raised KeyError: the handler crashed)."""
    body = json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                    "s3": {"bucket": {"name": "b"}, "object": {"key": "ingest/missing.echo"}}}]})
    event = {"Records": [{"receiptHandle": "h", "body": body, "eventSource": "aws:sqs"}]}
    response = handler_response(mount, event, timeout=5.5)
    assert response["results"] == [] and "not S3 notifications" in response["refused"]


def test_invoke_command_runs_the_handler_on_an_event_file(mount: Path, tmp_path: Path, cli: Cli) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"input": "ingest/a.echo"}))
    code, response = cli("invoke", "test-echo", str(event), "--root", str(mount))
    assert code == 0 and response["results"][0]["status"] == "done"
    event.write_text(json.dumps({"input": "ingest/nope.echo"}))
    code, response = cli("invoke", "test-echo", str(event), "--root", str(mount), "--timeout", "5.2")
    assert code == 75 and response["retryable"] is True
    event.write_text(json.dumps({"input": "ingest/../../etc/passwd"}))
    code, response = cli("invoke", "test-echo", str(event), "--root", str(mount))
    assert code == 0 and response["results"][0]["status"] == "refused"


def test_the_deadline_stops_work_before_lambda_would_and_commits_nothing(mount: Path) -> None:
    from shared.errors import RetryLater

    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    with pytest.raises(RetryLater, match="time is nearly up"):
        handler_response(mount, {"input": "ingest/a.echo", "options": {"sleep": 0.6}}, timeout=0.5)
    assert not manifests(mount)


def test_lambda_handler_emits_metrics_and_structured_logs(mount: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from shared import observability
    from shared.runtime import make_handler
    from workers.registry import get_worker

    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    monkeypatch.setattr(observability, "_emit_metrics", False)
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO metrics")
    handler = make_handler(get_worker("test-echo"))
    context = LocalContext("test-echo", 60)
    observability.logger.setLevel("INFO")
    response = handler({"input": "ingest/a.echo"}, context)
    assert response["results"][0]["status"] == "done"
    captured = capsys.readouterr()
    emf = [json.loads(line) for line in captured.out.splitlines() if '"_aws"' in line]
    assert emf, "no EMF metrics were flushed"
    names = {m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"Processed", "BytesIn", "BytesOut", "DurationMs"} <= names
    assert any(doc.get("worker") == "test-echo" for doc in emf)
    logs = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    done = next(line for line in logs if line.get("message") == "input done")
    assert done["worker"] == "test-echo" and done["input"] == "ingest/a.echo" and done["run_id"]
    assert done["function_request_id"] == context.aws_request_id


def test_a_directory_is_refused_not_processed(mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mount / "ingest" / "folder.echo").mkdir()
    assert main(["run", "test-echo", "ingest/folder.echo", "--root", str(mount)]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not (mount / "workspace").exists()


def test_a_manifest_torn_by_a_crash_is_replaced_by_the_rerun(mount: Path, cli: Cli) -> None:
    import hashlib

    from shared.runs import run_id_for

    data = b"ECHO torn"
    (mount / "ingest" / "torn.echo").write_bytes(data)
    run_id = run_id_for("test-echo", "1", {"mode": "ok"}, hashlib.sha256(data).hexdigest())
    run_dir = mount / "workspace" / "test-echo" / "torn.echo" / run_id
    code = f"from pathlib import Path; from shared.runs import acquire_claim; acquire_claim(Path({str(run_dir)!r}), " \
           "lease_seconds=3600)"
    subprocess.run([sys.executable, "-c", code], check=True)  # a holder that then died
    (run_dir / "manifest.json").write_bytes(b"")  # killed between its exclusive create and its write
    code_, record = cli("run", "test-echo", "ingest/torn.echo", "--root", str(mount))
    assert code_ == 0 and record["run_id"] == run_id
    assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == run_id


def test_an_input_key_too_long_for_its_outputs_is_refused_before_any_write(
        mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = mount / "ingest" / ("d" * 200) / ("e" * 200) / ("f" * 200) / ("g" * 200)
    folder.mkdir(parents=True)
    (folder / ("h" * 150 + ".echo")).write_bytes(b"ECHO long")  # a 970-byte key: valid in S3
    rel = (folder / ("h" * 150 + ".echo")).relative_to(mount).as_posix()
    assert main(["run", "test-echo", rel, "--root", str(mount)]) == 2
    assert "outputs would get S3 keys over 1,024 bytes" in capsys.readouterr().err
    assert not (mount / "workspace").exists() or not list((mount / "workspace").rglob("*.json"))


def test_an_output_name_past_the_key_limit_is_a_permanent_error(mount: Path) -> None:
    from shared.errors import LimitExceeded
    from shared.runs import OutputDir

    out = OutputDir(mount / "workspace" / "w" / "run", mount / "workspace" / "w", name_budget=10)
    out.path("short.bin", "x/y")
    with pytest.raises(LimitExceeded, match="over 1024 bytes"):
        out.path("a-much-longer-name.bin", "x/y")


def test_backfill_leaves_companion_files_to_their_inputs(mount: Path,
                                                         monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:

    import echo_worker

    monkeypatch.setattr(echo_worker, "SPEC", echo_worker.SPEC._replace(companions=(".echo.cfg",)))
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    (mount / "ingest" / "a.echo.cfg").write_bytes(b"ECHO but a companion")
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    assert code == 0
    assert (summary["totals"]["done"], summary["companions"], summary["unrouted"]) == (1, 1, 0)


def test_backfill_options_can_be_scoped_to_one_worker(mount: Path, cli: Cli) -> None:
    from shared.options import options_for

    assert options_for("pdf-extract", {"q": "1", "pdf-extract:parallel": "1", "image-resize:sizes": "320"}) == {
        "q": "1", "parallel": "1"}
    (mount / "ingest" / "bad.echo").write_bytes(b"ECHO x")
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress",
                        "-o", "test-echo:mode=fail")
    assert code == 0 and summary["totals"]["failed"] == 1  # the scoped option reached test-echo only
    code, record = cli("run", "test-echo", "ingest/bad.echo", "--root", str(mount), "-o", "test-echo:mode=fail")
    assert code == 3 and record["options"] == {"mode": "fail"}


def test_a_retryable_stop_releases_the_run_for_the_next_invocation(mount: Path) -> None:
    from shared.errors import RetryLater

    # the holder (this very process) is alive: without a release the run stays claimed for its lease
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    with pytest.raises(RetryLater, match="time is nearly up"):
        handler_response(mount, {"input": "ingest/a.echo", "options": {"sleep": 0.6}}, timeout=0.5)
    response = handler_response(mount, {"input": "ingest/a.echo"})  # not "in progress" for the lease's length
    assert response["results"][0]["status"] == "done"


def test_backfill_refuses_a_symlink_that_leaves_ingest(mount: Path, tmp_path: Path, cli: Cli) -> None:
    outside = tmp_path / "outside.echo"
    outside.write_bytes(b"ECHO secret")
    (mount / "ingest" / "link.echo").symlink_to(outside)
    (mount / "ingest" / "real.echo").write_bytes(b"ECHO real")
    (mount / "ingest" / "alias.echo").symlink_to("real.echo")
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    assert code == 0 and summary["totals"]["done"] == 2  # real.echo and its in-ingest alias
    refused = [f for f in summary["failures"] if f["input"] == "ingest/link.echo"]
    assert refused and "outside ingest/" in refused[0]["error"]["message"]
    assert not list((mount / "workspace").rglob("link.echo"))
