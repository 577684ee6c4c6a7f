"""The published JSON Schemas of what consumers read, shipped as package data.

Commit records (``manifest.schema.json``, ``error.schema.json``), each worker's
structured outputs (``<worker>.<output>.schema.json``) and the commit event's detail
(``commit-event.schema.json``). ``docs/schemas/`` holds the same
files for readers without the package; a test keeps the two identical and validates
every record the test suite writes against them. The versioning rule is in
docs/consumers.md: additions within ``mountworks.manifest/1``, anything a ``/1`` reader
would not accept needs ``/2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.runs import ERROR_SCHEMA, MANIFEST_SCHEMA

SCHEMA_DIR = Path(__file__).resolve().parent

# a commit record's "schema" value -> the file describing it
RECORD_SCHEMAS = {MANIFEST_SCHEMA: "manifest.schema.json", ERROR_SCHEMA: "error.schema.json"}

# a commit event's detail "schema" (shared/commit_events.py) -> its file
EVENT_SCHEMA = "mountworks.event/1"
EVENT_SCHEMAS = {EVENT_SCHEMA: "commit-event.schema.json"}

# (worker, output name in its run directory) -> (schema file, one JSON record per line?)
STRUCTURED_OUTPUTS: dict[tuple[str, str], tuple[str, bool]] = {
    ("pdf-extract", "pages.jsonl"): ("pdf-extract.pages.schema.json", True),
    ("pdf-extract", "document.json"): ("pdf-extract.document.schema.json", False),
    ("parquet-normalize", "rejects.jsonl"): ("parquet-normalize.rejects.schema.json", True),
}


def names() -> list[str]:
    """Every published schema file."""
    return sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))


def load(name: str) -> dict[str, Any]:
    """One published schema, parsed (``manifest.schema.json``, ``pdf-extract.pages.schema.json``, ...)."""
    if name not in names():
        raise KeyError(f"no published schema {name!r} (there are: {', '.join(names())})")
    value: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return value
