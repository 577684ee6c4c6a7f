"""The isolation pool (shared/isolation.py): bare forks and pipes, so what multiprocessing
did for us is tested here: a child killed from outside, a parent killed with its children
busy, messages larger than a pipe, a child reused and then recycled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import children_of
from test_cli import LAUNCH

from shared import isolation
from shared.config import MountConfig
from shared.events import WorkItem
from shared.outcomes import Status
from shared.paths import input_from_path
from workers.registry import get_worker

pytestmark = pytest.mark.usefixtures("echo_registered")


def _item(mount: Path, name: str, **options: object) -> WorkItem:
    cfg = MountConfig.load(mount)
    (mount / "ingest" / name).write_bytes(f"ECHO {name}".encode())
    return WorkItem("test", f"ingest/{name}", input=input_from_path(cfg, f"ingest/{name}"), options=options)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (whoever reaps orphans here may be slow to)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_child_killed_from_outside_is_retryable_and_a_fresh_one_takes_the_next_input(mount: Path) -> None:
    spec = get_worker("test-echo")
    pool = isolation.IsolatedPool(1, MountConfig.load(mount), retry_failed=False, keep_records=True)
    try:
        pool.submit(spec, _item(mount, "slow.echo", sleep=20))
        [child] = pool.children
        time.sleep(0.3)  # inside the input
        os.kill(child.pid, signal.SIGKILL)  # as the OOM killer would
        [outcome] = pool.collect(block=True)
        assert (outcome.status, outcome.code) == (Status.RETRYABLE, "worker-killed")
        assert "killed by SIGKILL" in (outcome.message or "")
        pool.submit(spec, _item(mount, "next.echo"))
        [outcome] = pool.collect(block=True)
        assert outcome.status == Status.DONE and outcome.record is not None
        assert [c.pid for c in pool.children] != [child.pid]
    finally:
        pool.close()
    assert pool.children == []


def test_a_child_is_reused_until_it_is_recycled(mount: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "MAX_INPUTS_PER_CHILD", 2)
    spec = get_worker("test-echo")
    pool = isolation.IsolatedPool(1, MountConfig.load(mount), retry_failed=False)
    pids = []
    try:
        for n in range(4):
            pool.submit(spec, _item(mount, f"r{n}.echo"))
            pids.append(pool.children[0].pid)
            assert [o.status for o in pool.collect(block=True)] == [Status.DONE]
    finally:
        pool.close()
    assert pids[0] == pids[1] != pids[2] == pids[3]


def test_messages_larger_than_a_pipe_arrive_whole() -> None:
    read_fd, write_fd = os.pipe()
    message = {"record": "x" * (3 << 20), "n": list(range(1000))}
    writer = threading.Thread(target=isolation.send, args=(write_fd, message))
    writer.start()
    try:
        assert isolation.receive(read_fd) == message
    finally:
        writer.join()
        os.close(write_fd)
    with pytest.raises(EOFError):  # the writer is gone: no half message is taken for one
        isolation.receive(read_fd)
    os.close(read_fd)


def test_children_die_with_their_parent(mount: Path) -> None:
    """kill -9 of ``mountworks run`` while its child works: the child does not go on alone."""
    (mount / "ingest" / "long.echo").write_bytes(b"ECHO long")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "run", "test-echo", "ingest/long.echo", "--root",
                             str(mount), "-o", "sleep=30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (kids := set(children_of(proc.pid))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kids, "the run never forked its child"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(k) for k in kids)
    finally:
        proc.kill()
        proc.wait()
