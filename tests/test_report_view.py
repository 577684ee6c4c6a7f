"""The HTML backfill report as a person sees it: opened in a real headless browser
(Chromium, skipped where it is not installed) at a desktop and a phone width."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.backfill import DURATION_BUCKETS_MS, Summary, WorkerTally
from shared.report import html_report

WIDTHS = (1280, 420)
# appended to the page under test only: the report itself has no script
MEASURE = """<script>
const box = e => e.getBoundingClientRect();
const ticks = [...document.querySelectorAll('svg text[font-size="10"]')].map(t => [box(t).left, box(t).right]);
const out = {ticks, scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth};
document.body.insertAdjacentHTML('beforeend', '<pre id="measured">' + JSON.stringify(out) + '</pre>');
</script>"""


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium (apt-get install chromium)")


def _summary() -> Summary:
    summary = Summary(interrupted=False)
    for i, name in enumerate(("image-resize", "parquet-normalize", "pdf-extract", "video-transcode", "text-stats")):
        histogram = [(i + b) % 4 for b in range(len(DURATION_BUCKETS_MS) + 1)]
        summary.workers[name] = WorkerTally(done=sum(histogram), histogram=histogram, refused=1)
    summary.unrouted_files = ["ingest/notes/readme.txt"]
    return summary


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_report_says_yes_or_no_not_python_s_false() -> None:
    page = html_report(_summary())
    assert "False" not in page and "True" not in page
    assert "<th>interrupted</th><td>no</td>" in page


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def test_report_axis_labels_do_not_overlap_and_the_page_fits_in_a_real_browser(tmp_path: Path, width: int) -> None:
    report = html_report(_summary(), {"root": "/mnt/workspace"})
    page, measuring = tmp_path / "report.html", tmp_path / "measuring.html"
    page.write_text(report)
    measuring.write_text(report.replace("</body>", MEASURE + "</body>"))
    run = _chromium([f"--window-size={width},900", "--dump-dom", measuring.as_uri()], tmp_path / "profile")
    found = re.findall(r'<pre id="measured">(\{.*?\})</pre>', run.stdout)  # the script's own text is not JSON
    assert found, run.stderr[-2000:]
    measured = json.loads(found[-1].replace("&quot;", '"'))
    ticks = sorted(measured["ticks"])
    assert len(ticks) >= len(DURATION_BUCKETS_MS)  # the duration axis's labels
    assert all(a[1] + 2 <= b[0] for a, b in itertools.pairwise(ticks)), ticks  # 2 px apart at least
    assert measured["scrollWidth"] <= measured["width"]  # no sideways scrolling of the page
    shot = tmp_path / f"report-{width}.png"
    _chromium([f"--window-size={width},1400", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile2")
    assert shot.stat().st_size > 10_000
