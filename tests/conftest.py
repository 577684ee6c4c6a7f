"""Shared fixtures: a local folder as the mount, the corpus finder, the event loader.

The real-world corpus lives in ``../shared/corpus`` beside a developer's checkout; in a
user's clone it is absent, and every test that needs it is skipped cleanly (marker
``corpus``). Core tests use generated samples only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MOUNTWORKS_CORPUS", REPO.parent / "shared" / "corpus"))
SAMPLE_EVENTS = REPO / "samples" / "events"


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


@pytest.fixture(autouse=True)
def _log_level_per_test() -> Any:
    """The CLI sets the shared logger's level (WARNING by default): undo it after each test,
    so a test that expects INFO lines does not depend on which tests ran before it."""
    from shared import observability

    level = observability.logger.log_level
    yield
    observability.logger.setLevel(level)


@pytest.fixture(autouse=True)
def _no_lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as local runs unless they set the Lambda variables themselves."""
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "MOUNTWORKS_MOUNT", "MOUNTWORKS_INGEST_PREFIX",
                 "MOUNTWORKS_WORKSPACE_PREFIX", "MOUNTWORKS_BUCKET_PREFIX"):
        monkeypatch.delenv(name, raising=False)
