"""Backfill at scale: N small inputs, a first run, then a re-run over the committed tree.

    python bench/bench_backfill.py [--files 100000] [--jobs 2] [--repeat 3]

Measures, side by side in one run:
- first run (everything processed) vs re-run (everything committed): wall time, ratio;
- peak RSS of the parent process (``ru_maxrss``) after each phase: flat memory means the
  walk streams (a listing held in memory would grow with N);
- input content reads during the re-run, counted by an audit hook on ``open`` of any
  path under ``ingest/`` other than the 64-byte sniff (the re-run must not need even that).

The echo worker from tests/ stands in for a real library so that the runtime, not a
decoder, is measured. Figures go to bench/README.md ("Backfill at scale").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import workers.registry  # noqa: E402

workers.registry.WORKERS["test-echo"] = "echo_worker"

from shared import observability  # noqa: E402
from shared.backfill import backfill  # noqa: E402
from shared.config import MountConfig  # noqa: E402
from workers.registry import get_worker  # noqa: E402


def make_tree(root: Path, files: int) -> None:
    ingest = root / "ingest"
    for i in range(files):
        folder = ingest / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.echo").write_bytes(b"ECHO %d" % i)


class ReadCounter:
    """Counts opens of input files in this process (the parent routes; children process)."""

    def __init__(self, ingest: Path) -> None:
        self.prefix = str(ingest) + os.sep
        self.opens = 0
        self.active = False
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        if self.active and event == "open" and isinstance(args[0], str) and args[0].startswith(self.prefix):
            self.opens += 1


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="re-runs to take the median of")
    parser.add_argument("--dir", default=None, help="where to build the tree (default: a temp dir)")
    args = parser.parse_args()
    observability.set_log_level("WARNING")

    base = Path(args.dir or tempfile.mkdtemp(prefix="mw-bench-"))
    root = base / "mount"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    make_tree(root, args.files)
    build_s = time.monotonic() - t0
    cfg = MountConfig.load(root)
    spec = get_worker("test-echo")
    counter = ReadCounter(cfg.ingest_dir)
    rss_before = rss_mb()

    counter.active = True
    t0 = time.monotonic()
    first = backfill(cfg, [spec], jobs=args.jobs)
    first_s = time.monotonic() - t0
    first_opens, counter.opens = counter.opens, 0
    rss_first = rss_mb()

    reruns, rerun_opens = [], []
    for _ in range(args.repeat):
        t0 = time.monotonic()
        again = backfill(cfg, [spec], jobs=args.jobs)
        reruns.append(time.monotonic() - t0)
        rerun_opens.append(counter.opens)
        counter.opens = 0
    rss_rerun = rss_mb()
    rerun_s = statistics.median(reruns)
    result = {
        "files": args.files,
        "jobs": args.jobs,
        "build_s": round(build_s, 1),
        "first_run_s": round(first_s, 1),
        "first_run_per_s": round(args.files / first_s, 1),
        "first_done": first.total("done"),
        "rerun_median_s": round(rerun_s, 2),
        "rerun_runs_s": [round(r, 2) for r in reruns],
        "rerun_per_s": round(args.files / rerun_s, 1),
        "rerun_skipped": again.total("skipped"),
        "speedup": round(first_s / rerun_s, 1),
        "parent_input_opens_first_run": first_opens,  # the 64-byte sniff, one per input
        "parent_input_opens_rerun": rerun_opens,
        "peak_rss_mb": {"before": round(rss_before, 1), "after_first": round(rss_first, 1),
                        "after_reruns": round(rss_rerun, 1)},
    }
    print(json.dumps(result, indent=2))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
