"""pdf-extract against PyMuPDF and bare pypdfium2, whole process each, in one run.

    python -m bench.bench_pdf [--pages 200] [--repeats 5] [--cold-repeats 15] [--no-pypdf]

Documents: every PDF of ``../shared/corpus/pdf`` that opens, plus a generated text-heavy
PDF (``--pages`` pages of dense prose). Contenders, each a fresh ``python`` process
(start-up and imports included, as a user or an invocation pays them):

- ``worker``: ``mountworks run pdf-extract`` with ``parallel=1`` (hash, claim, the PDFium
  page process, pages.jsonl, text.txt, document.json, output hashes, manifest),
- ``PyMuPDF``: ``pymupdf.open(path)`` and ``page.get_text()`` for every page (the anchor;
  AGPL, a benchmark anchor only),
- ``pypdfium2``: ``PdfDocument(path)`` and ``get_textpage().get_text_range()`` per page,
- ``worker parallel=2`` (documents of 64+ pages): page ranges over 2 processes,
- ``worker engine=pypdf`` (documents of 10+ pages, unless ``--no-pypdf``): the old text path.

Warm runs (as a warm invocation: libraries imported) add the worker in its automatic mode
(``parallel=0``, the default: page processes added for the pages left, one per free CPU)
and a generated 48-page document.

Timing is bench/harness.py's: contenders interleaved, order rotated, one warm-up round;
medians, ratios of medians and paired ratios. Peak RSS is each contender's own process
tree (``wait4``). Then a text-quality table (characters, words, control characters of
each engine's text) and the handler's cold start against a bare import of its libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pdfgen import text_heavy  # noqa: E402

from bench.harness import Contender, compare, machine  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "pdf"
PY = sys.executable

PYMUPDF = ("import sys, pymupdf\ndoc = pymupdf.open(sys.argv[1])\n"
           "print(sum(len(page.get_text()) for page in doc))")
PDFIUM = ("import sys, pypdfium2\ndoc = pypdfium2.PdfDocument(sys.argv[1])\n"
          "print(sum(len(doc[i].get_textpage().get_text_range()) for i in range(len(doc))))")


def page_count(path: Path) -> int | None:
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError:
        return None
    try:
        for i in range(len(document)):
            document[i].get_textpage().get_text_range()
        return len(document)
    except pypdfium2.PdfiumError:
        return None
    finally:
        document.close()


def worker_argv(root: Path, name: str, *options: str) -> list[str]:
    argv = [PY, "-m", "workers", "run", "pdf-extract", f"ingest/{name}", "--root", str(root)]
    for option in options:
        argv += ["-o", option]
    return argv


class Process:
    """A whole-process contender that also records its CPU seconds (itself and every
    descendant it reaped): on a shared machine wall time partly measures the neighbours."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.cpu: list[float] = []

    def __call__(self) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(self.argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu[1:] or self.cpu)  # the first call is the warm-up


def peak_rss_mb(argv: list[str]) -> float:
    """Peak resident set of the process and the children it waited for (``wait4``)."""
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode in (0, 3), (argv, process.returncode)
    return usage.ru_maxrss / 1024


# ------------------------------------------------------------------------------ quality

_KEPT = {"\n", "\t", "\f", "\r"}


def control_share(text: str) -> float:
    control = sum(1 for c in text if c not in _KEPT and unicodedata.category(c) == "Cc")
    return control / len(text) if text else 0.0


def texts(path: Path, root: Path) -> dict[str, str]:
    import pymupdf
    import pypdfium2

    found: dict[str, str] = {}
    document = pymupdf.open(path)
    found["PyMuPDF"] = "\f".join(document[i].get_text() for i in range(document.page_count))
    document.close()
    pdf = pypdfium2.PdfDocument(path)
    found["pypdfium2"] = "\f".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    pdf.close()
    for label, options in (("worker", ()), ("worker engine=pypdf", ("engine=pypdf",))):
        shutil.rmtree(root / "workspace", ignore_errors=True)
        out = subprocess.run(worker_argv(root, path.name, *options), cwd=REPO, capture_output=True, text=True)
        record = json.loads(out.stdout)
        [text] = [o["path"] for o in record.get("outputs", []) if o["path"].endswith("/text.txt")]
        found[label] = (root / text).read_text(encoding="utf-8")
    return found


def quality_table(docs: list[tuple[str, Path, int]], root: Path) -> str:
    lines = ["| document | pages | worker chars | PyMuPDF chars | pypdfium2 chars | worker words | PyMuPDF words | "
             "pypdfium2 words | control chars: worker / pypdfium2 / PyMuPDF / engine=pypdf |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, path, pages in docs:
        t = texts(path, root)
        n = {k: len(v.replace("\f", "")) for k, v in t.items()}
        w = {k: len(v.split()) for k, v in t.items()}
        shares = " / ".join(f"{control_share(t[k]) * 100:.2f}%"
                            for k in ("worker", "pypdfium2", "PyMuPDF", "worker engine=pypdf"))
        lines.append(f"| {label} | {pages} | {n['worker']} | {n['PyMuPDF']} | {n['pypdfium2']} | {w['worker']} | "
                     f"{w['PyMuPDF']} | {w['pypdfium2']} | {shares} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- page loops only


def page_loops(docs: list[tuple[str, Path, int]], repeats: int) -> str:
    """The page loops alone, in this process (imports and start-up excluded): what each
    page costs. The worker's loop is its own page function (pypdf structure, content-size
    check, PDFium text, record), run here without the page process around it."""
    import io

    import pymupdf
    import pypdfium2

    from shared.worker import Deadline
    from workers.pdf_extract.budget import Budget
    from workers.pdf_extract.opening import open_document
    from workers.pdf_extract.options import parse
    from workers.pdf_extract.pages import PDFIUM, page_facts, record
    from workers.pdf_extract.pdfium_text import PdfiumText

    def mupdf(path: Path) -> int:
        document = pymupdf.open(path)
        return sum(len(document[i].get_text()) for i in range(document.page_count))

    def pdfium(path: Path) -> int:
        document = pypdfium2.PdfDocument(path)
        return sum(len(document[i].get_textpage().get_text_range()) for i in range(len(document)))

    def worker(path: Path) -> int:  # both halves of each page, one after the other, in one process
        options, data = parse({}), path.read_bytes()
        doc, text = open_document(io.BytesIO(data), options, path, data), PdfiumText(data, None)
        budget = Budget(Deadline(None), options.max_page_seconds, options.max_seconds)
        total = 0
        for i in range(doc.page_count):
            facts = page_facts(doc.reader, i, options, budget)
            total += record(facts, text.read(i)[0], PDFIUM, False, options)["chars"]
        text.close()
        return total

    rows = ["| document | pages | worker page loop s | PyMuPDF s | pypdfium2 s | worker vs PyMuPDF (paired) | "
            "worker vs pypdfium2 (paired) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, path, pages in docs:
        if pages < 10:
            continue
        results = compare([Contender("PyMuPDF", partial(mupdf, path)), Contender("pypdfium2", partial(pdfium, path)),
                           Contender("worker", partial(worker, path))], anchor="PyMuPDF", repeats=repeats,
                          progress=False)
        rows.append(f"| {label} | {pages} | {results['worker'].median:.3f} | {results['PyMuPDF'].median:.3f} | "
                    f"{results['pypdfium2'].median:.3f} | {results.paired('worker'):.2f}x | "
                    f"{results.paired('worker', 'pypdfium2'):.2f}x |")
    return "\n".join(rows)


# ------------------------------------------------------------------ warm invocations


def warm_runs(docs: list[tuple[str, Path, int]], root: Path, repeats: int) -> str:
    """Whole runs in a warm process, as a warm Lambda invocation makes them: the libraries
    are imported already, so each run is only its per-document work. The worker is the
    whole run through ``shared.runtime.execute`` (hash, claim, the forked PDFium page
    process(es), pages.jsonl, text.txt, document.json, output hashes, manifest); the
    anchors open the document and take every page's text."""
    import pymupdf
    import pypdfium2

    from shared.config import MountConfig
    from shared.paths import input_from_path
    from shared.runtime import execute
    from shared.worker import Deadline
    from workers.pdf_extract import SPEC

    cfg = MountConfig.load(root)

    def mupdf(path: Path) -> None:
        document = pymupdf.open(path)
        sum(len(document[i].get_text()) for i in range(document.page_count))
        document.close()

    def pdfium(path: Path) -> None:
        document = pypdfium2.PdfDocument(path)
        sum(len(document[i].get_textpage().get_text_range()) for i in range(len(document)))
        document.close()

    def worker(path: Path, parallel: int) -> None:
        outcome = execute(SPEC, input_from_path(cfg, f"ingest/{path.name}"), {"parallel": parallel}, cfg,
                          deadline=Deadline(None))
        assert outcome.status == "done", outcome.message

    def fresh() -> None:
        shutil.rmtree(root / "workspace", ignore_errors=True)

    rows = ["| document | pages | worker s | parallel=2 s | automatic s | PyMuPDF s | pypdfium2 s "
            "| worker vs pypdfium2 (paired) | worker vs PyMuPDF (paired) | parallel=2 speed-up (paired) "
            "| automatic speed-up (paired) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, path, pages in docs:
        if pages < 10:
            continue
        contenders = [Contender("PyMuPDF", partial(mupdf, path)), Contender("pypdfium2", partial(pdfium, path)),
                      Contender("worker", partial(worker, path, 1), setup=fresh),
                      Contender("worker automatic", partial(worker, path, 0), setup=fresh)]
        if pages >= 64:
            contenders.append(Contender("worker parallel=2", partial(worker, path, 2), setup=fresh))
        results = compare(contenders, anchor="PyMuPDF", repeats=repeats, progress=False)
        parallel = ("", "")
        if pages >= 64:
            speedup = 1 / results.paired("worker parallel=2", "worker")
            parallel = (f"{results['worker parallel=2'].median:.3f}", f"{speedup:.2f}x")
        auto = 1 / results.paired("worker automatic", "worker")
        rows.append(f"| {label} | {pages} | {results['worker'].median:.3f} | {parallel[0]} | "
                    f"{results['worker automatic'].median:.3f} | "
                    f"{results['PyMuPDF'].median:.3f} | {results['pypdfium2'].median:.3f} | "
                    f"{results.paired('worker', 'pypdfium2'):.2f}x | {results.paired('worker'):.2f}x | {parallel[1]} | "
                    f"{auto:.2f}x |")
    fresh()
    return "\n".join(rows)


# --------------------------------------------------------------------------- cold start


def _import_seconds(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([PY, "-c", code], check=True, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def cold_start(repeats: int) -> str:
    """The handler plus its core (what the first input imports) against a bare import of the
    third-party modules they load, with bytecode as in a built image."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPYCACHEPREFIX"] = str(REPO / "bench" / ".cache" / "pycache")
    subprocess.run([PY, "-m", "compileall", "-q", "shared", "workers"], check=True, cwd=REPO, env=env)
    rows = ["| cold start (whole process, with .pyc) | ours s | bare import s | ratio of medians | paired ratio |",
            "|---|---:|---:|---:|---:|"]
    for what, code in (("import handler", "import workers.pdf_extract.handler"),
                       ("import handler + what the first input imports (core, pypdf's side, PDFium's)",
                        "import workers.pdf_extract.handler, workers.pdf_extract.core; "
                        "workers.pdf_extract.core.pypdf_loader.load(); "  # as process() imports pypdf
                        "import workers.pdf_extract.document, workers.pdf_extract.pdfium_text")):
        probe = (code + "; import sys, json, sysconfig; p = sysconfig.get_paths(); "
                 "print(json.dumps(sorted(n for n, m in list(sys.modules.items()) if (getattr(m, '__file__', None) "
                 "or '').startswith((p['purelib'], p['platlib'])))))")
        out = subprocess.run([PY, "-c", probe], check=True, cwd=REPO, capture_output=True, text=True, env=env)
        modules = [m for m in json.loads(out.stdout.strip().splitlines()[-1])
                   if not m.startswith(("__editable__", "_distutils"))]
        bare = "import " + ", ".join(modules)
        ours, base = [], []
        for _ in range(repeats):
            ours.append(_import_seconds(code, env))
            base.append(_import_seconds(bare, env))
        paired = statistics.median(o / b for o, b in zip(ours, base, strict=True))
        tops = ", ".join(sorted({m.split(".")[0] for m in modules}))
        rows.append(f"| {what} ({tops}) | {statistics.median(ours):.3f} | {statistics.median(base):.3f} | "
                    f"{statistics.median(ours) / statistics.median(base):.2f}x | {paired:.2f}x |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-repeats", type=int, default=15)
    parser.add_argument("--no-pypdf", action="store_true", help="leave out the worker with engine=pypdf")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-pdf-"))
    (root / "ingest").mkdir()
    docs: list[tuple[str, Path, int]] = []
    generated = root / "ingest" / "text-heavy.pdf"
    generated.write_bytes(text_heavy(args.pages))
    docs.append(("generated text-heavy", generated, args.pages))
    for source in sorted(CORPUS.glob("*.pdf")) if CORPUS.is_dir() else []:
        pages = page_count(source)
        if pages:  # the broken and the password-protected ones time an error, not extraction
            copy = root / "ingest" / source.name
            shutil.copyfile(source, copy)
            docs.append((source.name, copy, pages))

    load_before = os.getloadavg()
    summary = ["| document | pages | worker | PyMuPDF | pypdfium2 | worker vs PyMuPDF (paired) | "
               "worker vs pypdfium2 (paired) | parallel=2 speed-up | engine=pypdf vs worker | peak RSS MB: worker "
               "/ PyMuPDF / pypdfium2 |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    sections = []
    cpu_summary = ["| document | pages | worker CPU s | PyMuPDF CPU s | pypdfium2 CPU s | worker vs PyMuPDF | "
                   "worker vs pypdfium2 |", "|---|---:|---:|---:|---:|---:|---:|"]

    def fresh() -> None:  # a committed run would be skipped: every repeat starts with no workspace
        shutil.rmtree(root / "workspace", ignore_errors=True)

    for label, path, pages in docs:
        procs = {"PyMuPDF": Process([PY, "-c", PYMUPDF, str(path)]),
                 "pypdfium2": Process([PY, "-c", PDFIUM, str(path)]),
                 "worker": Process(worker_argv(root, path.name, "parallel=1"))}
        if pages >= 64:
            procs["worker parallel=2"] = Process(worker_argv(root, path.name, "parallel=2"))
        if pages >= 10 and not args.no_pypdf:
            procs["worker engine=pypdf"] = Process(worker_argv(root, path.name, "parallel=1", "engine=pypdf"))
        notes = {"PyMuPDF": "anchor", "worker": "1 process", "worker parallel=2": "page ranges"}
        contenders = [Contender(name, proc, setup=fresh, note=notes.get(name, "")) for name, proc in procs.items()]
        print(f"{label} ({pages} pages)", file=sys.stderr)
        results = compare(contenders, anchor="PyMuPDF", repeats=args.repeats, units=pages, unit_name="pages")
        rss = []
        for name in ("worker", "PyMuPDF", "pypdfium2"):
            fresh()
            rss.append(peak_rss_mb(procs[name].argv))
        cpu = {name: proc.median_cpu for name, proc in procs.items()}
        speedup = (f"{results['worker'].median / results['worker parallel=2'].median:.2f}x"
                   if pages >= 64 else "")
        old = f"{results.ratio('worker engine=pypdf', 'worker'):.2f}x" if "worker engine=pypdf" in procs else ""
        summary.append(f"| {label} | {pages} | {results['worker'].median:.3f} | {results['PyMuPDF'].median:.3f} | "
                       f"{results['pypdfium2'].median:.3f} | {results.paired('worker'):.2f}x | "
                       f"{results.paired('worker', 'pypdfium2'):.2f}x | {speedup} | {old} | "
                       f"{rss[0]:.0f} / {rss[1]:.0f} / {rss[2]:.0f} |")
        cpu_rows = "\n".join(f"| {name} | {value:.3f} | {value / cpu['PyMuPDF']:.2f}x | "
                             f"{value / cpu['pypdfium2']:.2f}x |" for name, value in cpu.items())
        sections.append(f"**{label}, {pages} pages**\n\n{results.markdown()}\n\n| contender | median CPU s | "
                        f"CPU vs PyMuPDF | CPU vs pypdfium2 |\n|---|---:|---:|---:|\n{cpu_rows}")
        cpu_summary.append(f"| {label} | {pages} | {cpu['worker']:.3f} | {cpu['PyMuPDF']:.3f} | "
                           f"{cpu['pypdfium2']:.3f} | {cpu['worker'] / cpu['PyMuPDF']:.2f}x | "
                           f"{cpu['worker'] / cpu['pypdfium2']:.2f}x |")
    fresh()
    quality = quality_table(docs, root)
    loops = page_loops(docs, args.repeats)
    medium = root / "ingest" / "text-heavy-48.pdf"  # a short document the automatic mode may split, warm
    medium.write_bytes(text_heavy(48))
    warm = warm_runs([*docs, ("generated text-heavy", medium, 48)], root, args.repeats)
    load_mid = os.getloadavg()
    cold = cold_start(args.cold_repeats)
    load_after = os.getloadavg()
    shutil.rmtree(root, ignore_errors=True)

    print(f"{machine()}; load average (1 min) {load_before[0]:.2f} before, {load_mid[0]:.2f} after the timings, "
          f"{load_after[0]:.2f} at the end; {args.repeats} interleaved repeats after a warm-up, medians\n")
    print("Wall time, whole process each (seconds, medians; ratios: paired, per round):\n")
    print("\n".join(summary))
    print("\nCPU time, whole process tree (seconds, medians):\n")
    print("\n".join(cpu_summary))
    print("\nWhole runs in a warm process, as in a warm Lambda invocation (no start-up, no imports; medians):\n")
    print(warm)
    print("\nThe page loops alone, in one process (no start-up, no imports; medians):\n")
    print(loops)
    print("\nText quality (characters without page breaks, whitespace-separated words, share of control "
          "characters other than \\n \\t \\r \\f):\n")
    print(quality)
    print("\nCold start:\n")
    print(cold)
    print("\nPer document:\n")
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
