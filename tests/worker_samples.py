"""Small generated inputs, one per registered worker, for the end-to-end tests.

Each maker returns ``(file name, bytes)``; inputs are generated (never committed binaries)
and small, so a test over the whole registry stays quick. A worker registered without a
maker here makes the end-to-end tests fail, on purpose: every worker is exercised on S3.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def jpeg() -> tuple[str, bytes]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 90)).save(buffer, "JPEG", quality=85)
    return "photo.jpg", buffer.getvalue()


def pdf() -> tuple[str, bytes]:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": "mountworks sample"})
    buffer = io.BytesIO()
    writer.write(buffer)
    return "doc.pdf", buffer.getvalue()


def csv() -> tuple[str, bytes]:
    rows = ["id,name,price,when"] + [f"{i},item {i},{i * 1.5:.2f},2026-01-{i % 28 + 1:02d}" for i in range(50)]
    return "table.csv", ("\n".join(rows) + "\n").encode()


def mp4() -> tuple[str, bytes]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "clip.mp4"
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "1",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(target)],
                       check=True, timeout=60)
        return "clip.mp4", target.read_bytes()


def echo() -> tuple[str, bytes]:
    return "note.echo", b"ECHO hello from S3"


SAMPLES: dict[str, Callable[[], tuple[str, bytes]]] = {
    "image-resize": jpeg,
    "pdf-extract": pdf,
    "parquet-normalize": csv,
    "video-transcode": mp4,
    "test-echo": echo,
}

# Options that keep each worker's run small (fewer renditions), where it has such options.
SMALL_OPTIONS: dict[str, dict[str, object]] = {}


def sample_for(worker: str) -> tuple[str, bytes]:
    maker = SAMPLES.get(worker)
    if maker is None:
        raise AssertionError(f"no sample input for worker {worker!r}: add a maker to tests/worker_samples.py")
    return maker()
