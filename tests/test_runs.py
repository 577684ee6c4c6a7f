"""Run identity, claims, exclusive commits and output confinement (shared/runs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from shared.config import MountConfig
from shared.errors import ClaimHeld, RefusedPath
from shared.paths import InputRef
from shared.runs import (
    OutputDir,
    Run,
    acquire_claim,
    clear_torn_commits,
    current_claim,
    read_commit,
    run_id_for,
    still_holds,
    write_exclusive,
)


def test_run_id_depends_on_content_worker_version_and_options_only() -> None:
    base = run_id_for("image-resize", "1", {"sizes": [320]}, "a" * 64)
    assert base == run_id_for("image-resize", "1", {"sizes": [320]}, "a" * 64)
    assert len({base,
                run_id_for("image-resize", "1", {"sizes": [320]}, "b" * 64),
                run_id_for("image-resize", "2", {"sizes": [320]}, "a" * 64),
                run_id_for("image-resize", "1", {"sizes": [640]}, "a" * 64),
                run_id_for("pdf-extract", "1", {"sizes": [320]}, "a" * 64)}) == 5
    # key order of options does not matter: they are canonicalized
    assert run_id_for("w", "1", {"a": 1, "b": 2}, "c" * 64) == run_id_for("w", "1", {"b": 2, "a": 1}, "c" * 64)


def test_write_exclusive_has_exactly_one_winner(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    assert write_exclusive(target, b"first") is True
    assert write_exclusive(target, b"second") is False
    assert target.read_bytes() == b"first"


def test_a_claim_held_by_a_live_process_is_not_taken(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = acquire_claim(run_dir, lease_seconds=60)
    with pytest.raises(ClaimHeld, match="being processed"):
        acquire_claim(run_dir, lease_seconds=60)
    assert still_holds(first)


def _claim_from_dead_process(run_dir: Path, lease: float) -> None:
    code = (f"from pathlib import Path; from shared.runs import acquire_claim; "
            f"acquire_claim(Path({str(run_dir)!r}), lease_seconds={lease})")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_claim_whose_local_holder_died_is_taken_over_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _claim_from_dead_process(run_dir, lease=3600)
    claim = acquire_claim(run_dir, lease_seconds=60)
    assert claim.generation == 1
    assert still_holds(claim)


def test_a_remote_holder_is_waited_for_until_its_lease_ends(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _claim_from_dead_process(run_dir, lease=3600)
    with pytest.raises(ClaimHeld):  # not same-host-checkable (as in Lambda): the lease rules
        acquire_claim(run_dir, lease_seconds=60, check_local=False)
    _claim_from_dead_process(tmp_path / "short", lease=0.01)
    time.sleep(0.05)
    assert acquire_claim(tmp_path / "short", lease_seconds=60, check_local=False).generation == 1


def test_a_pid_reused_by_another_process_does_not_keep_a_claim(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    acquire_claim(run_dir, lease_seconds=3600)
    holder_file = run_dir / ".claim.0.json"
    holder = json.loads(holder_file.read_text())
    holder["pid_start"] = "1"  # same pid (ours, alive), but a different process start time
    holder_file.write_text(json.dumps(holder))
    assert acquire_claim(run_dir, lease_seconds=60).generation == 1


def test_a_taken_over_holder_cannot_commit(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    old = acquire_claim(run_dir, lease_seconds=0.01, check_local=False)
    time.sleep(0.05)
    new = acquire_claim(run_dir, lease_seconds=60, check_local=False)
    assert not still_holds(old)
    assert still_holds(new)
    current = current_claim(run_dir)
    assert current is not None and current.generation == new.generation


def test_a_torn_commit_file_is_not_a_commit_and_only_the_next_holder_clears_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _claim_from_dead_process(run_dir, lease=3600)
    torn = run_dir / "manifest.json"
    torn.write_bytes(b"")  # the dead holder was killed between its exclusive create and its write
    assert read_commit(run_dir) is None
    assert torn.exists()  # readers never delete anything
    claim = acquire_claim(run_dir, lease_seconds=60)
    clear_torn_commits(claim)
    assert not torn.exists()
    assert write_exclusive(torn, json.dumps({"run_id": "r"}).encode())
    (run_dir / "error.json").write_text(json.dumps({"run_id": "r", "error": {"code": "x"}}))
    commit = read_commit(run_dir)
    assert commit is not None and not commit.failed  # a manifest wins over an error record
    clear_torn_commits(claim)
    assert torn.exists()  # a whole commit is never removed


def test_a_stale_holder_cannot_clear_anything(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    old = acquire_claim(run_dir, lease_seconds=0.01, check_local=False)
    time.sleep(0.05)
    acquire_claim(run_dir, lease_seconds=60, check_local=False)
    (run_dir / "error.json").write_bytes(b"{")
    clear_torn_commits(old)
    assert (run_dir / "error.json").exists()


def test_output_dir_confines_writes_to_its_workers_prefix(mount: Path) -> None:
    cfg = MountConfig.load(mount)
    run = Run(cfg, "image-resize", "1", InputRef(PurePosixPath("ingest/a.jpg"), PurePosixPath("a.jpg")), {})
    run_dir = run.input_dir / ("r" * 32)
    out = OutputDir(run_dir, run.owner_dir)
    with out.open("sub/x.bin", "application/octet-stream", width=3) as f:
        f.write(b"abc")
    assert (run_dir / "sub" / "x.bin").read_bytes() == b"abc"
    assert [(o.name, o.facts) for o in out.outputs] == [("sub/x.bin", {"width": 3})]
    for bad in ("../../../../ingest/a.jpg", "manifest.json", "error.json", ".claim.9.json"):
        with pytest.raises(RefusedPath):
            out.path(bad, "x/y")
    with pytest.raises(RefusedPath, match="outside"):
        OutputDir(mount / "ingest" / "run", run.owner_dir)
    with pytest.raises(RefusedPath, match="outside"):
        OutputDir(cfg.worker_dir("pdf-extract") / "run", run.owner_dir)


def test_attempts_are_listed_in_order(mount: Path) -> None:
    cfg = MountConfig.load(mount)
    run = Run(cfg, "w", "1", InputRef(PurePosixPath("ingest/a"), PurePosixPath("a")), {})
    for name in ("abc", "abc.2", "abc.10", "abcd", "abc.x"):
        (run.input_dir / name).mkdir(parents=True)
    assert [n for n, _ in run.attempts("abc")] == [1, 2, 10]


def test_a_zombie_holder_counts_as_gone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = (f"import os, sys; from pathlib import Path; from shared.runs import acquire_claim; "
            f"acquire_claim(Path({str(run_dir)!r}), lease_seconds=3600); sys.stdout.write('claimed'); "
            f"sys.stdout.flush(); os._exit(0)")
    zombie = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert zombie.stdout is not None and zombie.stdout.read() == b"claimed"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{zombie.pid}/stat").read_text().split()[2] != "Z":
            time.sleep(0.02)  # exited, not reaped: a zombie that still has a /proc entry
        assert acquire_claim(run_dir, lease_seconds=60).generation == 1
    finally:
        zombie.communicate()


def test_a_released_claim_is_taken_at_once_even_where_only_leases_count(tmp_path: Path) -> None:
    from shared.runs import release_claim

    run_dir = tmp_path / "run"
    claim = acquire_claim(run_dir, lease_seconds=3600, check_local=False)
    with pytest.raises(ClaimHeld):
        acquire_claim(run_dir, lease_seconds=60, check_local=False)
    release_claim(claim)
    assert acquire_claim(run_dir, lease_seconds=60, check_local=False).generation == 2
    release_claim(claim)  # a stale holder releasing again changes nothing
    current = current_claim(run_dir)
    assert current is not None and current.generation == 2


def test_run_ids_are_sha256_whichever_implementation_computes_them() -> None:
    """Run-ids and _seen keys hash with CPython's own sha256 (no OpenSSL at import); they
    must stay the sha256 that hashlib gives, or every committed run would look new."""
    import hashlib

    from shared.runs import run_id_for, short_digest

    material = '["image-resize","1.0.0",{"q":85},"abc"]'
    assert short_digest(material) == hashlib.sha256(material.encode()).hexdigest()[:32]
    assert run_id_for("image-resize", "1.0.0", {"q": 85}, "abc") == short_digest(material)


def _committed_run(mount: Path) -> tuple[Run, Path]:
    cfg = MountConfig.load(mount)
    source = mount / "ingest" / "a.bin"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"content")
    run = Run(cfg, "w", "1", InputRef(PurePosixPath("ingest/a.bin"), PurePosixPath("a.bin")), {})
    run.identify(source, source.stat())
    assert run.claim(lease_seconds=60) is None
    run.outputs.write_bytes("out.txt", b"out", "text/plain")
    assert run.run_dir is not None
    return run, run.run_dir


def test_claim_files_do_not_outlive_the_commit(mount: Path) -> None:
    """Each claim is an S3 object on S3 Files: a commit leaves only its outputs and record."""
    run, run_dir = _committed_run(mount)
    assert current_claim(run_dir) is not None
    run.commit_manifest({})
    assert sorted(p.name for p in run_dir.iterdir()) == ["manifest.json", "out.txt"]


def test_a_failed_commit_leaves_no_claim_either(mount: Path) -> None:
    run, run_dir = _committed_run(mount)
    run.commit_error({"code": "corrupt-input", "message": "bad"})
    assert sorted(p.name for p in run_dir.iterdir()) == ["error.json", "out.txt"]


def test_a_duplicate_that_claims_after_the_commit_removes_its_claim(mount: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first look saw no commit; by its claim the commit is there (and the claims gone):
    it takes generation 0, finds the commit, and removes what it just created."""
    import shared.runs

    run, run_dir = _committed_run(mount)
    duplicate = Run(run.cfg, "w", "1", run.ref, {})
    duplicate.identify(mount / "ingest" / "a.bin", (mount / "ingest" / "a.bin").stat())
    run.commit_manifest({})
    looks: list[Path] = []
    real_read_commit = shared.runs.read_commit

    def first_look_before_the_commit(path: Path) -> shared.runs.Commit | None:
        looks.append(path)
        return None if len(looks) == 1 else real_read_commit(path)

    monkeypatch.setattr(shared.runs, "read_commit", first_look_before_the_commit)
    commit = duplicate.claim(lease_seconds=60)
    assert commit is not None and not commit.failed and len(looks) == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["manifest.json", "out.txt"]


def test_a_commit_lists_its_outputs_by_name_inside_its_run_directory() -> None:
    """The same names for a mount's paths and a bucket's keys (any prefix before the run)."""
    from shared.runs import Commit

    record = {"run_id": "abc123", "outputs": [
        {"path": "workspace/pdf-extract/docs/a.pdf/abc123/pages.jsonl"},
        {"path": "tenant-7/workspace/pdf-extract/docs/a.pdf/abc123/attachments/001-notes.txt"},
        {"path": "workspace/pdf-extract/docs/a.pdf/other/text.txt"}]}
    listed = Commit(Path("/mnt/workspace/pdf-extract/docs/a.pdf/abc123"), record, False).listed()
    assert sorted(listed) == ["attachments/001-notes.txt", "pages.jsonl"]
    assert listed["pages.jsonl"] is record["outputs"][0]
