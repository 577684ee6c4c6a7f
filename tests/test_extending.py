"""Workers from outside the repository: the sample package ``samples/text-stats``.

The fast tests call the sample's core directly (streaming, chunk boundaries, the error
classes). The slow ones install mountworks (without its media libraries: the CLI and the
runtime need only Powertools) and the sample into a fresh virtual environment, then
drive the worker through that environment's ``mountworks`` command and Lambda handlers,
exactly as a user whose own package declares a ``mountworks.workers`` entry point would.

The sources are copied before they are built, so a build writes nothing into the
checkout. Where a virtual environment cannot be made, or PyPI cannot be reached, the slow
tests skip with the reason; in CI (``MOUNTWORKS_REQUIRE_S3=1``) they fail instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "text-stats"
STRICT = bool(os.environ.get("MOUNTWORKS_REQUIRE_S3"))  # CI: nothing here may skip
PIP_TIMEOUT = 600
RUN_TIMEOUT = 120

sys.path.insert(0, str(SAMPLE / "src"))  # the fast tests import the sample from its source

from mountworks_text_stats import SPEC, core  # noqa: E402
from mountworks_text_stats.options import parse  # noqa: E402

from shared.errors import CorruptInput, LimitExceeded, UnsupportedInput, UsageError  # noqa: E402
from shared.worker import Deadline, InputFile, RunContext, core_problems, spec_problems  # noqa: E402

TEXT = "The cat sat on the mat.\nThe dog didn't.\n\nNo newline at the end: café CAFÉ"


# ----------------------------------------------------------------------------- the core, in process


class CollectingOut:
    """Stands in for the run directory: keeps what the core writes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.facts: dict[str, dict[str, Any]] = {}

    def write_bytes(self, name: str, data: bytes, media_type: str, **facts: Any) -> None:
        self.files[name] = data
        self.facts[name] = {"media_type": media_type, **facts}


def _process(tmp_path: Path, data: bytes, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    source = InputFile(ref=None, path=path, size=len(data), sha256="")  # type: ignore[arg-type]
    out = CollectingOut()
    ctx = RunContext(deadline=Deadline(None), run_id="test", request_id="local")
    facts = core.process(source, out, parse(options), ctx)  # type: ignore[arg-type]
    return facts, json.loads(out.files["stats.json"])


def test_the_sample_spec_is_cheap_and_names_its_core() -> None:
    assert SPEC.name == "text-stats"
    assert SPEC.core_module == "mountworks_text_stats.core"
    assert SPEC.hinted_by("notes.TXT") and not SPEC.hinted_by("photo.jpg")
    assert spec_problems(SPEC) == [] and core_problems(SPEC) == []


@pytest.mark.parametrize(("head", "accepted"), [
    (b"", True),
    (b"plain ASCII\n", True),
    ("caf\u00e9 na\u00efve \u65e5\u672c".encode(), True),
    (b"\xef\xbb\xbfwith a BOM", True),
    (("x" * 63 + "\u00e9").encode()[:64], True),  # cut inside a character by the sniff length
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", False),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", False),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", False),
    ("UTF-16".encode("utf-16"), False),
    (b"caf\xe9 (Latin-1)", False),
], ids=["empty", "ascii", "utf8", "bom", "cut-char", "png", "jpeg", "pdf", "utf16", "latin1"])
def test_sniff_takes_utf8_text_only(head: bytes, accepted: bool) -> None:
    assert SPEC.accepts(head) is accepted


def test_counts_lines_words_chars_and_the_top_words(tmp_path: Path) -> None:
    facts, stats = _process(tmp_path, TEXT.encode(), top=2)
    assert facts == {"bytes": len(TEXT.encode()), "chars": len(TEXT), "lines": 4, "words": 16,
                     "distinct_words": 12, "max_line_chars": len("No newline at the end: café CAFÉ"),
                     "encoding": "utf-8"}
    assert stats["top_words"] == [{"word": "the", "count": 4}, {"word": "café", "count": 2}]
    assert stats["top_words_exact"] is True and stats["schema"] == "mountworks-text-stats/1"


def test_an_empty_file_has_zero_of_everything(tmp_path: Path) -> None:
    facts, stats = _process(tmp_path, b"")
    assert (facts["lines"], facts["words"], facts["chars"], facts["bytes"]) == (0, 0, 0, 0)
    assert stats["top_words"] == []


def test_chunk_boundaries_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("Ünïcödé wörds, don't split; 日本語 text\n" * 50) + "tail"
    whole, whole_stats = _process(tmp_path, text.encode())
    for chunk in (1, 2, 3, 7, 64, 4096):
        monkeypatch.setattr(core, "CHUNK_BYTES", chunk)
        facts, stats = _process(tmp_path, text.encode())
        assert (facts, stats) == (whole, whole_stats), f"chunk size {chunk}"


def test_a_bom_is_recorded_and_not_counted(tmp_path: Path) -> None:
    facts, _ = _process(tmp_path, b"\xef\xbb\xbfhello world\n")
    assert (facts["chars"], facts["words"], facts["encoding"]) == (12, 2, "utf-8-sig")


@pytest.mark.parametrize(("data", "error", "words"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", UnsupportedInput, "NUL byte at offset 8"),
    (b"caf\xe9 au lait", UnsupportedInput, "invalid UTF-8 at byte offset 3"),
    (b"a" * 100 + b"\x00", UnsupportedInput, "NUL byte at byte offset 100"),
    (b"a" * 100 + b"\nline two caf\xe9\n", CorruptInput, "byte offset 113 (line 2)"),
    (b"a" * 100 + "é".encode()[:1], CorruptInput, "ends inside a UTF-8 character"),
], ids=["binary", "latin1-head", "nul-later", "latin1-later", "truncated"])
def test_bad_input_is_classified(tmp_path: Path, data: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=re.escape(words)):
        _process(tmp_path, data)


def test_max_bytes_is_a_named_limit(tmp_path: Path) -> None:
    with pytest.raises(LimitExceeded, match="max_bytes=10") as caught:
        _process(tmp_path, b"x" * 11, max_bytes=10)
    assert caught.value.limit == "max_bytes"


@pytest.mark.parametrize("options", [{"top": 0}, {"top": 1001}, {"max_bytes": "big"}, {"colour": "red"}],
                         ids=["top-0", "top-1001", "max-bytes-text", "unknown"])
def test_bad_options_are_usage_errors(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        parse(options)


# ----------------------------------------------------------------------------- installed beside mountworks


class Env(NamedTuple):
    """A fresh virtual environment holding mountworks and the sample, nothing else of ours."""

    venv: Path
    python: Path
    mountworks: Path
    env: dict[str, str]


def _unavailable(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (MOUNTWORKS_REQUIRE_S3 is set: this must work here)")
    pytest.skip(reason)


def _clean_env() -> dict[str, str]:
    """The environment without our settings and without any path into this checkout."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("MOUNTWORKS_", "AWS_LAMBDA_", "POWERTOOLS_", "PYTHONPATH", "VIRTUAL_ENV"))}


def _copy_sources(build: Path) -> tuple[Path, Path]:
    """What pip builds from: mountworks' package files and the sample, copied out of the checkout."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    mountworks = build / "mountworks"
    mountworks.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, mountworks / name)
    for package in ("shared", "workers"):
        shutil.copytree(REPO / package, mountworks / package, ignore=junk)
    sample = build / "text-stats"
    shutil.copytree(SAMPLE, sample, ignore=junk)
    return mountworks, sample


def _pip(python: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                          env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("extending")
    venv = base / "venv"
    env = _clean_env()
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], env=env, capture_output=True, text=True,
                          timeout=PIP_TIMEOUT)
    python = venv / "bin" / "python"
    if made.returncode != 0 or not python.exists():
        _unavailable(f"cannot create a virtual environment here: {(made.stderr or made.stdout).strip()[-400:]}")
    # From PyPI: a setuptools that builds wheels by itself (the builds below use no isolation,
    # so they need no index) and the one runtime dependency of the CLI and the handlers.
    fetched = _pip(python, env, "setuptools>=70.1", "aws-lambda-powertools>=3.0")
    if fetched.returncode != 0:
        _unavailable(f"cannot install setuptools and aws-lambda-powertools from the package index: "
                     f"{fetched.stderr.strip()[-600:]}")
    mountworks_src, sample_src = _copy_sources(base / "src")
    for source in (mountworks_src, sample_src):
        built = _pip(python, env, "--no-deps", "--no-build-isolation", str(source))
        assert built.returncode == 0, f"pip install {source.name} failed:\n{built.stdout}\n{built.stderr}"
    env["VIRTUAL_ENV"] = str(venv)
    yield Env(venv, python, venv / "bin" / "mountworks", env)


def _mount(tmp_path: Path, files: dict[str, bytes | str]) -> Path:
    root = tmp_path / "mount"
    for name, content in files.items():
        path = root / "ingest" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    (root / "ingest").mkdir(parents=True, exist_ok=True)
    return root


def _cli(installed: Env, tmp_path: Path, *args: str) -> tuple[int, Any, str]:
    """Run the environment's ``mountworks``: (exit code, stdout as JSON, stderr)."""
    done = subprocess.run([str(installed.mountworks), *args], env=installed.env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    try:
        body = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        pytest.fail(f"mountworks {' '.join(args)} printed something other than JSON:\n{done.stdout}\n{done.stderr}")
    return done.returncode, body, done.stderr


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stats_of(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    (output,) = manifest["outputs"]
    assert output["path"].endswith("/stats.json")
    path = root / output["path"]
    assert (path.stat().st_size, _sha256(path)) == (output["size"], output["sha256"])
    stats: dict[str, Any] = json.loads(path.read_text())
    return stats


NOTES: dict[str, bytes | str] = {
    "notes/a.txt": TEXT,
    "notes/b.md": "# Title\n\nSome *markdown* text, some more text.\n",
    "notes/empty.txt": b"",
    "notes/café menu.txt": "Crème brûlée\nCafé au lait\n",
    "notes/latin1.txt": b"An ASCII start that is longer than the sniffed head of the file...\ncaf\xe9\n",
    "blobs/image.bin": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
}


@pytest.mark.slow
def test_the_environment_has_mountworks_and_the_sample_but_no_media_library(installed: Env, tmp_path: Path) -> None:
    probe = ("import importlib.metadata as md, importlib.util as u, json, shared; print(json.dumps({"
             "'shared': shared.__file__, "
             "'entry_points': {e.name: e.value for e in md.entry_points(group='mountworks.workers')}, "
             "'heavy': [m for m in ('PIL', 'pypdf', 'pyarrow', 'numpy') if u.find_spec(m)]}))")
    done = subprocess.run([str(installed.python), "-c", probe], env=installed.env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True)
    seen = json.loads(done.stdout)
    assert Path(seen["shared"]).is_relative_to(installed.venv), "mountworks must come from the environment"
    assert seen["entry_points"] == {"text-stats": "mountworks_text_stats:SPEC"}
    assert seen["heavy"] == []
    code, _, err = _cli(installed, tmp_path, "run", "no-such-worker", "ingest/a.txt", "--root", str(tmp_path))
    assert code == 2 and "text-stats" in err  # the registry lists the installed worker beside the in-repo ones


@pytest.mark.slow
def test_run_commits_stats_json_and_a_second_run_is_already_done(installed: Env, tmp_path: Path) -> None:
    root = _mount(tmp_path, NOTES)
    code, manifest, err = _cli(installed, tmp_path, "run", "text-stats", "ingest/notes/a.txt", "--root", str(root))
    assert code == 0, err
    assert (manifest["worker"], manifest["worker_version"]) == ("text-stats", "1.0.0")
    assert manifest["input"]["path"] == "ingest/notes/a.txt"
    assert manifest["input"]["sha256"] == _sha256(root / "ingest/notes/a.txt")
    assert manifest["options"] == {"top": 20, "max_bytes": 2_000_000_000}
    assert manifest["facts"]["words"] == 16
    stats = _stats_of(root, manifest)
    assert stats["lines"] == 4 and stats["top_words"][0] == {"word": "the", "count": 4}
    assert manifest["outputs"][0]["words"] == 16  # the output's facts are in the manifest too
    again, second, err = _cli(installed, tmp_path, "run", "text-stats", "ingest/notes/a.txt", "--root", str(root))
    assert again == 0, err
    assert second["run_id"] == manifest["run_id"]
    assert len(list((root / "workspace/text-stats/notes/a.txt").glob("*/manifest.json"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options", "exit_code", "error"), [
    ("blobs/image.bin", [], 3, "unsupported-format"),
    ("notes/latin1.txt", [], 3, "corrupt-input"),
    ("notes/a.txt", ["-o", "max_bytes=10"], 3, "limit-exceeded"),
    ("notes/a.txt", ["-o", "top=0"], 2, None),
], ids=["binary", "invalid-utf8", "max-bytes", "bad-option"])
def test_bad_input_exits_with_its_class(installed: Env, tmp_path: Path, name: str, options: list[str],
                                        exit_code: int, error: str | None) -> None:
    root = _mount(tmp_path, NOTES)
    code, record, err = _cli(installed, tmp_path, "run", "text-stats", f"ingest/{name}", "--root", str(root), *options)
    assert code == exit_code, err
    if error is None:
        assert "top" in err  # a usage error names the option; nothing is committed
        assert not (root / "workspace").exists() or not list((root / "workspace").rglob("*.json"))
        return
    assert record["error"]["code"] == error and record["error"]["message"]
    assert "Traceback" not in err
    (committed,) = (root / "workspace/text-stats" / name).glob("*/error.json")
    assert json.loads(committed.read_text())["error"]["code"] == error


@pytest.mark.slow
def test_backfill_processes_the_text_files_and_verify_holds(installed: Env, tmp_path: Path) -> None:
    root = _mount(tmp_path, NOTES)
    code, _, err = _cli(installed, tmp_path, "run", "text-stats", "ingest/notes/a.txt", "--root", str(root))
    assert code == 0, err
    code, summary, err = _cli(installed, tmp_path, "backfill", "--worker", "text-stats", "--root", str(root))
    assert code == 0, err
    assert summary["files"] == len(NOTES)
    assert summary["unrouted"] == 1  # the PNG-like blob is no text
    totals = summary["totals"]
    assert (totals["done"], totals["skipped"], totals["failed"]) == (3, 1, 1), summary
    assert [f["input"] for f in summary["failures"]] == ["ingest/notes/latin1.txt"]
    empty = next((root / "workspace/text-stats/notes/empty.txt").glob("*/manifest.json"))
    assert json.loads(empty.read_text())["facts"]["lines"] == 0
    again, summary, err = _cli(installed, tmp_path, "backfill", "--worker", "text-stats", "--root", str(root))
    assert again == 0, err
    assert summary["totals"]["done"] == 0  # everything is committed: nothing is processed twice
    code, report, err = _cli(installed, tmp_path, "verify", "--root", str(root))
    assert code == 0, (report, err)


@pytest.mark.slow
def test_invoke_runs_the_handler_on_a_direct_event(installed: Env, tmp_path: Path) -> None:
    root = _mount(tmp_path, NOTES)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"input": "ingest/notes/b.md", "options": {"top": 2}}))
    code, response, err = _cli(installed, tmp_path, "invoke", "text-stats", str(event), "--root", str(root))
    assert code == 0, err
    (result,) = response["results"]
    assert (result["worker"], result["status"], result["input"]) == ("text-stats", "done", "ingest/notes/b.md")
    manifest = json.loads((root / "workspace/text-stats/notes/b.md" / result["run_id"] / "manifest.json").read_text())
    assert manifest["options"]["top"] == 2
    assert _stats_of(root, manifest)["top_words"] == [{"word": "some", "count": 2}, {"word": "text", "count": 2}]


HANDLER_SCRIPT = """
import importlib, json, sys

class Context:  # the attributes Lambda's context object has that the runtime and Powertools read
    function_name = "text-stats"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:text-stats"
    memory_limit_in_mb = 512
    aws_request_id = "test-request-1"
    log_group_name = "/aws/lambda/text-stats"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self):
        return 60_000

module, event, answer = sys.argv[1:]
handler = importlib.import_module(module).handler
with open(answer, "w") as f:
    json.dump(handler(json.loads(event), Context()), f)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("module", "extra_env"), [
    ("mountworks_text_stats.handler", {}),
    ("workers.handler", {"MOUNTWORKS_WORKER": "text-stats"}),
], ids=["package-handler", "generic-handler"])
def test_the_lambda_handler_processes_a_direct_event(installed: Env, tmp_path: Path, module: str,
                                                      extra_env: dict[str, str]) -> None:
    root = _mount(tmp_path, NOTES)
    answer = tmp_path / "answer.json"
    event = {"input": "ingest/notes/café menu.txt", "options": {"top": 3}}
    env = {**installed.env, "MOUNTWORKS_MOUNT": str(root), **extra_env}
    done = subprocess.run([str(installed.python), "-c", HANDLER_SCRIPT, module, json.dumps(event), str(answer)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(answer.read_text())["results"]
    assert (result["worker"], result["status"]) == ("text-stats", "done")
    manifest = json.loads((root / "workspace/text-stats/notes/café menu.txt" / result["run_id"] / "manifest.json")
                          .read_text())
    assert manifest["invocation"] == "test-request-1"
    assert _stats_of(root, manifest)["lines"] == 2
