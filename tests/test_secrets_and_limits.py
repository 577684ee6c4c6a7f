"""Secrets never leak, and ingest/ is never written, whatever worker runs.

Every registered worker runs through its real Lambda handler (metrics on, DEBUG logs) on
the generated samples, with credentials and a password-like value in the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import workers.registry
from shared import observability
from shared.runtime import make_handler
from workers.cli import LocalContext, main
from workers.registry import get_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from samples.make_samples import make as make_samples  # noqa: E402

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY-mountworks-canary"


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def samples(mount: Path) -> list[Path]:
    return [p for p in make_samples(mount) if p.suffix != ".txt"]


@pytest.mark.slow
def test_no_secret_reaches_a_manifest_a_log_line_a_metric_or_the_workspace(
        mount: Path, samples: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MOUNTWORKS_CANARY_PASSWORD"):
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    monkeypatch.setattr(observability, "_emit_metrics", False)
    observability.logger.setLevel("DEBUG")
    try:
        for worker in workers.registry.WORKERS:
            handler = make_handler(get_worker(worker))
            for sample in samples:
                event: dict[str, Any] = {"input": sample.relative_to(mount).as_posix()}
                response = handler(event, LocalContext(worker, 120))
                assert response["results"][0]["status"] in ("done", "failed"), response
        main(["backfill", "--root", str(mount), "--jobs", "2", "--log-level", "DEBUG"])
        pdf = next(p for p in samples if p.suffix == ".pdf")
        assert main(["run", "pdf-extract", pdf.relative_to(mount).as_posix(), "--root", str(mount),
                     "-o", f"password={SECRET}"]) == 0
    finally:
        observability.logger.setLevel("WARNING")
    captured = capsys.readouterr()
    assert SECRET not in captured.out and SECRET not in captured.err
    assert "AKIAIOSFODNN7EXAMPLE" not in captured.out + captured.err
    assert '"_aws"' in captured.out, "the handlers flushed no metrics: the scan would prove nothing"
    for path in (mount / "workspace").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    manifests = list((mount / "workspace").rglob("manifest.json"))
    assert len({json.loads(m.read_text())["worker"] for m in manifests}) == len(workers.registry.WORKERS)


@pytest.mark.slow
def test_no_worker_ever_writes_under_ingest(mount: Path, samples: list[Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (mount / "ingest" / "hostile").mkdir()
    (mount / "ingest" / "hostile" / "not-a-pdf.pdf").write_bytes(b"%PDF-1.7 truncated")
    (mount / "ingest" / "hostile" / "empty.jpg").write_bytes(b"")
    before = _snapshot(mount / "ingest")
    dirs_before = sorted(p.relative_to(mount).as_posix() for p in (mount / "ingest").rglob("*") if p.is_dir())
    assert main(["backfill", "--root", str(mount), "--jobs", "2", "--no-progress"]) == 0
    assert main(["backfill", "--root", str(mount), "--jobs", "2", "--no-progress", "--retry-failed"]) == 0
    capsys.readouterr()
    assert _snapshot(mount / "ingest") == before  # names, bytes and mtimes
    assert sorted(p.relative_to(mount).as_posix() for p in (mount / "ingest").rglob("*") if p.is_dir()) == dirs_before
    assert set(os.listdir(mount)) == {"ingest", "workspace"}  # nothing written beside the two prefixes
