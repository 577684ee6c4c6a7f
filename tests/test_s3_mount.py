"""mountworks on files that live in S3: moto's S3 server mounted with s3fs (FUSE).

Uploads go through the S3 API, events are built as S3 sends them, the handler runs on the
mount, and the results are read back as S3 objects. See tests/s3support.py for the mount.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from s3support import S3Mount, eventbridge_event, s3_notification
from worker_samples import sample_for

import workers.registry
from shared.config import MountConfig
from shared.errors import RetryLater
from shared.runtime import DEADLINE_MARGIN_SECONDS, handle_event
from workers.cli import LocalContext
from workers.registry import get_worker

pytestmark = pytest.mark.s3

TESTS = Path(__file__).resolve().parent
REGISTERED = sorted(workers.registry.WORKERS)




def run_handler(mount: S3Mount, worker: str, event: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    return handle_event(get_worker(worker), event, LocalContext(worker, timeout), MountConfig.load(mount.root))


def committed_manifests(mount: S3Mount, worker: str) -> list[str]:
    """Manifest keys as the S3 API lists them (not as the mount shows them)."""
    return [k for k in mount.keys(f"workspace/{worker}/") if k.endswith("/manifest.json")]


def deletes_in_bucket(mount: S3Mount, since: int) -> list[str]:
    """DELETE requests moto served for this bucket after byte ``since`` of its log.

    s3fs implements rename as copy + DELETE of the source, so no DELETE means no rename.
    The server writes its log asynchronously: a marker request is made last and waited
    for, so every earlier request is in the text that is read.
    """
    marker = f"log-marker-{uuid.uuid4().hex}"
    with contextlib.suppress(Exception):
        mount.get(marker)  # a 404, logged after everything before it
    deadline = time.monotonic() + 10
    text = _moto_log(mount)[since:]
    while marker not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = _moto_log(mount)[since:]
    assert marker in text, "moto's request log did not show the marker request"
    return [line for line in text.splitlines() if f'"DELETE /{mount.bucket}/' in line]


def _moto_log(mount: S3Mount) -> str:
    return mount.server.log_text()


# -------------------------------------------------------------------- end to end


@pytest.mark.parametrize("worker", REGISTERED)
def test_every_worker_end_to_end_on_an_s3_mount(s3_mount: S3Mount, worker: str) -> None:
    """Upload by the S3 API, S3 notification -> handler on the mount, outputs read back by the S3 API."""
    name, data = sample_for(worker)
    key = f"ingest/{worker}/up load+1 é {name}"
    put = s3_mount.put(key, data)
    log_mark = len(_moto_log(s3_mount))

    event = s3_notification(s3_mount.bucket, key, put, len(data))
    assert "+" in event["Records"][0]["s3"]["object"]["key"] and "%2B" in event["Records"][0]["s3"]["object"]["key"]
    response = run_handler(s3_mount, worker, event)
    assert [r["status"] for r in response["results"]] == ["done"], response

    manifests = committed_manifests(s3_mount, worker)
    assert len(manifests) == 1, manifests
    manifest = json.loads(s3_mount.get(manifests[0]))
    notified = event["Records"][0]["s3"]["object"]
    assert manifest["input"] == {"path": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "etag": put["ETag"].strip('"'), "sequencer": notified["sequencer"],
                                 **({"version_id": put["VersionId"]} if put.get("VersionId") else {})}
    assert manifests[0] == f"workspace/{worker}/{key.removeprefix('ingest/')}/{manifest['run_id']}/manifest.json"
    assert manifest["outputs"], "a worker that commits must list its outputs"
    for output in manifest["outputs"]:  # each output path is an S3 key, since the mount root is the bucket root
        assert s3_mount.sha256(output["path"]) == output["sha256"], output["path"]
        assert len(s3_mount.get(output["path"])) == output["size"]
    # s3fs turns a rename into copy + DELETE: a worker that renamed would show a DELETE of an
    # output here; the only DELETEs are of the claim files, which do not outlive the commit
    deletes = deletes_in_bucket(s3_mount, log_mark)
    assert all("/.claim." in line for line in deletes), deletes
    assert [k for k in s3_mount.keys(f"workspace/{worker}/") if "/.claim." in k] == []

    # EventBridge delivers the same object again (at-least-once): exactly one commit remains
    again = run_handler(s3_mount, worker, eventbridge_event(s3_mount.bucket, key, put, len(data)))
    assert [r["status"] for r in again["results"]] == ["already-done"]
    assert again["results"][0]["run_id"] == manifest["run_id"]
    assert committed_manifests(s3_mount, worker) == manifests


def test_the_s3fs_mount_really_is_object_storage(s3_mount: S3Mount) -> None:
    """The facts the no-link/no-rename design answers: checked, not assumed."""
    folder = s3_mount.root / "workspace" / "probe"
    folder.mkdir(parents=True)
    (folder / "a").write_bytes(b"A")
    with pytest.raises(OSError) as caught:
        os.link(folder / "a", folder / "b")
    assert caught.value.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM, errno.ENOSYS)
    mark = len(_moto_log(s3_mount))
    os.rename(folder / "a", folder / "c")  # works, but as a server-side copy and a delete
    assert "workspace/probe/c" in s3_mount.keys("workspace/probe/")
    assert deletes_in_bucket(s3_mount, mark), "s3fs rename was expected to DELETE the source object"


def test_exclusive_create_is_atomic_within_one_mount_not_across_two(mount_factory: Any) -> None:
    """O_EXCL through s3fs: the kernel serialises creates on one mount; two s3fs clients of
    one bucket each see "no such object" and both win. Recorded in docs/s3files.md."""
    import multiprocessing

    first = mount_factory()
    second = mount_factory(bucket=first.bucket)
    (first.root / "race").mkdir()
    time.sleep(1.2)  # let the second mount's negative cache of race/ expire

    def race(roots: list[Path], trials: int) -> int:
        ctx = multiprocessing.get_context("fork")
        doubles = 0
        for trial in range(trials):
            start = time.time() + 0.3
            with ctx.Pool(4) as pool:
                wins = pool.starmap(_exclusive_create, [(roots[i % len(roots)] / "race" / f"t{trial}-{len(roots)}",
                                                         start) for i in range(4)])
            doubles += sum(wins) != 1
        return doubles

    assert race([first.root], 5) == 0
    assert race([first.root, second.root], 5) >= 1  # the documented limit of s3fs, measured


def _exclusive_create(path: Path, start: float) -> int:
    while time.time() < start:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return 0
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return 1


# ------------------------------------------------------------ no links, no renames


@pytest.mark.parametrize("worker", [*REGISTERED, "test-echo"])
def test_the_pipeline_commits_with_links_and_renames_forbidden(s3_mount: S3Mount, worker: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              echo_registered: None) -> None:
    """os.link/rename/replace raise in this process; every worker still commits on the mount."""
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> None:
            calls.append(f"{name}{args[:2]}")
            raise OSError(errno.EOPNOTSUPP, f"{name} is not allowed on S3 Files")
        return refuse

    name, data = sample_for(worker)
    key = f"ingest/nolink/{name}"
    put = s3_mount.put(key, data)
    for attr in ("link", "rename", "replace", "renames", "symlink"):
        monkeypatch.setattr(os, attr, forbidden(attr))
    response = run_handler(s3_mount, worker, s3_notification(s3_mount.bucket, key, put, len(data)))
    monkeypatch.undo()
    assert calls == []
    assert [r["status"] for r in response["results"]] == ["done"], response
    assert len(committed_manifests(s3_mount, worker)) == 1


# ------------------------------------------------------- event before visibility


def test_the_event_arrives_before_the_object_and_the_worker_waits(mount_factory: Any,
                                                                  echo_registered: None) -> None:
    mount = mount_factory(cache_options=("stat_cache_expire=1", "enable_noobj_cache"))
    mount.put("ingest/", b"")
    key = "ingest/late/arrival.echo"
    data = b"ECHO I was late"
    assert not (mount.root / key).exists()  # the miss is now in s3fs's negative cache
    put_result: dict[str, Any] = {}
    uploader = threading.Timer(1.5, lambda: put_result.update(mount.put(key, data)))
    started = time.monotonic()
    uploader.start()
    try:
        event = s3_notification(mount.bucket, key, {"ETag": '"0"'}, len(data))
        response = run_handler(mount, "test-echo", event, timeout=30)
    finally:
        uploader.join()
    assert time.monotonic() - started >= 1.5
    assert [r["status"] for r in response["results"]] == ["done"]
    manifest = json.loads(mount.get(committed_manifests(mount, "test-echo")[0]))
    assert manifest["input"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_an_object_that_never_shows_is_retryable_within_the_deadline(s3_mount: S3Mount,
                                                                    echo_registered: None) -> None:
    timeout = 6.0
    event = s3_notification(s3_mount.bucket, "ingest/never/there.echo", {"ETag": '"0"'}, 10)
    started = time.monotonic()
    with pytest.raises(RetryLater, match="does not exist on the mount"):
        run_handler(s3_mount, "test-echo", event, timeout=timeout)
    elapsed = time.monotonic() - started
    assert timeout - DEADLINE_MARGIN_SECONDS - 0.5 <= elapsed < timeout
    assert committed_manifests(s3_mount, "test-echo") == []


# ------------------------------------------------------------------- hostile keys


def _long_key(total_bytes: int) -> str:
    """An ingest key of exactly ``total_bytes`` UTF-8 bytes, in components under 255 bytes."""
    parts, left = [], total_bytes - len("ingest/") - len("end.echo")
    while left > 0:
        size = min(200, left - 1) if left > 201 else left - 1
        parts.append("é" * (size // 2) + "x" * (size % 2))
        left -= size + 1
    key = "ingest/" + "/".join(parts) + "/end.echo"
    assert len(key.encode()) == total_bytes, len(key.encode())
    return key


@pytest.mark.parametrize("key", [
    "ingest/with space/a b.echo",
    "ingest/plus+sign/a+b%2B.echo",
    "ingest/ünïcödé/日本語 ☃.echo",
    "ingest/" + "k" * 240 + ".echo",
], ids=["spaces", "plus-and-percent", "unicode", "long-component"])
def test_hostile_keys_map_to_the_right_file(s3_mount: S3Mount, key: str, echo_registered: None) -> None:
    data = f"ECHO {key}".encode()
    decoy = f"ECHO decoy for {key}".encode()
    put = s3_mount.put(key, data)
    # what a wrong decoding would open instead: '+' read as a space, or '%2B' decoded twice
    s3_mount.put(key.replace("+", " "), decoy) if "+" in key else None
    response = run_handler(s3_mount, "test-echo", s3_notification(s3_mount.bucket, key, put, len(data)))
    assert [r["status"] for r in response["results"]] == ["done"], response
    manifest = json.loads(s3_mount.get(committed_manifests(s3_mount, "test-echo")[0]))
    assert manifest["input"] == {"path": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "etag": put["ETag"].strip('"'), "sequencer": manifest["input"]["sequencer"]}


def test_a_long_key_maps_to_its_file_and_its_outputs_stay_within_s3_limits(s3_mount: S3Mount,
                                                                          echo_registered: None) -> None:
    key = _long_key(900)
    data = b"ECHO long"
    put = s3_mount.put(key, data)
    assert (s3_mount.root / key).read_bytes() == data  # the mount shows it where the key says
    response = run_handler(s3_mount, "test-echo", s3_notification(s3_mount.bucket, key, put, len(data)))
    result = response["results"][0]
    assert (result["input"], result["status"]) == (key, "done"), result
    manifest = json.loads(s3_mount.get(committed_manifests(s3_mount, "test-echo")[0]))
    assert manifest["input"] == {"path": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "etag": put["ETag"].strip('"'), "sequencer": manifest["input"]["sequencer"]}
    assert max(len(k.encode()) for k in s3_mount.keys("workspace/")) <= 1024


def test_a_key_too_long_for_its_outputs_is_refused_not_half_exported(s3_mount: S3Mount,
                                                                     echo_registered: None) -> None:
    key = _long_key(1000)  # a valid S3 key, but workspace/<worker>/.../<run-id>/ would pass 1,024 bytes
    put = s3_mount.put(key, b"ECHO long")
    response = run_handler(s3_mount, "test-echo", s3_notification(s3_mount.bucket, key, put, 9))
    result = response["results"][0]
    assert result["status"] == "refused" and "over 1,024 bytes" in result["error"]["message"], result
    assert s3_mount.keys("workspace/") == []


def test_keys_over_1024_bytes_and_outside_ingest_are_not_processed(s3_mount: S3Mount,
                                                                   echo_registered: None) -> None:
    s3_mount.put("elsewhere/a.echo", b"ECHO not mine")
    event = s3_notification(s3_mount.bucket, "elsewhere/a.echo", {"ETag": '"1"'}, 13)
    event["Records"] += s3_notification(s3_mount.bucket, "ingest/" + "a/" * 520 + "x.echo", {}, 1)["Records"]
    event["Records"] += s3_notification(s3_mount.bucket, "ingest/../workspace/x.echo", {}, 1)["Records"]
    response = run_handler(s3_mount, "test-echo", event)
    assert [r["status"] for r in response["results"]] == ["skipped", "refused", "refused"]
    assert s3_mount.keys("workspace/") == []
