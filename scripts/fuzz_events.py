"""Coverage-guided fuzzing (atheris) of event parsing and path resolution.

    pip install atheris
    mkdir -p /tmp/fuzz-corpus && cp samples/events/*.json /tmp/fuzz-corpus/   # seeds (grown in place)
    python scripts/fuzz_events.py /tmp/fuzz-corpus -max_total_time=600        # N seconds; any libFuzzer flag

Each input is read as JSON (an event, or a bare key string) and pushed through the same
edge the handlers use. The harness fails on any exception other than our own
UsageError/RefusedPath, and on any work item whose input resolves outside ``ingest/``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from shared.config import MountConfig
    from shared.errors import RefusedPath, UsageError
    from shared.events import sqs_body_items, work_items
    from shared.paths import input_from_bucket_key, resolve_input

ROOT = Path(tempfile.mkdtemp(prefix="mw-fuzz-"))
(ROOT / "ingest").mkdir()
(ROOT / "workspace").mkdir()
CFG = MountConfig.load(ROOT)
INGEST = os.path.realpath(CFG.ingest_dir)


def _confined(items: list) -> None:  # type: ignore[type-arg]
    for item in items:
        if item.input is not None and not os.path.realpath(resolve_input(CFG, item.input)).startswith(INGEST + "/"):
            raise AssertionError(f"escaped ingest/: {item.input}")


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        ref = input_from_bucket_key(CFG, text)
        if ref is not None and not os.path.realpath(resolve_input(CFG, ref)).startswith(INGEST + "/"):
            raise AssertionError(f"key escaped ingest/: {text!r}")
    except RefusedPath:
        pass
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return
    try:
        _confined(work_items(event, CFG))
    except UsageError:
        _confined(sqs_body_items(text, CFG))


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
