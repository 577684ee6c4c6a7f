"""verify reads commit records only: whatever else is called manifest.json is not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.cli import main

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("echo_registered")


def test_an_input_named_manifest_json_does_not_break_verify(mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mount / "ingest" / "manifest.json").write_bytes(b"ECHO not a commit record")
    (mount / "ingest" / "error.json").write_bytes(b"ECHO neither")
    for name in ("manifest.json", "error.json"):
        assert main(["run", "test-echo", f"ingest/{name}", "--root", str(mount), "--no-isolation"]) == 0
    capsys.readouterr()
    # the input folder workspace/test-echo/manifest.json/ is a directory named like a record
    assert (mount / "workspace" / "test-echo" / "manifest.json").is_dir()
    assert main(["verify", "--root", str(mount)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifests"] == 2 and report["bad"] == [] and report["outputs"] == 4


def test_verify_still_names_a_torn_manifest(mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mount / "ingest" / "a.echo").write_bytes(b"ECHO a")
    assert main(["run", "test-echo", "ingest/a.echo", "--root", str(mount), "--no-isolation"]) == 0
    record = json.loads(capsys.readouterr().out)
    manifest = mount / record["outputs"][0]["path"].rsplit("/", 1)[0] / "manifest.json"
    manifest.write_text("{not json")
    assert main(["verify", "--root", str(mount)]) == 4
    assert "unreadable manifest" in capsys.readouterr().err
