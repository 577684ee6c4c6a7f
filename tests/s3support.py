"""Real S3 underneath the tests: moto's S3 server over HTTP, mounted with s3fs (FUSE).

Nothing here is a mock of the file system: the workers open paths on a FUSE mount whose
every ``open``/``write``/``close`` becomes an S3 request (HEAD, GET, PUT) to a real S3 API
server started by the tests. That is what makes the mount behave like object storage:
no hard links (``EOPNOTSUPP``), renames that are a copy plus a delete, metadata caches
that make a new object show up late.

Fixtures (conftest.py loads this module as a plugin, so every test module can use them):
- ``moto_s3`` (session): ``python -m moto.server`` on 127.0.0.1 and a free port.
- ``s3_mount``: a fresh bucket mounted at a temporary directory, unmounted afterwards.
- ``mount_factory``: the same with chosen s3fs cache options, or a second mount of the
  same bucket (two clients of one bucket, as two Lambda environments are).

Both skip cleanly, with the reason, where ``/dev/fuse`` or ``s3fs`` is missing, unless
``MOUNTWORKS_REQUIRE_S3=1`` is set (CI sets it): then a missing piece is a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

REGION = "us-east-1"
ACCESS_KEY = "mountworks-test"
SECRET_KEY = "mountworks-test-secret"
REQUIRE_ENV = "MOUNTWORKS_REQUIRE_S3"

# The s3fs options every test mount uses, and why:
# - use_path_request_style + url: moto serves http://127.0.0.1:PORT/BUCKET/KEY.
# - stat_cache_expire: object metadata is cached this long (default 900 s!), so an object
#   uploaded through the S3 API after a miss shows up late, as on a real mount.
# - enable_noobj_cache: a "no such object" answer is cached too (the visibility delay).
# - no use_cache: file contents are not cached on local disk; every open re-reads S3.
BASE_OPTIONS = ("use_path_request_style", "dbglevel=warn", "retries=2", "connect_timeout=5",
                "readwrite_timeout=30")
DEFAULT_CACHE_OPTIONS = ("stat_cache_expire=1", "enable_noobj_cache")


def _unavailable() -> str | None:
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is not available (FUSE mounts need it; run with --device /dev/fuse)"
    if shutil.which("s3fs") is None:
        return "s3fs is not installed (apt-get install s3fs fuse3)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount is not installed (apt-get install fuse3)"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so the S3-backed tests must run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class MotoS3:
    """A running moto server: its endpoint and boto3 clients bound to it."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        """moto's request log (one line per HTTP request it served), without the ANSI colours
        some werkzeug versions put around the request line of non-200 answers."""
        return ANSI_ESCAPE.sub("", self.log.read_text(errors="replace"))

    def client(self, service: str = "s3") -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(retries={"max_attempts": 2}))


@contextlib.contextmanager
def running_moto(log_dir: Path) -> Iterator[MotoS3]:
    """moto's server in its own process: a real S3 API over HTTP on 127.0.0.1 (also used by
    ``scripts/reliability.py --s3-faults``, outside pytest)."""
    port = free_port()
    log = log_dir / "moto.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT)
    server = MotoS3(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                skip_or_fail(f"moto server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's server, shared by the session's S3-backed tests."""
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@dataclass
class S3Mount:
    """A bucket mounted with s3fs: the mount root is the bucket's root."""

    bucket: str
    root: Path
    server: MotoS3
    options: tuple[str, ...]
    log: Path
    s3: Any = field(repr=False, default=None)

    def put(self, key: str, data: bytes) -> dict[str, Any]:
        """Upload through the S3 API (as an uploader would), not through the mount."""
        response: dict[str, Any] = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return response

    def get(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.get(key)).hexdigest()

    def keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys


def _unmount(root: Path) -> None:
    for command in (["fusermount3", "-u", str(root)], ["fusermount", "-u", str(root)], ["umount", str(root)],
                    ["fusermount3", "-uz", str(root)], ["umount", "-l", str(root)]):
        if shutil.which(command[0]) is None:
            continue
        if subprocess.run(command, capture_output=True, timeout=30).returncode == 0:
            return


def mount_bucket(server: MotoS3, bucket: str, root: Path, workdir: Path,
                 cache_options: tuple[str, ...] = DEFAULT_CACHE_OPTIONS) -> S3Mount:
    """Mount ``bucket`` at ``root`` with s3fs (daemonized); wait until the mount answers."""
    reason = _unavailable()
    if reason:
        skip_or_fail(reason)
    passwd = workdir / f"passwd-{uuid.uuid4().hex[:8]}"
    passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
    passwd.chmod(0o600)
    log = workdir / f"s3fs-{root.name}.log"
    root.mkdir(parents=True, exist_ok=True)
    options = (f"url={server.endpoint}", f"passwd_file={passwd}", f"logfile={log}", *BASE_OPTIONS, *cache_options)
    command = ["s3fs", bucket, str(root)]
    for option in options:
        command += ["-o", option]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        skip_or_fail(f"s3fs could not mount the bucket: {result.stderr.strip() or result.stdout.strip()}")
    deadline = time.monotonic() + 20
    while not os.path.ismount(root):
        if time.monotonic() > deadline:
            skip_or_fail(f"s3fs did not show a mount at {root}: {log.read_text(errors='replace')[-2000:]}"
                         if log.exists() else f"s3fs did not show a mount at {root}")
        time.sleep(0.05)
    return S3Mount(bucket, root, server, options, log, server.client())


MountFactory = Callable[..., S3Mount]


@pytest.fixture
def mount_factory(moto_s3: MotoS3, tmp_path: Path) -> Iterator[MountFactory]:
    """Make mounts: ``mount_factory()`` a new bucket, ``mount_factory(bucket=b)`` another
    client of an existing one, ``cache_options=(...)`` other s3fs cache settings."""
    with mounts(moto_s3, tmp_path) as make:
        yield make


@contextlib.contextmanager
def mounts(moto_s3: MotoS3, tmp_path: Path) -> Iterator[MountFactory]:
    """The mount maker of :func:`mount_factory`; every mount it made is unmounted on exit."""
    mounted: list[Path] = []

    def make(bucket: str | None = None, cache_options: tuple[str, ...] = DEFAULT_CACHE_OPTIONS,
             endpoint: str | None = None) -> S3Mount:
        """``endpoint``: reach moto through this URL instead (a fault-injecting proxy)."""
        if bucket is None:
            bucket = f"mw-{uuid.uuid4().hex[:12]}"
            moto_s3.client().create_bucket(Bucket=bucket)
        root = tmp_path / f"mnt{len(mounted)}"
        server = moto_s3 if endpoint is None else MotoS3(endpoint, moto_s3.process, moto_s3.log)
        mount = mount_bucket(server, bucket, root, tmp_path, cache_options)
        mounted.append(root)
        return mount

    try:
        yield make
    finally:
        from recordcheck import problems  # what the test committed, read before the mount goes

        found = [p for root in mounted for p in problems(root)]
        for root in reversed(mounted):
            _unmount(root)
        assert found == [], "records on the S3 mount that break the published schemas:\n" + "\n".join(found[:20])


@pytest.fixture
def s3_mount(mount_factory: MountFactory) -> S3Mount:
    """A fresh bucket mounted at a temporary directory (with ``ingest/`` created)."""
    mount = mount_factory()
    mount.put("ingest/", b"")  # the folder object an S3 console would make; keeps ingest/ listed
    return mount


# ------------------------------------------------------------------------- S3 events


def notification_key(key: str) -> str:
    """A key as S3 writes it in event notifications: form-encoded (space '+', plus '%2B')."""
    return quote_plus(key, safe="/")


def s3_notification(bucket: str, key: str, put: dict[str, Any], size: int,
                    event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 event notification exactly as S3 sends it to Lambda (eventVersion 2.1)."""
    etag = str(put.get("ETag", "")).strip('"')
    obj: dict[str, Any] = {"key": notification_key(key), "size": size, "eTag": etag,
                           "sequencer": f"{int(time.time() * 1e6):018X}"}
    if put.get("VersionId"):
        obj["versionId"] = put["VersionId"]
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": "example"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "mountworks-ingest",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3EXAMPLE"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }]}


def eventbridge_event(bucket: str, key: str, put: dict[str, Any], size: int) -> dict[str, Any]:
    """An EventBridge "Object Created" event as S3 sends it.

    The key is form-encoded as in notifications: that is how AWS's own parser (Powertools'
    ``S3EventBridgeNotificationObject.key``, which the core uses) reads it, decoding once.
    """
    obj: dict[str, Any] = {"key": notification_key(key), "size": size, "etag": str(put.get("ETag", "")).strip('"'),
                           "sequencer": f"{int(time.time() * 1e6):018X}"}
    if put.get("VersionId"):
        obj["version-id"] = put["VersionId"]
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
        "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION, "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": obj,
                   "request-id": uuid.uuid4().hex[:16].upper(), "requester": "123456789012",
                   "source-ip-address": "127.0.0.1", "reason": "PutObject"},
    }
