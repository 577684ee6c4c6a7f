"""pdf-extract throughput: the worker vs a plain pypdf loop vs pdfminer.six, in one run.

    python bench/bench_pdf.py [--pages 200] [--repeat 3] [--no-pdfminer]

Documents: a generated text-heavy PDF (``--pages`` pages of dense prose in the standard
Type1 fonts) and, where the corpus is present, ``tracemonkey.pdf`` (a real 14-page paper).
Contenders, interleaved round-robin so that machine load hits them alike:

- ``pypdf loop``: ``PdfReader(path)`` then ``page.extract_text()`` for every page (the anchor),
- ``worker``: the whole pdf-extract run through ``shared.runtime.execute`` in one process
  (hash, claim, per-page records, text.txt, document.json, output hashes, manifest),
- ``worker parallel=2``: the same run with its page ranges split over 2 processes,
- ``pdfminer.six``: ``pdfminer.high_level.extract_text(path)`` (optional, ``bench`` extra).

Reported: median seconds, pages/second, and ratios against the pypdf loop; the load
average before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pdfgen import text_heavy  # noqa: E402

from shared.config import MountConfig  # noqa: E402
from shared.paths import input_from_path  # noqa: E402
from shared.runtime import execute  # noqa: E402
from workers.pdf_extract import SPEC  # noqa: E402

CORPUS_DOC = REPO.parent / "shared" / "corpus" / "pdf" / "tracemonkey.pdf"


def pypdf_loop(path: Path) -> int:
    from pypdf import PdfReader

    reader = PdfReader(path)
    return sum(len(page.extract_text()) for page in reader.pages)


def pdfminer_text(path: Path) -> int:
    from pdfminer.high_level import extract_text

    return len(extract_text(str(path)))


class WorkerRun:
    """Each call runs the worker into a fresh workspace prefix (a committed run would be skipped)."""

    def __init__(self, root: Path, name: str, parallel: int) -> None:
        self.root, self.name, self.parallel, self.n = root, name, parallel, 0

    def __call__(self, path: Path) -> int:
        self.n += 1
        cfg = MountConfig.load(self.root, workspace_prefix=f"ws-{self.parallel}-{self.n}")
        ref = input_from_path(cfg, f"ingest/{self.name}")
        assert ref is not None
        outcome = execute(SPEC, ref, {"parallel": self.parallel}, cfg)
        assert outcome.status == "done", outcome
        assert outcome.record is not None
        chars: int = outcome.record["facts"]["chars"]
        shutil.rmtree(cfg.workspace_dir)
        return chars


def measure(contenders: dict[str, Callable[[Path], int]], path: Path, repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn(path)  # warm-up: imports, caches, page cache
    for _ in range(repeat):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn(path)
            times[name].append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pdfminer", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-pdf-"))
    (root / "ingest").mkdir()
    docs: list[tuple[str, Path, int]] = []
    generated = root / "ingest" / "text-heavy.pdf"
    generated.write_bytes(text_heavy(args.pages))
    docs.append((f"generated text-heavy, {args.pages} pages", generated, args.pages))
    if CORPUS_DOC.is_file():
        copy = root / "ingest" / CORPUS_DOC.name
        shutil.copyfile(CORPUS_DOC, copy)
        docs.append(("corpus tracemonkey.pdf, 14 pages", copy, 14))

    SPEC.core()  # import pypdf once, outside the timings
    load_before = os.getloadavg()
    rows = []
    for label, path, pages in docs:
        contenders: dict[str, Callable[[Path], int]] = {
            "pypdf loop": pypdf_loop,
            "worker": WorkerRun(root, path.name, 1),
            "worker parallel=2": WorkerRun(root, path.name, 2),
        }
        if not args.no_pdfminer:
            try:
                import pdfminer  # noqa: F401

                contenders["pdfminer.six"] = pdfminer_text
            except ImportError:
                print("pdfminer.six is not installed (pip install -e .[bench]); skipped", file=sys.stderr)
        times = measure(contenders, path, args.repeat)
        anchor = statistics.median(times["pypdf loop"])
        worker = statistics.median(times["worker"])
        for name, samples in times.items():
            median = statistics.median(samples)
            rows.append((label, name, median, pages / median, median / anchor, worker / median))
    load_after = os.getloadavg()
    shutil.rmtree(root, ignore_errors=True)

    print(f"cpus: {os.cpu_count()}, load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"repeat {args.repeat}, medians")
    print()
    print("| document | contender | median s | pages/s | time vs pypdf loop | speed vs worker |")
    print("|---|---|---:|---:|---:|---:|")
    for label, name, median, rate, vs_anchor, vs_worker in rows:
        print(f"| {label} | {name} | {median:.2f} | {rate:.1f} | {vs_anchor:.2f}x | {vs_worker:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
