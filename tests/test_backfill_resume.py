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
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["totals"]["done"] + summary["totals"]["skipped"] == INPUTS
    assert summary["totals"]["skipped"] == interrupted  # committed runs are skipped; runs cut mid-way are redone
    found = manifests(mount)
    assert len(found) == INPUTS
    assert sorted({p.relative_to(mount / "workspace" / "test-echo").parts[0] for p in found}) == [
        f"in{i:02d}.echo" for i in range(INPUTS)]  # one commit per input, none twice
    verify = subprocess.run(echo_cli("verify", "--root", str(mount)), capture_output=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
