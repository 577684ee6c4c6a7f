"""image-resize against the function's memory: a frame that cannot fit is refused as
``limit-exceeded`` (limit ``memory``) before any pixel is decoded, instead of being
OOM-killed on every retry. The big PNGs are real: written row by row through zlib, so
the test never holds their pixels."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import Cli, Put

from workers.image_resize.core import decode_memory_mb

MOUNTWORKS = Path(sys.executable).with_name("mountworks")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def big_png(path: Path, width: int, height: int, *, alpha: bool = False) -> Path:
    """A valid ``width`` x ``height`` 8-bit RGB(A) PNG of horizontal stripes, streamed."""
    channels = 4 if alpha else 3
    compressor = zlib.compressobj(6)
    parts = []
    for y in range(height):
        shade = (y * 255 // max(1, height - 1)).to_bytes(1, "big")
        parts.append(compressor.compress(b"\x00" + shade * (width * channels)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
                     + _chunk(b"IEND", b""))
    return path


def test_a_12000px_png_in_a_512_mb_function_is_a_memory_limit_not_an_oom_kill(
        tmp_path: Path, put: Put, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = put("huge.png", big_png(tmp_path / "huge.png", 12_000, 12_000))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")  # what Lambda sets in a 512 MB function
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, record = cli.run("image-resize", rel, "max_pixels=200000000", isolate=False)
    assert code == 3
    assert record["error"]["code"] == "limit-exceeded" and record["error"]["limit"] == "memory"
    assert "12000x12000" in record["error"]["message"] and "512 MB" in record["error"]["message"]
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, "the pixels were decoded before the refusal"


def test_the_option_overrides_the_functions_memory(tmp_path: Path, put: Put, cli: Cli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rel = put("mid.png", big_png(tmp_path / "mid.png", 3000, 3000))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    code, record = cli.run("image-resize", rel, "memory_mb=64", isolate=False)
    assert (code, record["error"]["limit"]) == (3, "memory")
    assert "64 MB" in record["error"]["message"]
    code, record = cli("run", "image-resize", rel, "--root", str(cli.mount), "--no-isolation",
                       "-o", "memory_mb=0", "--retry-failed")  # 0: the function's; the failure is redone
    assert code == 0, record.get("error")


def _peak_rss_mb(argv: list[str]) -> float:
    """The peak RSS of one child process (the children's maximum, read after it alone ran)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True).stdout
    return int(out) / 1024


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [False, True], ids=["rgb", "rgba"])
def test_the_estimate_covers_what_decoding_really_takes(alpha: bool, tmp_path: Path, put: Put,
                                                        mount: Path) -> None:
    """Measured, not assumed: an image that fits its estimate must decode within it."""
    side = 4000
    rel = put("measured.png", big_png(tmp_path / "measured.png", side, side, alpha=alpha))
    tiny = put("tiny.png", big_png(tmp_path / "tiny.png", 8, 8, alpha=alpha))
    baseline = _peak_rss_mb([str(MOUNTWORKS), "run", "image-resize", tiny, "--root", str(mount), "--no-isolation"])
    peak = _peak_rss_mb([str(MOUNTWORKS), "run", "image-resize", rel, "--root", str(mount), "--no-isolation",
                         "--retry-failed"])
    estimate = decode_memory_mb(side, side, "RGBA" if alpha else "RGB")
    assert peak - baseline <= estimate, (peak, baseline, estimate)
    assert estimate <= 2 * (peak - baseline) + 64, "the estimate refuses images that would fit"
