"""The release reliability script, at CI size: a handful of crash trials and duplicate
deliveries per worker, and the whole corpus through every worker that accepts it.

The release run is the same script with 50 trials per worker (docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS

REPO = Path(__file__).resolve().parents[1]


def _script(*args: str, timeout: float) -> dict[str, object]:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "reliability.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    report: dict[str, object] = json.loads(proc.stdout)
    assert proc.returncode == 0, json.dumps(report.get("failures"), indent=2)
    return report


@pytest.mark.slow
def test_kill_9_at_random_moments_and_duplicate_deliveries_per_worker() -> None:
    report = _script("--trials", "3", "--duplicates", "8", "--skip", "hostile", "--skip", "s3-faults",
                     timeout=1500)
    workers = report["workers"]
    assert isinstance(workers, dict) and set(workers) == set(__import__("workers.registry").registry.WORKERS)
    for name, entry in workers.items():
        assert entry["crash"]["trials"] == 3, name
        assert entry["duplicates"]["exit_codes"].count(0) >= 1, name


@pytest.mark.slow
@pytest.mark.corpus
def test_every_corpus_file_through_every_worker_that_accepts_it(corpus: Path) -> None:
    report = _script("--skip", "crash", "--skip", "duplicates", "--skip", "s3-faults", "--corpus", str(CORPUS),
                     timeout=2400)
    hostile = report["hostile"]
    assert isinstance(hostile, dict)
    tried = hostile["inputs_tried"]
    assert isinstance(tried, dict) and tried, "the hostile pass tried no worker"
    assert all(count > 0 for count in tried.values())
