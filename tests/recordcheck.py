"""Every commit record and structured output the tests write, checked against the published schemas.

conftest.py runs :func:`problems` over each test's temporary folder at teardown (and
s3support over each s3fs mount before it is unmounted), so a worker change that breaks
``manifest.schema.json`` or ``pdf-extract.pages.schema.json`` fails the test that made it.
A record that does not parse is a torn commit no reader trusts, and is left to the tests
about torn commits; an output that no longer matches its manifest was tampered with by
its test, and is not a worker's record either.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from shared import schemas
from shared.runs import COMMIT_RECORDS, is_run_dir_name


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.load(name), format_checker=FormatChecker())


def _errors(name: str, value: Any, where: str) -> list[str]:
    return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message} [{name}]"
            for e in validator(name).iter_errors(value)]


def _structured(root: Path, run_dir: Path, record: dict[str, Any]) -> list[str]:
    found = []
    prefix = run_dir.relative_to(root).as_posix() + "/"
    for output in record.get("outputs") or []:
        name = str(output.get("path", "")).removeprefix(prefix)
        spec = schemas.STRUCTURED_OUTPUTS.get((str(record.get("worker")), name))
        path = run_dir / name
        if spec is None or not path.is_file():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != output.get("sha256"):
            continue  # changed by its test after the commit (verify's and the reader's tests do that)
        schema, per_line = spec
        values = [json.loads(line) for line in data.splitlines() if line.strip()] if per_line else [json.loads(data)]
        for number, value in enumerate(values, 1):
            found += _errors(schema, value, f"{path.relative_to(root)}" + (f":{number}" if per_line else ""))
    return found


def problems(root: Path) -> list[str]:
    """Schema violations of every commit record (and its structured outputs) below ``root``."""
    found: list[str] = []
    record_names = {name for name, _ in COMMIT_RECORDS}
    for folder, _dirs, files in os.walk(root):
        here = Path(folder)
        if not is_run_dir_name(here.name):
            continue
        for name in sorted(record_names & set(files)):
            try:
                record = json.loads((here / name).read_bytes())
            except (OSError, ValueError):
                continue  # torn: no reader trusts it
            if not isinstance(record, dict) or not record.get("run_id"):
                continue
            where = str((here / name).relative_to(root))
            schema = schemas.RECORD_SCHEMAS.get(str(record.get("schema")))
            if schema is None:
                found.append(f"{where}: unknown record schema {record.get('schema')!r}")
                continue
            found += _errors(schema, record, where)
            found += _structured(root, here, record)
    return found
