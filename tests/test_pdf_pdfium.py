"""pdf-extract's two text engines: PDFium by default, pypdf on request; the fallback from
one to the other; limits that hold with either; a native crash in PDFium that ends one
input as decoder-crash, in the CLI without isolation and in a Lambda handler; a page that
asks PDFium for more memory than the function has, flagged on its own."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import signal
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pypdfium2
import pytest
from conftest import Cli, Put
from pdfgen import Page, build_pdf, decorate, font_map_bomb, text_page
from pypdf import PdfReader

from shared import observability as obs
from workers import cli as cli_module
from workers.pdf_extract import pdfium_text

ENGINES = ["pdfium", "pypdf"]
SAMPLE_TEXTS = [("Hello Helvetica", "second line (with parens)"), ("Times Roman text", "more words here"),
                ("A third page", "of plain English")]


def _pages(root: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    [path] = [root / o["path"] for o in record["outputs"] if o["path"].endswith("/pages.jsonl")]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(cli: Cli, put: Put, name: str, data: bytes, *options: str) -> tuple[int, dict[str, Any]]:
    return cli.run("pdf-extract", put(name, data), *options, isolate=False)


# --------------------------------------------------------------------------- engines


def test_default_engine_is_pdfium_and_pypdf_keeps_its_path(mount: Path, cli: Cli, put: Put) -> None:
    pdf = build_pdf([text_page(*lines) for lines in SAMPLE_TEXTS])
    code, pdfium_run = _run(cli, put, "a.pdf", pdf)
    assert code == 0, pdfium_run
    code, pypdf_run = _run(cli, put, "a.pdf", pdf, "engine=pypdf")
    assert code == 0, pypdf_run
    assert pdfium_run["options"]["engine"] == "pdfium" and pypdf_run["options"]["engine"] == "pypdf"
    assert pdfium_run["run_id"] != pypdf_run["run_id"]  # the engine changes the text: a different run
    n = len(SAMPLE_TEXTS)
    assert pdfium_run["facts"]["text_engines"] == {"pdfium": [[1, n]]}
    assert pypdf_run["facts"]["text_engines"] == {"pypdf": [[1, n]]}
    bare = pypdfium2.PdfDocument(pdf)
    reader = PdfReader(mount / "ingest" / "a.pdf")
    for page, other, index in zip(_pages(mount, pdfium_run), _pages(mount, pypdf_run), range(n), strict=True):
        assert page["text"] == bare[index].get_textpage().get_text_range().replace("\r\n", "\n")
        assert other["text"] == reader.pages[index].extract_text()
        assert page["text"].split() == other["text"].split()  # plain Latin text: the same words
    bare.close()


def test_a_document_pdfium_cannot_open_falls_back_to_pypdf(mount: Path, cli: Cli, put: Put) -> None:
    """A broken trailer /Root: pypdf finds the catalog by searching, PDFium refuses the file."""
    pdf = build_pdf([text_page("found by searching")]).replace(b"/Root 1 0 R", b"/Root 1 0 X")
    with pytest.raises(pypdfium2.PdfiumError):
        pypdfium2.PdfDocument(pdf)
    code, record = _run(cli, put, "b.pdf", pdf)
    assert code == 0, record
    assert _pages(mount, record)[0]["text"] == "found by searching"
    assert record["facts"]["text_engines"] == {"pypdf": [[1, 1]]}


# The other way round (pypdf cannot open it, PDFium can): test_pdf_extract.py's cyclic page tree.


# ---------------------------------------------------------------------------- limits


def _bomb_pdf(where: str) -> bytes:
    """Page 2 of 3 draws 24 MB of content inflated from ~25 KB: as its content stream, as the
    only element of its /Contents array, or as a form XObject it paints."""
    bomb = zlib.compress(b"0 0 m " * 4_000_000, 9)
    before, after = text_page("before"), text_page("after")
    if where == "form":  # the shared image XObject, rewritten in place (same length) as a form
        page = Page(image=True, raw_content=b"BT /F1 12 Tf 72 720 Td (form page) Tj ET /Im1 Do")
        pdf = build_pdf([before, page, after], image=(10, 10, bomb))
        image = b"/Subtype /Image /Width 10 /Height 10 /ColorSpace /DeviceGray /BitsPerComponent 8"
        form = b"/Subtype /Form /BBox [0 0 10 10]".ljust(len(image))
        assert pdf.count(image) == 1
        return pdf.replace(image, form)
    page = Page(raw_content=bomb, content_filter="/FlateDecode")
    if where == "array":  # page 2's content stream is object 10 (fonts 3-5, image 6, page 1: 7-8)
        page.contents_ref = "[10 0 R]"
    return build_pdf([before, page, after])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("where", ["stream", "array", "form"])
def test_flate_bomb_gives_the_limit_flag_with_either_engine(mount: Path, cli: Cli, put: Put, engine: str,
                                                            where: str) -> None:
    code, record = _run(cli, put, "bomb.pdf", _bomb_pdf(where), f"engine={engine}",
                        f"max_decompressed_bytes={1 << 20}")
    assert code == 0, record
    pages = _pages(mount, record)
    assert [pages[0]["text"], pages[2]["text"]] == ["before", "after"]
    assert pages[1]["flags"] == ["limit"] and pages[1]["error"]["limit"] == "MAX_DECOMPRESSED_BYTES"
    assert "raise option max_decompressed_bytes" in pages[1]["error"]["message"]
    # the same document under the default limit (75 MB): nothing is flagged
    code, whole = _run(cli, put, "bomb.pdf", _bomb_pdf(where), f"engine={engine}")
    assert code == 0 and not any(p["flags"] for p in _pages(mount, whole))


@pytest.mark.parametrize("engine", ENGINES)
def test_page_limits_keep_their_meaning(mount: Path, cli: Cli, put: Put, engine: str) -> None:
    code, record = _run(cli, put, "t.pdf", build_pdf([text_page("abcdefghijkl"), text_page("x" * 3)]),
                        f"engine={engine}", "max_page_chars=5")
    assert code == 0, record
    pages = _pages(mount, record)
    assert pages[0]["text"] == "abcde" and pages[0]["flags"] == ["text_truncated"]
    assert pages[1]["flags"] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_encrypted_documents_open_with_either_engine(mount: Path, cli: Cli, put: Put, engine: str) -> None:
    secret = "s3cret-pdfium"
    empty = decorate(build_pdf([text_page("empty user password")]), user_password="")
    code, record = _run(cli, put, "e.pdf", empty, f"engine={engine}")
    assert code == 0 and _pages(mount, record)[0]["text"] == "empty user password", record
    assert record["facts"]["text_engines"] == {engine: [[1, 1]]}
    locked = decorate(build_pdf([text_page("with a password")]), user_password=secret)
    code, record = _run(cli, put, "p.pdf", locked, f"engine={engine}")
    assert code == 3 and record["error"]["code"] == "password-required"
    code, record = _run(cli, put, "p.pdf", locked, f"engine={engine}", f"password={secret}", "max_pages=9")
    assert code == 0 and _pages(mount, record)[0]["text"] == "with a password", record
    assert record["facts"]["text_engines"] == {engine: [[1, 1]]}
    assert secret not in json.dumps(record)


# ----------------------------------------------------------------------- native crash


@pytest.fixture
def pdfium_crashes_on_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGSEGV in native code wherever PDFium opens a document holding CRASH-ME
    (a null read through ctypes), standing in for a PDFium bug on a hostile file; TRAP-ME
    ends it with SIGTRAP, as a failed CHECK in Chromium's code does."""
    real = pdfium_text.PdfiumText.__init__

    def crashing(self: pdfium_text.PdfiumText, source: bytes | Path, password: str | None) -> None:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        if b"CRASH-ME" in data:
            ctypes.string_at(0)
        if b"TRAP-ME" in data:
            signal.raise_signal(signal.SIGTRAP)
        real(self, source, password)

    monkeypatch.setattr(pdfium_text.PdfiumText, "__init__", crashing)


@pytest.mark.usefixtures("pdfium_crashes_on_marker")
def test_a_failed_check_in_pdfium_is_a_decoder_crash_too(mount: Path, cli: Cli, put: Put) -> None:
    """Without SIGTRAP among the crash signals this was an internal error (exit 1)."""
    code, record = _run(cli, put, "check.pdf", build_pdf([text_page("TRAP-ME")]))
    assert code == 3, record
    assert record["error"]["code"] == "decoder-crash" and "SIGTRAP" in record["error"]["message"]


@pytest.mark.usefixtures("pdfium_crashes_on_marker")
def test_pdfium_crash_is_decoder_crash_without_isolation(mount: Path, cli: Cli, put: Put) -> None:
    code, record = _run(cli, put, "crash.pdf", build_pdf([text_page("CRASH-ME")]))
    assert code == 3, record
    assert record["error"]["code"] == "decoder-crash" and "SIGSEGV" in record["error"]["message"]
    code, record = _run(cli, put, "fine.pdf", build_pdf([text_page("fine")]))  # this process goes on
    assert code == 0 and _pages(mount, record)[0]["text"] == "fine"


@pytest.mark.usefixtures("pdfium_crashes_on_marker")
def test_pdfium_crash_in_lambda_fails_that_input_only(mount: Path, put: Put, monkeypatch: pytest.MonkeyPatch) -> None:
    """In Lambda no parent isolates the run: the handler's process survives the crash, commits
    decoder-crash for that input and processes the next record of the same batch."""
    from shared.runtime import make_handler
    from workers.registry import get_worker

    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    monkeypatch.setattr(obs, "_emit_metrics", False)
    put("crash.pdf", build_pdf([text_page("CRASH-ME")]))
    put("next.pdf", build_pdf([text_page("next input")]))
    handler = make_handler(get_worker("pdf-extract"))
    context = cli_module.LocalContext("pdf-extract", 60)
    results = [handler({"input": f"ingest/{name}"}, context)["results"][0] for name in ("crash.pdf", "next.pdf")]
    assert results[0]["status"] == "failed" and results[0]["error"]["code"] == "decoder-crash", results
    assert results[1]["status"] == "done", results
    error_files = list(mount.rglob("error.json"))
    assert len(error_files) == 1 and json.loads(error_files[0].read_text())["error"]["code"] == "decoder-crash"


# ------------------------------------------------------------------------- native hang


@pytest.fixture
def pdfium_hangs_on_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """PDFium stuck inside one native call on a page whose text holds HANG-ME: a libc sleep
    with SIGALRM blocked, so the page timer's Python handler cannot end it (as in a real
    native loop); only the page process's watchdog can."""
    real = pdfium_text.PdfiumText.read

    def hanging(self: pdfium_text.PdfiumText, index: int) -> tuple[str, dict[str, Any]]:
        text, box = real(self, index)
        if "HANG-ME" in text:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            ctypes.CDLL(None).sleep(60)
        return text, box

    monkeypatch.setattr(pdfium_text.PdfiumText, "read", hanging)


@pytest.mark.usefixtures("pdfium_hangs_on_marker")
@pytest.mark.parametrize("parallel", ["1", "2"])
def test_a_page_stuck_in_pdfium_is_flagged_timeout_and_the_rest_comes_out(mount: Path, cli: Cli, put: Put,
                                                                          parallel: str) -> None:
    pages = [text_page(f"page {i}") for i in range(1, 7)]
    pages[2] = text_page("HANG-ME")
    code, record = _run(cli, put, "hang.pdf", build_pdf(pages), "max_page_seconds=0.3", f"parallel={parallel}")
    assert code == 0, record
    got = _pages(mount, record)
    assert [p["text"] for p in got] == ["page 1", "page 2", "", "page 4", "page 5", "page 6"]
    assert got[2]["flags"] == ["timeout"] and got[2]["error"]["limit"] == "MAX_PAGE_SECONDS"
    assert record["facts"]["page_timeouts"] == 1
    assert record["facts"]["text_engines"] == {"pdfium": [[1, 2], [4, 6]]}


# --------------------------------------------------------------------------- memory

FONT_BOMB_MB = 300  # PDFium holds ~1.5x this while it reads the map: far over a 128 MB page process


@pytest.fixture(scope="module")
def font_bomb() -> bytes:
    return font_map_bomb(FONT_BOMB_MB)


@contextlib.contextmanager
def _file_pages_resident(path: Path, size: int) -> Iterator[None]:
    """This process holds ``size`` bytes of a mapped file resident: counted in its resident
    set, but not in a forked child's (the kernel copies no page table of a file mapping)."""
    path.write_bytes(b"\1" * size)
    with path.open("rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, size, mmap.PAGESIZE)) == size // mmap.PAGESIZE
        yield


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_a_font_map_bomb_is_flagged_limit_memory_on_its_page(mount: Path, cli: Cli, put: Put, font_bomb: bytes,
                                                             parallel: str, tmp_path: Path) -> None:
    """Without the page processes' memory cap PDFium inflates the whole map (the function
    would be killed at its MemorySize, and so would every retry); with it, only that page
    loses its text. This process holds mapped file pages meanwhile, which a child grows
    from without holding them: its growth must be counted from its own start."""
    with _file_pages_resident(tmp_path / "mapped", 200 << 20):  # as a test runner's libraries are
        code, record = _run(cli, put, "font-bomb.pdf", font_bomb, "memory_mb=1", f"parallel={parallel}")
    assert code == 0, record
    got = _pages(mount, record)
    assert [p["text"] for p in got] == ["before the bomb", "", "after it"]
    assert got[1]["flags"] == ["limit"] and got[1]["error"]["limit"] == "memory", got[1]
    assert "memory_mb" in got[1]["error"]["message"]
    assert record["facts"]["page_errors"] == 1
    assert record["facts"]["text_engines"] == {"pdfium": [[1, 1], [3, 3]]}
    assert record["options"]["memory_mb"] == 1


def test_with_the_memory_it_needs_the_same_page_has_its_text(mount: Path, cli: Cli, put: Put,
                                                             font_bomb: bytes) -> None:
    code, record = _run(cli, put, "font-bomb.pdf", font_bomb, f"memory_mb={FONT_BOMB_MB * 4}")
    assert code == 0, record
    assert [p["text"] for p in _pages(mount, record)] == ["before the bomb", "the bomb page", "after it"]


def test_memory_mb_joins_the_run_id_only_when_set(mount: Path, cli: Cli, put: Put) -> None:
    pdf = build_pdf([text_page("plain")])
    code, default = _run(cli, put, "plain.pdf", pdf)
    assert code == 0 and "memory_mb" not in default["options"], default
    code, explicit = _run(cli, put, "plain.pdf", pdf, "memory_mb=4096")
    assert code == 0 and explicit["options"]["memory_mb"] == 4096, explicit
    assert explicit["run_id"] != default["run_id"]


@pytest.mark.usefixtures("pdfium_crashes_on_marker")
def test_a_crash_with_little_memory_in_use_is_still_a_decoder_crash(mount: Path, cli: Cli, put: Put) -> None:
    """The cap must not turn every crash into a page limit: only one that ran out of it.
    The parent holds more than the cap (a forked child's resident set starts with what it
    shares with its parent), so a check on the child's peak alone would get this wrong."""
    ballast = b"x" * (160 << 20)  # written, so resident here and in every child forked now
    code, record = _run(cli, put, "crash.pdf", build_pdf([text_page("CRASH-ME")]), "memory_mb=1")
    assert code == 3, record
    assert record["error"]["code"] == "decoder-crash", record
    assert len(ballast) == 160 << 20


# ----------------------------------------------------------- the two halves, overlapped

REPO = Path(__file__).resolve().parents[1]

_FIRST_FORK_PROBE = """
import json, sys
from pathlib import Path
from workers.pdf_extract import forks
real, seen = forks.fork, []
def fork(work, memory_mb):
    seen.append(sorted(m for m in ("pypdf", "pypdfium2") if m in sys.modules))
    return real(work, memory_mb)
forks.fork = fork
from workers import cli
code = cli.main(["run", "pdf-extract", "ingest/p.pdf", "--root", sys.argv[1], "--no-isolation"])
print(json.dumps({"code": code, "imported_at_first_fork": seen[0]}))
"""


def test_pdfium_page_process_starts_before_pypdf_is_imported(tmp_path: Path) -> None:
    """The overlap that makes a cold run faster: the first page process is forked before this
    process imports pypdf (or pypdfium2, which only the page processes need)."""
    import subprocess
    import sys

    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "p.pdf").write_bytes(build_pdf([text_page("overlapped")]))
    out = subprocess.run([sys.executable, "-c", _FIRST_FORK_PROBE, str(tmp_path)], cwd=REPO, check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "imported_at_first_fork": []}, out.stderr


_IDLE_PROBE = """
import json, os, sys
from pdfgen import build_pdf, text_page
from shared.worker import Deadline
from workers.pdf_extract.budget import Budget
from workers.pdf_extract.options import parse
from workers.pdf_extract.text_pages import PdfiumPages
count, wait_for_leader = int(sys.argv[1]), sys.argv[2] == "done"
pdf = build_pdf([text_page(f"page {n}") for n in range(1, count + 1)])
pages = PdfiumPages(pdf, parse({"parallel": 1}), Budget(Deadline(None), 30, 900), 0, None, workers=1)
if wait_for_leader:  # as after a cold import of pypdf: the leader has written every line and left
    leader = next(iter(pages.running.values()))
    os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)
lines = [line for line, _stopped in pages.in_order(range(count))]
pages.close()
print(json.dumps({"pages": sum(1 for line in lines if line), "loaded": "pypdfium2" in sys.modules}))
"""


@pytest.mark.parametrize(("count", "leader", "loaded"), [(3, "done", False), (400, "working", True)])
def test_pdfium_is_loaded_for_the_next_input_only_in_a_wait(count: int, leader: str, loaded: bool) -> None:
    """The committing process loads PDFium (~20 ms) for the next input's page processes only
    while it would wait for this input's: not after a leader that is done already (a short
    document on a cold start, where that load was the last thing between the text and the
    commit)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "probe",  # where it pays back, whatever the CPUs
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", _IDLE_PROBE, str(count), leader], cwd=REPO, check=True,
                         capture_output=True, text=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"pages": count, "loaded": loaded}, out.stderr


def _page_processes(pdf: bytes, parallel: int) -> Any:
    from shared.worker import Deadline
    from workers.pdf_extract.budget import Budget
    from workers.pdf_extract.options import parse
    from workers.pdf_extract.text_pages import PdfiumPages

    return PdfiumPages(pdf, parse({"parallel": parallel}), Budget(Deadline(None), 30, 900), 0, None,
                       workers=max(1, parallel))


@pytest.fixture
def free_cpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Set the free CPUs the automatic mode sees (the machine's other processes are not ours to set)."""
    from workers.pdf_extract import text_pages

    return lambda cpus: monkeypatch.setattr(text_pages, "free_cpus", lambda: cpus)


@pytest.mark.parametrize(("parallel", "free", "processes"), [(1, None, 1), (2, None, 2), (3, None, 3), (0, 2.0, 3)])
def test_page_processes_take_every_page_once_in_order(parallel: int, free: float | None, processes: int,
                                                      free_cpus: Callable[[float], None]) -> None:
    """Chunks go to whichever process is free (a token each on one pipe), also to those the
    automatic mode adds once pypdf has counted the pages: every page comes out once, in order."""
    count = 130
    pdf = build_pdf([text_page(f"page {n}") for n in range(1, count + 1)])
    if free is not None:
        free_cpus(free)
    pages = _page_processes(pdf, parallel)
    try:
        assert pages.plan(count) == processes
        lines = [line for line, _stopped in pages.in_order(range(count))]
        assert pages.started == processes
    finally:
        pages.close()
    assert [line and line["page"] for line in lines] == list(range(1, count + 1))
    assert [line and line["text"] for line in lines] == [f"page {n}" for n in range(1, count + 1)]
    assert all(line and line["box"] == {"width": 612.0, "height": 792.0, "rotation": 0} for line in lines)


@pytest.mark.parametrize(("count", "free", "leader_done", "processes"),
                         [(400, 3.0, False, 4), (400, 1.0, False, 2), (200, 3.0, True, 1), (40, 3.0, False, 1)])
def test_the_automatic_mode_adds_page_processes_for_the_pages_left(
        count: int, free: float, leader_done: bool, processes: int, free_cpus: Callable[[float], None]) -> None:
    """A process is added only for pages no process has taken yet, HELPER_PAGES each, one per
    free CPU: none once the leader is done (a cold start of a short document: a fork then
    would cost the commit its time for nothing), none for 40 pages."""
    import os

    free_cpus(free)
    pages = _page_processes(build_pdf([text_page(f"page {n}") for n in range(1, count + 1)]), 0)
    try:
        if leader_done:
            leader = next(iter(pages.running.values()))
            os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)
        assert pages.plan(count) == processes
        assert pages.started == processes
        lines = [line for line, _stopped in pages.in_order(range(count))]
        assert [line and line["text"] for line in lines] == [f"page {n}" for n in range(1, count + 1)]
    finally:
        pages.close()


def test_the_leader_never_waits_to_hand_out_its_chunks() -> None:
    """Where a pipe holds fewer tokens than a document has chunks (a small pipe buffer), the
    leader keeps the rest and does them itself: it must not block writing before reading."""
    import fcntl
    import os

    from workers.pdf_extract import text_pages

    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, 1031, 4096)  # F_SETPIPE_SZ: one page, 256 tokens
        tokens = text_pages._Tokens(write_fd, 0, 16 * 1000)  # 1000 chunks
        own, others = [], []
        while (token := tokens.take_own()) is not None:
            own.append(token)
            if len(own) % 100 == 0:  # another process takes what the pipe holds meanwhile
                os.set_blocking(read_fd, False)
                with contextlib.suppress(BlockingIOError):
                    while (token := text_pages._next_token(read_fd)) is not None:
                        others.append(token)
                os.set_blocking(read_fd, True)
        assert tokens.fd == -1  # all handed out: the write end is closed
        while (token := text_pages._next_token(read_fd)) is not None:
            others.append(token)
        assert own, "the pipe took every token: the test did not exercise the leftover path"
        assert sorted(own + others) == [(n * 16, n * 16 + 16) for n in range(1000)]
    finally:
        os.close(read_fd)


def test_a_running_page_process_can_be_given_a_smaller_share() -> None:
    """The automatic mode adds page processes once pypdf has counted the pages: the running
    ones were forked with the whole share, and must give up what the new ones get."""
    import os
    import resource

    from workers.pdf_extract import forks

    hold_read, hold_write = os.pipe()

    def wait(say: forks.Say) -> forks.Report:
        os.read(hold_read, 1)
        return None

    pid, fd = forks.fork(wait, 500)
    child = forks.Child(pid, fd, "a test child", 500)
    try:
        while child.started_mb is None:  # its cap is set once it has said its resident set
            child.pump()
        before, _ = resource.prlimit(pid, resource.RLIMIT_DATA)
        child.lower_cap(200)
        after, _ = resource.prlimit(pid, resource.RLIMIT_DATA)
        assert before - after == 300 << 20 and child.memory_mb == 200
    finally:
        os.write(hold_write, b"x")
        while child.pump():
            pass
        assert forks.reap(child) is None
        os.close(hold_read)
        os.close(hold_write)


_ORPHAN_PROBE = """
import ctypes, os, sys, time
from pathlib import Path
from workers.pdf_extract import forks

def stuck(say):
    ctypes.CDLL(None).sleep(60)  # inside native code, as a page process in PDFium
    return None

pid, fd = forks.fork(stuck, 256)
print(pid, flush=True)
time.sleep(60)
"""


def test_page_processes_die_with_their_parent(tmp_path: Path) -> None:
    """A kill -9 of the command (or of a backfill's pool child) must not leave page processes
    of ~100 MB each behind, working on for minutes."""
    import os
    import subprocess
    import sys
    import time

    with subprocess.Popen([sys.executable, "-c", _ORPHAN_PROBE], cwd=REPO, stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("the page process outlived its parent")
