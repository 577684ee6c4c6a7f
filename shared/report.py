"""What a person reads after a backfill: a terminal table and a one-page HTML report.

The JSON summary on stdout is for programs; this is for people. The HTML page is
self-contained (inline CSS and SVG, no script, nothing fetched), so it opens from disk
in any browser and can be attached to a ticket.
"""

from __future__ import annotations

import html
import itertools
from datetime import UTC, datetime
from typing import Any

from shared.backfill import DURATION_BUCKETS_MS, Summary
from shared.outcomes import TALLIES

COUNTED = TALLIES  # the status table's tallies: the same columns as the JSON summary's totals
COLUMNS = ("worker", *(t.replace("_", " ") for t in COUNTED), "bytes in", "bytes out", "time")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    minutes, seconds = divmod(int(s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def rows(summary: Summary) -> list[list[str]]:
    """One row per worker, then the total row: the figures both views show, counted as the
    JSON summary counts them (a refused input is ``refused`` in both)."""
    out = []
    for name in sorted(summary.workers):
        t = summary.workers[name]
        out.append([name, *(str(getattr(t, k)) for k in COUNTED), human_bytes(t.bytes_in), human_bytes(t.bytes_out),
                    human_seconds(t.seconds)])
    seconds = sum(t.seconds for t in summary.workers.values())
    out.append(["total", *(str(summary.total(k)) for k in COUNTED), human_bytes(summary.total("bytes_in")),
                human_bytes(summary.total("bytes_out")), human_seconds(seconds)])
    return out


def table(summary: Summary) -> str:
    """A plain-text table per worker, the slowest inputs and the failures with their codes."""
    body = rows(summary)
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) for i in range(len(COLUMNS))]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    out = [f"backfill ({summary.engine}): {summary.files} files, {summary.unrouted} unrouted"
           + (", INTERRUPTED" if summary.interrupted else ""), line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    if summary.slowest:
        out.append("slowest:")
        out += [f"  {s['duration_ms'] / 1000:8.2f}s  {s['worker']}  {s['input']}" for s in summary.slowest]
    if summary.unrouted_files:
        out.append(f"unrouted, no worker takes them ({len(summary.unrouted_files)} of {summary.unrouted} listed):")
        out += [f"  {rel}" for rel in summary.unrouted_files]
    if summary.failures:
        out.append(f"failed ({len(summary.failures)} listed):")
        for f in summary.failures:
            error = f.get("error") or {}
            out.append(f"  {error.get('code', f.get('status', '?'))}  {f.get('worker', '-')}  {f['input']}"
                       + (f"  ({error['message']})" if error.get("message") else ""))
    return "\n".join(out) + "\n"


def _bucket_labels() -> list[str]:
    labels = [f"<{_ms(DURATION_BUCKETS_MS[0])}"]
    labels += [f"{_ms(a)}–{_ms(b)}" for a, b in itertools.pairwise(DURATION_BUCKETS_MS)]
    return [*labels, f"≥{_ms(DURATION_BUCKETS_MS[-1])}"]


def _ms(v: int) -> str:
    return f"{v // 1000}s" if v >= 1000 else f"{v}ms"


LEGEND_ITEM = 150  # px per worker in the legend
MIN_CHART_WIDTH = 600  # narrower, its labels would be too small to read: the chart scrolls instead


def duration_chart(summary: Summary) -> str:
    """Inline SVG: per duration bucket, one bar per worker (counts of done/failed runs).

    The axis is labelled at the bucket bounds (``10ms`` ... ``300s``), one short label per
    tick, so labels never overlap; the SVG scales to the page (``viewBox``) down to a legible
    width (then it scrolls sideways), and the legend
    wraps onto as many rows as the workers need.
    """
    labels = _bucket_labels()
    workers = sorted(summary.workers)
    palette = ("#2f6db5", "#d9822b", "#3a9d5d", "#b5403a", "#7a5cb5", "#5c8a8a")
    peak = max([1, *(c for w in workers for c in summary.workers[w].histogram)])
    width, height, left, bottom = 760, 260, 48, 40
    per_row = max(1, (width - left) // LEGEND_ITEM)
    legend_rows = max(1, -(-len(workers) // per_row))
    total_height = height + 12 + 18 * legend_rows
    slot = (width - left - 10) / len(labels)
    bar = max(2.0, (slot - 6) / max(1, len(workers)))
    axis = height - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {total_height}" width="100%" '
             f'style="min-width:{MIN_CHART_WIDTH}px;max-width:{width}px" role="img" aria-label="durations per worker">',
             f'<line x1="{left}" y1="{axis}" x2="{width - 10}" y2="{axis}" stroke="#888"/>',
             f'<text x="4" y="14" font-size="11">runs (max {peak})</text>',
             f'<text x="{(left + width - 10) / 2:.1f}" y="{axis + 32}" font-size="11" text-anchor="middle">'
             f'run duration</text>']
    for i, bound in enumerate(DURATION_BUCKETS_MS, start=1):
        x = left + i * slot
        parts.append(f'<line x1="{x:.1f}" y1="{axis}" x2="{x:.1f}" y2="{axis + 4}" stroke="#888"/>'
                     f'<text class="tick" x="{x:.1f}" y="{axis + 15}" font-size="10" text-anchor="middle">'
                     f'{_ms(bound)}</text>')
    for i, label in enumerate(labels):
        x0 = left + i * slot
        for j, worker in enumerate(workers):
            count = summary.workers[worker].histogram[i]
            h = (axis - 24) * count / peak
            parts.append(f'<rect class="bar" data-worker="{html.escape(worker)}" data-bucket="{html.escape(label)}" '
                         f'data-count="{count}" x="{x0 + 3 + j * bar:.1f}" y="{axis - h:.1f}" '
                         f'width="{bar - 1:.1f}" height="{h:.1f}" fill="{palette[j % len(palette)]}">'
                         f'<title>{html.escape(worker)} {html.escape(label)}: {count}</title></rect>')
    for j, worker in enumerate(workers):
        x, y = left + (j % per_row) * LEGEND_ITEM, height + 8 + 18 * (j // per_row)
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{palette[j % len(palette)]}"/>'
                     f'<text x="{x + 14}" y="{y + 9}" font-size="11">{html.escape(worker)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _shown(value: Any) -> str:
    """A fact as a person reads it (``no``, not Python's ``False``)."""
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def html_report(summary: Summary, context: dict[str, Any] | None = None) -> str:
    """The one-page report: figures table, duration chart, slowest and failed inputs."""
    e = html.escape
    data = summary.to_json()
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows(summary))
    slow = "".join(f"<tr><td>{s['duration_ms'] / 1000:.2f}s</td><td>{e(s['worker'])}</td><td>{e(s['input'])}</td></tr>"
                   for s in summary.slowest) or '<tr><td colspan="3">none</td></tr>'
    failed = "".join(
        f"<tr><td>{e(str((f.get('error') or {}).get('code', f.get('status', ''))))}</td>"
        f"<td>{e(str(f.get('worker', '-')))}</td><td>{e(str(f['input']))}</td>"
        f"<td>{e(str((f.get('error') or {}).get('message', '')))}</td></tr>"
        for f in summary.failures) or '<tr><td colspan="4">none</td></tr>'
    unrouted = "".join(f"<li>{e(rel)}</li>" for rel in summary.unrouted_files) or "<li>none</li>"
    facts = {"engine": summary.engine, "files": summary.files, "unrouted": summary.unrouted,
             "interrupted": summary.interrupted, "duration": human_seconds(data["duration_s"]),
             **(context or {})}
    fact_rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(_shown(v))}</td></tr>" for k, v in facts.items())
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mountworks backfill report</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:900px;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}th,td{{border:1px solid #ccc;padding:3px 8px}}
#workers td:not(:first-child){{text-align:right}}#workers tr:last-child{{font-weight:bold}}
h1{{font-size:1.4em}}h2{{font-size:1.1em;margin-top:1.5em}}
.scroll{{overflow-x:auto}}body{{padding:0 1em}}
</style></head><body>
<h1>mountworks backfill report</h1>
<p>Generated {e(generated)}.</p>
<table id="facts">{fact_rows}</table>
<h2>Per worker</h2>
<div class="scroll"><table id="workers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>
<h2>Durations</h2>
<div class="scroll">{duration_chart(summary)}</div>
<h2>Slowest inputs</h2>
<table id="slowest"><thead><tr><th>time</th><th>worker</th><th>input</th></tr></thead><tbody>{slow}</tbody></table>
<h2>Unrouted files</h2>
<ul id="unrouted">{unrouted}</ul>
<h2>Failed inputs</h2>
<div class="scroll"><table id="failures"><thead><tr><th>code</th><th>worker</th><th>input</th><th>message</th></tr>
</thead><tbody>{failed}</tbody></table></div>
</body></html>
"""
