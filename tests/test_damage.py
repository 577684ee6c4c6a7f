"""Every worker on damaged copies of its sample input (tests/damage.py: cut, overwritten,
repeated, swapped, zeroed), in one backfill each: each copy ends as a committed run or as a
classified error of the input, never an internal error or a retry that would fail the same
way. A worker added to the registry is covered here without a line of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli, Put
from damage import backfill_all_classified, damaged
from worker_samples import sample_for

from shared.errors import (
    BAD_ENCODING,
    BINARY_INPUT,
    CORRUPT_INPUT,
    DECODER_CRASH,
    EMPTY_INPUT,
    ENCRYPTED,
    INVALID_INPUT,
    LIMIT_EXCEEDED,
    PASSWORD_REQUIRED,
    UNSUPPORTED_CODEC,
    UNSUPPORTED_FORMAT,
)
from workers.registry import WORKERS

# What a damaged input may end as: the input's own, permanent errors.
INPUT_FAULTS = {BAD_ENCODING, BINARY_INPUT, CORRUPT_INPUT, DECODER_CRASH, EMPTY_INPUT, ENCRYPTED, INVALID_INPUT,
                LIMIT_EXCEEDED, PASSWORD_REQUIRED, UNSUPPORTED_CODEC, UNSUPPORTED_FORMAT}
QUICK = {"video-transcode": ["-o", "video-transcode:preset=ultrafast"]}


@pytest.mark.slow
@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_damaged_copies_of_a_workers_sample_end_classified(worker: str, cli: Cli, mount: Path, put: Put) -> None:
    name, data = sample_for(worker)
    stem, suffix = Path(name).stem, Path(name).suffix
    copies = damaged(stem, suffix, data)
    for copy, content in copies.items():
        put(f"damaged/{copy}", content)
    summary = backfill_all_classified(cli, mount, worker, len(copies), *QUICK.get(worker, []))
    totals = summary["totals"]
    assert totals["done"] + totals["failed"] >= len(copies) // 2, "most copies must still reach the worker"
    assert {f["error"]["code"] for f in summary["failures"]} <= INPUT_FAULTS, summary["failures"]
