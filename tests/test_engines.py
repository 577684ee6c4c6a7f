"""Backfill engines: ``lambda`` against a real S3 API and a Lambda Invoke endpoint that runs
the real handler; ``stepfunctions`` against moto's Step Functions; the person-facing report.

Why a local Invoke endpoint: moto's Lambda needs Docker to run a function, which CI does
not have. The endpoint below speaks Lambda's Invoke REST protocol (POST
/2015-03-31/functions/NAME/invocations, X-Amz-Function-Error, 429
TooManyRequestsException), so boto3 and the engine are exercised unchanged, and each
invoke runs :func:`shared.runtime.handle_event` on the s3fs mount, as the function would.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from s3support import ACCESS_KEY, REGION, SECRET_KEY, MotoS3, S3Mount

import workers.registry
from shared.backfill import Summary, WorkerTally, backfill
from shared.config import MountConfig
from shared.engines import LambdaEngine, StepFunctionsEngine, function_names
from shared.errors import RetryableError, UsageError
from shared.outcomes import Outcome, Status
from shared.report import html_report, table
from shared.runtime import handle_event
from workers.cli import LocalContext, main
from workers.registry import get_worker

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("echo_registered")


class InvokeEndpoint:
    """Lambda's Invoke API on 127.0.0.1, running the real handler for each call."""

    def __init__(self, cfg: MountConfig, throttle_first: int = 0) -> None:
        self.cfg = cfg
        self.throttle_left = throttle_first
        self.lock = threading.Lock()
        self.run_lock = threading.Lock()  # one handler at a time: the logger context is process-global
        self.in_flight = 0
        self.max_in_flight = 0
        self.invoked: list[str] = []
        self.throttled = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                match = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", self.path.split("?")[0])
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not match or not match.group(1).startswith("mountworks-"):
                    return self.reply(404, {"Type": "User", "message": "Function not found"},
                                      {"x-amzn-ErrorType": "ResourceNotFoundException"})
                with endpoint.lock:
                    if endpoint.throttle_left > 0:
                        endpoint.throttle_left -= 1
                        endpoint.throttled += 1
                        return self.reply(429, {"Type": "User", "message": "Rate Exceeded.",
                                                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
                                          {"x-amzn-ErrorType": "TooManyRequestsException"})
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    worker = match.group(1).removeprefix("mountworks-")
                    event = json.loads(body)
                    endpoint.invoked.append(event.get("Key", ""))
                    with endpoint.run_lock:
                        try:
                            result = handle_event(get_worker(worker), event, LocalContext(worker, 60), endpoint.cfg)
                        except RetryableError as exc:
                            return self.reply(200, {"errorType": type(exc).__name__, "errorMessage": exc.message},
                                              {"X-Amz-Function-Error": "Unhandled"})
                    self.reply(200, result, {})
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def reply(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> InvokeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def lambda_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", endpoint_url=url, region_name=REGION, aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 0, "mode": "standard"}))


@pytest.fixture
def endpoint_factory() -> Iterator[Any]:
    opened: list[InvokeEndpoint] = []

    def make(cfg: MountConfig, throttle_first: int = 0) -> InvokeEndpoint:
        endpoint = InvokeEndpoint(cfg, throttle_first).__enter__()
        opened.append(endpoint)
        return endpoint

    yield make
    for endpoint in opened:
        endpoint.__exit__()


@pytest.mark.s3
def test_lambda_engine_lists_skips_invokes_backs_off_and_reports(s3_mount: S3Mount, endpoint_factory: Any) -> None:
    for i in range(10):
        s3_mount.put(f"ingest/batch/in {i}+.echo", f"ECHO {i}".encode())
    s3_mount.put("ingest/batch/bad.echo", b"ECHO-BAD")
    s3_mount.put("ingest/batch/readme.txt", b"nobody takes me")
    s3_mount.put("elsewhere/ignored.echo", b"ECHO outside")
    cfg = MountConfig.load(s3_mount.root)
    spec = get_worker("test-echo")
    # three inputs were already committed (say, by S3 events): the engine must not invoke them
    for i in range(3):
        handle_event(spec, {"input": f"ingest/batch/in {i}+.echo"}, LocalContext("test-echo", 60), cfg)

    endpoint = endpoint_factory(cfg, throttle_first=3)
    engine = LambdaEngine(cfg, [spec], s3_mount.bucket, function_names([spec], [], None),
                          lambda_client(endpoint.url), s3_mount.s3, jobs=3, first_backoff=0.05)
    summary = engine.run()
    totals = summary.to_json()["totals"]
    assert (summary.files, summary.unrouted) == (12, 1)
    assert (totals["done"], totals["skipped"], totals["failed"]) == (7, 3, 1), summary.to_json()
    assert summary.throttled == endpoint.throttled == 3
    assert sorted(endpoint.invoked) == sorted([f"ingest/batch/in {i}+.echo" for i in range(3, 10)]
                                              + ["ingest/batch/bad.echo"])
    assert 1 <= endpoint.max_in_flight <= 3
    assert [(f["input"], f["error"]["code"]) for f in summary.failures] == [("ingest/batch/bad.echo",
                                                                             "corrupt-input")]
    manifests = [k for k in s3_mount.keys("workspace/test-echo/") if k.endswith("/manifest.json")]
    assert len(manifests) == 10  # exactly one commit per good input, read back through the S3 API

    again = LambdaEngine(cfg, [spec], s3_mount.bucket, function_names([spec], [], None),
                         lambda_client(endpoint.url), s3_mount.s3, jobs=3).run()
    assert again.to_json()["totals"]["skipped"] == 11 and len(endpoint.invoked) == 8  # no new invokes


class ScriptedInvokeEndpoint:
    """Lambda's Invoke API on 127.0.0.1 that answers ``body`` after ``delay`` seconds, or
    drops the connection unanswered (``drop``): what a long or a lost synchronous invoke
    looks like to the client. It records every Invoke it received."""

    def __init__(self, delay: float = 0.0, drop: bool = False) -> None:
        self.invoked: list[str] = []
        self.active = self.most_active = 0  # invokes being answered at once, and the most there were
        lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    endpoint.invoked.append(json.loads(body)["Key"])
                    endpoint.active += 1
                    endpoint.most_active = max(endpoint.most_active, endpoint.active)
                time.sleep(delay)
                with lock:
                    endpoint.active -= 1
                if drop:
                    self.close_connection = True
                    return
                data = json.dumps({"results": [{"status": "done", "run_id": "r" * 16}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, moto_s3: MotoS3) -> Iterator[Any]:
    """A factory of scripted endpoints, with the AWS SDK's environment pointing at them and
    at moto's S3 (as ``mountworks backfill --engine lambda`` on a machine without the mount)."""
    opened: list[ScriptedInvokeEndpoint] = []
    for name, value in {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                        "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL_S3": moto_s3.endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    def make(**kwargs: Any) -> ScriptedInvokeEndpoint:
        endpoint = ScriptedInvokeEndpoint(**kwargs)
        opened.append(endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint.url)
        return endpoint

    yield make
    for endpoint in opened:
        endpoint.close()


def _bucket_with(moto_s3: MotoS3, name: str, objects: dict[str, bytes]) -> str:
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=name)
    for key, data in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=data)
    return name


@pytest.mark.slow
def test_an_invoke_that_takes_70_seconds_is_sent_once_and_the_backfill_exits_0(
        scripted: Any, moto_s3: MotoS3, capsys: pytest.CaptureFixture[str]) -> None:
    """botocore's defaults (60 s read timeout, three attempts) would invoke it three times."""
    bucket = _bucket_with(moto_s3, "long-invoke", {"ingest/clips/long clip+1.echo": b"ECHO long"})
    endpoint = scripted(delay=70)
    code = main(["backfill", "--engine", "lambda", "--bucket", bucket, "--worker", "test-echo", "--jobs", "1",
                 "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert endpoint.invoked == ["ingest/clips/long clip+1.echo"]
    assert summary["totals"]["done"] == 1


def test_a_lambda_backfill_keeps_to_each_worker_s_deployed_concurrency(scripted: Any, moto_s3: MotoS3) -> None:
    """--jobs bounds all invokes; a worker's queue maximum concurrency (its deploy.py) bounds its own."""
    from shared.engines import LambdaEngine, aws_client
    from workers.registry import deployed_concurrency, get_worker

    bucket = _bucket_with(moto_s3, "capacity", {f"ingest/in{i:02d}.echo": b"ECHO %d" % i for i in range(12)})
    endpoint = scripted(delay=0.3)
    engine = LambdaEngine(None, [get_worker("test-echo")], bucket, {"test-echo": "mountworks-test-echo"},
                          aws_client("lambda"), aws_client("s3"), jobs=8, concurrency={"test-echo": 2})
    summary = engine.run()
    assert summary.total("done") == 12 and len(endpoint.invoked) == 12
    assert endpoint.most_active == 2  # 8 jobs, but never more than the worker's 2 at once
    for worker in ("image-resize", "pdf-extract", "video-transcode", "parquet-normalize"):
        module = importlib.import_module(workers.registry.WORKERS[worker] + ".deploy")
        assert deployed_concurrency(worker) == module.DEPLOY.max_concurrency
    assert deployed_concurrency("test-echo") is None  # not deployed by this template: --jobs alone


def test_without_a_mount_keys_are_routed_by_their_first_bytes(scripted: Any, moto_s3: MotoS3,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bucket = _bucket_with(moto_s3, "no-mount-routing", {
        "data/mw/ingest/a b+c.echo": b"ECHO a",          # routed by content under the bucket prefix
        "data/mw/ingest/NAMED.TXT": b"ECHO misnamed",    # the extension is only a hint
        "data/mw/ingest/not-echo.echo": b"PLAIN text",   # named like an input, is none
        "data/mw/ingest/empty.echo": b"",
        "data/mw/elsewhere/x.echo": b"ECHO outside",
    })
    endpoint = scripted()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MOUNTWORKS_BUCKET_PREFIX", "data/mw")
        code = main(["backfill", "--engine", "lambda", "--bucket", bucket, "--worker", "test-echo", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert sorted(endpoint.invoked) == ["data/mw/ingest/NAMED.TXT", "data/mw/ingest/a b+c.echo"]
    assert (summary["files"], summary["unrouted"]) == (4, 2)


def test_without_a_mount_a_key_is_sniffed_on_as_many_bytes_as_its_worker_asks(scripted: Any, moto_s3: MotoS3,
                                                                              capsys: pytest.CaptureFixture[str]
                                                                              ) -> None:
    """A transport stream is known by 8 packets (1,504 bytes): read 64 bytes, as the S3 router
    did, it was unrouted, while the same file on a mount was transcoded."""
    packet = b"\x47\x40\x00\x10" + b"\x00\xff" * 92
    bucket = _bucket_with(moto_s3, "sniff-window", {"ingest/rec.bin": packet * 16})
    endpoint = scripted()
    code = main(["backfill", "--engine", "lambda", "--bucket", bucket, "--worker", "video-transcode", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert endpoint.invoked == ["ingest/rec.bin"] and summary["unrouted"] == 0


def test_an_unanswered_invoke_is_retryable_and_never_sent_again(scripted: Any, moto_s3: MotoS3) -> None:
    """A dropped connection may mean the function runs: the engine must not invoke it again."""
    import boto3

    from shared.engines import client_config

    bucket = _bucket_with(moto_s3, "dropped-invoke", {"ingest/x.echo": b"ECHO x"})
    endpoint = scripted(drop=True)
    spec = get_worker("test-echo")
    engine = LambdaEngine(None, [spec], bucket, function_names([spec], [], None),
                          boto3.client("lambda", config=client_config("lambda")), boto3.client("s3"), jobs=1)
    summary = engine.run()
    assert endpoint.invoked == ["ingest/x.echo"]
    assert [(f["status"], f["error"]["code"]) for f in summary.failures] == [("retryable", "invoke-unanswered")]
    assert summary.exit_code == 75


def test_a_function_error_maps_to_retryable_or_internal() -> None:
    """What Lambda returns when the handler raises: RetryLater is retryable, anything else a bug."""
    spec = get_worker("test-echo")

    def outcome(body: bytes) -> Outcome:
        return LambdaEngine._outcome(spec, "ingest/late.echo", "mountworks-test-echo",
                                     {"FunctionError": "Unhandled", "Payload": _Body(body)}, 0.0)

    late = outcome(b'{"errorType": "RetryLater", "errorMessage": "input is not visible on the mount"}')
    assert (late.status, late.code) == ("retryable", "RetryLater")
    bug = outcome(b'{"errorType": "RuntimeError", "errorMessage": "1 input(s) hit an internal error"}')
    assert bug.status == "internal-error"
    timeout = outcome(b'{"errorMessage": "2026-01-01 Task timed out after 900.00 seconds"}')
    assert timeout.status == "retryable"


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def test_function_names_from_options_and_pattern() -> None:
    specs = [get_worker("test-echo")]
    assert function_names(specs, [], None) == {"test-echo": "mountworks-test-echo"}
    assert function_names(specs, [], "prod-{worker}-fn") == {"test-echo": "prod-test-echo-fn"}
    assert function_names(specs, ["test-echo=arn:aws:lambda:eu-west-1:1:function:x"], None) == {
        "test-echo": "arn:aws:lambda:eu-west-1:1:function:x"}
    with pytest.raises(UsageError, match="WORKER=FUNCTION"):
        function_names(specs, ["nonsense"], None)
    with pytest.raises(UsageError, match="not selected"):
        function_names(specs, ["image-resize=x"], None)
    with pytest.raises(UsageError, match="worker"):
        function_names(specs, [], "fixed-name")


def test_stepfunctions_engine_starts_one_execution_per_worker_and_follows_it() -> None:
    import boto3
    from moto import mock_aws

    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    with mock_aws():
        client = boto3.client("stepfunctions", region_name=REGION)
        arn = client.create_state_machine(name="mountworks-backfill", definition=json.dumps(definition),
                                          roleArn="arn:aws:iam::123456789012:role/backfill")["stateMachineArn"]
        specs = [get_worker("test-echo"), get_worker("image-resize")]
        engine = StepFunctionsEngine(arn, specs, client, options={"mode": "ok"}, poll_seconds=0.05,
                                     timeout_seconds=0.2)
        summary, executions = engine.run("photos/2024")
        assert summary.interrupted  # moto keeps executions RUNNING: we stopped watching, they go on
        assert [e["status"] for e in executions] == ["RUNNING", "RUNNING"]
        inputs = [json.loads(client.describe_execution(executionArn=e["execution_arn"])["input"])
                  for e in executions]
        assert inputs == [{"worker": "test-echo", "prefix": "photos/2024/", "options": {"mode": "ok"}},
                          {"worker": "image-resize", "prefix": "photos/2024/", "options": {"mode": "ok"}}]
        # named per worker and run: a StartExecution the SDK retries finds the same execution
        names = [client.describe_execution(executionArn=e["execution_arn"])["name"] for e in executions]
        assert [n.rsplit("-", 2)[0] for n in names] == ["test-echo", "image-resize"]
        assert len({n.removeprefix("test-echo-").removeprefix("image-resize-") for n in names}) == 1
        client.stop_execution(executionArn=executions[0]["execution_arn"], error="Operator", cause="stopped")
        stopped = engine.progress_of(executions[0]["execution_arn"])
        assert stopped["status"] == "ABORTED"


# ------------------------------------------------------------------------- report


class _Tables(HTMLParser):
    """Collects table cells by table id, and the SVG bars."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: str | None = None
        self.bars: list[dict[str, str]] = []
        self.cell: list[str] | None = None
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.current = a.get("id", "")
            self.tables[self.current] = []
        elif tag == "tr" and self.current is not None:
            self.tables[self.current].append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = []
        elif tag == "rect" and "data-count" in a:
            self.bars.append(a)
        elif tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.current is not None:
            self.tables[self.current][-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def test_the_summary_table_and_html_report_show_the_same_figures(mount: Path, tmp_path: Path) -> None:
    for i in range(6):
        (mount / "ingest" / f"ok{i}.echo").write_bytes(f"ECHO {i}".encode())
    (mount / "ingest" / "bad.echo").write_bytes(b"ECHO-BAD")
    cfg = MountConfig.load(mount)
    summary = backfill(cfg, [get_worker("test-echo")], jobs=2)
    text = table(summary)
    row = next(line for line in text.splitlines() if line.startswith("test-echo"))
    assert row.split()[:5] == ["test-echo", "6", "0", "1", "0"]
    assert "corrupt-input  test-echo  ingest/bad.echo" in text and "slowest:" in text

    page = html_report(summary, {"root": str(mount)})
    parsed = _Tables()
    parsed.feed(page)
    workers = parsed.tables["workers"]
    assert workers[0][:5] == ["worker", "done", "skipped", "failed", "retryable"]
    assert workers[1][:5] == ["test-echo", "6", "0", "1", "0"] and workers[2][0] == "total"
    assert parsed.tables["failures"][1][:3] == ["corrupt-input", "test-echo", "ingest/bad.echo"]
    assert len(parsed.tables["slowest"]) == 1 + min(6, 5)
    assert sum(int(b["data-count"]) for b in parsed.bars) == 7  # every done or failed run is in the chart
    assert parsed.scripts == 0 and parsed.external == []  # opens from disk, no network, no JS


def test_backfill_cli_prints_the_table_on_stderr_and_writes_the_report(mount: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from workers.cli import main

    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    report = tmp_path / "report.html"
    code = main(["backfill", "--root", str(mount), "--worker", "test-echo", "--report", str(report), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["totals"]["done"] == 1
    assert "worker" in captured.err and "test-echo" in captured.err
    assert "<svg" in report.read_text()
    code = main(["backfill", "--root", str(mount), "--worker", "test-echo", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == "" and json.loads(captured.out)["totals"]["skipped"] == 1


def test_summary_counts_stepfunctions_items_like_the_local_engine() -> None:
    summary = Summary(engine="stepfunctions")
    summary.workers["x"] = WorkerTally(done=3, retryable=1)
    summary.add(Outcome(Status.FAILED, "ingest/y", "x", code="corrupt-input", message="bad", duration_ms=5))
    assert summary.exit_code == 75 and "x" in table(summary)
