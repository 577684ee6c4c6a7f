"""Shared fixtures: a local folder as the mount, the corpus finder, the event loader, and
the two helpers most tests are written with:

- ``put(name, data)`` writes ``ingest/<name>`` on the mount (bytes, text, or a copy of a
  file) and returns that path relative to the mount root, as ``mountworks run`` takes it;
- ``cli(*argv)`` runs ``mountworks`` in-process and returns ``(exit code, its stdout JSON)``;
  ``cli.run(worker, rel, *options)`` is ``mountworks run`` with ``-o`` options, and
  ``cli.err`` is the stderr of the last call.

The real-world corpus lives in ``../shared/corpus`` beside a developer's checkout; in a
user's clone it is absent, and every test that needs it is skipped cleanly (marker
``corpus``). Core tests use generated samples only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

# moto's S3 server and the s3fs mounts (fixtures moto_s3, mount_factory, s3_mount): loaded
# here, before any test module imports s3support, so that its asserts are rewritten too
pytest_plugins = ("s3support",)

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MOUNTWORKS_CORPUS", REPO.parent / "shared" / "corpus"))
SAMPLE_EVENTS = REPO / "samples" / "events"


def venv_tool(name: str) -> str | None:
    """A command-line tool installed with the test extras (hadolint, ...): found in the
    environment the tests run in, even when that environment is not on ``PATH``
    (``.venv/bin/python -m pytest``), and only then on ``PATH``."""
    scripts = Path(sysconfig.get_path("scripts"))
    for folder in (scripts, Path(sys.executable).parent):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    return shutil.which(name)


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid`` (from /proc): pid -> command name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, _, rest = stat.partition("(")[2].rpartition(")")
            if int(rest.split()[1]) == pid:
                found[int(entry.name)] = name
    return found


def corpus_files(kind: str, *suffixes: str) -> list[Path]:
    """Files of one corpus folder for ``parametrize`` ([] where the corpus is absent)."""
    folder = CORPUS / kind
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name != "SOURCES.md" and (not suffixes or p.suffix.lower() in suffixes))


@pytest.fixture
def corpus() -> Path:
    """The corpus root; skips the test where ``../shared/corpus`` is absent."""
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus (../shared/corpus) is not present in this checkout")
    return CORPUS


@pytest.fixture
def echo_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The echo test worker (tests/echo_worker.py) registered as ``test-echo``: runtime tests
    use it to keep media libraries out of what they check."""
    import workers.registry

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(workers.registry.WORKERS, "test-echo", "echo_worker")


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    """A local folder used as the mount root, with an empty ingest/."""
    root = tmp_path / "mount"
    (root / "ingest").mkdir(parents=True)
    return root


def load_event(name: str) -> dict[str, Any]:
    """A real event payload: from ../shared/corpus/events, else from samples/events."""
    for folder in (CORPUS / "events", SAMPLE_EVENTS):
        path = folder / name
        if path.is_file():
            value: dict[str, Any] = json.loads(path.read_text())
            return value
    pytest.skip(f"event {name} is not available here")


class Put(Protocol):
    def __call__(self, name: str, data: bytes | str | Path, *, root: Path | None = None) -> str: ...


@pytest.fixture
def put(mount: Path) -> Put:
    """``put(name, data)`` -> ``"ingest/<name>"``: writes the input (``bytes``, ``str`` as UTF-8, or a
    ``Path`` whose file is copied) under ``ingest/`` of ``mount`` (or of ``root``), making its folders."""

    def _put(name: str, data: bytes | str | Path, *, root: Path | None = None) -> str:
        target = (root or mount) / "ingest" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, target)
        else:
            target.write_bytes(data.encode() if isinstance(data, str) else data)
        return f"ingest/{name}"

    return _put


class Cli:
    """``mountworks`` in-process (``workers.cli.main``), with its stdout parsed as JSON.

    ``cli(*argv)`` -> ``(exit code, the printed JSON object or {} when nothing was printed)``;
    output captured before the call is dropped, and the call's stderr is kept in ``err``.
    """

    def __init__(self, capsys: pytest.CaptureFixture[str], mount: Path) -> None:
        self.capsys = capsys
        self.mount = mount
        self.err = ""

    def __call__(self, *argv: str) -> tuple[int, dict[str, Any]]:
        from workers.cli import main

        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        self.err = captured.err
        record: dict[str, Any] = json.loads(captured.out) if captured.out.strip() else {}
        return code, record

    def run(self, worker: str, rel: str, *options: str, isolate: bool = True,
            root: Path | None = None) -> tuple[int, dict[str, Any]]:
        """``mountworks run WORKER REL --root MOUNT -o OPTION ...`` (``--no-isolation`` unless ``isolate``)."""
        argv = ["run", worker, rel, "--root", str(root or self.mount)]
        for option in options:
            argv += ["-o", option]
        if not isolate:
            argv.append("--no-isolation")
        return self(*argv)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], mount: Path) -> Cli:
    """``mountworks`` run in-process on ``mount``: see :class:`Cli`."""
    return Cli(capsys, mount)


@pytest.fixture(autouse=True)
def _log_level_per_test() -> Iterator[None]:
    """The CLI sets the shared logger's level (WARNING by default): undo it after each test,
    so a test that expects INFO lines does not depend on which tests ran before it."""
    from shared import observability

    level = observability.logger.log_level
    yield
    observability.logger.setLevel(level)


@pytest.fixture(autouse=True)
def _records_match_the_published_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """At teardown, every commit record and structured output under the test's temporary
    folder must validate against shared/schemas (tests/recordcheck.py). A test that forges
    records on purpose says so with ``@pytest.mark.forged_records``."""
    yield
    tmp_path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if tmp_path is None or request.node.get_closest_marker("forged_records"):
        return
    from recordcheck import problems

    found = problems(tmp_path)
    assert found == [], "records that break the published schemas:\n" + "\n".join(found[:20])


@pytest.fixture(autouse=True)
def _no_lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as local runs unless they set the Lambda variables themselves."""
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "MOUNTWORKS_MOUNT", "MOUNTWORKS_INGEST_PREFIX",
                 "MOUNTWORKS_WORKSPACE_PREFIX", "MOUNTWORKS_BUCKET_PREFIX"):
        monkeypatch.delenv(name, raising=False)
