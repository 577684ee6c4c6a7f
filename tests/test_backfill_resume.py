"""Ctrl-C or kill -9 in the middle of a backfill, then a re-run: every input committed once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.runs import TORN_GRACE_SECONDS

TESTS = Path(__file__).resolve().parent
LAUNCH = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import workers.registry as r; "
    "r.WORKERS['test-echo'] = 'echo_worker'; from workers.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
INPUTS = 30


def echo_cli(*argv: str) -> list[str]:
    return [sys.executable, "-c", LAUNCH, *argv]


def manifests(root: Path) -> list[Path]:
    return sorted((root / "workspace").rglob("manifest.json")) if (root / "workspace").exists() else []


def committed(root: Path) -> int:
    """Manifests that hold a record: a kill -9 between a commit's exclusive create and its one
    write leaves an empty one, which is torn, not committed (the re-run redoes that input)."""
    return sum(1 for path in manifests(root) if path.stat().st_size > 0)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_backfill_then_rerun_commits_every_input_exactly_once(mount: Path, how: signal.Signals) -> None:
    for i in range(INPUTS):
        (mount / "ingest" / f"in{i:02d}.echo").write_bytes(f"ECHO {i}".encode())
    argv = echo_cli("backfill", "--root", str(mount), "--worker", "test-echo", "--jobs", "4", "-o", "sleep=0.4",
                    "--quiet")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(manifests(mount)) < 5:
        time.sleep(0.05)
    assert manifests(mount), "the backfill never committed anything"
    if how == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its children, as an OOM kill or a lost host would
    else:
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C reaches the parent; children ignore SIGINT
    out, _err = proc.communicate(timeout=60)
    interrupted = committed(mount)
    assert 0 < interrupted < INPUTS
    if how == signal.SIGINT:
        assert proc.returncode == 75 and json.loads(out)["interrupted"] is True

    rerun = subprocess.run(echo_cli("backfill", "--root", str(mount), "--worker", "test-echo", "--jobs", "4",
                                    "--quiet"), capture_output=True, text=True, timeout=120)
    summary = json.loads(rerun.stdout)
    if how == signal.SIGKILL and rerun.returncode == 75:
        # A kill between a claim's exclusive create and its write leaves an empty claim. It may
        # be a live claimer's (on a FUSE mount the write lands at close), so it holds for
        # TORN_GRACE_SECONDS: that input is retryable (in-progress), and the next run does it.
        assert summary["totals"]["retryable"] == 1, rerun.stderr
        assert "in-progress" in rerun.stderr
        time.sleep(TORN_GRACE_SECONDS + 0.5)
        again = subprocess.run(echo_cli("backfill", "--root", str(mount), "--worker", "test-echo", "--jobs", "4",
                                        "--quiet"), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        totals = json.loads(again.stdout)["totals"]
        assert (totals["done"], totals["skipped"]) == (1, INPUTS - 1)
        summary["totals"]["done"] += 1
        summary["totals"]["retryable"] -= 1
    else:
        assert rerun.returncode == 0, rerun.stderr
    assert summary["totals"]["done"] + summary["totals"]["skipped"] == INPUTS
    assert summary["totals"]["skipped"] == interrupted  # committed runs are skipped; runs cut mid-way are redone
    found = manifests(mount)
    assert len(found) == INPUTS
    assert sorted({p.relative_to(mount / "workspace" / "test-echo").parts[0] for p in found}) == [
        f"in{i:02d}.echo" for i in range(INPUTS)]  # one commit per input, none twice
    verify = subprocess.run(echo_cli("verify", "--root", str(mount)), capture_output=True, timeout=60)
    assert verify.returncode == 0, verify.stderr


def test_a_claim_torn_by_a_kill_holds_for_its_grace_then_the_input_is_taken_over(mount: Path) -> None:
    """A kill between a claim's exclusive create and its write leaves an empty claim file. A
    live claimer's looks the same for a moment (on a FUSE mount the write lands at close),
    so it holds for TORN_GRACE_SECONDS: the input is retryable (in-progress, exit 75), and a
    run after the grace takes it over and commits it once."""
    (mount / "ingest" / "first.echo").write_bytes(b"ECHO same")
    argv = echo_cli("backfill", "--root", str(mount), "--worker", "test-echo", "--quiet")
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    [first] = manifests(mount)
    run_id = first.parent.name  # the content decides the run-id: a copy of the input has the same
    (mount / "ingest" / "second.echo").write_bytes(b"ECHO same")
    run_dir = mount / "workspace" / "test-echo" / "second.echo" / run_id
    run_dir.mkdir(parents=True)
    torn = run_dir / ".claim.1.json"
    torn.touch()  # created, never written: its claimer was killed (or has not written yet)

    held = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert held.returncode == 75, held.stderr
    assert json.loads(held.stdout)["totals"]["retryable"] == 1 and "in-progress" in held.stderr

    past = time.time() - TORN_GRACE_SECONDS - 1
    os.utime(torn, (past, past))
    taken = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["totals"]["done"] == 1
    assert sorted(p.relative_to(mount / "workspace" / "test-echo").parts[0] for p in manifests(mount)) == [
        "first.echo", "second.echo"]
