"""Hostile files, odd file systems and faults: each ends refused or retryable, never a hang,
a traceback, or a permanent record for content that was not the content processed.

Faults are made for real where this machine allows: a real FIFO, socket and symlink loop,
a real writer rewriting the input mid-run, a small tmpfs for ``ENOSPC`` (needs root; skipped
otherwise), a real ``kill -9``. ``ESTALE``, ``ETIMEDOUT``, ``EIO`` and ``EROFS`` from a
network mount cannot be produced on a local disk: those are injected at the one OS call
that meets them (the worker's read of the input), and said so in each test.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put
from s3faults import fill

import workers.registry
from shared.config import MountConfig
from shared.errors import ENVIRONMENT_FAULT, INPUT_CHANGED, environment_fault, environment_fault_in_text
from shared.runtime import handle_event
from workers.cli import LocalContext

TESTS = Path(__file__).resolve().parent
LAUNCH = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import workers.registry as r; "
    "r.WORKERS['test-echo'] = 'echo_worker'; from workers.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
HANG_LIMIT = 60  # seconds: a command that has not ended by then is hung


pytestmark = pytest.mark.usefixtures("echo_registered")


def mountworks(*argv: str) -> subprocess.CompletedProcess[str]:
    """``mountworks ARGV`` in a fresh process, killed (and the test failed) if it hangs."""
    try:
        return subprocess.run([sys.executable, "-c", LAUNCH, *argv], capture_output=True, text=True,
                              timeout=HANG_LIMIT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mountworks {' '.join(argv)} hung for {HANG_LIMIT}s")


def records(root: Path) -> list[Path]:
    workspace = root / "workspace"
    return sorted([*workspace.rglob("manifest.json"), *workspace.rglob("error.json")])


# ------------------------------------------------------------- 7: FIFOs, sockets, devices


def odd_files(mount: Path) -> list[str]:
    """A FIFO, a symlink to it (with an image's name: routing would sniff it), a socket,
    and a character device where this machine lets us make one; their names under ingest/."""
    ingest = mount / "ingest"
    os.mkfifo(ingest / "pipe.echo")
    (ingest / "photo.jpg").symlink_to("pipe.echo")
    names = ["pipe.echo", "photo.jpg", "sock.echo"]
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(ingest / "sock.echo"))
    server.close()  # the socket file stays
    try:
        os.mknod(ingest / "null.echo", 0o600 | 0o020000, os.makedev(1, 3))  # like /dev/null
        names.append("null.echo")
    except OSError:  # not root, or a nodev file system
        pass
    return names


def test_backfill_never_opens_a_fifo_a_socket_or_a_device_and_says_why(mount: Path, put: Put) -> None:
    put("real.echo", b"ECHO real")
    odd = odd_files(mount)
    result = mountworks("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    summary = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert summary["totals"]["done"] == 1 and summary["unrouted"] == len(odd)
    reasons = {f["input"]: f["error"]["message"] for f in summary["failures"]}
    assert "FIFO" in reasons["ingest/pipe.echo"] and "FIFO" in reasons["ingest/photo.jpg"]
    assert "socket" in reasons["ingest/sock.echo"]
    if "null.echo" in odd:
        assert "character device" in reasons["ingest/null.echo"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "in-process"])
@pytest.mark.parametrize("name", ["pipe.echo", "photo.jpg", "sock.echo"])
def test_run_refuses_a_fifo_or_socket_at_once(mount: Path, name: str, isolate: bool) -> None:
    odd_files(mount)
    argv = ["run", "test-echo", f"ingest/{name}", "--root", str(mount)]
    result = mountworks(*argv, *([] if isolate else ["--no-isolation"]))
    assert result.returncode == 2, result.stderr
    assert "not a regular file" in result.stderr and "Traceback" not in result.stderr
    assert not (mount / "workspace").exists()


def test_identify_refuses_a_fifo_swapped_in_after_the_stat(mount: Path, put: Put) -> None:
    """The race the stat cannot close: the path checked was a file, the one opened a FIFO."""
    from shared.errors import RefusedPath
    from shared.paths import input_from_path
    from shared.runs import Run

    rel = put("a.echo", b"ECHO a")
    cfg = MountConfig.load(mount)
    ref = input_from_path(cfg, rel)
    assert ref is not None
    path = mount / rel
    st = path.stat()
    path.unlink()
    os.mkfifo(path)
    raised: list[BaseException] = []

    def identify() -> None:
        try:
            Run(cfg, "test-echo", "1", ref, {}).identify(path, st)
        except BaseException as exc:
            raised.append(exc)

    reader = threading.Thread(target=identify, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # blocked in open(): a writer releases it, so that the test can fail cleanly
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("identify() blocked on a FIFO")
    assert len(raised) == 1 and isinstance(raised[0], RefusedPath) and "FIFO" in str(raised[0])


# ------------------------------------------------------------------- 8: symlink loops


def make_loops(mount: Path) -> list[str]:
    ingest = mount / "ingest"
    (ingest / "self.echo").symlink_to("self.echo")
    (ingest / "a.echo").symlink_to("b.echo")
    (ingest / "b.echo").symlink_to("a.echo")
    (ingest / "dir").symlink_to("dir")  # a loop in a folder component: ingest/dir/x.echo
    return ["self.echo", "a.echo", "dir/x.echo"]


@pytest.mark.parametrize("name", ["self.echo", "a.echo", "dir/x.echo"])
def test_run_refuses_a_symlink_loop_like_any_unsafe_path(mount: Path, cli: Cli, name: str) -> None:
    make_loops(mount)
    code, printed = cli.run("test-echo", f"ingest/{name}", isolate=False)
    assert code == 2 and printed == {}
    assert "symlink loop" in cli.err and "Traceback" not in cli.err
    assert not (mount / "workspace").exists()


def test_an_sqs_record_for_a_symlink_loop_is_reported_not_retried(mount: Path, put: Put) -> None:
    make_loops(mount)
    put("ok.echo", b"ECHO ok")

    def message(mid: str, key: str) -> dict[str, Any]:
        body = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                             "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 1}}}]}
        return {"messageId": mid, "receiptHandle": "h", "body": json.dumps(body), "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}

    event = {"Records": [message("loop", "ingest/self.echo"), message("deep", "ingest/dir/x.echo"),
                         message("ok", "ingest/ok.echo")]}
    response = handle_event(workers.registry.get_worker("test-echo"), event, LocalContext("test-echo", 30),
                            MountConfig.load(mount))
    assert response["batchItemFailures"] == []
    status = {r["message_id"]: (r["status"], r.get("error", {}).get("message", "")) for r in response["results"]}
    assert status["ok"][0] == "done"
    for mid in ("loop", "deep"):
        assert status[mid][0] == "refused" and "symlink loop" in status[mid][1]


def test_invoke_and_backfill_refuse_symlink_loops(mount: Path, put: Put, tmp_path: Path) -> None:
    make_loops(mount)
    put("ok.echo", b"ECHO ok")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"input": "ingest/self.echo"}))
    result = mountworks("invoke", "test-echo", str(event), "--root", str(mount))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["results"][0]["status"] == "refused"
    result = mountworks("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["totals"]["done"] == 1
    loops = [f for f in summary["failures"] if "symlink loop" in f["error"]["message"]]
    assert {f["input"] for f in loops} == {"ingest/self.echo", "ingest/a.echo", "ingest/b.echo", "ingest/dir"}


# ------------------------------------------------------- 9: an input rewritten mid-run


@pytest.mark.parametrize(("rewrite", "would_commit"), [
    (b"ECHO-BAD truncated upload", "error.json"),  # the core fails for good on the new bytes
    (b"ECHO a different picture!", "manifest.json"),  # the core succeeds on the new bytes
], ids=["new-content-is-bad", "new-content-is-good"])
def test_an_input_rewritten_while_processed_commits_nothing_and_a_retry_commits(
        mount: Path, put: Put, cli: Cli, rewrite: bytes, would_commit: str) -> None:
    intact = b"ECHO the intact upload"
    rel = put("in.echo", intact)
    path = mount / rel
    rewriter = threading.Timer(0.4, path.write_bytes, args=(rewrite,))  # a real second writer
    rewriter.start()
    try:
        code, printed = cli.run("test-echo", rel, "mode=read-late", "sleep=1.2", isolate=False)
    finally:
        rewriter.join()
    assert code == 75, printed
    assert printed["error"]["code"] == INPUT_CHANGED and "changed while it was being processed" in cli.err
    assert records(mount) == []  # neither the error nor a manifest of the wrong bytes
    path.write_bytes(intact)  # the uploader puts the intact file back: it is processed, not "already failed"
    code, manifest = cli.run("test-echo", rel, "mode=read-late", "sleep=0", isolate=False)
    assert code == 0 and manifest["input"]["size"] == len(intact)
    assert [p.name for p in records(mount)] == ["manifest.json"]


# ------------------------------------------------------------- 10: environment faults


def test_environment_faults_are_told_from_input_errors() -> None:
    for number in (errno.ENOSPC, errno.EROFS, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EDQUOT):
        fault = environment_fault(OSError(number, os.strerror(number)))
        assert fault is not None and fault.code == ENVIRONMENT_FAULT and errno.errorcode[number] in fault.message
    wrapped = ValueError("cannot decode")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert environment_fault(wrapped) is not None  # through the chain of a translation boundary
    assert environment_fault(OSError("IOError: No space left on device")) is not None  # pyarrow: no errno
    # an input's own bytes quoted in a message are never read as a fault
    assert environment_fault(ValueError("CSV parse error: row 3: No space left on device")) is None
    assert environment_fault(OSError(errno.ENOENT, "No such file or directory")) is None
    assert environment_fault(OSError("broken data stream when reading image file")) is None
    assert environment_fault_in_text(["[out#0/mp4] Error writing trailer of out.mp4: No space left on device"])
    assert environment_fault_in_text(["    title           : No space left on device"]) is None


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs to fill up (mounting needs root: skipped where that is refused)."""
    root = tmp_path / "tmpfs"
    root.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(root)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        (root / "ingest").mkdir()
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_is_retryable_and_its_torn_claim_does_not_block_the_retry(small_fs: Path, put: Put,
                                                                               cli: Cli) -> None:
    rel = put("a.echo", b"ECHO " + b"x" * 4000, root=small_fs)
    filler = fill(small_fs)
    code, printed = cli.run("test-echo", rel, root=small_fs, isolate=False)
    assert code == 75 and printed["error"]["code"] == ENVIRONMENT_FAULT
    assert "file system is full" in cli.err and "Traceback" not in cli.err
    assert records(small_fs) == []
    torn = [p for p in (small_fs / "workspace").rglob(".claim.*") if p.stat().st_size == 0]
    assert torn == []  # the failed claim write left no empty claim behind
    filler.unlink()
    code, manifest = cli.run("test-echo", rel, root=small_fs, isolate=False)  # at once, not after a grace
    assert code == 0 and manifest["run_id"]


def test_a_disk_that_fills_while_outputs_are_written_is_retryable(small_fs: Path, put: Put, cli: Cli) -> None:
    """Room for the claim and the first output, not for the second (each is as large as the input)."""
    rel = put("big.echo", b"ECHO " + b"y" * 500_000, root=small_fs)
    filler = fill(small_fs, leave=800_000)
    code, printed = cli.run("test-echo", rel, root=small_fs)
    assert code == 75 and printed["error"]["code"] == ENVIRONMENT_FAULT, printed
    assert records(small_fs) == [] and "Traceback" not in cli.err
    filler.unlink()
    code, manifest = cli.run("test-echo", rel, root=small_fs)
    assert code == 0 and len(manifest["outputs"]) == 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg on PATH")
def test_ffmpeg_running_out_of_disk_is_retryable_not_corrupt_input(small_fs: Path, put: Put, cli: Cli) -> None:
    from worker_samples import mp4

    name, data = mp4()
    rel = put(name, data, root=small_fs)
    filler = fill(small_fs, leave=8192)  # room for the claim, not for a rendition
    code, printed = cli.run("video-transcode", rel, root=small_fs)
    assert code == 75, (printed, cli.err)
    assert printed["error"]["code"] == ENVIRONMENT_FAULT and "ENOSPC" in printed["error"]["message"]
    assert records(small_fs) == [] and "Traceback" not in cli.err
    filler.unlink()
    code, manifest = cli.run("video-transcode", rel, root=small_fs)
    assert code == 0 and manifest["outputs"]


NETWORK_FAULTS = [errno.ESTALE, errno.ETIMEDOUT, errno.EIO, errno.EROFS]


@pytest.mark.parametrize("number", NETWORK_FAULTS, ids=[errno.errorcode[n] for n in NETWORK_FAULTS])
def test_a_network_mount_fault_while_reading_is_retryable_in_any_worker(
        mount: Path, put: Put, cli: Cli, monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """Injected at the one OS boundary (these need an NFS server to happen for real): the
    worker's read of its input raises the errno, as the kernel would."""
    from PIL import Image
    from worker_samples import jpeg

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(number, os.strerror(number))

    rel_echo = put("a.echo", b"ECHO a")
    name, data = jpeg()
    rel_image = put(name, data)
    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", failing)  # the echo worker's read
        patch.setattr(Image, "open", failing)  # Pillow's: inside image-resize's translation boundary
        for worker, rel in (("test-echo", rel_echo), ("image-resize", rel_image)):
            code, printed = cli.run(worker, rel, isolate=False)
            assert code == 75 and printed["error"]["code"] == ENVIRONMENT_FAULT, (worker, printed)
            assert errno.errorcode[number] in printed["error"]["message"] and "Traceback" not in cli.err
    assert records(mount) == []
    for worker, rel in (("test-echo", rel_echo), ("image-resize", rel_image)):
        assert cli.run(worker, rel, isolate=False)[0] == 0


# ------------------------------------------------ 12: a kill -9 of the backfill's parent


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_killing_the_backfill_parent_with_sigkill_ends_its_workers(mount: Path, put: Put) -> None:
    for name in ("a.echo", "b.echo", "c.echo"):
        put(name, f"ECHO {name}")
    parent = subprocess.Popen([sys.executable, "-c", LAUNCH, "backfill", "--root", str(mount), "--worker",
                               "test-echo", "--jobs", "2", "--no-progress", "-o", "sleep=30"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        ends = time.monotonic() + 30
        while len(children) < 2 and time.monotonic() < ends:
            time.sleep(0.1)
            children = children_of(parent.pid)
        assert len(children) == 2, "the backfill never started its two workers"
        time.sleep(0.5)  # both are inside their input now (sleeping 30 s)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        ends = time.monotonic() + 10
        while any(alive(c) for c in children) and time.monotonic() < ends:
            time.sleep(0.1)
        assert [c for c in children if alive(c)] == []
    finally:
        for child in children:
            if alive(child):
                os.kill(child, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # and the next backfill takes over the dead workers' claims at once
    result = mountworks("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    assert result.returncode == 0 and json.loads(result.stdout)["totals"]["done"] == 3
