"""pdf-extract throughput: the worker vs a plain pypdf loop vs pdfminer.six, in one run.

    python bench/bench_pdf.py [--pages 200] [--repeat 3] [--no-pdfminer]

Documents: a generated text-heavy PDF (``--pages`` pages of dense prose in the standard
Type1 fonts) and, where the corpus is present, ``tracemonkey.pdf`` (a real 14-page paper).
Contenders:

- ``pypdf loop``: ``PdfReader(path)`` then ``page.extract_text()`` for every page (the anchor),
- ``worker``: the whole pdf-extract run through ``shared.runtime.execute`` in one process
  (hash, claim, per-page records, text.txt, document.json, output hashes, manifest),
- ``worker parallel=2``: the same run with its page ranges split over 2 processes,
- ``pdfminer.six``: ``pdfminer.high_level.extract_text(path)`` (optional, ``bench`` extra).

Timing is bench/harness.py's: contenders interleaved, order rotated, one warm-up round.

Reported: median seconds, pages/second, and ratios against the pypdf loop; the load
average before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pdfgen import text_heavy  # noqa: E402

from bench.harness import Contender, compare, machine  # noqa: E402
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


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuMeter:
    """Wraps a contender: records the CPU seconds (this process + children) of each call.

    On a shared, oversubscribed machine wall time mostly measures the neighbours; CPU time
    is each contender's own cost. Both are reported.
    """

    def __init__(self, fn: Callable[[Path], int]) -> None:
        self.fn = fn
        self.cpu: list[float] = []

    def __call__(self, path: Path) -> int:
        before = _cpu_seconds()
        result = self.fn(path)
        self.cpu.append(_cpu_seconds() - before)
        return result

    @property
    def median(self) -> float:
        return statistics.median(self.cpu[1:] or self.cpu)  # the first call is the warm-up


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
    docs.append((f"generated text-heavy PDF, {args.pages} pages", generated, args.pages))
    if CORPUS_DOC.is_file():
        copy = root / "ingest" / CORPUS_DOC.name
        shutil.copyfile(CORPUS_DOC, copy)
        docs.append(("corpus tracemonkey.pdf, 14 pages", copy, 14))
    use_pdfminer = not args.no_pdfminer
    if use_pdfminer:
        try:
            import pdfminer  # noqa: F401
        except ImportError:
            print("pdfminer.six is not installed (pip install -e .[bench]); skipped", file=sys.stderr)
            use_pdfminer = False

    SPEC.core()  # import pypdf once, outside the timings
    load_before = os.getloadavg()
    sections = []
    for label, path, pages in docs:
        meters = {"pypdf loop": CpuMeter(pypdf_loop), "worker": CpuMeter(WorkerRun(root, path.name, 1)),
                  "worker parallel=2": CpuMeter(WorkerRun(root, path.name, 2))}
        if use_pdfminer:
            meters["pdfminer.six"] = CpuMeter(pdfminer_text)
        notes = {"pypdf loop": "anchor", "worker": "1 process", "worker parallel=2": "page ranges"}
        contenders = [Contender(name, partial(meter, path), note=notes.get(name, "")) for name, meter in meters.items()]
        results = compare(contenders, anchor="pypdf loop", repeats=args.repeat, units=pages, unit_name="pages")
        speedup = results["worker"].median / results["worker parallel=2"].median
        overhead = results.ratio("worker") - 1
        cpu = {name: meter.median for name, meter in meters.items()}
        anchor_cpu = cpu["pypdf loop"]
        cpu_table = ["| contender | median CPU s | pages per CPU s | CPU vs pypdf loop |", "|---|---:|---:|---:|"]
        cpu_table += [f"| {name} | {value:.3f} | {pages / value:.1f} | {value / anchor_cpu:.2f}x |"
                      for name, value in cpu.items()]
        sections.append(
            f"**{label}**\n\n- worker overhead over the pypdf loop: {overhead * 100:+.1f}% wall, "
            f"{(cpu['worker'] / anchor_cpu - 1) * 100:+.1f}% CPU\n"
            f"- page-range parallel on 2 processes: {speedup:.2f}x wall; CPU {cpu['worker']:.2f}s serial vs "
            f"{cpu['worker parallel=2']:.2f}s parallel, so at most "
            f"{2 * cpu['worker'] / cpu['worker parallel=2']:.2f}x on 2 otherwise idle cores\n\n"
            f"Wall time:\n\n{results.markdown()}\n\nCPU time (process + children):\n\n" + "\n".join(cpu_table))
    load_after = os.getloadavg()
    shutil.rmtree(root, ignore_errors=True)

    print(f"{machine()}; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{args.repeat} interleaved repeats after a warm-up, medians\n")
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
