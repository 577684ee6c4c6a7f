"""HDR to SDR: the tone curve as a 3D LUT, made once per machine by ffmpeg's own filters.

ffmpeg's HDR-to-SDR chain (``zscale`` to linear light, BT.709 primaries, ``tonemap``,
``zscale`` back to BT.709's transfer) works in float RGB on every pixel: on a 1080p HLG
source it cost more than decoding, scaling and encoding three renditions together (7.8 s
against 4.1 s). Every step is a function of the pixel's colour alone, so the same chain run
once over a grid of colours gives a 3D LUT (``.cube``) that ``lut3d`` applies in fixed point:
``scale`` (BT.2020 YUV to RGB), ``lut3d`` (tetrahedral), ``scale`` (RGB to BT.709 YUV).

The grid's colours are BT.2020 YUV (non-constant luminance), so a LUT is made only for
sources with that matrix (nearly every HDR video); other sources, or an ffmpeg that cannot
make one, get the float filters (:func:`steps`, in :func:`workers.video_transcode.encode.to_sdr`). A LUT is kept
under the temporary directory, written whole (a rename), and made again where it is missing
(a segment's Lambda, a fresh machine): ~0.2 s.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from workers.video_transcode import runner

CURVE = "mobius"  # keeps an exact conversion's midtones and rolls the highlights off, unclipped
WHITE_NITS = 100  # the nominal peak HDR light is scaled to before the curve (SDR's reference white)
LUT_SIZE = 33  # grid points per channel: the size grading LUTs use (35,937 colours)
LUT_MATRIX = "bt2020nc"  # the YUV matrix the grid is written in
RECIPE = 1  # bump when the steps change, so old LUT files are not used
# BT.2020 non-constant luminance: Y = KR R + KG G + KB B; Cb = (B - Y) / CB_SCALE; Cr = (R - Y) / CR_SCALE
KR, KB = 0.2627, 0.0593
KG = 1 - KR - KB
CB_SCALE, CR_SCALE = 2 * (1 - KB), 2 * (1 - KR)


def steps(transfer: str, primaries: str, matrix: str) -> list[tuple[str, dict[str, Any]]]:
    """ffmpeg's float HDR-to-SDR filters, YUV of this colour in, non-linear BT.709 RGB out:
    the one definition of the tone-mapping (the LUT is made from it; without a LUT, the
    renditions go through it). ``hable``, the curve most often quoted, darkens the whole
    picture by half where a stream carries no mastering peak (most phone videos)."""
    return [("zscale", {"tin": transfer, "pin": primaries, "min": matrix, "t": "linear", "npl": WHITE_NITS}),
            ("format", {"pix_fmts": "gbrpf32le"}), ("zscale", {"p": "bt709"}),
            ("tonemap", {"tonemap": CURVE, "desat": 0}), ("zscale", {"t": "bt709"})]


@lru_cache(maxsize=8)
def lut_file(transfer: str, primaries: str, matrix: str) -> Path | None:
    """The LUT for sources of this colour, made now if it is missing; None where it cannot
    be (another matrix, an ffmpeg without zscale): the caller then uses :func:`steps`."""
    if matrix != LUT_MATRIX:
        return None
    folder = Path(tempfile.gettempdir()) / "mountworks-tonemap"
    path = folder / f"{transfer}-{primaries}-{CURVE}-{WHITE_NITS}-{LUT_SIZE}-r{RECIPE}.cube"
    if path.is_file():
        return path
    filters = ",".join(f"{name}=" + ":".join(f"{k}={v}" for k, v in args.items())
                       for name, args in [*steps(transfer, primaries, matrix), ("format", {"pix_fmts": "gbrpf32le"})])
    try:
        rgb = _run_grid(filters, transfer, primaries)
    except (OSError, subprocess.SubprocessError, struct.error):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"LUT_3D_SIZE {LUT_SIZE}\n")
            f.writelines(f"{r:.6f} {g:.6f} {b:.6f}\n" for r, g, b in rgb)
        os.replace(tmp, path)  # whole or not at all: another process may be writing the same one
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    return path


def _grid() -> bytes:
    """Every grid colour (non-linear RGB, red fastest as .cube lists them) as 16-bit
    full-range BT.2020 YUV 4:4:4 planes, one pixel each."""
    n = LUT_SIZE - 1
    ys, us, vs = [], [], []
    for b in range(LUT_SIZE):
        for g in range(LUT_SIZE):
            for r in range(LUT_SIZE):
                red, green, blue = r / n, g / n, b / n
                y = KR * red + KG * green + KB * blue
                ys.append(round(y * 65535))
                us.append(min(65535, max(0, round((blue - y) / CB_SCALE * 65535 + 32768))))
                vs.append(min(65535, max(0, round((red - y) / CR_SCALE * 65535 + 32768))))
    count = len(ys)
    return struct.pack(f"<{count}H", *ys) + struct.pack(f"<{count}H", *us) + struct.pack(f"<{count}H", *vs)


def _run_grid(filters: str, transfer: str, primaries: str) -> list[tuple[float, float, float]]:
    """The grid through ``filters``: each colour's RGB out, clamped to 0..1."""
    width, height = LUT_SIZE, LUT_SIZE * LUT_SIZE
    argv = [runner.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "rawvideo",
            "-pix_fmt", "yuv444p16le", "-s", f"{width}x{height}", "-color_primaries", primaries,
            "-color_trc", transfer, "-colorspace", LUT_MATRIX, "-color_range", "pc", "-i", "pipe:0",
            "-vf", filters, "-f", "rawvideo", "-pix_fmt", "gbrpf32le", "pipe:1"]
    out = subprocess.run(argv, input=_grid(), capture_output=True, timeout=60, check=True).stdout
    count = width * height
    green, blue, red = (struct.unpack_from(f"<{count}f", out, i * 4 * count) for i in range(3))  # G, B, R planes
    return [(min(1.0, max(0.0, r)), min(1.0, max(0.0, g)), min(1.0, max(0.0, b)))
            for r, g, b in zip(red, green, blue, strict=True)]
