"""Faults of an S3-backed mount, made for real on moto's server and an s3fs mount of it.

Used by tests/test_s3_faults.py (once each) and by ``scripts/reliability.py --s3-faults``
(as many trials as asked). Each scenario starts a real ``mountworks run`` of the echo test
worker, breaks the storage under it, and checks the contract: the run ends retryable
(exit 75) without a traceback, nothing torn is left in the bucket (every record parses,
no error record, ``verify`` holds), and a re-run once the storage is back commits.

- ``server_stopped``: moto is frozen (SIGSTOP) while the run writes, then thawed (SIGCONT);
  s3fs's requests time out as they would against an unreachable endpoint.
- ``cache_disk_full``: s3fs keeps its cache and temporary files on a small tmpfs, which is
  filled before the run (root only).
- ``write_eio``: s3fs talks to moto through a small HTTP proxy that answers the run's
  uploads with ``500 InternalError``; s3fs gives up and the write fails with ``EIO``.
"""

from __future__ import annotations

import errno
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s3support import MotoS3, S3Mount, free_port

TESTS = Path(__file__).resolve().parent
LAUNCH = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import workers.registry as r; "
    "r.WORKERS['test-echo'] = 'echo_worker'; from workers.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
# s3fs gives up quickly on a dead endpoint (the defaults wait minutes); later -o options win
FAST_FAIL_OPTIONS = ("stat_cache_expire=1", "enable_noobj_cache", "connect_timeout=2", "readwrite_timeout=4",
                     "retries=1")
INPUT = b"ECHO " + b"s3 fault trial " * 4000  # ~60 kB: more than one write
RUN_TIMEOUT = 240


def mountworks(root: Path, *argv: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LAUNCH, *argv, "--root", str(root)], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _put_input(mount: S3Mount, key: str) -> None:
    mount.put(key, INPUT)
    deadline = time.monotonic() + 20
    while not (mount.root / key).is_file():
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} never showed on the mount")
        time.sleep(0.1)


def problems_in_bucket(mount: S3Mount) -> list[str]:
    """What a reader of the bucket would trip on: a torn or unexpected record, a listed output
    that is missing or wrong (``verify`` through the mount)."""
    from shared.config import MountConfig
    from shared.verify import verify_tree

    found = []
    for key in mount.keys("workspace/"):
        name = key.rsplit("/", 1)[-1]
        if name in ("manifest.json", "error.json"):
            try:
                json.loads(mount.get(key))
            except ValueError:
                found.append(f"torn record {key}")
            if name == "error.json":
                found.append(f"a permanent error was recorded for a storage fault: {key}")
    found += verify_tree(MountConfig.load(mount.root)).problems
    return found


def _expect_retryable(result: subprocess.CompletedProcess[str], what: str) -> list[str]:
    failures = []
    if result.returncode != 75:
        failures.append(f"{what}: exit {result.returncode}, expected 75: {result.stderr.strip()[-400:]}")
    if "Traceback" in result.stderr:
        failures.append(f"{what}: a traceback on stderr")
    return failures


def _rerun_commits(mount: S3Mount, rel: str, what: str) -> list[str]:
    deadline = time.monotonic() + 60
    while True:  # the storage is back; s3fs may need a moment to reconnect
        result = mountworks(mount.root, "run", "test-echo", rel)
        if result.returncode != 75 or time.monotonic() > deadline:
            break
        time.sleep(1)
    failures = []
    if result.returncode != 0:
        failures.append(f"{what}: re-run exited {result.returncode}: {result.stderr.strip()[-400:]}")
    manifests = [k for k in mount.keys("workspace/test-echo/") if k.endswith("/manifest.json")]
    if result.returncode == 0 and len(manifests) != 1:
        failures.append(f"{what}: {len(manifests)} manifests in the bucket after the re-run, expected 1")
    return failures


def server_stopped(server: MotoS3, mount: S3Mount, trial: int = 0) -> dict[str, Any]:
    """Freeze moto while the run is writing its outputs; thaw it after the run gave up."""
    rel = f"ingest/stopped-{trial}/a.echo"
    _put_input(mount, rel)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "run", "test-echo", rel, "--root", str(mount.root),
                             "-o", "sleep=2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # claimed, first output open: the upload happens when it is closed
    server.process.send_signal(signal.SIGSTOP)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        server.process.send_signal(signal.SIGCONT)
    ended = time.monotonic() - started
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    failures = _expect_retryable(result, "run while moto was stopped")
    failures += problems_in_bucket(mount)
    failures += _rerun_commits(mount, rel, "server stopped")
    failures += problems_in_bucket(mount)
    return {"exit_code": proc.returncode, "ended_after_s": round(ended, 1), "message": _message(err),
            "failures": failures}


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill ``folder``'s file system but ``leave`` bytes; returns the filler (remove it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        chunk = 1 << 20
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
        if leave:
            os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)
    return filler


def cache_disk_full(make_mount: Callable[..., S3Mount], cache: Path, trial: int = 0) -> dict[str, Any]:
    """s3fs's cache and temporary files on a full disk: the run's writes cannot be staged."""
    mount = make_mount(cache_options=(*FAST_FAIL_OPTIONS, f"use_cache={cache}", f"tmpdir={cache}",
                                      "multipart_size=5", "parallel_count=1"))  # s3fs needs 5 MB free to mount
    mount.put("ingest/", b"")
    rel = f"ingest/cache-{trial}/a.echo"
    _put_input(mount, rel)
    filler = fill(cache)
    result = mountworks(mount.root, "run", "test-echo", rel)
    failures = _expect_retryable(result, "run with s3fs's cache disk full")
    filler.unlink()
    failures += problems_in_bucket(mount)
    failures += _rerun_commits(mount, rel, "cache disk full")
    failures += problems_in_bucket(mount)
    return {"exit_code": result.returncode, "message": _message(result.stderr), "failures": failures}


class FailingProxy(http.server.ThreadingHTTPServer):
    """An HTTP proxy in front of moto that answers uploads under ``workspace/`` with a 500
    while ``failing`` is set: to s3fs, S3 refusing the write (it returns EIO)."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.failing = threading.Event()
        self.refused = 0
        super().__init__(("127.0.0.1", free_port()), _ProxyHandler)

    @staticmethod
    def fails(path: str) -> bool:
        """The uploads refused: the run's files (outputs, records), not its folders or claims."""
        return "/workspace/" in path and not path.endswith("/") and ".claim." not in path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FailingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        bucket_path = self.path.split("?", 1)[0]
        if self.server.failing.is_set() and self.command in ("PUT", "POST") and self.server.fails(bucket_path):
            self.server.refused += 1
            payload = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"
            self.send_response(500)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                    self.send_header(key, value)
            # a HEAD's length is the object's (its body is empty)
            self.send_header("Content-Length", response.getheader("Content-Length") or "0"
                             if self.command == "HEAD" else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@contextmanager
def failing_proxy(server: MotoS3) -> Iterator[FailingProxy]:
    proxy = FailingProxy(server.endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def write_eio(make_mount: Callable[..., S3Mount], server: MotoS3, trial: int = 0) -> dict[str, Any]:
    """S3 answers the run's uploads with errors: s3fs fails the writes with EIO."""
    with failing_proxy(server) as proxy:
        mount = make_mount(cache_options=FAST_FAIL_OPTIONS, endpoint=proxy.endpoint)
        mount.put("ingest/", b"")
        rel = f"ingest/eio-{trial}/a.echo"
        _put_input(mount, rel)
        proxy.failing.set()
        result = mountworks(mount.root, "run", "test-echo", rel)
        proxy.failing.clear()
        failures = _expect_retryable(result, "run whose uploads failed")
        if proxy.refused == 0:
            failures.append("the proxy refused no upload: the fault was not injected")
        failures += problems_in_bucket(mount)
        failures += _rerun_commits(mount, rel, "write EIO")
        failures += problems_in_bucket(mount)
        return {"exit_code": result.returncode, "uploads_refused": proxy.refused,
                "message": _message(result.stderr), "failures": failures}


def _message(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("mountworks:")]
    return lines[-1][:300] if lines else stderr.strip()[-300:]
